//! `ngx_stream_python_module`: the directive table, the configuration, and
//! registration of the phase handlers for `stream {}`. One file per phase
//! (`gate`: access and preread, `content`, `log`, `set`) and per API object
//! (`session`: `s`, `sock`: `s.sock`); `result` says what a handler's
//! return value means. The runtime, executor, value conversion and error
//! reporting are the ones http uses.

mod content;
mod gate;
mod log;
mod result;
pub mod session;
mod set;
pub mod sock;

use std::os::raw::{c_char, c_void};
use std::ptr;

use crate::core_module;
use crate::ffi::{self, ngx_command_t, ngx_conf_t, ngx_int_t, ngx_module_t, ngx_stream_session_t};
use crate::runtime::Handler;

/// Per-server configuration (also what the `stream` level holds).
#[derive(Default)]
pub struct SrvConf {
    /// `python_access`, in order; empty inherits the parent's.
    access: Vec<Handler>,
    /// `python_preread`, in order; empty inherits the parent's.
    preread: Vec<Handler>,
    /// `python_log`, in order; empty inherits the parent's.
    log: Vec<Handler>,
    /// `python_content` of this server.
    content: Option<Handler>,
}

/// Which phases some server uses: only those get a phase handler, so stream
/// servers without Python do not pass through this module at all.
#[derive(Default)]
pub struct MainConf {
    access: bool,
    preread: bool,
    log: bool,
}

const MAIN: u32 = ffi::NGX_STREAM_MAIN_CONF;
const MAIN_SRV: u32 = ffi::NGX_STREAM_MAIN_CONF | ffi::NGX_STREAM_SRV_CONF;
const SRV_OFFSET: usize = std::mem::offset_of!(ffi::ngx_stream_conf_ctx_t, srv_conf);

static mut COMMANDS: [ngx_command_t; 10] = [
    ffi::command(b"python_shared_dict\0", MAIN | ffi::NGX_CONF_TAKE2, crate::shared::python_shared_dict, 0),
    ffi::command(b"python\0", MAIN_SRV | ffi::NGX_CONF_TAKE1, core_module::python, 0),
    ffi::command(b"python_include\0", MAIN_SRV | ffi::NGX_CONF_TAKE1, core_module::python_include, 0),
    ffi::command(b"python_stack_size\0", MAIN | ffi::NGX_CONF_TAKE1, core_module::python_stack_size, 0),
    ffi::command(b"python_set\0", MAIN | ffi::NGX_CONF_TAKE2, set::python_set, 0),
    ffi::command(b"python_access\0", MAIN_SRV | ffi::NGX_CONF_TAKE1, python_access, SRV_OFFSET),
    ffi::command(b"python_preread\0", MAIN_SRV | ffi::NGX_CONF_TAKE1, python_preread, SRV_OFFSET),
    ffi::command(b"python_log\0", MAIN_SRV | ffi::NGX_CONF_TAKE1, python_log, SRV_OFFSET),
    ffi::command(b"python_content\0", ffi::NGX_STREAM_SRV_CONF | ffi::NGX_CONF_TAKE1, python_content, SRV_OFFSET),
    ffi::command_end(),
];

static mut CTX: ffi::ngx_stream_module_t = ffi::ngx_stream_module_t {
    preconfiguration: None,
    postconfiguration: Some(postconfiguration),
    create_main_conf: Some(create_main_conf),
    init_main_conf: None,
    create_srv_conf: Some(create_srv_conf),
    merge_srv_conf: Some(merge_srv_conf),
};

#[no_mangle]
pub static mut ngx_stream_python_module: ngx_module_t = ffi::module(
    &raw mut CTX as *mut c_void,
    &raw mut COMMANDS as *mut ngx_command_t,
    ffi::NGX_STREAM_MODULE,
    None,
    None,
);

/// This module, for ctx/conf lookups.
pub fn module() -> &'static ngx_module_t {
    // SAFETY: nginx writes the module's indexes once, before any session.
    unsafe { &*(&raw const ngx_stream_python_module) }
}

fn core_module_ref() -> &'static ngx_module_t {
    // SAFETY: as above, for nginx's stream core module.
    unsafe { &*(&raw const ffi::ngx_stream_core_module) }
}

unsafe extern "C" fn create_main_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    crate::panic_guard::guard((*cf).log, "python stream configuration", || create_main_conf_unguarded(cf), || std::ptr::null_mut())
}

unsafe fn create_main_conf_unguarded(cf: *mut ngx_conf_t) -> *mut c_void {
    ffi::pool_box((*cf).pool, MainConf::default()).map_or(ptr::null_mut(), |p| p as *mut c_void)
}

unsafe extern "C" fn create_srv_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    crate::panic_guard::guard((*cf).log, "python stream configuration", || create_srv_conf_unguarded(cf), || std::ptr::null_mut())
}

unsafe fn create_srv_conf_unguarded(cf: *mut ngx_conf_t) -> *mut c_void {
    ffi::pool_box((*cf).pool, SrvConf::default()).map_or(ptr::null_mut(), |p| p as *mut c_void)
}

