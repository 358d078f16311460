//! Content handler: `python_content EXPR` of the server. When it returns,
//! the session ends: None / ngx.OK -> `$status` 200; ngx.ERROR, ngx.ABORT
//! or an exception -> 500 (`result`).

use pyo3::prelude::*;

use super::result::{verdict, Phase, Verdict, STATUS_ERROR, STATUS_OK};
use super::session::{session_ctx, session_object, SessionCtx};
use super::{env, module, srv_conf, stream_ctx, watch_client};
use crate::executor::{self, Outcome};
use crate::ffi::{self, ngx_int_t, ngx_stream_session_t};
use crate::runtime::errors::log_exception;

pub unsafe extern "C" fn content_handler(s: *mut ngx_stream_session_t) {
    crate::panic_guard::guard((*(*s).connection).log, "python_content", || content_handler_unguarded(s), || finalize(s, STATUS_ERROR))
}

unsafe fn content_handler_unguarded(s: *mut ngx_stream_session_t) {
    let log = (*(*s).connection).log;
    let ctx = match Python::attach(|py| session_ctx(py, s).map_err(|e| log_exception(py, log, "python_content", &e))) {
        Ok(ctx) => ctx,
        Err(()) => return finalize(s, STATUS_ERROR),
    };
    if ctx.waiting.get().is_some() {
        return; // the handler waits (unblock); an event re-ran the phase
    }
    let done = move |rc: Option<ngx_int_t>| {
        // SAFETY: `done` runs only while the session lives (its end cancels).
        unsafe {
            (*stream_ctx::<SessionCtx>(s, module())).waiting.set(None);
            finalize(s, rc.unwrap_or(STATUS_ERROR));
        }
    };
    watch_client(s);
    match executor::run(env(s), move || run_handler(s), done) {
        Outcome::Done(rc) => finalize(s, rc),
        Outcome::Suspended(h) => ctx.waiting.set(Some(h)),
        Outcome::Failed => finalize(s, STATUS_ERROR),
    }
}

/// Ends the session with `$status` = `status` (runs the log phase, closes).
unsafe fn finalize(s: *mut ngx_stream_session_t, status: ngx_int_t) {
    ffi::ngx_stream_finalize_session(s, status as ffi::ngx_uint_t);
}

unsafe fn run_handler(s: *mut ngx_stream_session_t) -> ngx_int_t {
    let Some(handler) = srv_conf(s).content else {
        return STATUS_ERROR;
    };
    let log = (*(*s).connection).log;
    Python::attach(|py| {
        let result = session_object(py, s)
            .and_then(|obj| handler.call(obj.as_any()))
            .and_then(|v| verdict(&v, Phase::Content));
        match result {
            Ok(Verdict::Continue) => STATUS_OK,
            Ok(Verdict::Close(status)) => status,
            Ok(Verdict::Again) => STATUS_ERROR, // not a content result (`verdict` refuses it)
            Err(e) => {
                log_exception(py, log, "python_content", &e);
                STATUS_ERROR
            }
        }
    })
}
