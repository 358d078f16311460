//! `ngx_python_module` (core): owns the configuration's Python state and the
//! directives that fill it — `python`, `python_include`, `python_stack_size`
//! — which the http and stream modules list in their tables too, so they
//! work at every level and all fill the one namespace.

use std::os::raw::{c_char, c_void};
use std::ptr;

use pyo3::prelude::*;

use crate::ffi::{self, ngx_command_t, ngx_conf_t, ngx_cycle_t, ngx_int_t, ngx_module_t};
use crate::executor;
use crate::runtime::state::Origin;
use crate::runtime::{errors, interpreter, sys_path as python_path, venv, version, worker_start, Handler, PyState};
use crate::text;

/// The core module's configuration: one per cycle.
pub struct CoreConf {
    /// Made at the configuration's first directive that runs Python (which
    /// starts the interpreter if this is the first configuration).
    state: Option<PyState>,
    conf_prefix: String,
    /// `python_stack_size` (unblock builds); None until set.
    stack_size: Option<usize>,
    /// `python_path` entries, in order (absolute).
    paths: Vec<String>,
    /// `python_venv` (canonical), if given.
    venv: Option<String>,
    /// `python_shared_dict` zones of this configuration (http and stream).
    pub shared: Vec<*mut crate::shared::Zone>,
    /// `python_init_worker`, in order.
    init_worker: Vec<Handler>,
}

const MAIN: u32 = ffi::NGX_MAIN_CONF | ffi::NGX_DIRECT_CONF | ffi::NGX_CONF_TAKE1;

static mut COMMANDS: [ngx_command_t; 7] = [
    ffi::command(b"python\0", MAIN, python, 0),
    ffi::command(b"python_include\0", MAIN, python_include, 0),
    ffi::command(b"python_stack_size\0", MAIN, python_stack_size, 0),
    ffi::command(b"python_venv\0", MAIN, python_venv, 0),
    ffi::command(b"python_path\0", MAIN, python_path, 0),
    ffi::command(b"python_init_worker\0", MAIN, python_init_worker, 0),
    ffi::command_end(),
];

static mut CTX: ffi::ngx_core_module_t = ffi::ngx_core_module_t {
    name: ffi::ngx_string(b"python\0"),
    create_conf: Some(create_conf),
    init_conf: None,
};

#[no_mangle]
pub static mut ngx_python_module: ngx_module_t = ffi::module(
    &raw mut CTX as *mut c_void,
    &raw mut COMMANDS as *mut ngx_command_t,
    ffi::NGX_CORE_MODULE,
    Some(init_process),
    Some(exit_process),
);

/// This cycle's configuration; Python is not started yet (`python_venv`
/// may still say how).
unsafe extern "C" fn create_conf(cycle: *mut ngx_cycle_t) -> *mut c_void {
    crate::panic_guard::guard((*cycle).log, "python configuration", || create_conf_unguarded(cycle), || std::ptr::null_mut())
}

unsafe fn create_conf_unguarded(cycle: *mut ngx_cycle_t) -> *mut c_void {
    let conf_prefix = String::from_utf8_lossy(ffi::bytes(&(*cycle).conf_prefix)).into_owned();
    let conf = CoreConf {
        state: None,
        conf_prefix,
        stack_size: None,
        paths: Vec::new(),
        venv: None,
        shared: Vec::new(),
        init_worker: Vec::new(),
    };
    ffi::pool_box((*cycle).pool, conf).map_or(ptr::null_mut(), |p| p as *mut c_void)
}

/// A forked worker (or cache helper) re-arms Python and checks what this
/// build relies on; if that fails it exits with status 2, which nginx never
/// respawns (see runtime/worker_start.rs).
unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    crate::panic_guard::guard((*cycle).log, "python process start", || init_process_unguarded(cycle), || ffi::ERROR)
}

