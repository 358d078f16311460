//! `ngx_http_python_filter_module`: the module's place in nginx's header
//! and body filter chains. `config` puts it right below the copy filter
//! (which reads file buffers into memory for it) and above gzip, chunked
//! and the writer, as nginx places its own sub_filter.
//!
//! For every response it runs, in order: `python_header_filter` /
//! `python_body_filter` of the request's location (`header_filter`,
//! `body_filter`), then, for a subrequest started by `r.subrequest()`,
//! the capture that keeps its response for Python instead of sending it
//! (`subrequest`). Its per-request state is a `FilterCtx` in this module's
//! own context slot, owned by the request's pool.

use std::os::raw::c_void;
use std::ptr;

use super::body_filter::BodyState;
use super::subrequest;
use crate::ffi::{self, ngx_chain_t, ngx_conf_t, ngx_http_request_t, ngx_int_t, ngx_module_t};

/// What this module keeps per request (and per subrequest). nginx forgets
/// it on an internal redirect, as every module's context: the response
/// after the redirect starts afresh.
#[derive(Default)]
pub struct FilterCtx {
    /// `python_header_filter` raised: nginx sends a 500 instead; the
    /// Python filters do not run on it.
    pub header_failed: bool,
    /// `python_body_filter` runs on this response (set by the header filter).
    pub body: Option<BodyState>,
    /// `python_body_filter` raised: the response is cut (NGX_ERROR).
    pub body_failed: bool,
}

static mut CTX: ffi::ngx_http_module_t = ffi::ngx_http_module_t {
    preconfiguration: None,
    postconfiguration: Some(postconfiguration),
    create_main_conf: None,
    init_main_conf: None,
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: None,
    merge_loc_conf: None,
};

#[no_mangle]
pub static mut ngx_http_python_filter_module: ngx_module_t =
    ffi::module(&raw mut CTX as *mut c_void, ptr::null_mut(), ffi::NGX_HTTP_MODULE, None, None);

static mut NEXT_HEADER: ffi::ngx_http_output_header_filter_pt = None;
static mut NEXT_BODY: ffi::ngx_http_output_body_filter_pt = None;

pub fn module() -> &'static ngx_module_t {
    // SAFETY: nginx writes the module's indexes once, before any request.
    unsafe { &*(&raw const ngx_http_python_filter_module) }
}

unsafe extern "C" fn postconfiguration(_cf: *mut ngx_conf_t) -> ngx_int_t {
    crate::panic_guard::guard((*_cf).log, "python filters", || postconfiguration_unguarded(_cf), || ffi::ERROR)
}

unsafe fn postconfiguration_unguarded(_cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: configuration time, nginx's one thread; each filter module
    // links itself in front of the chain and calls what was there before.
    NEXT_HEADER = ffi::ngx_http_top_header_filter;
    ffi::ngx_http_top_header_filter = Some(header_filter);
    NEXT_BODY = ffi::ngx_http_top_body_filter;
    ffi::ngx_http_top_body_filter = Some(body_filter);
    ffi::OK
}

/// The next header filter of the chain.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn next_header(r: *mut ngx_http_request_t) -> ngx_int_t {
    match NEXT_HEADER {
        Some(f) => f(r),
        None => ffi::OK,
    }
}

/// The next body filter of the chain.
///
/// # Safety
/// `r` must be a live request, `inp` null or its chain.
pub unsafe fn next_body(r: *mut ngx_http_request_t, inp: *mut ngx_chain_t) -> ngx_int_t {
    match NEXT_BODY {
        Some(f) => f(r, inp),
        None => ffi::OK,
    }
}

/// This module's context of `r`, if any.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn ctx<'a>(r: *mut ngx_http_request_t) -> Option<&'a mut FilterCtx> {
    ffi::http_ctx::<FilterCtx>(r, module()).as_mut()
}

/// This module's context of `r`, created (in `r`'s pool) on first use.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn ctx_or_new<'a>(r: *mut ngx_http_request_t) -> Option<&'a mut FilterCtx> {
    if let Some(c) = ctx(r) {
        return Some(c);
    }
    let c = ffi::pool_box((*r).pool, FilterCtx::default())?;
    ffi::http_set_ctx(r, module(), c);
    Some(&mut *c)
}

unsafe extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    crate::panic_guard::guard((*(*r).connection).log, "python_header_filter", || header_filter_unguarded(r), || ffi::ERROR)
}

unsafe fn header_filter_unguarded(r: *mut ngx_http_request_t) -> ngx_int_t {
    let lcf = super::loc_conf(r);
    let failed_before = ctx(r).is_some_and(|c| c.header_failed);
    if !failed_before {
        if let Some(h) = lcf.header_filter {
            if let Err(rc) = super::header_filter::run(r, h) {
                return rc;
            }
        }
        if let Some(h) = lcf.body_filter {
            if (*r).header_only() == 0 {
                let Some(c) = ctx_or_new(r) else { return ffi::ERROR };
                // Once per response: replacements in flight own their memory.
                if c.body.is_none() {
                    c.body = Some(BodyState::start(r, h));
                }
            }
        }
    }
    if let Some(sub) = subrequest::captured(r) {
        return subrequest::capture_header(r, sub);
    }
    next_header(r)
}

unsafe extern "C" fn body_filter(r: *mut ngx_http_request_t, inp: *mut ngx_chain_t) -> ngx_int_t {
    crate::panic_guard::guard((*(*r).connection).log, "python_body_filter", || body_filter_unguarded(r, inp), || ffi::ERROR)
}

unsafe fn body_filter_unguarded(r: *mut ngx_http_request_t, inp: *mut ngx_chain_t) -> ngx_int_t {
    let Some(c) = ctx(r) else { return pass_body(r, inp) };
    if c.body_failed {
        return ffi::ERROR;
    }
    if let (Some(body), false) = (c.body.as_mut(), c.header_failed) {
        return match body.filter(r, inp) {
            Ok(rc) => rc,
            Err(()) => {
                // `c` may be stale after Python ran: look it up again.
                if let Some(c) = ctx(r) {
                    c.body_failed = true;
                }
                ffi::ERROR
            }
        };
    }
    pass_body(r, inp)
}

/// After the Python body filter: the capture of a subrequest, or the rest
/// of the chain.
///
/// # Safety
/// `r` must be a live request, `inp` null or its chain.
pub unsafe fn pass_body(r: *mut ngx_http_request_t, inp: *mut ngx_chain_t) -> ngx_int_t {
    if let Some(sub) = subrequest::captured(r) {
        return subrequest::capture_body(r, sub, inp);
    }
    next_body(r, inp)
}
