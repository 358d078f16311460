//! `python_header_filter EXPR`: runs once per response of its location,
//! whatever produced it (proxy_pass, static files, `return`, error pages,
//! Python), before nginx writes the header: `r.status` and `r.ho` can be
//! read and changed. It never waits (like `python_set`).
//!
//! An exception is logged; nginx then ends the response the way it ends a
//! failing filter (`ngx_http_filter_finalize_request`): a 500 page instead
//! of the response, after which the connection is closed.

use std::os::raw::{c_char, c_void};
use std::ptr;

use pyo3::prelude::*;

use super::request::request_object;
use super::{filters, LocConf};
use crate::core_module;
use crate::executor;
use crate::ffi::{self, ngx_command_t, ngx_conf_t, ngx_http_request_t, ngx_int_t};
use crate::runtime::errors::log_exception;
use crate::runtime::Handler;

pub unsafe extern "C" fn python_header_filter(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    crate::panic_guard::guard_conf(cf, "python_header_filter", || python_header_filter_unguarded(cf, _cmd, conf))
}

unsafe fn python_header_filter_unguarded(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    let lcf = &mut *(conf as *mut LocConf);
    if lcf.header_filter.is_some() {
        return c"is duplicate".as_ptr() as *mut c_char;
    }
    let Some(h) = core_module::compile_arg(cf, 1, "r") else { return ffi::CONF_ERROR };
    lcf.header_filter = Some(h);
    ptr::null_mut()
}

/// Runs the filter on `r`; Err(rc) is what the header filter returns
/// after a failure (the 500 has been sent instead).
///
/// # Safety
/// `r` must be a live request in its header filter.
pub unsafe fn run(r: *mut ngx_http_request_t, h: Handler) -> Result<(), ngx_int_t> {
    let log = (*(*r).connection).log;
    let ok = executor::run_nonsuspending(|| {
        Python::attach(|py| {
            let result = request_object(py, r).and_then(|obj| h.call(obj.as_any()));
            match result {
                Ok(_) => true,
                Err(e) => {
                    log_exception(py, log, "python_header_filter", &e);
                    false
                }
            }
        })
    });
    if ok {
        return Ok(());
    }
    let Some(c) = filters::ctx_or_new(r) else { return Err(ffi::ERROR) };
    c.header_failed = true;
    Err(finalize_with_500(r))
}

/// nginx's way for a filter to replace the response with an error page.
/// It forgets every module's context but the one passed; the Python
/// module's (the request object, a waiting handler) is kept as well.
unsafe fn finalize_with_500(r: *mut ngx_http_request_t) -> ngx_int_t {
    let py_module = super::module();
    let kept = *(*r).ctx.add(py_module.ctx_index);
    let rc = ffi::ngx_http_filter_finalize_request(
        r,
        filters::module() as *const _ as *mut _,
        ffi::NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
    );
    *(*r).ctx.add(py_module.ctx_index) = kept;
    rc
}
