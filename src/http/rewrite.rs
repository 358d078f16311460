//! Rewrite phase: `python_rewrite EXPR`, after nginx's own `rewrite`/`set`
//! directives of the location (the shared logic is in `gate.rs`). A
//! handler may change `r.uri` / `r.args` (nginx then finds the location
//! again, as after `rewrite ... last`) or call `r.internal_redirect()`.

use super::gate::{run_gate, Gate};
use crate::ffi::{self, ngx_http_request_t, ngx_int_t};

pub unsafe extern "C" fn rewrite_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx's phase engine calls this with a live request.
    unsafe { crate::panic_guard::guard((*(*r).connection).log, "python_rewrite", || run_gate(r, Gate::Rewrite), || server_error()) }
}

fn server_error() -> ngx_int_t {
    ffi::NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t
}

/// `r.uri = uri`: only in the rewrite phase, where nginx looks the
/// location up again afterwards (`uri_changed`, as `rewrite ... last`).
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn set_uri(r: *mut ngx_http_request_t, uri: &str) -> pyo3::PyResult<()> {
    use pyo3::exceptions::{PyMemoryError, PyValueError};
    if !uri.starts_with('/') || uri.bytes().any(|c| c <= b' ' || c == 0x7f || c == b'?') {
        return Err(PyValueError::new_err(format!(
            "r.uri = {uri:?}: a URI path starts with '/' and has no spaces, control characters or '?' (set r.args for the query)"
        )));
    }
    // SAFETY: per the contract; the copy lives in the request's pool.
    unsafe {
        (*r).uri = ffi::pool_str((*r).pool, uri.as_bytes()).ok_or_else(|| PyMemoryError::new_err("no memory for the URI"))?;
        (*r).set_uri_changed(1);
        (*r).set_valid_unparsed_uri(0);
        (*r).set_internal(1);
    }
    Ok(())
}

/// `r.args = query`: the raw query string (what `$args` shows and
/// `proxy_pass` sends).
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn set_args(r: *mut ngx_http_request_t, args: &str) -> pyo3::PyResult<()> {
    use pyo3::exceptions::{PyMemoryError, PyValueError};
    if args.bytes().any(|c| c <= b' ' || c == 0x7f || c == b'#') {
        return Err(PyValueError::new_err("r.args: no spaces, control characters or '#' (escape them with %XX)"));
    }
    // SAFETY: per the contract; the copy lives in the request's pool.
    unsafe {
        (*r).args = ffi::pool_str((*r).pool, args.as_bytes()).ok_or_else(|| PyMemoryError::new_err("no memory for the arguments"))?;
        (*r).set_valid_unparsed_uri(0);
    }
    Ok(())
}
