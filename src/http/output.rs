//! Sending the response from Python: `r.sendHeader()` and `r.send()`.
//!
//! Memory stays bounded while streaming: each piece is copied into a
//! buffer of this module's, reused once nginx has written it out (nginx's
//! busy/free chains, `Chains`); in unblock builds `r.send` also waits
//! (suspends) while the client connection is busy, so a handler cannot
//! queue more than nginx can send.

#![deny(unsafe_op_in_unsafe_fn)]

use pyo3::exceptions::{PyConnectionError, PyMemoryError};
use pyo3::prelude::*;

use crate::executor;
use crate::ffi::{self, ngx_http_request_t};

/// Sends the header; status 200 unless the handler set one.
///
/// # Safety
/// `r` must be a live request whose header has not been sent.
pub unsafe fn send_header(r: *mut ngx_http_request_t) -> PyResult<()> {
    // SAFETY: the caller hands over a live request whose header is not out;
    // nginx owns it and its pool, we only set fields nginx reads next.
    unsafe {
        if (*r).headers_out.status == 0 {
            (*r).headers_out.status = ffi::NGX_HTTP_OK as usize;
        }
        if (*r).headers_out.content_length_n >= 0 {
            // A body of known length can answer a Range request, as static
            // files do; one range only: nginx serves several only from a body
            // in one buffer, and r.send may send it in pieces.
            (*r).set_allow_ranges(1);
            (*r).set_single_range(1);
        }
        let rc = ffi::ngx_http_send_header(r);
        if rc == ffi::ERROR || rc > ffi::OK {
            return Err(PyConnectionError::new_err("sending the response header failed"));
        }
        Ok(())
    }
}

/// The body pieces a handler has queued, kept the way nginx's own modules
/// keep theirs (`ngx_chain_update_chains`): `busy` holds what nginx has not
/// finished writing (its memory must stay), `free` the buffers whose bytes
/// are all out (`pos == last`), reused for the next pieces. A long stream of
/// small sends therefore reuses a few buffers instead of growing the pool.
/// The links point into the request's pool: only used while it lives.
pub struct Chains {
    free: *mut ffi::ngx_chain_t,
    busy: *mut ffi::ngx_chain_t,
}

impl Default for Chains {
    fn default() -> Self {
        Chains { free: std::ptr::null_mut(), busy: std::ptr::null_mut() }
    }
}

/// Marks the buffers this module allocated (nginx's `buf->tag`).
fn tag() -> ffi::ngx_buf_tag_t {
    (&raw const super::ngx_http_python_module) as ffi::ngx_buf_tag_t
}

/// Sends `data` as the next piece of the body; `last` ends the body.
///
/// # Safety
/// `r` must be a live request; `chains` belongs to it.
pub unsafe fn send(r: *mut ngx_http_request_t, data: &[u8], flush: bool, last: bool, chains: &mut Chains) -> PyResult<()> {
    // SAFETY: the caller hands over a live request and its chains. Buffers
    // and links come from the request's pool and live until it is freed;
    // the bytes are copied into memory owned by the buffer (`grow`).
    unsafe {
        if (*r).header_sent() == 0 {
            send_header(r)?;
        }
        if (*r).header_only() != 0 {
            return Ok(()); // HEAD, 304, ...: nginx sends no body
        }
        if data.is_empty() && !flush && !last {
            return Ok(());
        }
        let cl = ffi::ngx_chain_get_free_buf((*r).pool, &mut chains.free);
        if cl.is_null() {
            return Err(PyMemoryError::new_err("no memory for a buffer"));
        }
        let b = (*cl).buf;
        // A reused buffer keeps its memory (start..end), nothing else.
        let (start, end) = if (*b).tag == tag() { ((*b).start, (*b).end) } else { (std::ptr::null_mut(), std::ptr::null_mut()) };
        std::ptr::write_bytes(b, 0, 1);
        (*b).tag = tag();
        (*b).start = start;
        (*b).end = end;
        if !data.is_empty() {
            let have = if start.is_null() { 0 } else { end.offset_from(start) as usize };
            if have < data.len() {
                grow(r, b, data.len())?;
            }
            std::ptr::copy_nonoverlapping(data.as_ptr(), (*b).start, data.len());
            (*b).pos = (*b).start;
            (*b).last = (*b).start.add(data.len());
            (*b).set_memory(1);
        } else {
            (*b).pos = (*b).start;
            (*b).last = (*b).start;
            (*b).set_sync(1);
        }
        (*b).set_flush(flush as u32);
        if last {
            (*b).set_last_buf((r == (*r).main) as u32);
            (*b).set_last_in_chain(1);
        }
        send_chain(r, cl, chains)
    }
}

