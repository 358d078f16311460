//! Starting CPython inside nginx.
//!
//! The interpreter starts once, in the process that parses the first
//! configuration (the master, or `nginx -t`), and is inherited by workers
//! through fork. nginx is single-threaded, so the process holds the GIL for
//! good: it is never released, and `Python::attach` at each entry point is a
//! cheap re-entry (`PyGILState_Ensure` on the thread that already holds it).

use pyo3::ffi;

/// The Python this module was built against (see build.rs).
const PROGRAM: &str = env!("NGX_PYTHON_EXECUTABLE");

/// Starts the interpreter if it is not running yet. Python's own signal
/// handlers stay off: nginx owns SIGINT, SIGHUP, SIGTERM, ... The program
/// name is the interpreter the module was linked for, so the standard
/// library found is the one matching libpython (PYTHONHOME still wins).
pub fn ensure_initialized() {
    // SAFETY: nginx parses configuration on one thread; nothing else calls
    // into Python before this returns.
    unsafe {
        if ffi::Py_IsInitialized() != 0 {
            return;
        }
        pyo3::append_to_inittab!(ngx);
        let mut config: ffi::PyConfig = std::mem::zeroed();
        ffi::PyConfig_InitPythonConfig(&mut config);
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        let program = std::ffi::CString::new(PROGRAM).expect("no NUL in a path");
        let mut status = ffi::PyConfig_SetBytesString(&mut config, &mut config.program_name, program.as_ptr());
        if ffi::PyStatus_Exception(status) == 0 {
            status = ffi::Py_InitializeFromConfig(&config);
        }
        ffi::PyConfig_Clear(&mut config);
        if ffi::PyStatus_Exception(status) != 0 {
            // Python cannot start (e.g. no standard library): say why and
            // stop, as nginx does for a broken configuration.
            ffi::Py_ExitStatusException(status);
        }
    }
    pyo3::Python::attach(|py| {
        // Threads first: the executor's layer (unblock: locks.py) uses it.
        if let Err(e) = super::gil::install(py) {
            e.print(py);
        }
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
