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
use crate::runtime::{errors, interpreter, Handler, PyState};
use crate::text;

/// The core module's configuration: one per cycle.
pub struct CoreConf {
    pub state: PyState,
}

const MAIN: u32 = ffi::NGX_MAIN_CONF | ffi::NGX_DIRECT_CONF | ffi::NGX_CONF_TAKE1;

static mut COMMANDS: [ngx_command_t; 4] = [
    ffi::command(b"python\0", MAIN, python, 0),
    ffi::command(b"python_include\0", MAIN, python_include, 0),
    ffi::command(b"python_stack_size\0", MAIN, python_stack_size, 0),
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

/// Starts Python (first configuration only) and makes this cycle's state.
unsafe extern "C" fn create_conf(cycle: *mut ngx_cycle_t) -> *mut c_void {
    interpreter::ensure_initialized();
    let prefix = String::from_utf8_lossy(ffi::bytes(&(*cycle).conf_prefix)).into_owned();
    let state = Python::attach(|py| {
        PyState::new(py, &prefix).map_err(|e| {
            let msg = format!("python: cannot create the namespace: {}", errors::format_exception(py, &e));
            ffi::log_error(ffi::NGX_LOG_EMERG as usize, (*cycle).log, msg.as_bytes());
        })
    });
    match state {
        Ok(state) => ffi::pool_box((*cycle).pool, CoreConf { state }).map_or(ptr::null_mut(), |p| p as *mut c_void),
        Err(()) => ptr::null_mut(),
    }
}

unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    crate::runtime::gil::event_thread_started();
    if ffi::ngx_process == ffi::NGX_PROCESS_WORKER as ffi::ngx_uint_t {
        interpreter::after_fork();
    }
    if ffi::ngx_process == ffi::NGX_PROCESS_WORKER as ffi::ngx_uint_t
        || ffi::ngx_process == ffi::NGX_PROCESS_SINGLE as ffi::ngx_uint_t
    {
        crate::runtime::children::keep_from_nginx();
    }
    let conf = ffi::core_conf::<CoreConf>(cycle, &*(&raw const ngx_python_module));
    if let Some(size) = conf.as_ref().and_then(|c| c.state.stack_size) {
        executor::set_stack_size(size);
    }
    ffi::OK
}

/// Worker exit: handlers still waiting unwind (their `finally` blocks run).
unsafe extern "C" fn exit_process(_cycle: *mut ngx_cycle_t) {
    executor::exit_process();
}

/// This configuration's Python state, from any directive handler.
///
/// # Safety
/// `cf` must be the live configuration being parsed.
pub unsafe fn state<'a>(cf: *mut ngx_conf_t) -> &'a mut PyState {
    let conf = ffi::core_conf::<CoreConf>((*cf).cycle, &*(&raw const ngx_python_module));
    &mut (*conf).state
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
    let code = arg(cf, 1);
    let (file, end_line) = ffi::conf_position(cf);
    let origin = Origin { file: &file, end_line };
    Python::attach(|py| match state(cf).exec(py, &code, &origin) {
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
    let mut name = ffi::conf_args(cf)[1];
    if ffi::ngx_conf_full_name((*cf).cycle, &mut name, 1) != ffi::OK {
        return ffi::CONF_ERROR;
    }
    let path = String::from_utf8_lossy(ffi::bytes(&name)).into_owned();
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
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(e) => {
                    ffi::conf_error(cf, format!("python_include \"{file}\": {e}").as_bytes());
                    return ffi::CONF_ERROR;
                }
            };
            // Line numbers in an included file are its own: it "ends" on
            // its last line.
            let end_line = code.matches('\n').count() + 1;
            let origin = Origin { file: &file, end_line };
            if let Err(e) = state(cf).exec(py, &code, &origin) {
                errors::conf_exception(py, cf, &format!("python_include \"{file}\""), &e);
                return ffi::CONF_ERROR;
            }
        }
        ptr::null_mut()
    })
}

/// `python_stack_size SIZE`: one value for the configuration (unblock builds
/// size each handler's C stack with it; the sync build accepts and ignores it).
///
/// # Safety
/// Called by nginx for the directive, with the live configuration `cf`.
pub unsafe extern "C" fn python_stack_size(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, _conf: *mut c_void) -> *mut c_char {
    let value = arg(cf, 1);
    let state = state(cf);
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

/// Compiles `EXPR` (directive argument `i`) into a handler taking `param`,
/// or logs the `[emerg]` and returns None.
///
/// # Safety
/// `cf` must be the live configuration being parsed.
pub unsafe fn compile_arg(cf: *mut ngx_conf_t, i: usize, param: &str) -> Option<Handler> {
    let directive = arg(cf, 0);
    let expr = arg(cf, i);
    let (file, end_line) = ffi::conf_position(cf);
    let origin = Origin { file: &file, end_line };
    Python::attach(|py| match state(cf).compile_handler(py, &expr, &origin, param, &directive) {
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
