//! `ngx_http_python_module`: the directive table, the configuration, and
//! registration of the phase handlers. One file per phase (`access`,
//! `content`, `log`, `set`) and per API object (`request`, `headers`,
//! `variables`, `output`).

mod access;
mod gate;
mod body;
mod body_filter;
mod content;
pub mod filters;
mod header_filter;
mod headers;
mod log;
mod output;
mod redirect;
pub mod request;
mod rewrite;
mod set;
pub mod subrequest;
mod subrequest_request;
mod subrequest_response;
mod variables;
mod wsgi;
mod wsgi_environ;
mod wsgi_errors;
mod wsgi_input;
mod wsgi_response;

use std::os::raw::{c_char, c_void};
use std::ptr;

use crate::core_module;
use crate::ffi::{self, ngx_command_t, ngx_conf_t, ngx_int_t, ngx_module_t};
use crate::runtime::Handler;

/// Per-location configuration (also what server and http levels hold).
#[derive(Default)]
pub struct LocConf {
    /// `python_rewrite`, in order; empty inherits the parent's.
    rewrite: Vec<Handler>,
    /// `python_access`, in order; empty inherits the parent's.
    access: Vec<Handler>,
    /// `python_log`, in order; empty inherits the parent's.
    log: Vec<Handler>,
    /// `python_content` of this location.
    content: Option<Handler>,
    /// `python_header_filter` / `python_body_filter`; None inherits.
    header_filter: Option<Handler>,
    body_filter: Option<Handler>,
    /// `python_wsgi` in the unblock build: the content handler starts
    /// before the body is in (`wsgi.input` waits for it as it arrives).
    stream_body: bool,
}

const ANY_LEVEL: u32 = ffi::NGX_HTTP_MAIN_CONF | ffi::NGX_HTTP_SRV_CONF | ffi::NGX_HTTP_LOC_CONF;
const LOC_OFFSET: usize = std::mem::offset_of!(ffi::ngx_http_conf_ctx_t, loc_conf);

static mut COMMANDS: [ngx_command_t; 13] = [
    ffi::command(b"python_rewrite\0", ANY_LEVEL | ffi::NGX_CONF_TAKE1, python_rewrite, LOC_OFFSET),
    ffi::command(b"python_wsgi\0", ffi::NGX_HTTP_LOC_CONF | ffi::NGX_HTTP_LIF_CONF | ffi::NGX_CONF_TAKE1, wsgi::python_wsgi, LOC_OFFSET),
    ffi::command(b"python_shared_dict\0", ffi::NGX_HTTP_MAIN_CONF | ffi::NGX_CONF_TAKE2, crate::shared::python_shared_dict, 0),
    ffi::command(b"python\0", ANY_LEVEL | ffi::NGX_CONF_TAKE1, core_module::python, 0),
    ffi::command(b"python_include\0", ANY_LEVEL | ffi::NGX_CONF_TAKE1, core_module::python_include, 0),
    ffi::command(b"python_stack_size\0", ffi::NGX_HTTP_MAIN_CONF | ffi::NGX_CONF_TAKE1, core_module::python_stack_size, 0),
    ffi::command(b"python_set\0", ffi::NGX_HTTP_MAIN_CONF | ffi::NGX_CONF_TAKE2, set::python_set, 0),
    ffi::command(b"python_access\0", ANY_LEVEL | ffi::NGX_CONF_TAKE1, python_access, LOC_OFFSET),
    ffi::command(b"python_log\0", ANY_LEVEL | ffi::NGX_CONF_TAKE1, python_log, LOC_OFFSET),
    ffi::command(
        b"python_content\0",
        ffi::NGX_HTTP_LOC_CONF | ffi::NGX_HTTP_LIF_CONF | ffi::NGX_HTTP_LMT_CONF | ffi::NGX_CONF_TAKE1,
        python_content,
        LOC_OFFSET,
    ),
    ffi::command(b"python_header_filter\0", ANY_LEVEL | ffi::NGX_CONF_TAKE1, header_filter::python_header_filter, LOC_OFFSET),
    ffi::command(b"python_body_filter\0", ANY_LEVEL | ffi::NGX_CONF_TAKE1, body_filter::python_body_filter, LOC_OFFSET),
    ffi::command_end(),
];

static mut CTX: ffi::ngx_http_module_t = ffi::ngx_http_module_t {
    preconfiguration: None,
    postconfiguration: Some(postconfiguration),
    create_main_conf: None,
    init_main_conf: None,
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(create_loc_conf),
    merge_loc_conf: Some(merge_loc_conf),
};

