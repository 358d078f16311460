//! One `PyThreadState` per coroutine.
//!
//! Each suspended handler keeps its own Python frame stack (and, from 3.11,
//! its own frame data stack), exception state, recursion depth and
//! contextvars in its own thread state; the executor swaps it in
//! (`PyThreadState_Swap`) around each resume.
//!
//! The gilstate key: `PyGILState_Ensure()` (called by C extensions such as
//! sqlite3 for user functions, by ctypes callbacks, by pyo3) looks up "this
//! thread's" state in a thread-specific-storage key. Inside a coroutine
//! that key must name the coroutine's state, or Ensure concludes the GIL
//! is not held and waits for it forever. Per version (runtime/version.rs):
//! - 3.12, 3.13: `PyThreadState_Swap` binds the key to the state it makes
//!   current; a swap is all it takes.
//! - 3.9 to 3.11: the swap leaves the key alone, so the executor re-points
//!   it, before the swap (a debug build's swap checks the key against the
//!   new state). CPython keeps the key in a private struct member
//!   (`_PyRuntime.gilstate.autoTSSkey`), re-created by
//!   `PyOS_AfterFork_Child`; this module locates it once per worker, after
//!   the fork, as the pthread key holding the worker's state that
//!   `PyGILState_GetThisThreadState()` follows, and `self_check` refuses
//!   the worker if there is none.
//!
//! Recycling: a finished coroutine's state goes back to a pool (a new one
//! costs an mmap'ed data stack) after `isolated` reset what a handler can
//! leave in it: thread-locals, trace/profile functions, async-generator
//! hooks, coroutine origin tracking. From 3.13 `threading.local` data hangs
//! off the state's own key, which only `PyThreadState_Clear` drops: there
//! the states are not pooled.

use std::cell::{Cell, RefCell};

use pyo3::ffi;

use super::recycle::Recycler;
use crate::runtime::version;

/// glibc's PTHREAD_KEYS_MAX (not in the libc crate).
const PTHREAD_KEYS_MAX: libc::pthread_key_t = 1024;

thread_local! {
    /// 3.9-3.11: the pthread key behind CPython's gilstate key (located by
    /// `self_check` at worker start; None before, or where not needed).
    static GILSTATE_KEY: Cell<Option<libc::pthread_key_t>> = const { Cell::new(None) };
    /// Thread states of finished coroutines, kept for reuse (up to 3.12).
    static POOL: RefCell<Recycler<ThreadState>> =
        const { RefCell::new(Recycler::new(POOLED, !version::THREAD_LOCALS_IN_TSTATE)) };
}
/// Kept while the worker is idle (more while busy, see `recycle`).
const POOLED: usize = if version::THREAD_LOCALS_IN_TSTATE { 0 } else { 256 };

/// 3.9-3.11: the pthread key whose value is the worker's thread state and
/// that `PyGILState_GetThisThreadState()` follows (checked by pointing it
/// at a probe state and back).
///
/// # Safety
/// GIL held on the worker's only thread, outside any coroutine.
unsafe fn locate_gilstate_key() -> Option<libc::pthread_key_t> {
    let main = ffi::PyGILState_GetThisThreadState();
    if main.is_null() || main != ffi::PyThreadState_Get() {
        return None;
    }
    let probe = ffi::PyThreadState_New(ffi::PyInterpreterState_Get());
    let mut found = None;
    for k in 0..PTHREAD_KEYS_MAX {
        if libc::pthread_getspecific(k) as *mut ffi::PyThreadState != main {
            continue;
        }
        libc::pthread_setspecific(k, probe as *const libc::c_void);
        let follows = ffi::PyGILState_GetThisThreadState() == probe;
        libc::pthread_setspecific(k, main as *const libc::c_void);
        if follows {
            found = Some(k);
            break;
        }
    }
    ffi::PyThreadState_Clear(probe);
    ffi::PyThreadState_Delete(probe);
    found
}

/// At worker start (after fork): checks that switching to a coroutine's
/// thread state makes it current for the eval loop and for `PyGILState_*`
/// exactly as this version's mechanism says, and back. Err: the worker
/// must not run handlers as coroutines with this Python.
pub fn self_check() -> Result<(), String> {
    // SAFETY: GIL held on the worker's only thread; no coroutine runs yet;
    // the probe state is created, made current, restored and deleted here.
    unsafe {
        if !version::SWAP_BINDS_GILSTATE {
            match locate_gilstate_key() {
                Some(k) => GILSTATE_KEY.set(Some(k)),
                None => return Err("CPython's gilstate key was not found among the thread's pthread keys".into()),
            }
        }
        let main = ffi::PyThreadState_Get();
        let probe = ThreadState::fresh();
        let prev = probe.enter();
        let inside = (ffi::PyThreadState_Get(), ffi::PyGILState_GetThisThreadState(), ffi::PyGILState_Check());
        restore(prev);
        let after = (ffi::PyThreadState_Get(), ffi::PyGILState_GetThisThreadState());
        let ok = prev == main && inside == (probe.0, probe.0, 1) && after == (main, main);
        drop(probe);
        if ok {
            Ok(())
        } else {
            Err(format!(
                "switching thread states does not behave as expected of Python {} \
                 (current/gilstate/held inside a coroutine: {:?}, expected the coroutine's state)",
                version::LINKED,
                inside
            ))
        }
    }
}

