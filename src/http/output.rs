//! Sending the response from Python: `r.sendHeader()` and `r.send()`.
//!
//! Memory stays bounded while streaming: each piece is copied into a pool
//! allocation that is freed (`ngx_pfree`) as soon as nginx has written it
//! out; in unblock builds `r.send` also waits (suspends) while the client
//! connection is busy, so a handler cannot queue more than nginx can send.

use pyo3::exceptions::{PyConnectionError, PyMemoryError};
use pyo3::prelude::*;

use crate::executor;
use crate::ffi::{self, ngx_http_request_t};

/// Sends the header; status 200 unless the handler set one.
///
/// # Safety
/// `r` must be a live request whose header has not been sent.
pub unsafe fn send_header(r: *mut ngx_http_request_t) -> PyResult<()> {
    if (*r).headers_out.status == 0 {
        (*r).headers_out.status = ffi::NGX_HTTP_OK as usize;
    }
    let rc = ffi::ngx_http_send_header(r);
    if rc == ffi::ERROR || rc > ffi::OK {
        return Err(PyConnectionError::new_err("sending the response header failed"));
    }
    Ok(())
}

/// Sends `data` as the next piece of the body; `last` ends the body.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn send(r: *mut ngx_http_request_t, data: &[u8], flush: bool, last: bool, pending: &mut Vec<*mut u8>) -> PyResult<()> {
    if (*r).header_sent() == 0 {
        send_header(r)?;
    }
    if (*r).header_only() != 0 {
        return Ok(()); // HEAD, 304, ...: nginx sends no body
    }
    if data.is_empty() && !flush && !last {
        return Ok(());
    }
    let b = ffi::ngx_pcalloc((*r).pool, std::mem::size_of::<ffi::ngx_buf_t>()) as *mut ffi::ngx_buf_t;
    if b.is_null() {
        return Err(PyMemoryError::new_err("no memory for a buffer"));
    }
    if !data.is_empty() {
        let p = ffi::ngx_palloc((*r).pool, data.len()) as *mut u8;
        if p.is_null() {
            return Err(PyMemoryError::new_err("no memory for the body"));
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len());
        (*b).pos = p;
        (*b).last = p.add(data.len());
        (*b).start = p;
        (*b).end = (*b).last;
        (*b).set_memory(1);
        pending.push(p);
    } else {
        (*b).set_sync(1);
    }
    (*b).set_flush(flush as u32);
    if last {
        (*b).set_last_buf((r == (*r).main) as u32);
        (*b).set_last_in_chain(1);
    }
    let mut out = ffi::ngx_chain_t { buf: b, next: std::ptr::null_mut() };
    let rc = ffi::ngx_http_output_filter(r, &mut out);
    if rc == ffi::ERROR {
        return Err(PyConnectionError::new_err("sending the response body failed"));
    }
    while busy(r) {
        match executor::suspend_current(|_| wait_writable(r)) {
            Some(true) => {}
            Some(false) => return Err(executor::cancelled_error()),
            None => return Ok(()), // cannot wait here: nginx keeps it queued
        }
    }
    if r != (*r).main || !(*r).out.is_null() {
        // Not known to be sent: a subrequest's output may still wait in its
        // parent's postponed list or the connection's buffers (which `busy`
        // cannot see for it), and the write filter keeps pieces below
        // postpone_output in `r->out`. The pool frees them with the request.
        if r != (*r).main {
            pending.clear();
        }
        return Ok(());
    }
    // Everything queued so far is on the wire: its memory can go.
    for p in pending.drain(..) {
        ffi::ngx_pfree((*r).pool, p as *mut std::os::raw::c_void);
    }
    Ok(())
}

/// Output still queued in nginx (filters or the socket).
unsafe fn busy(r: *mut ngx_http_request_t) -> bool {
    (*r).buffered() != 0 || !(*r).postponed.is_null() || (r == (*r).main && (*(*r).connection).buffered() != 0)
}

/// Arms the client connection's write event for the suspended `send`;
/// `on_writable` wakes the handler the request's context says is waiting.
unsafe fn wait_writable(r: *mut ngx_http_request_t) {
    (*r).write_event_handler = Some(on_writable);
    arm_write_event(r);
}

/// Like nginx's own writer: a send_timeout timer, and the write event.
unsafe fn arm_write_event(r: *mut ngx_http_request_t) {
    let clcf = ffi::http_loc_conf::<ffi::ngx_http_core_loc_conf_t>((*r).main, &*(&raw const ffi::ngx_http_core_module));
    let wev = (*(*r).connection).write;
    if (*wev).delayed() == 0 {
        ffi::ngx_python_add_timer(wev, (*clcf).send_timeout);
    }
    if ffi::ngx_handle_write_event(wev, (*clcf).send_lowat) != ffi::OK {
        ffi::ngx_http_finalize_request(r, ffi::ERROR);
    }
}

/// The client connection is writable (or timed out): flush nginx's queue;
/// once it is empty, the waiting `send` goes on. A timeout or an error ends
/// the request, which cancels the handler.
unsafe extern "C" fn on_writable(r: *mut ngx_http_request_t) {
    crate::panic_guard::guard((*(*r).connection).log, "r.send", || on_writable_unguarded(r), || ffi::ngx_http_finalize_request(r, ffi::ERROR))
}

unsafe fn on_writable_unguarded(r: *mut ngx_http_request_t) {
    let c = (*r).connection;
    let wev = (*c).write;
    if (*wev).timedout() != 0 {
        ffi::log_error(ffi::NGX_LOG_INFO as usize, (*c).log, b"client timed out");
        (*c).set_timedout(1);
        ffi::ngx_http_finalize_request(r, ffi::NGX_HTTP_REQUEST_TIME_OUT as ffi::ngx_int_t);
        return;
    }
    if ffi::ngx_http_output_filter(r, std::ptr::null_mut()) == ffi::ERROR {
        ffi::ngx_http_finalize_request(r, ffi::ERROR);
        return;
    }
    if busy(r) {
        arm_write_event(r);
        return;
    }
    ffi::ngx_python_del_timer(wev);
    (*r).write_event_handler = Some(ffi::ngx_http_request_empty_handler);
    // The phase glue recorded the waiting handler when it suspended.
    if let Some(h) = (*super::request::existing_ctx(r)).waiting.get() {
        h.wake();
    }
}

/// Completes the response after a content handler returned: the header if
/// none was sent (an empty body then), and the last buffer.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn finish(r: *mut ngx_http_request_t, body_finished: bool) -> ffi::ngx_int_t {
    if (*r).header_sent() == 0 {
        if (*r).headers_out.content_length_n < 0 && (*r).headers_out.content_length.is_null() {
            (*r).headers_out.content_length_n = 0;
        }
        if send_header(r).is_err() {
            return ffi::ERROR;
        }
    }
    if body_finished || (*r).header_only() != 0 {
        return ffi::OK;
    }
    match send(r, &[], false, true, &mut Vec::new()) {
        Ok(()) => ffi::OK,
        Err(_) => ffi::ERROR,
    }
}