#[no_mangle]
pub static mut ngx_http_python_module: ngx_module_t = ffi::module(
    &raw mut CTX as *mut c_void,
    &raw mut COMMANDS as *mut ngx_command_t,
    ffi::NGX_HTTP_MODULE,
    Some(core_module::init_worker),
    None,
);

/// This module, for ctx/conf lookups.
pub fn module() -> &'static ngx_module_t {
    // SAFETY: nginx writes the module's indexes once, before any request.
    unsafe { &*(&raw const ngx_http_python_module) }
}

unsafe extern "C" fn create_loc_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    crate::panic_guard::guard((*cf).log, "python location configuration", || create_loc_conf_unguarded(cf), || std::ptr::null_mut())
}

unsafe fn create_loc_conf_unguarded(cf: *mut ngx_conf_t) -> *mut c_void {
    ffi::pool_box((*cf).pool, LocConf::default()).map_or(ptr::null_mut(), |p| p as *mut c_void)
}

unsafe extern "C" fn merge_loc_conf(cf: *mut ngx_conf_t, parent: *mut c_void, child: *mut c_void) -> *mut c_char {
    crate::panic_guard::guard_conf(cf, "merge of python_* settings", || merge_loc_conf_unguarded(cf, parent, child))
}

unsafe fn merge_loc_conf_unguarded(_cf: *mut ngx_conf_t, parent: *mut c_void, child: *mut c_void) -> *mut c_char {
    let (parent, child) = (&*(parent as *const LocConf), &mut *(child as *mut LocConf));
    if child.rewrite.is_empty() {
        child.rewrite = parent.rewrite.clone();
    }
    if child.access.is_empty() {
        child.access = parent.access.clone();
    }
    if child.log.is_empty() {
        child.log = parent.log.clone();
    }
    child.header_filter = child.header_filter.or(parent.header_filter);
    child.body_filter = child.body_filter.or(parent.body_filter);
    ptr::null_mut()
}

unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    crate::panic_guard::guard((*cf).log, "python http phases", || postconfiguration_unguarded(cf), || ffi::ERROR)
}

unsafe fn postconfiguration_unguarded(cf: *mut ngx_conf_t) -> ngx_int_t {
    let cmcf = ffi::http_main_conf::<ffi::ngx_http_core_main_conf_t>(cf, &*(&raw const ffi::ngx_http_core_module));
    let phases: [(usize, unsafe extern "C" fn(*mut ffi::ngx_http_request_t) -> ngx_int_t); 3] = [
        (ffi::ngx_http_phases_NGX_HTTP_REWRITE_PHASE as usize, rewrite::rewrite_handler),
        (ffi::ngx_http_phases_NGX_HTTP_ACCESS_PHASE as usize, access::access_handler),
        (ffi::ngx_http_phases_NGX_HTTP_LOG_PHASE as usize, log::log_handler),
    ];
    for (phase, handler) in phases {
        let list = &mut (*cmcf).phases[phase].handlers;
        let h = ffi::ngx_array_push(list) as *mut ffi::ngx_http_handler_pt;
        if h.is_null() {
            return ffi::ERROR;
        }
        *h = Some(handler);
        if phase != ffi::ngx_http_phases_NGX_HTTP_LOG_PHASE as usize {
            // nginx runs a phase's handlers last-pushed first: moved to the
            // front of the list, python_rewrite runs after nginx's own
            // rewrite/set, python_access after nginx's own cheap checks
            // (allow/deny, auth_basic, auth_request), as rewrite_by_lua and
            // access_by_lua do.
            let all = std::slice::from_raw_parts_mut(list.elts as *mut ffi::ngx_http_handler_pt, list.nelts);
            all.rotate_right(1);
        }
    }
    ffi::OK
}

unsafe extern "C" fn python_rewrite(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    crate::panic_guard::guard_conf(cf, "python_rewrite", || core_module::push_handler(cf, &mut (*(conf as *mut LocConf)).rewrite, "r"))
}

unsafe extern "C" fn python_access(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    crate::panic_guard::guard_conf(cf, "python_access", || python_access_unguarded(cf, _cmd, conf))
}

unsafe fn python_access_unguarded(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    core_module::push_handler(cf, &mut (*(conf as *mut LocConf)).access, "r")
}

unsafe extern "C" fn python_log(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    crate::panic_guard::guard_conf(cf, "python_log", || python_log_unguarded(cf, _cmd, conf))
}

unsafe fn python_log_unguarded(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    core_module::push_handler(cf, &mut (*(conf as *mut LocConf)).log, "r")
}

