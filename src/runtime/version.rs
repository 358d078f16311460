//! What this module relies on in each CPython version it was written for,
//! chosen at build time from the version pyo3 links (cfgs `Py_3_12`,
//! `Py_3_13`, ... from build.rs), never discovered by probing. A libpython
//! is only ever loaded at the minor version it was linked against (its
//! soname is libpython3.N), so the build-time version is the running one.
//!
//! | version  | fork (worker start)                          | coroutine thread states (unblock) |
//! |----------|----------------------------------------------|-----------------------------------|
//! | 3.9-3.11 | `PyOS_AfterFork_Child` re-creates the import lock | `PyThreadState_Swap` leaves the gilstate key alone: the executor re-points it (set before the swap: debug builds check the key against the new state) |
//! | 3.12     | same                                          | `PyThreadState_Swap` re-binds the gilstate key itself |
//! | 3.13     | `PyOS_AfterFork_Child` *releases* the import lock `PyOS_BeforeFork` took: the worker takes it first | as 3.12; `threading.local` data hangs off the thread state itself (not its dict), so states are not pooled |
//! | 3.14+    | not written for it: refused at build time     | the gilstate key is a C thread-local, and coroutine stacks must be declared |
//!
//! Free-threaded builds (`Py_GIL_DISABLED`) are refused too: the module
//! holds the GIL for good on nginx's one thread and swaps thread states
//! under it.

#[cfg(Py_3_14)]
compile_error!(
    "nginx-python supports CPython 3.9 to 3.13: 3.14 keeps the gilstate key in a C thread-local and \
     wants each coroutine stack declared (PyUnstable_ThreadState_SetStackProtection), which this \
     version does not do yet; set PYO3_PYTHON to a Python 3.9-3.13"
);

#[cfg(Py_GIL_DISABLED)]
compile_error!("nginx-python needs a CPython with the GIL (a free-threaded 3.13t build is not supported)");

/// "3.13" — the minor version linked, for messages.
pub const LINKED: &str = if cfg!(Py_3_13) {
    "3.13"
} else if cfg!(Py_3_12) {
    "3.12"
} else if cfg!(Py_3_11) {
    "3.11"
} else if cfg!(Py_3_10) {
    "3.10"
} else {
    "3.9"
};

/// Whether `PyOS_AfterFork_Child` releases the import lock (3.13), which
/// `PyOS_BeforeFork` must then have taken.
pub const AFTER_FORK_RELEASES_IMPORT_LOCK: bool = cfg!(Py_3_13);

/// Whether `PyThreadState_Swap` re-binds the gilstate key (3.12+).
pub const SWAP_BINDS_GILSTATE: bool = cfg!(Py_3_12);

/// Whether `threading.local` data lives under the thread state's own key
/// (3.13) rather than in its dict (up to 3.12).
pub const THREAD_LOCALS_IN_TSTATE: bool = cfg!(Py_3_13);