unsafe extern "C" fn merge_srv_conf(cf: *mut ngx_conf_t, parent: *mut c_void, child: *mut c_void) -> *mut c_char {
    crate::panic_guard::guard_conf(cf, "merge of python_* settings", || merge_srv_conf_unguarded(cf, parent, child))
}

unsafe fn merge_srv_conf_unguarded(_cf: *mut ngx_conf_t, parent: *mut c_void, child: *mut c_void) -> *mut c_char {
    let (parent, child) = (&*(parent as *const SrvConf), &mut *(child as *mut SrvConf));
    for (mine, theirs) in [(&mut child.access, &parent.access), (&mut child.preread, &parent.preread), (&mut child.log, &parent.log)] {
        if mine.is_empty() {
            *mine = theirs.clone();
        }
    }
    ptr::null_mut()
}

type PhaseHandler = unsafe extern "C" fn(*mut ngx_stream_session_t) -> ngx_int_t;

/// Hooks the phases some server uses, so that ours run after nginx's own
/// handlers of each phase: allow/deny refuses before Python runs, and
/// ssl_preread's variables (the SNI name) are there for `python_preread`.
/// Ours return NGX_DECLINED to go on.
unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    crate::panic_guard::guard((*cf).log, "python stream phases", || postconfiguration_unguarded(cf), || ffi::ERROR)
}

unsafe fn postconfiguration_unguarded(cf: *mut ngx_conf_t) -> ngx_int_t {
    let mcf = &*conf_main_conf::<MainConf>(cf, module());
    let cmcf = conf_main_conf::<ffi::ngx_stream_core_main_conf_t>(cf, core_module_ref());
    // The phase engine runs access and preread handlers from the last in
    // the array to the first (so ours go first); the log phase in order.
    let phases: [(bool, ffi::ngx_stream_phases, PhaseHandler, bool); 3] = [
        (mcf.access, ffi::ngx_stream_phases_NGX_STREAM_ACCESS_PHASE, gate::access_handler, true),
        (mcf.preread, ffi::ngx_stream_phases_NGX_STREAM_PREREAD_PHASE, gate::preread_handler, true),
        (mcf.log, ffi::ngx_stream_phases_NGX_STREAM_LOG_PHASE, log::log_handler, false),
    ];
    for (used, phase, handler, first) in phases {
        if used && !add_handler(&mut (*cmcf).phases[phase as usize].handlers, handler, first) {
            return ffi::ERROR;
        }
    }
    ffi::OK
}

/// Adds `handler` to a phase's array, first or last.
///
/// # Safety
/// `handlers` must be a live array of `ngx_stream_handler_pt`.
unsafe fn add_handler(handlers: &mut ffi::ngx_array_t, handler: PhaseHandler, first: bool) -> bool {
    let slot = ffi::ngx_array_push(handlers) as *mut ffi::ngx_stream_handler_pt;
    if slot.is_null() {
        return false;
    }
    slot.write(None);
    let elts = std::slice::from_raw_parts_mut(handlers.elts as *mut ffi::ngx_stream_handler_pt, handlers.nelts);
    let at = if first {
        elts.rotate_right(1);
        0
    } else {
        elts.len() - 1
    };
    elts[at] = Some(handler);
    true
}

unsafe extern "C" fn python_access(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    crate::panic_guard::guard_conf(cf, "python_access", || python_access_unguarded(cf, _cmd, conf))
}

unsafe fn python_access_unguarded(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    (*conf_main_conf::<MainConf>(cf, module())).access = true;
    core_module::push_handler(cf, &mut (*(conf as *mut SrvConf)).access, "s")
}

unsafe extern "C" fn python_preread(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    crate::panic_guard::guard_conf(cf, "python_preread", || python_preread_unguarded(cf, _cmd, conf))
}

unsafe fn python_preread_unguarded(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    (*conf_main_conf::<MainConf>(cf, module())).preread = true;
    core_module::push_handler(cf, &mut (*(conf as *mut SrvConf)).preread, "s")
}

unsafe extern "C" fn python_log(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    crate::panic_guard::guard_conf(cf, "python_log", || python_log_unguarded(cf, _cmd, conf))
}

unsafe fn python_log_unguarded(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    (*conf_main_conf::<MainConf>(cf, module())).log = true;
    core_module::push_handler(cf, &mut (*(conf as *mut SrvConf)).log, "s")
}

/// `python_content EXPR`: the server's content handler, in place of
/// `proxy_pass` or `return` (like them, it sets the core module's handler).
unsafe extern "C" fn python_content(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    crate::panic_guard::guard_conf(cf, "python_content", || python_content_unguarded(cf, _cmd, conf))
}

