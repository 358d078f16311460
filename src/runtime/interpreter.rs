//! Starting CPython inside nginx.
//!
//! The interpreter starts once, in the process that parses the first
//! configuration (the master, or `nginx -t`), and is inherited by workers
//! through fork. nginx is single-threaded, so the process holds the GIL for
//! good: it is never released, and `Python::attach` at each entry point is a
//! cheap re-entry (`PyGILState_Ensure` on the thread that already holds it).

use pyo3::ffi;
use pyo3::types::PyAnyMethods;

use super::ngx_module::ngx;
use super::version;

/// The Python this module was built against (see build.rs).
const PROGRAM: &str = env!("NGX_PYTHON_EXECUTABLE");

/// What the interpreter was started as: None before it starts, then
/// Some(venv directory or None). Master (and `nginx -t`) only.
static STARTED_AS: std::sync::Mutex<Option<Option<String>>> = std::sync::Mutex::new(None);

/// The `python_venv` the running interpreter was started with: None if it
/// has not started, Some(None) if it started without one.
pub fn started_with_venv() -> Option<Option<String>> {
    STARTED_AS.lock().map(|s| s.clone()).unwrap_or(None)
}

/// Whether Python runs in this process (a configuration without any python
/// directive never starts it).
pub fn is_initialized() -> bool {
    // SAFETY: reads a flag of the runtime; callable at any time.
    unsafe { ffi::Py_IsInitialized() != 0 }
}

/// Starts the interpreter if it is not running yet: as `venv`'s
/// bin/python (see venv.rs) or as the Python the module was linked for, so
/// the standard library found is the one matching libpython (PYTHONHOME
/// still wins). Python's own signal handlers stay off: nginx owns SIGINT,
/// SIGHUP, SIGTERM, ...
pub fn ensure_initialized(venv: Option<(&str, &str)>) {
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
        let program = venv.map_or(PROGRAM, |(_, program)| program);
        let program = std::ffi::CString::new(program).expect("no NUL in a path");
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
    if let Ok(mut s) = STARTED_AS.lock() {
        *s = Some(venv.map(|(dir, _)| dir.to_string()));
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
/// In a freshly forked worker (or cache helper), before anything else
/// touches Python: what `PyOS_AfterFork_Child` needs, then that call (it
/// re-creates the GIL and the runtime's locks for this process, drops the
/// thread states of threads that did not survive the fork, and runs
/// `os.register_at_fork(after_in_child=...)` callbacks).
///
/// nginx forks on its own: the master never ran `PyOS_BeforeFork`. Up to
/// 3.12 that is harmless (the child re-creates the import lock). 3.13's
/// child *releases* the import lock that `PyOS_BeforeFork` took, and
/// aborts ("unlocking a recursive mutex that is not owned by the current
/// thread") when this thread does not own it; so the worker takes it
/// first, which leaves it in the state `PyOS_BeforeFork` would have.
/// Err: the worker must not start (a lock held by a thread that did not
/// survive the fork, or a check below failed).
pub fn after_fork() -> Result<(), String> {
    // SAFETY: called once per process, on its only thread, which holds the
    // GIL (the master never releases it).
    if unsafe { ffi::Py_IsInitialized() } == 0 {
        return Ok(());
    }
    if version::AFTER_FORK_RELEASES_IMPORT_LOCK {
        pyo3::Python::attach(|py| -> Result<(), String> {
            let imp = py.import("_imp").map_err(|e| e.to_string())?;
            if import_lock_held(&imp)? {
                return Err("the import lock was held when nginx forked (a thread started by \
                            configuration code was importing): Python cannot run in this worker"
                    .into());
            }
            imp.call_method0("acquire_lock").map_err(|e| e.to_string())?;
            Ok(())
        })?;
    }
    // SAFETY: as above; Python is initialised.
    unsafe { ffi::PyOS_AfterFork_Child() };
    pyo3::Python::attach(|py| {
        let imp = py.import("_imp").map_err(|e| e.to_string())?;
        if import_lock_held(&imp)? {
            return Err(format!("after fork, Python {} left the import lock held", version::LINKED));
        }
        Ok(())
    })
}

fn import_lock_held(imp: &pyo3::Bound<'_, pyo3::types::PyModule>) -> Result<bool, String> {
    imp.call_method0("lock_held").and_then(|b| b.extract::<bool>()).map_err(|e| e.to_string())
}
