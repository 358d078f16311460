//! `python_body_filter EXPR`: EXPR is evaluated for each piece of the
//! response body that passes the filter chain, with the locals `r`,
//! `chunk` (bytes: the data of that call's buffers) and `last` (bool: the
//! body ends with it). It returns the bytes to send instead, or None to let
//! the piece through unchanged. It never waits (like `python_set`).
//!
//! Memory stays bounded while streaming: a replaced piece is sent from a
//! buffer this filter owns, and the producer's input buffers are reported
//! consumed only once that replacement has been written out (as nginx's
//! sub_filter does with shadow buffers). A producer that cannot reuse its
//! buffers yet stops reading (proxy_pass: from the upstream or into its
//! temp file), so a slow client never makes this filter queue more.
//!
//! The response's Content-Length (and ranges) go at header time: the
//! filter may change the length. An exception is logged and the
//! response is cut (NGX_ERROR: nginx closes the connection).

use std::collections::VecDeque;
use std::os::raw::{c_char, c_void};
use std::ptr;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use super::filters;
use super::request::request_object;
use super::LocConf;
use crate::core_module;
use crate::executor;
use crate::ffi::{self, ngx_buf_t, ngx_chain_t, ngx_command_t, ngx_conf_t, ngx_http_request_t, ngx_int_t};
use crate::runtime::convert::data_bytes;
use crate::runtime::errors::log_exception;
use crate::runtime::Handler;

pub unsafe extern "C" fn python_body_filter(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    crate::panic_guard::guard_conf(cf, "python_body_filter", || python_body_filter_unguarded(cf, _cmd, conf))
}

unsafe fn python_body_filter_unguarded(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    let lcf = &mut *(conf as *mut LocConf);
    if lcf.body_filter.is_some() {
        return c"is duplicate".as_ptr() as *mut c_char;
    }
    let Some(h) = core_module::compile_arg(cf, 1, "r, chunk, last") else { return ffi::CONF_ERROR };
    lcf.body_filter = Some(h);
    ptr::null_mut()
}

/// A replacement sent down the chain and not yet written out.
struct InFlight {
    buf: *mut ngx_buf_t,
    /// The bytes `buf` points into: owned here until written.
    _data: Vec<u8>,
    /// The producer's buffers it replaces: consumed once it is written.
    inputs: Vec<*mut ngx_buf_t>,
}

/// The body filter of one response (in the request's `FilterCtx`).
pub struct BodyState {
    handler: Handler,
    in_flight: VecDeque<InFlight>,
    /// Buffer headers (pool memory) to reuse for the next replacements.
    free: Vec<*mut ngx_buf_t>,
}

impl BodyState {
    /// At header time: the length of the body is no longer known.
    ///
    /// # Safety
    /// `r` must be a live request in its header filter.
    pub unsafe fn start(r: *mut ngx_http_request_t, handler: Handler) -> BodyState {
        let ho = &mut (*r).headers_out;
        ho.content_length_n = -1;
        if !ho.content_length.is_null() {
            (*ho.content_length).hash = 0;
            ho.content_length = ptr::null_mut();
        }
        (*r).set_allow_ranges(0);
        if !ho.accept_ranges.is_null() {
            (*ho.accept_ranges).hash = 0;
            ho.accept_ranges = ptr::null_mut();
        }
        ffi::ngx_http_weak_etag(r);
        // File buffers are read into memory by the copy filter above this one.
        (*r).set_filter_need_in_memory(1);
        BodyState { handler, in_flight: VecDeque::new(), free: Vec::new() }
    }

