//! `r.subrequest(uri, method='GET', args=None, body=None, headers=None)`
//! (unblock builds): starts an nginx subrequest to any location and returns
//! at once a `Response` (subrequest_response.rs) whose attributes wait for
//! it. Several started before any is read run concurrently.
//!
//! How: `ngx_http_subrequest` with NGX_HTTP_SUBREQUEST_BACKGROUND (its
//! output never goes to the client, and the parent's own output is not
//! held back behind it). The filter module (filters.rs) captures the
//! subrequest's header and body instead of passing them on; the body
//! leaves the producer's buffers at once (to memory or a temp file), so
//! nothing is held back. nginx reports the end through the post_subrequest
//! handler or the last buffer; then a posted event (`SubCtx::ev`) wakes
//! the waiting handler from nginx's own stack — never from inside the
//! subrequest's finalization, which is still running at that moment.
//!
//! What the subrequest asks for (method, args, headers, body) is built by
//! subrequest_request.rs.
//!
//! Ownership: `SubCtx` lives in the main request's pool (it is dropped with
//! it, unposting its event); the `Capture` is shared (Rc) with the Python
//! object, which may outlive the request.

use std::os::raw::c_void;
use std::path::PathBuf;
use std::ptr;
use std::rc::Rc;

use pyo3::exceptions::{PyMemoryError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

pub use super::subrequest_request::{helper, Spec};
use super::subrequest_request::{set_method, set_request};
pub use super::subrequest_response::Response;
use super::subrequest_response::Capture;
use crate::executor;
use crate::ffi::{self, ngx_chain_t, ngx_http_request_t, ngx_int_t, ngx_table_elt_t};

/// nginx's side of one subrequest (in the main request's pool).
pub struct SubCtx {
    cap: Rc<Capture>,
    /// Posted to run the subrequest and, when it is complete, to wake the
    /// handler waiting for it.
    ev: ffi::ngx_event_t,
    c: *mut ffi::ngx_connection_t,
    /// Its post_subrequest structure (pool memory), the subrequest's mark.
    ps: *mut ffi::ngx_http_post_subrequest_t,
}

thread_local! {
    /// The post_subrequest structures of the live `SubCtx`s of this worker:
    /// how the filters recognise a subrequest to capture (its address is
    /// compared, never read, unless it is listed here).
    static LIVE: std::cell::RefCell<std::collections::HashSet<usize>> = Default::default();
}

impl Drop for SubCtx {
    fn drop(&mut self) {
        LIVE.with(|l| l.borrow_mut().remove(&(self.ps as usize)));
        // SAFETY: the event is this struct's own; nginx's posted queue
        // must not keep a pointer to it past this point.
        unsafe { ffi::ngx_python_unpost_event(&mut self.ev) };
    }
}

/// Starts the subrequest of `r` described by `spec`.
///
/// # Safety
/// `r` must be a live request whose handler runs now.
pub unsafe fn start(r: *mut ngx_http_request_t, spec: Spec) -> PyResult<Response> {
    if !executor::SUSPENDS {
        return Err(PyRuntimeError::new_err(
            "r.subrequest() needs the unblock build (nginx-python built with the cargo feature `unblock`): \
             this build cannot wait for a subrequest",
        ));
    }
    if !executor::can_suspend() {
        return Err(PyRuntimeError::new_err(
            "r.subrequest() works only in python_access and python_content (handlers that can wait)",
        ));
    }
    let pool = (*r).pool;
    let oom = || PyMemoryError::new_err("no memory for the subrequest");
    let mut uri = ffi::pool_str(pool, &spec.uri).ok_or_else(oom)?;
    let mut args = ffi::NULL_STR;
    let mut flags: ffi::ngx_uint_t = 0;
    if ffi::ngx_http_parse_unsafe_uri(r, &mut uri, &mut args, &mut flags) != ffi::OK {
        return Err(PyValueError::new_err(format!("r.subrequest(): unsafe URI {:?}", String::from_utf8_lossy(&spec.uri))));
    }
    if !spec.query.is_empty() {
        let mut q = ffi::bytes(&args).to_vec();
        if !q.is_empty() {
            q.push(b'&');
        }
        q.extend_from_slice(&spec.query);
        args = ffi::pool_str(pool, &q).ok_or_else(oom)?;
    }
    let clcf = ffi::http_loc_conf::<ffi::ngx_http_core_loc_conf_t>(r, &*(&raw const ffi::ngx_http_core_module));
    let temp_dir = PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(ffi::bytes(&(*(*clcf).client_body_temp_path).name)));
    let cap = Rc::new(Capture::new((*clcf).subrequest_output_buffer_size, temp_dir));
    let c = (*r).connection;
    let sub = ffi::pool_box(pool, SubCtx { cap: cap.clone(), ev: std::mem::zeroed(), c, ps: ptr::null_mut() }).ok_or_else(oom)?;
    (*sub).ev.handler = Some(on_event);
    (*sub).ev.data = sub as *mut c_void;
    (*sub).ev.log = (*c).log;
    let ps = ffi::ngx_pcalloc(pool, std::mem::size_of::<ffi::ngx_http_post_subrequest_t>()) as *mut ffi::ngx_http_post_subrequest_t;
    if ps.is_null() {
        return Err(oom());
    }
    (*ps).handler = Some(post_subrequest);
    (*ps).data = sub as *mut c_void;
    (*sub).ps = ps;
    LIVE.with(|l| l.borrow_mut().insert(ps as usize));
    let mut sr: *mut ngx_http_request_t = ptr::null_mut();
    if ffi::ngx_http_subrequest(r, &mut uri, &mut args, &mut sr, ps, ffi::NGX_HTTP_SUBREQUEST_BACKGROUND as ffi::ngx_uint_t) != ffi::OK {
        return Err(PyRuntimeError::new_err("nginx could not start the subrequest (see the error log)"));
    }
    // From here on the subrequest exists: it runs whatever happens below.
    (*sr).set_filter_need_in_memory(1);
    set_method(sr, &spec.method).ok_or_else(oom)?;
    set_request(sr, &spec).ok_or_else(oom)?;
    // nginx runs posted (sub)requests only at certain points; this event
    // makes sure it does soon, whichever event resumed the handler.
    ffi::ngx_python_post_event(&mut (*sub).ev);
    Ok(Response::new(cap, String::from_utf8_lossy(&spec.uri).into_owned()))
}

