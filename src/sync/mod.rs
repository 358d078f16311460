//! The synchronous executor: a handler runs to completion, right away, on
//! nginx's own stack. Blocking Python (time.sleep, sockets) blocks the worker
//! for as long as it waits — the build for handlers that never wait.

use pyo3::prelude::*;

use crate::executor::{Env, Outcome, Waited};
use crate::ffi;

/// Handlers never wait in this build.
pub const SUSPENDS: bool = false;

pub fn wait_event(_ev: *mut ffi::ngx_event_t, _timeout_ms: Option<ffi::ngx_msec_t>) -> Waited {
    Waited::CannotWait
}

/// Never exists: nothing suspends in this build.
#[derive(Clone, Copy)]
pub enum Handle {}

impl Handle {
    pub fn cancel(self) {
        match self {}
    }
    pub fn wake(self) {
        match self {}
    }
}

/// Whether the running Python code may suspend: never in this build.
pub fn can_suspend() -> bool {
    false
}

/// Nothing can wait in this build.
pub fn suspend_current(_arm: impl FnOnce(Handle)) -> Option<bool> {
    None
}

pub fn cancelled_error() -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err("cancelled")
}

pub fn is_cancellation(_py: Python<'_>, _err: &PyErr) -> bool {
    false
}

#[inline]
pub fn run<R: 'static>(_env: Env, task: impl FnOnce() -> R + 'static, _done: impl FnOnce(Option<R>) + 'static) -> Outcome<R> {
    Outcome::Done(task())
}

#[inline]
pub fn run_nonsuspending<R>(task: impl FnOnce() -> R) -> R {
    task()
}

pub fn install(_py: Python<'_>) -> PyResult<()> {
    Ok(())
}

/// Nothing version-specific to check: handlers run on nginx's stack in the
/// worker's own thread state.
pub fn self_check() -> Result<(), String> {
    Ok(())
}

pub fn set_stack_size(_size: usize) {}

pub fn exit_process() {}

/// Nothing finishes later in this build.
pub fn exiting_process() -> bool {
    false
}