    /// Filters one call's chain; Err after a logged failure.
    ///
    /// # Safety
    /// `r` must be a live request, `inp` null or its chain.
    pub unsafe fn filter(&mut self, r: *mut ngx_http_request_t, inp: *mut ngx_chain_t) -> Result<ngx_int_t, ()> {
        self.sweep();
        if inp.is_null() {
            let rc = filters::pass_body(r, inp);
            self.sweep();
            return Ok(rc);
        }
        let log = (*(*r).connection).log;
        let mut data = Vec::new();
        let mut inputs = Vec::new();
        let (mut last_buf, mut last_in_chain, mut flush) = (false, false, false);
        let mut cl = inp;
        while !cl.is_null() {
            let b = (*cl).buf;
            if (*b).in_file() != 0 && (*b).temporary() == 0 && (*b).memory() == 0 && (*b).mmap() == 0 {
                ffi::log_error(ffi::NGX_LOG_ERR as usize, log, b"python_body_filter: a file buffer reached the filter (filter order)");
                return Err(());
            }
            if !(*b).pos.is_null() && (*b).last > (*b).pos {
                data.extend_from_slice(std::slice::from_raw_parts((*b).pos, (*b).last.offset_from((*b).pos) as usize));
            }
            last_buf |= (*b).last_buf() != 0;
            last_in_chain |= (*b).last_in_chain() != 0;
            flush |= (*b).flush() != 0;
            inputs.push(b);
            cl = (*cl).next;
        }
        let last = last_buf || (r != (*r).main && last_in_chain);
        let handler = self.handler;
        let replaced = executor::run_nonsuspending(|| {
            Python::attach(|py| {
                let result = request_object(py, r).and_then(|obj| {
                    let args = PyTuple::new(py, [obj.into_any(), PyBytes::new(py, &data).into_any(), pyo3::types::PyBool::new(py, last).to_owned().into_any()])?;
                    let v = handler.call_with(&args)?;
                    if v.is_none() {
                        return Ok(None);
                    }
                    Ok(Some(data_bytes(&v, "python_body_filter result")?.into_owned()))
                });
                result.map_err(|e| log_exception(py, log, "python_body_filter", &e))
            })
        })?;
        let Some(new) = replaced else {
            let rc = filters::pass_body(r, inp);
            self.sweep();
            return Ok(rc);
        };
        if new.is_empty() && !last_buf && !last_in_chain && !flush {
            consume(&inputs);
            let rc = filters::pass_body(r, ptr::null_mut());
            self.sweep();
            return Ok(rc);
        }
        let b = match self.free.pop() {
            Some(b) => {
                ptr::write_bytes(b, 0, 1);
                b
            }
            None => ffi::ngx_pcalloc((*r).pool, std::mem::size_of::<ngx_buf_t>()) as *mut ngx_buf_t,
        };
        if b.is_null() {
            return Err(());
        }
        if new.is_empty() {
            (*b).set_sync(1);
        } else {
            let p = new.as_ptr() as *mut u8;
            (*b).start = p;
            (*b).pos = p;
            (*b).last = p.add(new.len());
            (*b).end = (*b).last;
            (*b).set_memory(1);
        }
        (*b).set_last_buf(last_buf as u32);
        (*b).set_last_in_chain(last_in_chain as u32);
        (*b).set_flush(flush as u32);
        (*b).tag = filters::module() as *const _ as *mut c_void;
        self.in_flight.push_back(InFlight { buf: b, _data: new, inputs });
        let mut out = ngx_chain_t { buf: b, next: ptr::null_mut() };
        let rc = filters::pass_body(r, &mut out);
        self.sweep();
        Ok(rc)
    }

    /// Replacements the filters below have written out: their memory goes,
    /// and the producer's buffers they stood for become free for reuse.
    unsafe fn sweep(&mut self) {
        while let Some(f) = self.in_flight.front() {
            if (*f.buf).last > (*f.buf).pos {
                break;
            }
            let f = self.in_flight.pop_front().expect("front exists");
            consume(&f.inputs);
            self.free.push(f.buf);
        }
    }
}

/// Marks the producer's buffers as fully sent.
unsafe fn consume(bufs: &[*mut ngx_buf_t]) {
    for &b in bufs {
        (*b).pos = (*b).last;
        if (*b).in_file() != 0 {
            (*b).file_pos = (*b).file_last;
        }
    }
}