/// Gives `b` memory for at least `len` bytes: rounded up to a power of two
/// (a stream of growing pieces reallocates a few times, not each time); the
/// old memory is released when it was a large allocation (`ngx_pfree`
/// frees nothing else; small ones go with the pool).
unsafe fn grow(r: *mut ngx_http_request_t, b: *mut ffi::ngx_buf_t, len: usize) -> PyResult<()> {
    // SAFETY: `b` is a buffer of ours from the request's pool, not in
    // nginx's hands (taken from the free chain); its old memory, if any, is
    // our allocation from the same pool, which nobody references now.
    unsafe {
        let size = len.checked_next_power_of_two().unwrap_or(len).max(64);
        let p = ffi::ngx_palloc((*r).pool, size) as *mut u8;
        if p.is_null() {
            return Err(PyMemoryError::new_err("no memory for the body"));
        }
        if !(*b).start.is_null() {
            ffi::ngx_pfree((*r).pool, (*b).start as *mut std::os::raw::c_void);
        }
        (*b).start = p;
        (*b).end = p.add(size);
        Ok(())
    }
}

/// Passes `out` (links from the request's pool) to nginx's output filters,
/// then (unblock builds) waits while the client is slow. What nginx has
/// written becomes free for the next pieces; the rest stays busy.
///
/// # Safety
/// `r` must be a live request whose header is out; `out` a chain of
/// links and buffers in its pool that stay valid until nginx has written
/// them; `chains` belongs to `r`.
pub unsafe fn send_chain(r: *mut ngx_http_request_t, mut out: *mut ffi::ngx_chain_t, chains: &mut Chains) -> PyResult<()> {
    // SAFETY: the caller hands over a live request, a chain in its pool,
    // and the request's chains; nginx's filters take the buffers and mark
    // them written (pos == last); `ngx_chain_update_chains` then moves
    // only those to `free`, so no buffer nginx holds is reused.
    unsafe {
        let rc = ffi::ngx_http_output_filter(r, out);
        ffi::ngx_chain_update_chains((*r).pool, &mut chains.free, &mut chains.busy, &mut out, tag());
        if rc == ffi::ERROR {
            return Err(PyConnectionError::new_err("sending the response body failed"));
        }
        while busy(r) {
            match executor::suspend_current(|_| wait_writable(r)) {
                Some(true) => {}
                Some(false) => return Err(executor::cancelled_error()),
                None => return Ok(()), // cannot wait here: nginx keeps it queued
            }
            let mut none = std::ptr::null_mut();
            ffi::ngx_chain_update_chains((*r).pool, &mut chains.free, &mut chains.busy, &mut none, tag());
        }
        Ok(())
    }
}

/// Output still queued in nginx (filters or the socket).
unsafe fn busy(r: *mut ngx_http_request_t) -> bool {
    // SAFETY: `r` is a live request and its connection nginx's.
    unsafe {
        (*r).buffered() != 0 || !(*r).postponed.is_null() || (r == (*r).main && (*(*r).connection).buffered() != 0)
    }
}

/// Arms the client connection's write event for the suspended `send`;
/// `on_writable` wakes the handler the request's context says is waiting.
unsafe fn wait_writable(r: *mut ngx_http_request_t) {
    // SAFETY: `r` is the live request of the suspending handler; the write
    // handler belongs to it until `on_writable` restores nginx's.
    unsafe {
        (*r).write_event_handler = Some(on_writable);
        arm_write_event(r);
    }
}

/// Like nginx's own writer: a send_timeout timer, and the write event.
unsafe fn arm_write_event(r: *mut ngx_http_request_t) {
    // SAFETY: `r` is live; its main request's location configuration and
    // the connection's write event are nginx's, used as its own writer does.
    unsafe {
        let clcf = ffi::http_loc_conf::<ffi::ngx_http_core_loc_conf_t>((*r).main, &*(&raw const ffi::ngx_http_core_module));
        let wev = (*(*r).connection).write;
        if (*wev).delayed() == 0 {
            ffi::ngx_python_add_timer(wev, (*clcf).send_timeout);
        }
        if ffi::ngx_handle_write_event(wev, (*clcf).send_lowat) != ffi::OK {
            ffi::ngx_http_finalize_request(r, ffi::ERROR);
        }
    }
}

/// The client connection is writable (or timed out): flush nginx's queue;
/// once it is empty, the waiting `send` goes on. A timeout or an error ends
/// the request, which cancels the handler.
unsafe extern "C" fn on_writable(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls this with a live request (its write handler).
    unsafe { crate::panic_guard::guard((*(*r).connection).log, "r.send", || on_writable_unguarded(r), || ffi::ngx_http_finalize_request(r, ffi::ERROR)) }
}

unsafe fn on_writable_unguarded(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls this with a live request whose write event fired;
    // the context (request pool) holds the waiting handler until it ends.
    unsafe {
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
}

/// Completes the response after a content handler returned: the header if
/// none was sent (an empty body then), and the last buffer.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn finish(r: *mut ngx_http_request_t, body_finished: bool) -> ffi::ngx_int_t {
    // SAFETY: the caller hands over a live request of a content handler
    // that returned; the last buffer comes from its pool.
    unsafe {
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
        match send(r, &[], false, true, &mut Chains::default()) {
            Ok(()) => ffi::OK,
            Err(_) => ffi::ERROR,
        }
    }
}