unsafe fn init_process_unguarded(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // Forked by the master (single-process mode runs in the master itself).
    let forked = [ffi::NGX_PROCESS_WORKER, ffi::NGX_PROCESS_HELPER].map(|p| p as ffi::ngx_uint_t);
    let process = ffi::ngx_process;
    let forked = forked.contains(&process);
    if !interpreter::is_initialized() {
        return ffi::OK; // no python directive: nothing to do
    }
    crate::runtime::gil::event_thread_started();
    let started = worker_start::guarded(|| {
        if forked {
            interpreter::after_fork()?;
        }
        executor::self_check()
    });
    if let Err(e) = started {
        let msg = format!("python: this process cannot run Python {} ({e}); it exits and is not respawned", version::LINKED);
        ffi::log_error(ffi::NGX_LOG_EMERG as usize, (*cycle).log, msg.as_bytes());
        return ffi::ERROR;
    }
    if ffi::ngx_process == ffi::NGX_PROCESS_WORKER as ffi::ngx_uint_t
        || ffi::ngx_process == ffi::NGX_PROCESS_SINGLE as ffi::ngx_uint_t
    {
        crate::runtime::children::keep_from_nginx();
    }
    let conf = ffi::core_conf::<CoreConf>(cycle, &*(&raw const ngx_python_module));
    if let Some(size) = conf.as_ref().and_then(|c| c.stack_size) {
        executor::set_stack_size(size);
    }
    ffi::OK
}

