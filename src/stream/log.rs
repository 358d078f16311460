//! Log phase: the server's `python_log EXPR` handlers, in order, as the
//! session ends. Their results are ignored; an exception is logged and
//! nothing else happens.

use pyo3::prelude::*;

use super::session::session_object;
use super::srv_conf;
use crate::executor;
use crate::ffi::{self, ngx_int_t, ngx_stream_session_t};
use crate::runtime::errors::log_exception;

pub unsafe extern "C" fn log_handler(s: *mut ngx_stream_session_t) -> ngx_int_t {
    crate::panic_guard::guard((*(*s).connection).log, "python_log", || log_handler_unguarded(s), || ffi::OK)
}

unsafe fn log_handler_unguarded(s: *mut ngx_stream_session_t) -> ngx_int_t {
    let handlers = &srv_conf(s).log;
    if handlers.is_empty() {
        return ffi::OK;
    }
    let log = (*(*s).connection).log;
    executor::run_nonsuspending(|| {
        Python::attach(|py| {
            let obj = match session_object(py, s) {
                Ok(obj) => obj,
                Err(e) => return log_exception(py, log, "python_log", &e),
            };
            for h in handlers {
                if let Err(e) = h.call(obj.as_any()) {
                    log_exception(py, log, "python_log", &e);
                }
            }
        })
    });
    ffi::OK
}
