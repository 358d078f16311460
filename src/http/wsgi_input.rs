//! `wsgi.input`: the request body read piece by piece from where nginx
//! keeps it — its memory buffers and, for a body larger than
//! `client_body_buffer_size`, its temporary file (read with `pread` in
//! blocks, so a large upload is never all in memory at once unless the
//! application asks for all of it with `read()`).
//!
//! Sync build: nginx has read the whole body before the application starts
//! (a large one into its temporary file), and `wsgi.input` reads it from
//! there. Unblock build: the application starts after nginx's first read
//! (`request_body_no_buffering`); `wsgi.input` takes the pieces off nginx's
//! chain as it reads them (nginx reuses its one `client_body_buffer_size`
//! buffer once they are consumed) and, when none is there, suspends the
//! handler until the client sends more.

use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use super::request::Request;
use crate::executor;
use crate::ffi::{self, ngx_chain_t, ngx_http_request_t};

/// How much a `readline` or iteration pulls at a time.
const BLOCK: usize = 64 * 1024;

#[pyclass(unsendable, module = "ngx", name = "WsgiInput")]
pub struct Input {
    r: Py<Request>,
    /// The body is still arriving (unblock build): read from the head of
    /// nginx's chain, consuming it.
    streaming: bool,
    /// The link of nginx's body chain read next, and how far into it.
    link: *mut ngx_chain_t,
    off: usize,
    /// Bytes pulled from nginx but not returned yet.
    ahead: Vec<u8>,
    length: Option<usize>,
}

impl Input {
    /// The input of `r`, positioned at the start of the body.
    pub fn new(r: &Bound<'_, Request>) -> PyResult<Self> {
        let req = r.borrow().raw()?;
        // SAFETY: `req` is live; its body chain lives in its pool (each
        // later use re-checks that the request is live).
        let (link, length, streaming) = unsafe {
            let rb = (*req).request_body;
            let declared = (*req).headers_in.content_length_n;
            if rb.is_null() {
                (std::ptr::null_mut(), None, false)
            } else if (*req).reading_body() != 0 {
                // A chunked body's size is unknown until its end (nginx
                // counts in content_length_n as it de-chunks).
                let known = declared >= 0 && (*req).headers_in.chunked() == 0;
                (std::ptr::null_mut(), known.then_some(declared as usize), true)
            } else if (*rb).rest > 0 {
                (std::ptr::null_mut(), None, false)
            } else {
                let total: usize = chain(rb).map(|b| size(b)).sum();
                let has_body = total > 0 || declared >= 0 || (*req).headers_in.chunked() != 0;
                ((*rb).bufs, has_body.then_some(total), false)
            }
        };
        Ok(Input { r: r.clone().unbind(), streaming, link, off: 0, ahead: Vec::new(), length })
    }

    /// CONTENT_LENGTH: the body's size (also for a chunked body, which
    /// nginx has de-chunked); None when the request has no body.
    pub fn content_length(&self) -> Option<usize> {
        self.length
    }