/// The capture of `r` if it is a subrequest of `r.subrequest()`: known by
/// its post_subrequest handler, which (unlike module contexts) survives
/// the internal redirects of `error_page`, `try_files`, named locations.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn captured(r: *mut ngx_http_request_t) -> Option<*mut SubCtx> {
    let ps = (*r).post_subrequest;
    if r == (*r).main || ps.is_null() || !LIVE.with(|l| l.borrow().contains(&(ps as usize))) {
        return None;
    }
    Some((*ps).data as *mut SubCtx)
}

/// The subrequest is complete: wake its reader from a posted event.
unsafe fn complete(sub: *mut SubCtx) {
    let cap = &(*sub).cap;
    if !cap.done.replace(true) {
        ffi::ngx_python_post_event(&mut (*sub).ev);
    }
}

unsafe extern "C" fn on_event(ev: *mut ffi::ngx_event_t) {
    crate::panic_guard::guard((*ev).log, "subrequest", || on_event_unguarded(ev), || ())
}

unsafe fn on_event_unguarded(ev: *mut ffi::ngx_event_t) {
    let sub = &*((*ev).data as *const SubCtx);
    let c = sub.c;
    if sub.cap.done.get() {
        if let Some(h) = sub.cap.waiter.take() {
            // May end the main request and free `sub`: not used after this.
            h.wake();
        }
    }
    ffi::ngx_http_run_posted_requests(c);
}

/// nginx finalizes the subrequest with `rc` (possibly more than once: an
/// error status is followed by its error page, which comes through the
/// capture filters, then a final finalization).
unsafe extern "C" fn post_subrequest(sr: *mut ngx_http_request_t, data: *mut c_void, rc: ngx_int_t) -> ngx_int_t {
    crate::panic_guard::guard((*(*sr).connection).log, "subrequest", || post_subrequest_unguarded(sr, data, rc), || ffi::ERROR)
}

