//! Sending the response from Python: `r.sendHeader()` and `r.send()`.

use pyo3::exceptions::{PyConnectionError, PyMemoryError};
use pyo3::prelude::*;

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
pub unsafe fn send(r: *mut ngx_http_request_t, data: &[u8], flush: bool, last: bool) -> PyResult<()> {
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
        let p = ffi::ngx_pnalloc((*r).pool, data.len()) as *mut u8;
        if p.is_null() {
            return Err(PyMemoryError::new_err("no memory for the body"));
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len());
        (*b).pos = p;
        (*b).last = p.add(data.len());
        (*b).start = p;
        (*b).end = (*b).last;
        (*b).set_memory(1);
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
    Ok(())
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
    match send(r, &[], false, true) {
        Ok(()) => ffi::OK,
        Err(_) => ffi::ERROR,
    }
}
