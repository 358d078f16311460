//! Content handler: `python_content EXPR`.
//!
//! The request body is read first (so `r.var['request_body']` works), then
//! the handler runs. Results: None / ngx.OK -> the response is completed (an
//! empty 200 if nothing was sent); an HTTP status -> nginx finalizes with it
//! (its error page or redirect; headers set in `r.ho` are kept), or for a
//! 2xx with nothing sent, a response with that status and an empty body;
//! ngx.ERROR or an exception -> 500 (or the connection is closed when the
//! header is already out).

use pyo3::prelude::*;

use super::request::{request_ctx, request_object};
use super::{env, loc_conf, output, status_of, suspend_request};
use crate::executor::{self, Outcome};
use crate::ffi::{self, ngx_http_request_t, ngx_int_t};
use crate::runtime::errors::log_exception;

const SERVER_ERROR: ngx_int_t = ffi::NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;

pub unsafe extern "C" fn content_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    crate::panic_guard::guard((*(*r).connection).log, "python_content", || content_handler_unguarded(r), || SERVER_ERROR)
}

unsafe fn content_handler_unguarded(r: *mut ngx_http_request_t) -> ngx_int_t {
    if loc_conf(r).stream_body {
        // nginx calls `body_read` after its first read; the handler reads
        // the rest (`wsgi_input`).
        (*r).set_request_body_no_buffering(1);
    }
    let rc = ffi::ngx_http_read_client_request_body(r, Some(body_read));
    if rc >= ffi::NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        return rc;
    }
    ffi::DONE
}

/// Runs once the body is in; ends the request with the handler's outcome.
unsafe extern "C" fn body_read(r: *mut ngx_http_request_t) {
    crate::panic_guard::guard((*(*r).connection).log, "python_content", || body_read_unguarded(r), || ffi::ngx_http_finalize_request(r, SERVER_ERROR))
}

unsafe fn body_read_unguarded(r: *mut ngx_http_request_t) {
    let ctx = match Python::attach(|py| request_ctx(py, r).map_err(|e| log_exception(py, (*(*r).connection).log, "python_content", &e))) {
        Ok(ctx) => ctx,
        Err(()) => return ffi::ngx_http_finalize_request(r, SERVER_ERROR),
    };
    let done = move |rc: Option<ngx_int_t>| {
        // SAFETY: `done` runs only while the request lives (its end cancels).
        unsafe {
            // Finalizing may free the request (and its pool): the
            // connection, which nginx keeps, is what runs posted requests.
            let c = (*r).connection;
            (*super::request::existing_ctx(r)).waiting.set(None);
            super::wake_request(r);
            ffi::ngx_http_finalize_request(r, outcome(r, rc.unwrap_or_else(|| failed(r))));
            ffi::ngx_http_run_posted_requests(c);
        }
    };
    // Set before running: what the handler arms while it runs (e.g. a
    // write handler in r.send) must win.
    suspend_request(r);
    match executor::run(env(r), move || run_handler(r), done) {
        Outcome::Done(rc) => ffi::ngx_http_finalize_request(r, outcome(r, rc)),
        Outcome::Suspended(h) => ctx.waiting.set(Some(h)),
        Outcome::Failed => ffi::ngx_http_finalize_request(r, failed(r)),
    }
}

/// What the request is finalized with: the handler's result, or for an
/// `r.internal_redirect()` what nginx's redirect returned (NGX_DONE, which
/// gives back the reference the redirect took, as after the index module).
unsafe fn outcome(r: *mut ngx_http_request_t, rc: ngx_int_t) -> ngx_int_t {
    if rc == super::redirect::REDIRECT {
        super::redirect::perform_requested(r)
    } else {
        rc
    }
}

unsafe fn failed(r: *mut ngx_http_request_t) -> ngx_int_t {
    if (*r).header_sent() != 0 {
        ffi::ERROR
    } else {
        SERVER_ERROR
    }
}

unsafe fn run_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    let Some(handler) = loc_conf(r).content else {
        return SERVER_ERROR;
    };
    let log = (*(*r).connection).log;
    Python::attach(|py| {
        let obj = match request_object(py, r) {
            Ok(o) => o,
            Err(e) => {
                log_exception(py, log, "python_content", &e);
                return failed(r);
            }
        };
        // One shared borrow for the whole run (each borrow of an unsendable
        // class checks the thread); the handler's own uses of `r` only
        // borrow shared too.
        let req = obj.borrow();
        req.may_send.set(true);
        req.may_redirect.set(true);
        let rc = handler.call(obj.as_any()).and_then(|v| status_of(&v, "python_content", 200));
        req.may_send.set(false);
        req.may_redirect.set(false);
        let rc = match rc {
            Ok(rc) => rc,
            Err(e) if super::redirect::is_redirect(py, &e) && (*r).header_sent() == 0 && req.redirect.borrow().is_some() => {
                return super::redirect::REDIRECT;
            }
            Err(e) => {
                log_exception(py, log, "python_content", &e);
                return failed(r);
            }
        };
        // The request ended while the handler waited (it was cancelled and
        // chose to return normally): nginx is freeing it, leave it alone.
        if req.raw().is_err() {
            return ffi::ERROR;
        }
        let finished = req.finished.get();
        match rc {
            ffi::OK | ffi::DECLINED | ffi::DONE => output::finish(r, finished),
            ffi::ERROR => failed(r),
            // Too late to change the status once the header is out.
            _ if (*r).header_sent() != 0 => output::finish(r, finished),
            status if status >= 300 || status == 201 || status == 204 => status,
            status => {
                (*r).headers_out.status = status as usize;
                output::finish(r, finished)
            }
        }
    })
}