unsafe fn post_subrequest_unguarded(sr: *mut ngx_http_request_t, data: *mut c_void, rc: ngx_int_t) -> ngx_int_t {
    let sub = data as *mut SubCtx;
    let cap = &(*sub).cap;
    if cap.done.get() {
        return rc;
    }
    let fatal = rc == ffi::ERROR
        || rc == ffi::NGX_HTTP_REQUEST_TIME_OUT as ngx_int_t
        || rc == ffi::NGX_HTTP_CLIENT_CLOSED_REQUEST as ngx_int_t
        || rc == ffi::NGX_HTTP_CLOSE as ngx_int_t
        || (*(*sr).connection).error() != 0;
    let special = rc >= ffi::NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t
        || rc == ffi::NGX_HTTP_CREATED as ngx_int_t
        || rc == ffi::NGX_HTTP_NO_CONTENT as ngx_int_t;
    if !fatal && special && cap.status.get() == 0 {
        return rc; // nginx now sends that status's response through the filters
    }
    if cap.status.get() == 0 {
        cap.status.set(match rc {
            200..=999 => rc as usize,
            ffi::ERROR => 500,
            _ if (*sr).headers_out.status != 0 => (*sr).headers_out.status,
            _ => 500,
        });
    }
    complete(sub);
    rc
}

/// The header of a captured subrequest: kept, not sent.
///
/// # Safety
/// `sr` must be the live subrequest `sub` belongs to.
pub unsafe fn capture_header(sr: *mut ngx_http_request_t, sub: *mut SubCtx) -> ngx_int_t {
    let cap = &(*sub).cap;
    let ho = &(*sr).headers_out;
    cap.status.set(if ho.status != 0 { ho.status } else { 200 });
    let mut headers = Vec::new();
    if ho.content_type.len > 0 {
        let mut ct = ffi::bytes(&ho.content_type).to_vec();
        if ho.charset.len > 0 && !ct.windows(8).any(|w| w.eq_ignore_ascii_case(b"charset=")) {
            ct.extend_from_slice(b"; charset=");
            ct.extend_from_slice(ffi::bytes(&ho.charset));
        }
        headers.push((b"Content-Type".to_vec(), ct));
    }
    if ho.content_length_n >= 0 && ho.content_length.is_null() {
        headers.push((b"Content-Length".to_vec(), ho.content_length_n.to_string().into_bytes()));
    }
    for h in ffi::list_iter::<ngx_table_elt_t>(&ho.headers).filter(|h| (**h).hash != 0) {
        headers.push((ffi::bytes(&(*h).key).to_vec(), ffi::bytes(&(*h).value).to_vec()));
    }
    *cap.headers.borrow_mut() = headers;
    // What nginx's header filter does for a subrequest: the header counts
    // as sent, and a HEAD has no body.
    (*sr).set_header_sent(1);
    if (*sr).method == ffi::NGX_HTTP_HEAD as ffi::ngx_uint_t {
        (*sr).set_header_only(1);
    }
    ffi::OK
}

/// Body of a captured subrequest: copied out and consumed at once.
///
/// # Safety
/// `sr` must be the live subrequest `sub` belongs to, `inp` null or its chain.
pub unsafe fn capture_body(sr: *mut ngx_http_request_t, sub: *mut SubCtx, inp: *mut ngx_chain_t) -> ngx_int_t {
    let cap = &(*sub).cap;
    let mut last = false;
    let mut cl = inp;
    while !cl.is_null() {
        let b = (*cl).buf;
        if !(*b).pos.is_null() && (*b).last > (*b).pos && !cap.done.get() {
            let data = std::slice::from_raw_parts((*b).pos, (*b).last.offset_from((*b).pos) as usize);
            if let Err(e) = cap.append(data) {
                ffi::log_error(ffi::NGX_LOG_ERR as usize, (*(*sr).connection).log, format!("python subrequest: {e}").as_bytes());
                cap.fail(e);
            }
        }
        (*b).pos = (*b).last;
        if (*b).in_file() != 0 {
            (*b).file_pos = (*b).file_last;
        }
        last |= (*b).last_buf() != 0 || (*b).last_in_chain() != 0;
        cl = (*cl).next;
    }
    if last {
        complete(sub);
    }
    ffi::OK
}