thread_local! {
    static WORKER_STARTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this process is a worker that has started: what may use
/// run-time facilities (shared dicts, timers), unlike configuration code.
pub fn worker_started() -> bool {
    WORKER_STARTED.get()
}

/// The worker's event loop is set up (called from the http module's
/// `init_process`, which nginx runs after the event modules'; this core
/// module's runs before them): timers can be armed and connections taken.
/// Watches for a graceful stop, then runs `python_init_worker` handlers in
/// order; an exception is logged and the worker goes on. Outside any
/// handler: blocking calls really block here.
///
/// # Safety
/// Called by nginx in a starting process with its live cycle.
pub unsafe extern "C" fn init_worker(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    crate::panic_guard::guard((*cycle).log, "python_init_worker", || init_worker_unguarded(cycle), || ffi::ERROR)
}

unsafe fn init_worker_unguarded(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    let worker = ffi::ngx_process == ffi::NGX_PROCESS_WORKER as ffi::ngx_uint_t
        || ffi::ngx_process == ffi::NGX_PROCESS_SINGLE as ffi::ngx_uint_t;
    let conf = ffi::core_conf::<CoreConf>(cycle, &*(&raw const ngx_python_module));
    if !worker || conf.is_null() || !interpreter::is_initialized() {
        return ffi::OK;
    }
    WORKER_STARTED.set(true);
    crate::timers::watch_exit(cycle);
    Python::attach(|py| {
        for h in &(*conf).init_worker {
            if let Err(e) = h.call0(py) {
                errors::log_exception(py, (*cycle).log, "python_init_worker", &e);
            }
        }
    });
    ffi::OK
}

/// Worker exit: timers are cancelled and handlers still waiting unwind
/// (their `finally` blocks run).
unsafe extern "C" fn exit_process(_cycle: *mut ngx_cycle_t) {
    crate::panic_guard::guard((*_cycle).log, "python process exit", || exit_process_unguarded(_cycle), || ())
}

unsafe fn exit_process_unguarded(_cycle: *mut ngx_cycle_t) {
    crate::timers::cancel_all();
    crate::timers::unwatch_exit();
    executor::exit_process();
}

/// The core module's configuration being parsed.
///
/// # Safety
/// `cf` must be the live configuration being parsed.
pub unsafe fn conf<'a>(cf: *mut ngx_conf_t) -> &'a mut CoreConf {
    &mut *ffi::core_conf::<CoreConf>((*cf).cycle, &*(&raw const ngx_python_module))
}

/// `python_init_worker EXPR`: evaluated in each worker after it starts.
///
/// # Safety
/// Called by nginx for the directive, with the live configuration `cf`.
unsafe extern "C" fn python_init_worker(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, _conf: *mut c_void) -> *mut c_char {
    crate::panic_guard::guard_conf(cf, "python_init_worker", || python_init_worker_unguarded(cf, _cmd, _conf))
}

unsafe fn python_init_worker_unguarded(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, _conf: *mut c_void) -> *mut c_char {
    match compile_arg(cf, 1, "") {
        Some(h) => {
            conf(cf).init_worker.push(h);
            ptr::null_mut()
        }
        None => ffi::CONF_ERROR,
    }
}

/// This configuration's Python state, from any directive handler: at the
/// first call, starts Python (first configuration) and makes the namespace;
/// None after logging the `[emerg]`.
///
/// # Safety
/// `cf` must be the live configuration being parsed.
pub unsafe fn state<'a>(cf: *mut ngx_conf_t) -> Option<&'a mut PyState> {
    let conf = conf(cf);
    if conf.state.is_none() {
        if let Some(running) = interpreter::started_with_venv().filter(|r| *r != conf.venv) {
            ffi::conf_error(cf, venv_change_error(&running).as_bytes());
            return None;
        }
        interpreter::ensure_initialized(None);
        let made = Python::attach(|py| {
            // The previous configuration's python_path entries go.
            python_path::forget(py)?;
            PyState::new(py, &conf.conf_prefix)
        });
        match made {
            Ok(state) => conf.state = Some(state),
            Err(e) => {
                let msg = Python::attach(|py| errors::format_exception(py, &e));
                ffi::conf_error(cf, format!("python: cannot create the namespace: {msg}").as_bytes());
                return None;
            }
        }
    }
    conf.state.as_mut()
}

/// Directive argument `i` as text (nginx.conf is read as bytes).
unsafe fn arg(cf: *mut ngx_conf_t, i: usize) -> String {
    String::from_utf8_lossy(ffi::bytes(&ffi::conf_args(cf)[i])).into_owned()
}

/// `python CODE`: runs CODE now, in the namespace.
///
/// # Safety
/// Called by nginx for the directive, with the live configuration `cf`.
pub unsafe extern "C" fn python(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, _conf: *mut c_void) -> *mut c_char {
    crate::panic_guard::guard_conf(cf, "python", || python_unguarded(cf, _cmd, _conf))
}

unsafe fn python_unguarded(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, _conf: *mut c_void) -> *mut c_char {
    let code = arg(cf, 1);
    let Some(state) = state(cf) else { return ffi::CONF_ERROR };
    let (file, end_line) = code_origin(cf, &code);
    let origin = Origin { file: &file, end_line };
    Python::attach(|py| match state.exec(py, &code, &origin) {
        Ok(()) => ptr::null_mut(),
        Err(e) => {
            errors::conf_exception(py, cf, "python", &e);
            ffi::CONF_ERROR
        }
    })
}

/// `python_include FILE`: runs FILE (relative to the conf prefix; a glob
/// runs every match in sorted order, and no match is fine).
///
/// # Safety
/// Called by nginx for the directive, with the live configuration `cf`.
pub unsafe extern "C" fn python_include(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, _conf: *mut c_void) -> *mut c_char {
    crate::panic_guard::guard_conf(cf, "python_include", || python_include_unguarded(cf, _cmd, _conf))
}

unsafe fn python_include_unguarded(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, _conf: *mut c_void) -> *mut c_char {
    let mut name = ffi::conf_args(cf)[1];
    if ffi::ngx_conf_full_name((*cf).cycle, &mut name, 1) != ffi::OK {
        return ffi::CONF_ERROR;
    }
    let path = String::from_utf8_lossy(ffi::bytes(&name)).into_owned();
    let Some(state) = state(cf) else { return ffi::CONF_ERROR };
    Python::attach(|py| {
        let files: Vec<String> = if path.contains(['*', '?', '[']) {
            let found = py
                .import("glob")
                .and_then(|g| g.call_method1("glob", (&path,)))
                .and_then(|l| l.extract::<Vec<String>>());
            match found {
                Ok(mut f) => {
                    f.sort();
                    f
                }
                Err(e) => {
                    errors::conf_exception(py, cf, &format!("python_include \"{path}\""), &e);
                    return ffi::CONF_ERROR;
                }
            }
        } else {
            vec![path.clone()]
        };
        for file in files {
            let code = match std::fs::read(&file) {
                Ok(b) => b,
                Err(e) => {
                    ffi::conf_error(cf, format!("python_include \"{file}\": {e}").as_bytes());
                    return ffi::CONF_ERROR;
                }
            };
            // The bytes go to Python's compiler as they are: it honours a
            // PEP 263 coding cookie and a UTF-8 BOM, and names the file and
            // line of anything it cannot decode (a SyntaxError).
            if let Err(e) = state.exec_file(py, &code, &file) {
                errors::conf_exception(py, cf, &format!("python_include \"{file}\""), &e);
                return ffi::CONF_ERROR;
            }
        }
        ptr::null_mut()
    })
}

/// An absolute path for directive argument 1 (relative to the conf prefix).
unsafe fn full_path_arg(cf: *mut ngx_conf_t) -> Option<String> {
    let mut name = ffi::conf_args(cf)[1];
    if ffi::ngx_conf_full_name((*cf).cycle, &mut name, 1) != ffi::OK {
        return None;
    }
    Some(String::from_utf8_lossy(ffi::bytes(&name)).trim_end_matches('/').to_string())
}

/// `python_venv DIR`: Python starts as DIR/bin/python would (see
/// runtime/venv.rs). The interpreter starts once, with the first
/// configuration: so this must come before any other python directive, and
/// a reload cannot change it (the reload fails; restart nginx).
///
/// # Safety
/// Called by nginx for the directive, with the live configuration `cf`.
pub unsafe extern "C" fn python_venv(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, _conf: *mut c_void) -> *mut c_char {
    crate::panic_guard::guard_conf(cf, "python_venv", || python_venv_unguarded(cf, _cmd, _conf))
}

unsafe fn python_venv_unguarded(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, _conf: *mut c_void) -> *mut c_char {
    let Some(dir) = full_path_arg(cf) else { return ffi::CONF_ERROR };
    let dir = std::fs::canonicalize(&dir).map(|p| p.to_string_lossy().into_owned()).unwrap_or(dir);
    let fail = |msg: String| {
        ffi::conf_error(cf, format!("python_venv \"{dir}\": {msg}").as_bytes());
        ffi::CONF_ERROR
    };
    if conf(cf).state.is_some() {
        return fail("must come before the other python directives (Python has started)".into());
    }
    match interpreter::started_with_venv() {
        Some(Some(running)) if running == dir => {
            conf(cf).venv = Some(dir);
            return ptr::null_mut();
        }
        Some(running) => return fail(venv_change_error(&running)),
        None => {}
    }
    let program = match venv::program(&dir) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    interpreter::ensure_initialized(Some((&dir, &program)));
    conf(cf).venv = Some(dir.clone());
    // site sets sys.prefix to the venv; anything else means it was not used.
    let prefix = Python::attach(|py| py.import("sys")?.getattr("prefix")?.extract::<String>());
    match prefix {
        Ok(p) if std::fs::canonicalize(&p).map(|p| p.to_string_lossy() == dir).unwrap_or(false) => ptr::null_mut(),
        Ok(p) => fail(format!("Python started with sys.prefix \"{p}\", not the venv (is PYTHONHOME set?)")),
        Err(e) => fail(e.to_string()),
    }
}

fn venv_change_error(running: &Option<String>) -> String {
    let was = running.as_ref().map_or("without python_venv".to_string(), |v| format!("with python_venv \"{v}\""));
    format!("Python was started {was} and runs until nginx exits: a reload cannot change python_venv; restart nginx")
}

/// `python_path DIR` (repeatable): DIR (relative to the conf prefix) goes
/// in front of sys.path, after the earlier `python_path`s.
///
/// # Safety
/// Called by nginx for the directive, with the live configuration `cf`.
pub unsafe extern "C" fn python_path(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, _conf: *mut c_void) -> *mut c_char {
    crate::panic_guard::guard_conf(cf, "python_path", || python_path_unguarded(cf, _cmd, _conf))
}

unsafe fn python_path_unguarded(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, _conf: *mut c_void) -> *mut c_char {
    let Some(dir) = full_path_arg(cf) else { return ffi::CONF_ERROR };
    if state(cf).is_none() {
        return ffi::CONF_ERROR;
    }
    let conf = conf(cf);
    match Python::attach(|py| python_path::add(py, conf.paths.len(), &dir)) {
        Ok(()) => {
            conf.paths.push(dir);
            ptr::null_mut()
        }
        Err(e) => {
            Python::attach(|py| errors::conf_exception(py, cf, "python_path", &e));
            ffi::CONF_ERROR
        }
    }
}

/// `python_stack_size SIZE`: one value for the configuration (unblock builds
/// size each handler's C stack with it; the sync build accepts and ignores it).
///
/// # Safety
/// Called by nginx for the directive, with the live configuration `cf`.
pub unsafe extern "C" fn python_stack_size(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, _conf: *mut c_void) -> *mut c_char {
    crate::panic_guard::guard_conf(cf, "python_stack_size", || python_stack_size_unguarded(cf, _cmd, _conf))
}

unsafe fn python_stack_size_unguarded(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, _conf: *mut c_void) -> *mut c_char {
    let value = arg(cf, 1);
    let state = conf(cf);
    if state.stack_size.is_some() {
        return c"is duplicate".as_ptr() as *mut c_char;
    }
    match text::parse_size(&value) {
        Some(n) if n >= 16 * 1024 => {
            state.stack_size = Some(n);
            ptr::null_mut()
        }
        _ => {
            ffi::conf_error(cf, format!("invalid python_stack_size \"{value}\" (at least 16k)").as_bytes());
            ffi::CONF_ERROR
        }
    }
}

/// Directive argument `i` as a variable name to define (`$name`), without
/// the `$`; or logs the `[emerg]` and returns None. For `python_set`.
///
/// # Safety
/// `cf` must be the live configuration being parsed.
pub unsafe fn variable_arg(cf: *mut ngx_conf_t, i: usize) -> Option<ffi::ngx_str_t> {
    let mut name = ffi::conf_args(cf)[i];
    let raw = ffi::bytes(&name);
    if raw.len() < 2 || raw[0] != b'$' {
        ffi::conf_error(cf, format!("invalid variable name \"{}\"", String::from_utf8_lossy(raw)).as_bytes());
        return None;
    }
    name.data = name.data.add(1);
    name.len -= 1;
    Some(name)
}

/// Where a directive's code comes from, for tracebacks: (file, line of
/// the code's last line). Lines written in nginx.conf are nginx.conf's;
/// when `\n` escapes put several lines of code on one line of the file,
/// the code gets a name of its own, `<python at FILE:LINE>` (LINE: where
/// the directive's code starts), whose lines are the code's (kept in
/// `linecache` so that tracebacks show them).
///
/// # Safety
/// `cf` must be the live configuration, in the directive's handler, and
/// `code` the directive's last argument; Python is started (`state`).
unsafe fn code_origin(cf: *mut ngx_conf_t, code: &str) -> (String, usize) {
    let (file, end_line) = ffi::conf_position(cf);
    let lines = code.matches('\n').count();
    match ffi::conf_last_arg_newlines(cf) {
        Some(written) if written < lines => {
            let name = format!("<python at {file}:{}>", end_line.saturating_sub(written).max(1));
            Python::attach(|py| crate::runtime::state::remember_source(py, &name, code));
            (name, lines + 1)
        }
        _ => (file, end_line),
    }
}

/// Compiles `EXPR` (directive argument `i`) into a handler taking `param`,
/// or logs the `[emerg]` and returns None.
///
/// # Safety
/// `cf` must be the live configuration being parsed.
pub unsafe fn compile_arg(cf: *mut ngx_conf_t, i: usize, param: &str) -> Option<Handler> {
    let directive = arg(cf, 0);
    let expr = arg(cf, i);
    let state = state(cf)?;
    let (file, end_line) = code_origin(cf, &expr);
    let origin = Origin { file: &file, end_line };
    Python::attach(|py| match state.compile_handler(py, &expr, &origin, param, &directive) {
        Ok(h) => Some(h),
        Err(e) => {
            errors::conf_exception(py, cf, &directive, &e);
            None
        }
    })
}

/// Compiles the directive's EXPR (taking `param`) and appends it to a
/// level's handler list: `python_access`, `python_preread`, `python_log`.
///
/// # Safety
/// `cf` must be the live configuration being parsed.
pub unsafe fn push_handler(cf: *mut ngx_conf_t, list: &mut Vec<Handler>, param: &str) -> *mut c_char {
    match compile_arg(cf, 1, param) {
        Some(h) => {
            list.push(h);
            ptr::null_mut()
        }
        None => ffi::CONF_ERROR,
    }
}
