//! Access and preread phases: the server's `python_access` /
//! `python_preread` handlers, in order. Each lets the session go on, closes
//! it, or (preread) waits for more data; the two phases differ only in the
//! list that runs and in what the return values mean (`result`).
//!
//! How results map onto nginx's phase checkers
//! (`ngx_stream_core_generic_phase`, `ngx_stream_core_preread_phase`):
//! - go on: NGX_DECLINED, so the phase's other handlers (allow/deny,
//!   ssl_preread) still run; NGX_OK would skip them.
//! - wait for data: NGX_AGAIN; the preread checker reads more (at most
//!   `preread_buffer_size`, within `preread_timeout`) and calls us again,
//!   from the handler that asked.
//! - close: the session's `$status` (400, 403, 500), which the checker
//!   finalizes the session with.
//! - suspended (unblock builds): NGX_DONE; when the handlers finish, their
//!   result is kept in the session's context and the phase engine re-runs
//!   this handler, which returns it.
//!
//! After ngx.AGAIN the handlers run again only when the client has sent
//! more. nginx's preread checker, after a handler returned NGX_AGAIN on its
//! first call of a phase run, peeks the socket (MSG_PEEK: nothing is
//! consumed) and calls the handler with what it finds — the same bytes
//! again when the AGAIN came from a handler that suspended, whose result
//! arrives through a fresh phase run. Running the handlers again on them
//! would repeat forever while the client waits (a busy loop), so the gate
//! answers NGX_AGAIN itself for data it has already answered AGAIN to.

use pyo3::prelude::*;

use super::result::{verdict, Phase, Verdict, STATUS_ERROR};
use super::session::{session_ctx, session_object, SessionCtx};
use super::{env, module, srv_conf, stream_ctx, unwatch_client, watch_client};
use crate::executor::{self, Outcome};
use crate::ffi::{self, ngx_int_t, ngx_stream_session_t};
use crate::runtime::errors::log_exception;
use crate::runtime::Handler;

pub unsafe extern "C" fn access_handler(s: *mut ngx_stream_session_t) -> ngx_int_t {
    crate::panic_guard::guard((*(*s).connection).log, "python_access", || access_handler_unguarded(s), || ffi::ERROR)
}

unsafe fn access_handler_unguarded(s: *mut ngx_stream_session_t) -> ngx_int_t {
    gate(s, Phase::Access)
}

pub unsafe extern "C" fn preread_handler(s: *mut ngx_stream_session_t) -> ngx_int_t {
    crate::panic_guard::guard((*(*s).connection).log, "python_preread", || preread_handler_unguarded(s), || ffi::ERROR)
}

unsafe fn preread_handler_unguarded(s: *mut ngx_stream_session_t) -> ngx_int_t {
    gate(s, Phase::Preread)
}

/// The server's handlers for `phase`.
///
/// # Safety
/// `s` must be a live session.
unsafe fn handlers<'a>(s: *mut ngx_stream_session_t, phase: Phase) -> &'a [Handler] {
    let scf = srv_conf(s);
    match phase {
        Phase::Access => &scf.access,
        Phase::Preread => &scf.preread,
        Phase::Content => &[],
    }
}

unsafe fn gate(s: *mut ngx_stream_session_t, phase: Phase) -> ngx_int_t {
    if handlers(s, phase).is_empty() {
        return ffi::DECLINED;
    }
    let log = (*(*s).connection).log;
    let ctx = match Python::attach(|py| session_ctx(py, s).map_err(|e| log_exception(py, log, phase.directive(), &e))) {
        Ok(ctx) => ctx,
        Err(()) => return STATUS_ERROR,
    };
    if let Some(rc) = ctx.resumed_rc.take() {
        return rc; // the handlers finished after suspending
    }
    if ctx.waiting.get().is_some() {
        return ffi::DONE; // still waiting (an event re-ran the phase)
    }
    let have = buffered(s);
    if phase == Phase::Preread && ctx.preread_asked_at.get() == Some(have) {
        return ffi::AGAIN; // nothing new since the handler asked for more
    }
    let done = move |rc: Option<ngx_int_t>| {
        // SAFETY: `done` runs only while the session lives (its end cancels).
        unsafe {
            let ctx = &*stream_ctx::<SessionCtx>(s, module());
            ctx.waiting.set(None);
            unwatch_client(s);
            match rc {
                Some(rc) if !executor::exiting_process() => {
                    note_again(ctx, phase, rc, have);
                    ctx.resumed_rc.set(Some(rc));
                    ffi::ngx_stream_core_run_phases(s);
                }
                // The handler died, or the worker exits: end the session.
                _ => ffi::ngx_stream_finalize_session(s, STATUS_ERROR as ffi::ngx_uint_t),
            }
        }
    };
    watch_client(s);
    let outcome = executor::run(env(s), move || run_handlers(s, phase), done);
    if !matches!(outcome, Outcome::Suspended(_)) {
        unwatch_client(s);
    }
    match outcome {
        Outcome::Done(rc) => {
            note_again(ctx, phase, rc, have);
            rc
        }
        Outcome::Suspended(h) => {
            ctx.waiting.set(Some(h));
            ffi::DONE
        }
        Outcome::Failed => STATUS_ERROR,
    }
}

/// Remembers how much data a preread AGAIN was the answer to.
fn note_again(ctx: &SessionCtx, phase: Phase, rc: ngx_int_t, have: usize) {
    if phase == Phase::Preread {
        ctx.preread_asked_at.set((rc == ffi::AGAIN).then_some(have));
    }
}

/// Bytes in the client connection's buffer (what `s.buf` shows).
///
/// # Safety
/// `s` must be a live session.
unsafe fn buffered(s: *mut ngx_stream_session_t) -> usize {
    let b = (*(*s).connection).buffer;
    if b.is_null() || (*b).pos.is_null() || (*b).last <= (*b).pos {
        0
    } else {
        (*b).last.offset_from((*b).pos) as usize
    }
}

unsafe fn run_handlers(s: *mut ngx_stream_session_t, phase: Phase) -> ngx_int_t {
    let log = (*(*s).connection).log;
    Python::attach(|py| {
        let (ctx, obj) = match session_ctx(py, s).and_then(|ctx| Ok((ctx, session_object(py, s)?))) {
            Ok(found) => found,
            Err(e) => {
                log_exception(py, log, phase.directive(), &e);
                return STATUS_ERROR;
            }
        };
        // Preread resumes at the handler that asked for more data.
        let first = if phase == Phase::Preread { ctx.preread_next.get() } else { 0 };
        let session = obj.borrow();
        if let Err(e) = session.freeze_buf(py) {
            log_exception(py, log, phase.directive(), &e);
            return STATUS_ERROR;
        }
        let rc = 'run: {
            for (i, h) in handlers(s, phase).iter().enumerate().skip(first) {
                match h.call(obj.as_any()).and_then(|v| verdict(&v, phase)) {
                    Ok(Verdict::Continue) => {}
                    Ok(Verdict::Again) => {
                        ctx.preread_next.set(i);
                        break 'run ffi::AGAIN;
                    }
                    Ok(Verdict::Close(status)) => break 'run status,
                    Err(e) => {
                        log_exception(py, log, phase.directive(), &e);
                        break 'run STATUS_ERROR;
                    }
                }
            }
            ffi::DECLINED
        };
        session.thaw_buf();
        rc
    })
}
