//! Access phase: `python_access EXPR` handlers of the location, in order.
//!
//! Results: None / ngx.DECLINED go on; ngx.OK grants access (under
//! `satisfy any` it ends the phase, under `satisfy all` the next handler
//! still runs); an HTTP status ends the request with it; ngx.ERROR or an
//! exception is a 500.
//!
//! When the handlers suspend (unblock builds) the phase returns NGX_DONE;
//! when they finish, the result is kept in the request's context and the
//! phase engine re-runs this handler, which then returns it.

use pyo3::prelude::*;

use super::request::{request_ctx, request_object};
use super::{env, loc_conf, status_of, suspend_request, wake_request};
use crate::executor::{self, Outcome};
use crate::ffi::{self, ngx_http_request_t, ngx_int_t};
use crate::runtime::errors::log_exception;

const SERVER_ERROR: ngx_int_t = ffi::NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;

pub unsafe extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    crate::panic_guard::guard((*(*r).connection).log, "python_access", || access_handler_unguarded(r), || SERVER_ERROR)
}

unsafe fn access_handler_unguarded(r: *mut ngx_http_request_t) -> ngx_int_t {
    if loc_conf(r).access.is_empty() {
        return ffi::DECLINED;
    }
    let ctx = match Python::attach(|py| request_ctx(py, r).map_err(|e| log_exception(py, (*(*r).connection).log, "python_access", &e))) {
        Ok(ctx) => ctx,
        Err(()) => return SERVER_ERROR,
    };
    if let Some(rc) = ctx.access_rc.take() {
        return rc; // the handlers finished after suspending
    }
    if ctx.waiting.get().is_some() {
        return ffi::DONE; // still waiting (a stray event re-ran the phase)
    }
    let done = move |rc: Option<ngx_int_t>| {
        // SAFETY: `done` runs only while the request lives (its end cancels).
        unsafe {
            // Finalizing may free the request (and its pool): the
            // connection, which nginx keeps, is what runs posted requests.
            let c = (*r).connection;
            let ctx = &*super::request::existing_ctx(r);
            ctx.waiting.set(None);
            wake_request(r);
            match rc {
                // Go on through the phase engine, which asks us again
                // (also during a graceful quit: in-flight requests finish).
                Some(rc) if !executor::exiting_process() => {
                    ctx.access_rc.set(Some(rc));
                    ffi::ngx_http_core_run_phases(r);
                }
                // The handler died, or the worker's final exit: end it.
                _ => ffi::ngx_http_finalize_request(r, SERVER_ERROR),
            }
            ffi::ngx_http_run_posted_requests(c);
        }
    };
    // Set before running: what the handler arms while it runs (e.g. a
    // write handler in r.send) must win.
    suspend_request(r);
    let outcome = executor::run(env(r), move || run_handlers(r), done);
    if !matches!(outcome, Outcome::Suspended(_)) {
        wake_request(r);
    }
    match outcome {
        Outcome::Done(rc) => rc,
        Outcome::Suspended(h) => {
            ctx.waiting.set(Some(h));
            ffi::DONE
        }
        Outcome::Failed => SERVER_ERROR,
    }
}

unsafe fn run_handlers(r: *mut ngx_http_request_t) -> ngx_int_t {
    let handlers = &loc_conf(r).access;
    let clcf = ffi::http_loc_conf::<ffi::ngx_http_core_loc_conf_t>(r, &*(&raw const ffi::ngx_http_core_module));
    let satisfy_any = (*clcf).satisfy == ffi::NGX_HTTP_SATISFY_ANY as usize;
    let log = (*(*r).connection).log;
    Python::attach(|py| {
        let obj = match request_object(py, r) {
            Ok(o) => o,
            Err(e) => {
                log_exception(py, log, "python_access", &e);
                return SERVER_ERROR;
            }
        };
        let mut granted = false;
        for h in handlers {
            let rc = match h.call(obj.as_any()).and_then(|v| status_of(&v, "python_access", 300)) {
                Ok(rc) => rc,
                Err(e) => {
                    log_exception(py, log, "python_access", &e);
                    return SERVER_ERROR;
                }
            };
            match rc {
                ffi::DECLINED => {}
                ffi::OK if satisfy_any => return ffi::OK,
                ffi::OK => granted = true,
                ffi::ERROR | ffi::DONE => return SERVER_ERROR,
                status => return status,
            }
        }
        if granted {
            ffi::OK
        } else {
            ffi::DECLINED
        }
    })
}
