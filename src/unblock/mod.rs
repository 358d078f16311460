//! The `unblock` executor: access, preread and content handlers run as
//! coroutines on their own C stacks (`coroutine`, with a Python thread
//! state each: `tstate`, and a guard page: `guard`), and blocking Python
//! waits on nginx's event loop (`wait`, exposed to Python by `pymodule` and
//! `resolver`, used by the cooperative socket/time layer `cooperative.py`).

mod coroutine;
mod guard;
mod park;
mod pymodule;
mod readiness;
mod resolver;
mod recycle;
mod reverse;
mod tstate;
mod wait;

use pyo3::prelude::*;

pub use coroutine::Handle;
use crate::executor::{Env, Outcome, Waited};

/// Handlers can wait in this build.
pub const SUSPENDS: bool = true;

/// Waits for `ev` of a connection nginx owns (see `wait::wait_event`).
pub fn wait_event(ev: *mut crate::ffi::ngx_event_t, timeout_ms: Option<crate::ffi::ngx_msec_t>) -> Waited {
    match wait::place() {
        wait::Place::Coroutine(h) => match wait::wait_event(h, ev, timeout_ms) {
            coroutine::Wake::Ready => Waited::Ready,
            coroutine::Wake::Timeout => Waited::Timeout,
            coroutine::Wake::Cancelled => Waited::Cancelled,
        },
        _ => Waited::CannotWait,
    }
}

pub fn run<R: 'static>(env: Env, task: impl FnOnce() -> R + 'static, done: impl FnOnce(Option<R>) + 'static) -> Outcome<R> {
    use std::cell::Cell;
    use std::rc::Rc;
    let slot: Rc<Cell<Option<R>>> = Rc::new(Cell::new(None));
    let (fill, take) = (slot.clone(), slot.clone());
    let started = coroutine::spawn(
        Box::new(move || fill.set(Some(task()))),
        Box::new(move || done(take.take())),
        env,
    );
    match started {
        Ok(Some(h)) => Outcome::Suspended(h),
        Ok(None) => match slot.take() {
            Some(r) => Outcome::Done(r),
            // Overflowed before finishing: the executor logged it.
            None => Outcome::Failed,
        },
        Err(e) => {
            // SAFETY: env.log is the request's live log.
            unsafe { crate::ffi::log_error(crate::ffi::NGX_LOG_ERR as usize, env.log, format!("python: {e}").as_bytes()) };
            Outcome::Failed
        }
    }
}

/// Suspends the running handler after `arm` registered who wakes it
/// (`Handle::wake`). Some(true): woken; Some(false): cancelled (the request
/// ended); None: not in a handler that can wait.
pub fn suspend_current(arm: impl FnOnce(Handle)) -> Option<bool> {
    match wait::place() {
        wait::Place::Coroutine(h) if h.cancelled() => Some(false),
        wait::Place::Coroutine(h) => {
            arm(h);
            Some(coroutine::suspend() != coroutine::Wake::Cancelled)
        }
        _ => None,
    }
}

/// Whether the running Python code may suspend now: it runs in a handler
/// that can wait (access, preread, content) that has not been cancelled.
pub fn can_suspend() -> bool {
    matches!(wait::place(), wait::Place::Coroutine(h) if !h.cancelled())
}

pub fn cancelled_error() -> PyErr {
    pymodule::cancelled()
}

/// Whether `err` is the `ngx.Cancelled` a waiting handler gets when its
/// request or session ends (logged at info, not as an error).
pub fn is_cancellation(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<pymodule::Cancelled>(py)
}

pub fn run_nonsuspending<R>(task: impl FnOnce() -> R) -> R {
    wait::nonsuspending(task)
}

/// Installs the cooperative time.sleep / socket / resolver functions.
pub fn install(py: Python<'_>) -> PyResult<()> {
    let sys_modules = py.import("sys")?.getattr("modules")?;
    let native = PyModule::new(py, "_ngx_unblock")?;
    pymodule::_ngx_unblock(&native)?;
    sys_modules.set_item("_ngx_unblock", &native)?;
    let code = std::ffi::CString::new(include_str!("cooperative.py")).expect("no NUL in cooperative.py");
    let module = PyModule::from_code(py, &code, c"nginx-python/cooperative.py", c"_ngx_cooperative")?;
    sys_modules.set_item("_ngx_cooperative", &module)?;
    module.call_method0("install")?;
    py.import("ngx")?.setattr("Cancelled", native.getattr("Cancelled")?)?;
    // Each layer on its own: one that cannot install (a Python whose
    // internals differ) leaves the others working; its traceback is shown.
    for (source, file, name) in [
        (include_str!("locks.py"), c"nginx-python/locks.py", c"_ngx_locks"),
        (include_str!("names.py"), c"nginx-python/names.py", c"_ngx_names"),
        (include_str!("subprocess.py"), c"nginx-python/subprocess.py", c"_ngx_subprocess"),
    ] {
        if let Err(e) = embedded(py, source, file, name) {
            e.print(py);
        }
    }
    Ok(())
}

/// Runs an embedded module of the cooperative layer and its `install()`.
fn embedded(py: Python<'_>, source: &str, file: &std::ffi::CStr, name: &std::ffi::CStr) -> PyResult<()> {
    let code = std::ffi::CString::new(source).expect("no NUL in embedded Python");
    let module = PyModule::from_code(py, &code, file, name)?;
    py.import("sys")?.getattr("modules")?.set_item(name.to_str().expect("ASCII name"), &module)?;
    module.call_method0("install")?;
    Ok(())
}

/// At worker start: the thread-state switching this build relies on works
/// with the linked Python (see tstate.rs); Err refuses the worker.
pub fn self_check() -> Result<(), String> {
    tstate::self_check()
}

pub fn set_stack_size(size: usize) {
    coroutine::set_stack_size(size);
}

/// Worker exit: waiting handlers get `ngx.Cancelled` and unwind, then
/// their requests and sessions are ended (nginx checks for open
/// connections right after this).
pub fn exit_process() {
    coroutine::shutdown_all();
}

/// Whether the worker is exiting right now (`exit_process`, or a fast
/// shutdown): a handler finishing then must not start anything new. During
/// a graceful quit (also after a stack overflow) in-flight work completes.
pub fn exiting_process() -> bool {
    // SAFETY: a plain read of nginx's flag on the worker's thread.
    coroutine::shutting_down() || unsafe { crate::ffi::ngx_terminate != 0 }
}
