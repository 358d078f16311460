//! Log phase: `python_log EXPR` handlers, in order. Their results are
//! ignored; an exception is logged and nothing else happens.

use pyo3::prelude::*;

use super::loc_conf;
use super::request::request_object;
use crate::executor;
use crate::ffi::{self, ngx_http_request_t, ngx_int_t};
use crate::runtime::errors::log_exception;

pub unsafe extern "C" fn log_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    crate::panic_guard::guard((*(*r).connection).log, "python_log", || log_handler_unguarded(r), || ffi::OK)
}

unsafe fn log_handler_unguarded(r: *mut ngx_http_request_t) -> ngx_int_t {
    let handlers = &loc_conf(r).log;
    if handlers.is_empty() {
        return ffi::OK;
    }
    let log = (*(*r).connection).log;
    executor::run_nonsuspending(|| {
        Python::attach(|py| {
            let result = request_object(py, r).map(|obj| {
                for h in handlers {
                    if let Err(e) = h.call(obj.as_any()) {
                        log_exception(py, log, "python_log", &e);
                    }
                }
                ()
            });
            if let Err(e) = result {
                log_exception(py, log, "python_log", &e);
            }
        })
    });
    ffi::OK
}