unsafe extern "C" fn python_content(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    crate::panic_guard::guard_conf(cf, "python_content", || python_content_unguarded(cf, _cmd, conf))
}

unsafe fn python_content_unguarded(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    let lcf = &mut *(conf as *mut LocConf);
    if lcf.content.is_some() {
        return c"is duplicate".as_ptr() as *mut c_char;
    }
    let Some(h) = core_module::compile_arg(cf, 1, "r") else { return ffi::CONF_ERROR };
    lcf.content = Some(h);
    let clcf = ffi::http_conf_loc_conf::<ffi::ngx_http_core_loc_conf_t>(cf, &*(&raw const ffi::ngx_http_core_module));
    (*clcf).handler = Some(content::content_handler);
    ptr::null_mut()
}

/// The location configuration of `r`.
///
/// # Safety
/// `r` must be a live request.
unsafe fn loc_conf<'a>(r: *mut ffi::ngx_http_request_t) -> &'a LocConf {
    &*ffi::http_loc_conf::<LocConf>(r, module())
}

/// A handler's return value as an nginx code: None is `DECLINED`, an
/// int is an ngx constant (`OK`, `ERROR`, `DECLINED`, `DONE`) or an HTTP
/// status `lowest`..999 (content: 200, as 1xx are interim responses;
/// access: 300, as a success status there would finalize the request with
/// nothing sent); anything else is a TypeError/ValueError naming `what`.
fn status_of(v: &pyo3::Bound<'_, pyo3::PyAny>, what: &str, lowest: i64) -> pyo3::PyResult<ngx_int_t> {
    use pyo3::exceptions::{PyTypeError, PyValueError};
    use pyo3::types::{PyBool, PyInt};
    use pyo3::types::{PyAnyMethods, PyTypeMethods};
    if v.is_none() {
        return Ok(ffi::DECLINED);
    }
    if v.is_instance_of::<PyInt>() && !v.is_instance_of::<PyBool>() {
        let n: i64 = v.extract()?;
        return match n as ngx_int_t {
            ffi::OK | ffi::ERROR | ffi::DECLINED | ffi::DONE => Ok(n as ngx_int_t),
            _ if (lowest..=999).contains(&n) => Ok(n as ngx_int_t),
            _ => Err(PyValueError::new_err(format!(
                "{what} returned {n}: expected None, ngx.OK, ngx.DECLINED, ngx.ERROR or an HTTP status {lowest}..999"
            ))),
        };
    }
    Err(PyTypeError::new_err(format!(
        "{what} returned {}: expected None, an ngx constant or an HTTP status",
        v.get_type().name()?
    )))
}

/// What a handler of `r` runs with: its log and its location's resolver.
///
/// # Safety
/// `r` must be a live request.
unsafe fn env(r: *mut ffi::ngx_http_request_t) -> crate::executor::Env {
    let clcf = ffi::http_loc_conf::<ffi::ngx_http_core_loc_conf_t>(r, &*(&raw const ffi::ngx_http_core_module));
    crate::executor::Env {
        log: (*(*r).connection).log,
        resolver: (*clcf).resolver,
        resolver_timeout: (*clcf).resolver_timeout,
        after_event: Some(crate::executor::AfterEvent { run: run_posted_requests, data: (*r).connection as *mut c_void }),
    }
}

/// `AfterEvent` of http handlers: nginx's `ngx_http_run_posted_requests`.
///
/// # Safety
/// `c` is an http connection slot (which nginx never frees while the
/// worker runs; a connection whose request ended has `destroyed` set).
unsafe fn run_posted_requests(c: *mut c_void) {
    ffi::ngx_http_run_posted_requests(c as *mut ffi::ngx_connection_t);
}

/// While a handler of `r` waits: notice the client going away (nginx then
/// ends the request, which cancels the handler), ignore writability.
///
/// # Safety
/// `r` must be a live request.
unsafe fn suspend_request(r: *mut ffi::ngx_http_request_t) {
    (*r).read_event_handler = Some(ffi::ngx_http_test_reading);
    (*r).write_event_handler = Some(ffi::ngx_http_request_empty_handler);
}

/// The handler finished: back to nginx's usual event handling.
///
/// # Safety
/// `r` must be a live request.
unsafe fn wake_request(r: *mut ffi::ngx_http_request_t) {
    (*r).read_event_handler = Some(ffi::ngx_http_block_reading);
    (*r).write_event_handler = Some(ffi::ngx_http_core_run_phases);
}
