//! The two phases where Python decides whether a request goes on:
//! `python_rewrite` (rewrite phase) and `python_access` (access phase). The
//! handlers of the location run in order.
//!
//! Results: None / ngx.DECLINED go on; ngx.OK: in the access phase grants
//! access (under `satisfy any` it ends the phase, under `satisfy all` the
//! next handler still runs), in the rewrite phase goes on; an HTTP status
//! ends the request with it; ngx.ERROR or an exception is a 500;
//! `r.internal_redirect()` ends the handler and redirects the request.
//!
//! When the handlers suspend (unblock builds) the phase returns NGX_DONE;
//! when they finish, the result is kept in the request's context and the
//! phase engine re-runs this handler, which then returns it.

use pyo3::prelude::*;

use super::redirect::REDIRECT;
use super::request::{request_ctx, request_object};
use super::{env, loc_conf, status_of, suspend_request, wake_request};
use crate::executor::{self, Outcome};
use crate::ffi::{self, ngx_http_request_t, ngx_int_t};
use crate::runtime::errors::log_exception;

const SERVER_ERROR: ngx_int_t = ffi::NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;

/// Which of the two phases.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Rewrite,
    Access,
}

impl Gate {
    pub fn directive(self) -> &'static str {
        match self {
            Gate::Rewrite => "python_rewrite",
            Gate::Access => "python_access",
        }
    }

    /// The location's handlers for this phase.
    ///
    /// # Safety
    /// `r` must be a live request.
    unsafe fn handlers<'a>(self, r: *mut ngx_http_request_t) -> &'a [crate::runtime::Handler] {
        // SAFETY: per the contract; the configuration outlives requests.
        let lcf = unsafe { loc_conf(r) };
        match self {
            Gate::Rewrite => &lcf.rewrite,
            Gate::Access => &lcf.access,
        }
    }

    /// Where a result that arrived after suspending waits for the re-run.
    fn result(self, ctx: &super::request::RequestCtx) -> &std::cell::Cell<Option<ngx_int_t>> {
        match self {
            Gate::Rewrite => &ctx.rewrite_rc,
            Gate::Access => &ctx.access_rc,
        }
    }
}

/// The phase handler for `gate` (see the module comment).
///
/// # Safety
/// nginx's phase engine calls it with a live request.
pub unsafe fn run_gate(r: *mut ngx_http_request_t, gate: Gate) -> ngx_int_t {
    if gate.handlers(r).is_empty() {
        return ffi::DECLINED;
    }
    let ctx = match Python::attach(|py| request_ctx(py, r).map_err(|e| log_exception(py, (*(*r).connection).log, gate.directive(), &e))) {
        Ok(ctx) => ctx,
        Err(()) => return SERVER_ERROR,
    };
    if let Some(rc) = gate.result(ctx).take() {
        return finish(r, rc); // the handlers finished after suspending
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
                    gate.result(ctx).set(Some(rc));
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
    let outcome = executor::run(env(r), move || run_handlers(r, gate), done);
    if !matches!(outcome, Outcome::Suspended(_)) {
        wake_request(r);
    }
    match outcome {
        Outcome::Done(rc) => finish(r, rc),
        Outcome::Suspended(h) => {
            ctx.waiting.set(Some(h));
            ffi::DONE
        }
        Outcome::Failed => SERVER_ERROR,
    }
}

/// The handlers' result as the phase engine takes it: a redirect the
/// handler asked for happens now, on nginx's stack.
unsafe fn finish(r: *mut ngx_http_request_t, rc: ngx_int_t) -> ngx_int_t {
    if rc != REDIRECT {
        return rc;
    }
    // SAFETY: `r` is live, and this is nginx's stack.
    unsafe {
        let rc = super::redirect::perform_requested(r);
        if rc == ffi::ERROR || rc >= ffi::NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
            return rc;
        }
        // The redirect took a reference to the request: given back here,
        // as the content phase does for a handler's NGX_DONE.
        ffi::ngx_http_finalize_request(r, ffi::DONE);
        ffi::DONE
    }
}

unsafe fn run_handlers(r: *mut ngx_http_request_t, gate: Gate) -> ngx_int_t {
    let handlers = gate.handlers(r);
    let clcf = ffi::http_loc_conf::<ffi::ngx_http_core_loc_conf_t>(r, &*(&raw const ffi::ngx_http_core_module));
    let satisfy_any = gate == Gate::Access && (*clcf).satisfy == ffi::NGX_HTTP_SATISFY_ANY as usize;
    let log = (*(*r).connection).log;
    let what = gate.directive();
    Python::attach(|py| {
        let obj = match request_object(py, r) {
            Ok(o) => o,
            Err(e) => {
                log_exception(py, log, what, &e);
                return SERVER_ERROR;
            }
        };
        let mut granted = false;
        for h in handlers {
            obj.borrow().may_redirect.set(true);
            obj.borrow().rewriting.set(gate == Gate::Rewrite);
            let result = h.call(obj.as_any()).and_then(|v| status_of(&v, what, 300));
            obj.borrow().may_redirect.set(false);
            obj.borrow().rewriting.set(false);
            let rc = match result {
                Ok(rc) => rc,
                Err(e) if super::redirect::is_redirect(py, &e) && obj.borrow().redirect.borrow().is_some() => return REDIRECT,
                Err(e) => {
                    log_exception(py, log, what, &e);
                    return SERVER_ERROR;
                }
            };
            match rc {
                ffi::DECLINED => {}
                ffi::OK if gate == Gate::Rewrite => {}
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
