//! Access phase: `python_access EXPR` handlers of the location, in order.
//!
//! Results: None / ngx.DECLINED go on; ngx.OK grants access (under
//! `satisfy any` it ends the phase, under `satisfy all` the next handler
//! still runs); an HTTP status ends the request with it; ngx.ERROR or an
//! exception is a 500.

use pyo3::prelude::*;

use super::request::request_object;
use super::{loc_conf, status_of};
use crate::executor;
use crate::ffi::{self, ngx_http_request_t, ngx_int_t};
use crate::runtime::errors::log_exception;

pub unsafe extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    let handlers = &loc_conf(r).access;
    if handlers.is_empty() {
        return ffi::DECLINED;
    }
    let clcf = ffi::http_loc_conf::<ffi::ngx_http_core_loc_conf_t>(r, &*(&raw const ffi::ngx_http_core_module));
    let satisfy_any = (*clcf).satisfy == ffi::NGX_HTTP_SATISFY_ANY as usize;
    let log = (*(*r).connection).log;

    let run = || {
        Python::attach(|py| {
            let obj = match request_object(py, r) {
                Ok(o) => o,
                Err(e) => {
                    log_exception(py, log, "python_access", &e);
                    return ffi::NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
                }
            };
            let mut granted = false;
            for h in handlers {
                let rc = match h.call(obj.as_any()).and_then(|v| status_of(&v, "python_access")) {
                    Ok(rc) => rc,
                    Err(e) => {
                        log_exception(py, log, "python_access", &e);
                        return ffi::NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
                    }
                };
                match rc {
                    ffi::DECLINED => {}
                    ffi::OK if satisfy_any => return ffi::OK,
                    ffi::OK => granted = true,
                    ffi::ERROR => return ffi::NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
                    status => return status,
                }
            }
            if granted {
                ffi::OK
            } else {
                ffi::DECLINED
            }
        })
    };
    executor::run(run).unwrap_or(ffi::DONE)
}