    /// Appends up to `want` more bytes of the body to `ahead`; false at
    /// the end of the body.
    fn pull(&mut self, py: Python<'_>, want: usize) -> PyResult<bool> {
        let req = self.r.borrow(py).raw()?;
        if self.streaming {
            // SAFETY: the request is live (checked above; a wait that
            // outlives it is cancelled and raises).
            return unsafe { self.pull_arriving(req, want) };
        }
        // SAFETY: the request is live (checked above), so is its body chain
        // and, while the chain points at it, nginx's temporary file.
        unsafe {
            while !self.link.is_null() {
                let b = (*self.link).buf;
                let avail = size(b) - self.off;
                if avail == 0 {
                    self.link = (*self.link).next;
                    self.off = 0;
                    continue;
                }
                let n = avail.min(want.max(1));
                let start = self.ahead.len();
                if (*b).in_file() != 0 && !(*b).file.is_null() {
                    self.ahead.resize(start + n, 0);
                    let at = (*b).file_pos + self.off as i64;
                    let got = libc::pread((*(*b).file).fd, self.ahead[start..].as_mut_ptr() as *mut libc::c_void, n, at);
                    if got < 0 || got as usize != n {
                        self.ahead.truncate(start);
                        return Err(PyOSError::new_err("cannot read the request body from nginx's temporary file"));
                    }
                } else {
                    let mem = std::slice::from_raw_parts((*b).pos.add(self.off), n);
                    self.ahead.extend_from_slice(mem);
                }
                self.off += n;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `pull` while the body arrives: the next bytes at the head of nginx's
    /// chain (consumed there: `pos` advances, empty links go), reading more
    /// from the client when it is empty, waiting when nothing came yet.
    unsafe fn pull_arriving(&mut self, req: *mut ngx_http_request_t, want: usize) -> PyResult<bool> {
        let rb = (*req).request_body;
        loop {
            while !(*rb).bufs.is_null() {
                let b = (*(*rb).bufs).buf;
                let avail = size(b);
                if avail == 0 {
                    (*rb).bufs = (*(*rb).bufs).next;
                    continue;
                }
                let n = avail.min(want.max(1));
                let start = self.ahead.len();
                if (*b).in_file() != 0 && !(*b).file.is_null() {
                    self.ahead.resize(start + n, 0);
                    let got = libc::pread((*(*b).file).fd, self.ahead[start..].as_mut_ptr() as *mut libc::c_void, n, (*b).file_pos);
                    if got < 0 || got as usize != n {
                        self.ahead.truncate(start);
                        return Err(PyOSError::new_err("cannot read the request body from nginx's temporary file"));
                    }
                    (*b).file_pos += n as i64;
                } else {
                    self.ahead.extend_from_slice(std::slice::from_raw_parts((*b).pos, n));
                    (*b).pos = (*b).pos.add(n);
                }
                return Ok(true);
            }
            if (*req).reading_body() == 0 {
                return Ok(false);
            }
            let rc = ffi::ngx_http_read_unbuffered_request_body(req);
            if rc == ffi::OK || (rc == ffi::AGAIN && !(*rb).bufs.is_null()) {
                continue;
            }
            if rc != ffi::AGAIN {
                return Err(PyOSError::new_err(format!("reading the request body failed (nginx: {rc})")));
            }
            // nginx armed the read event and client_body_timeout.
            match executor::suspend_current(|_| (*req).read_event_handler = Some(on_body_readable)) {
                Some(true) => {}
                Some(false) => return Err(executor::cancelled_error()),
                None => return Err(PyRuntimeError::new_err("wsgi.input cannot wait for the request body here")),
            }
        }
    }

    fn take<'py>(&mut self, py: Python<'py>, n: usize) -> Bound<'py, PyBytes> {
        let n = n.min(self.ahead.len());
        let out = PyBytes::new(py, &self.ahead[..n]);
        self.ahead.drain(..n);
        out
    }
}

/// More of the body came (or client_body_timeout passed, which the next
/// read reports): wake the handler waiting in `wsgi.input`.
unsafe extern "C" fn on_body_readable(r: *mut ngx_http_request_t) {
    crate::panic_guard::guard((*(*r).connection).log, "wsgi.input", || on_body_readable_unguarded(r), || ffi::ngx_http_finalize_request(r, ffi::ERROR))
}

unsafe fn on_body_readable_unguarded(r: *mut ngx_http_request_t) {
    (*r).read_event_handler = Some(ffi::ngx_http_test_reading);
    if let Some(h) = (*super::request::existing_ctx(r)).waiting.get() {
        h.wake();
    }
}

/// The links of a request body's chain.
unsafe fn chain(rb: *mut ffi::ngx_http_request_body_t) -> impl Iterator<Item = *mut ffi::ngx_buf_t> {
    let mut cl = (*rb).bufs;
    std::iter::from_fn(move || {
        if cl.is_null() {
            return None;
        }
        let b = (*cl).buf;
        cl = (*cl).next;
        Some(b)
    })
}

/// The body bytes a buffer holds (in the file or in memory).
unsafe fn size(b: *mut ffi::ngx_buf_t) -> usize {
    if (*b).in_file() != 0 && !(*b).file.is_null() {
        ((*b).file_last - (*b).file_pos) as usize
    } else if !(*b).pos.is_null() && (*b).last > (*b).pos {
        (*b).last.offset_from((*b).pos) as usize
    } else {
        0
    }
}

#[pymethods]
impl Input {
    /// Up to `size` bytes (all the rest when negative or omitted).
    #[pyo3(signature = (size = -1))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let want = match size {
            Some(n) if n >= 0 => n as usize,
            _ => usize::MAX,
        };
        while self.ahead.len() < want && self.pull(py, want - self.ahead.len())? {}
        Ok(self.take(py, want))
    }

    /// One line, with its b"\n" (at most `size` bytes when given).
    #[pyo3(signature = (size = -1))]
    fn readline<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let limit = match size {
            Some(n) if n >= 0 => n as usize,
            _ => usize::MAX,
        };
        let mut scanned = 0;
        loop {
            if let Some(i) = self.ahead[scanned..].iter().position(|&c| c == b'\n') {
                return Ok(self.take(py, (scanned + i + 1).min(limit)));
            }
            scanned = self.ahead.len();
            if scanned >= limit || !self.pull(py, BLOCK)? {
                return Ok(self.take(py, limit));
            }
        }
    }

    /// The remaining lines (stopping once `hint` bytes are collected).
    #[pyo3(signature = (hint = -1))]
    fn readlines<'py>(&mut self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let hint = hint.filter(|&h| h > 0).map_or(usize::MAX, |h| h as usize);
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.readline(py, None)?;
            if line.as_bytes().is_empty() {
                return Ok(lines);
            }
            total += line.as_bytes().len();
            lines.append(line)?;
            if total >= hint {
                return Ok(lines);
            }
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.readline(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }
}
