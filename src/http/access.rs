//! Access phase: `python_access EXPR` (the shared logic is in `gate.rs`).

use super::gate::{run_gate, Gate};
use crate::ffi::{self, ngx_http_request_t, ngx_int_t};

pub unsafe extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx's phase engine calls this with a live request.
    unsafe { crate::panic_guard::guard((*(*r).connection).log, "python_access", || run_gate(r, Gate::Access), || server_error()) }
}

fn server_error() -> ngx_int_t {
    ffi::NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t
}
