//! Starting CPython inside nginx.
//!
//! The interpreter starts once, in the process that parses the first
//! configuration (the master, or `nginx -t`), and is inherited by workers
//! through fork. nginx is single-threaded, so the process holds the GIL for
//! good: it is never released, and `Python::attach` at each entry point is a
//! cheap re-entry (`PyGILState_Ensure` on the thread that already holds it).

use pyo3::ffi;

/// Starts the interpreter if it is not running yet. Python's own signal
/// handlers stay off: nginx owns SIGINT, SIGHUP, SIGTERM, ...
pub fn ensure_initialized() {
    // SAFETY: nginx parses configuration on one thread; nothing else calls
    // into Python before this returns.
    unsafe {
        if ffi::Py_IsInitialized() != 0 {
            return;
        }
        pyo3::append_to_inittab!(ngx);
        ffi::Py_InitializeEx(0);
    }
    pyo3::Python::attach(|py| {
        if let Err(e) = crate::executor::install(py) {
            e.print(py);
        }
    });
}
use super::ngx_module::ngx;

/// In a freshly forked worker: re-create the GIL and the interpreter's locks
/// (the master never called `PyOS_BeforeFork`, but it is single-threaded, so
/// no lock can be held by a thread that did not survive the fork) and run
/// `os.register_at_fork(after_in_child=...)` callbacks.
pub fn after_fork() {
    // SAFETY: called once per worker, on its only thread, which holds the GIL.
    unsafe {
        if ffi::Py_IsInitialized() != 0 {
            ffi::PyOS_AfterFork_Child();
        }
    }
}