unsafe fn python_content_unguarded(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    let scf = &mut *(conf as *mut SrvConf);
    if scf.content.is_some() {
        return c"is duplicate".as_ptr() as *mut c_char;
    }
    let Some(h) = core_module::compile_arg(cf, 1, "s") else { return ffi::CONF_ERROR };
    scf.content = Some(h);
    let cscf = conf_srv_conf::<ffi::ngx_stream_core_srv_conf_t>(cf, core_module_ref());
    (*cscf).handler = Some(content::content_handler);
    ptr::null_mut()
}

/// `ngx_stream_conf_get_module_main_conf`.
///
/// # Safety
/// `cf` must be parsing inside `stream {}` (or its postconfiguration).
unsafe fn conf_main_conf<T>(cf: *mut ngx_conf_t, module: &ngx_module_t) -> *mut T {
    let ctx = (*cf).ctx as *mut ffi::ngx_stream_conf_ctx_t;
    *(*ctx).main_conf.add(module.ctx_index) as *mut T
}

/// `ngx_stream_conf_get_module_srv_conf`.
///
/// # Safety
/// `cf` must be parsing inside `stream {}`.
unsafe fn conf_srv_conf<T>(cf: *mut ngx_conf_t, module: &ngx_module_t) -> *mut T {
    let ctx = (*cf).ctx as *mut ffi::ngx_stream_conf_ctx_t;
    *(*ctx).srv_conf.add(module.ctx_index) as *mut T
}

/// `ngx_stream_get_module_srv_conf`.
///
/// # Safety
/// `s` must be a live session.
unsafe fn session_srv_conf<T>(s: *mut ngx_stream_session_t, module: &ngx_module_t) -> *mut T {
    *(*s).srv_conf.add(module.ctx_index) as *mut T
}

/// `ngx_stream_get_module_ctx` / `ngx_stream_set_ctx`.
///
/// # Safety
/// `s` must be a live session.
unsafe fn stream_ctx<T>(s: *mut ngx_stream_session_t, module: &ngx_module_t) -> *mut T {
    *(*s).ctx.add(module.ctx_index) as *mut T
}
unsafe fn stream_set_ctx<T>(s: *mut ngx_stream_session_t, module: &ngx_module_t, ctx: *mut T) {
    *(*s).ctx.add(module.ctx_index) = ctx as *mut c_void;
}

/// The server configuration of `s`.
///
/// # Safety
/// `s` must be a live session.
unsafe fn srv_conf<'a>(s: *mut ngx_stream_session_t) -> &'a SrvConf {
    &*session_srv_conf::<SrvConf>(s, module())
}

/// What a handler of `s` runs with: its log and its server's resolver.
///
/// # Safety
/// `s` must be a live session.
unsafe fn env(s: *mut ngx_stream_session_t) -> crate::executor::Env {
    let cscf = session_srv_conf::<ffi::ngx_stream_core_srv_conf_t>(s, core_module_ref());
    crate::executor::Env {
        log: (*(*s).connection).log,
        resolver: (*cscf).resolver,
        resolver_timeout: (*cscf).resolver_timeout,
        after_event: None,
    }
}

/// While a handler of `s` waits: notice a TCP client closing the connection
/// (nginx then ends the session, which cancels the handler). Set before the
/// handler runs, so what it arms on the connection itself wins.
///
/// # Safety
/// `s` must be a live session.
unsafe fn watch_client(s: *mut ffi::ngx_stream_session_t) {
    let c = (*s).connection;
    if (*c).type_ == libc::SOCK_STREAM {
        (*(*c).read).handler = Some(client_readable);
        // nginx adds a stream connection to epoll only when a handler asks.
        if ffi::ngx_handle_read_event((*c).read, 0) != ffi::OK {
            ffi::log_error(ffi::NGX_LOG_ERR as usize, (*c).log, b"python: cannot watch the client connection");
        }
    }
}

/// The handler finished: nginx's own session handler again.
///
/// # Safety
/// `s` must be a live session.
unsafe fn unwatch_client(s: *mut ffi::ngx_stream_session_t) {
    (*(*(*s).connection).read).handler = Some(ffi::ngx_stream_session_handler);
}

/// Like http's `ngx_http_test_reading`: data stays for the handler to read;
/// end of stream or an error ends the session.
unsafe extern "C" fn client_readable(rev: *mut ffi::ngx_event_t) {
    crate::panic_guard::guard((*rev).log, "a waiting stream session", || client_readable_unguarded(rev), || ())
}

unsafe fn client_readable_unguarded(rev: *mut ffi::ngx_event_t) {
    let c = (*rev).data as *mut ffi::ngx_connection_t;
    let s = (*c).data as *mut ffi::ngx_stream_session_t;
    let mut byte = 0u8;
    let n = libc::recv((*c).fd, &mut byte as *mut u8 as *mut libc::c_void, 1, libc::MSG_PEEK);
    let err = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    if n == 0 || (n < 0 && err != libc::EAGAIN && err != libc::EINTR) {
        ffi::log_error(ffi::NGX_LOG_INFO as usize, (*c).log, b"client closed the connection while the handler waited");
        ffi::ngx_stream_finalize_session(s, ffi::NGX_STREAM_OK as ffi::ngx_uint_t);
    }
}