/// Whether C extensions may call `PyGILState_Ensure` inside handlers: the
/// key is bound by the swap (3.12+) or was located at worker start.
pub fn gilstate_supported() -> bool {
    version::SWAP_BINDS_GILSTATE || GILSTATE_KEY.get().is_some()
}

/// A coroutine's own thread state, taken from the per-worker pool (or
/// created) when the coroutine starts and given back when it is done.
pub struct ThreadState(*mut ffi::PyThreadState);

impl ThreadState {
    pub fn new() -> ThreadState {
        POOL.with_borrow_mut(|p| p.take()).unwrap_or_else(ThreadState::fresh)
    }

    fn fresh() -> ThreadState {
        // SAFETY: GIL held; the interpreter is the one running.
        ThreadState(unsafe { ffi::PyThreadState_New(ffi::PyInterpreterState_Get()) })
    }

    /// Back to the pool (or deleted). Only for a state whose task has ended
    /// through `isolated`, so nothing of the task is left in it.
    pub fn recycle(self) {
        POOL.with_borrow_mut(|p| p.give_back(self));
    }

    /// Makes this the current state (for the eval loop and for
    /// `PyGILState_*`); returns the previous one for `restore`.
    pub fn enter(&self) -> *mut ffi::PyThreadState {
        // SAFETY: GIL held; both states belong to this thread.
        unsafe { switch_to(self.0) }
    }

    /// Abandons this state without clearing it (after a stack overflow its
    /// frames may be inconsistent): leaks it, deliberately.
    pub fn abandon(self) {
        POOL.with_borrow_mut(|p| p.lost());
        std::mem::forget(self);
    }
}

/// Runs a handler's task in the current (coroutine) thread state so that it
/// leaves nothing behind for the next task using the same state: a fresh
/// contextvars context; afterwards its thread-local data, trace and profile
/// functions, async-generator hooks and coroutine origin tracking reset.
pub fn isolated(task: impl FnOnce()) {
    // SAFETY: GIL held; runs on the coroutine whose state is current.
    unsafe {
        let ctx = ffi::PyContext_New();
        let entered = !ctx.is_null() && ffi::PyContext_Enter(ctx) == 0;
        task();
        if entered {
            ffi::PyContext_Exit(ctx);
        }
        if !ctx.is_null() {
            ffi::Py_DECREF(ctx);
        }
        let dict = ffi::PyThreadState_GetDict();
        if !dict.is_null() {
            ffi::PyDict_Clear(dict);
        }
        ffi::PyEval_SetTrace(None, std::ptr::null_mut());
        ffi::PyEval_SetProfile(None, std::ptr::null_mut());
        ffi::PyErr_Clear();
    }
    // SAFETY: the GIL is held by the coroutine's (current) state; no
    // PyGILState_Ensure here, the handler's task has returned.
    let py = unsafe { pyo3::Python::assume_attached() };
    if let Some((hooks, depth)) = sys_resetters(py) {
        use pyo3::types::PyAnyMethods;
        let _ = hooks.bind(py).call1((py.None(), py.None()));
        let _ = depth.bind(py).call1((0,));
    }
}

/// `sys.set_asyncgen_hooks` and `sys.set_coroutine_origin_tracking_depth`,
/// looked up once: importing `sys` at every handler's end cost ~12,000
/// instructions per request.
fn sys_resetters(py: pyo3::Python<'_>) -> Option<&'static (pyo3::Py<pyo3::PyAny>, pyo3::Py<pyo3::PyAny>)> {
    use pyo3::types::PyAnyMethods;
    static RESETTERS: pyo3::sync::PyOnceLock<(pyo3::Py<pyo3::PyAny>, pyo3::Py<pyo3::PyAny>)> = pyo3::sync::PyOnceLock::new();
    RESETTERS
        .get_or_try_init(py, || -> pyo3::PyResult<_> {
            let sys = py.import("sys")?;
            Ok((sys.getattr("set_asyncgen_hooks")?.unbind(), sys.getattr("set_coroutine_origin_tracking_depth")?.unbind()))
        })
        .ok()
}

/// Makes `prev` current again.
pub fn restore(prev: *mut ffi::PyThreadState) {
    // SAFETY: `prev` was current before `enter`.
    unsafe { switch_to(prev) };
}

/// # Safety
/// GIL held; `ts` is a live state of this thread's interpreter.
unsafe fn switch_to(ts: *mut ffi::PyThreadState) -> *mut ffi::PyThreadState {
    if !version::SWAP_BINDS_GILSTATE {
        if let Some(k) = GILSTATE_KEY.get() {
            libc::pthread_setspecific(k, ts as *const libc::c_void);
        }
    }
    ffi::PyThreadState_Swap(ts)
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        // SAFETY: GIL held; the state is not current (the coroutine is done).
        unsafe {
            ffi::PyThreadState_Clear(self.0);
            ffi::PyThreadState_Delete(self.0);
        }
    }
}
