//! One `PyThreadState` per coroutine.
//!
//! Each suspended handler keeps its own Python frame stack, exception state,
//! recursion depth and contextvars in its own thread state; the executor
//! swaps it in (`PyThreadState_Swap`) around each resume.
//!
//! The trap: `PyGILState_Ensure()` (called by C extensions such as sqlite3
//! for user functions and by ctypes callbacks) looks up "this thread's"
//! state in a thread-specific-storage key that `PyThreadState_Swap` does not
//! update. Inside a coroutine it would find the worker's original state,
//! conclude the GIL is not held, and wait for it forever. So the executor
//! also re-points that key at the coroutine's state while it runs.
//! CPython does not export the key; it is found once per process by looking
//! for the pthread key whose value is the current thread state, and used
//! only after checking that `PyGILState_GetThisThreadState()` follows it.

use std::cell::Cell;

use pyo3::ffi;

/// glibc's PTHREAD_KEYS_MAX (not in the libc crate).
const PTHREAD_KEYS_MAX: libc::pthread_key_t = 1024;

thread_local! {
    /// The pthread key behind CPython's autoTSSkey; None if not found.
    static AUTO_TSS_KEY: Cell<Option<Option<libc::pthread_key_t>>> = const { Cell::new(None) };
}

/// Finds (once) the key CPython's `PyGILState_*` use for this thread.
fn auto_tss_key() -> Option<libc::pthread_key_t> {
    if let Some(k) = AUTO_TSS_KEY.get() {
        return k;
    }
    // SAFETY: GIL held on the worker's only thread; the probe state is
    // created and deleted here, and the key is restored before returning.
    let found = unsafe {
        let main = ffi::PyGILState_GetThisThreadState();
        let mut found = None;
        if !main.is_null() {
            let probe = ffi::PyThreadState_New(ffi::PyInterpreterState_Get());
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
        }
        found
    };
    AUTO_TSS_KEY.set(Some(found));
    found
}

/// Whether C extensions may call `PyGILState_Ensure` inside handlers.
pub fn gilstate_supported() -> bool {
    auto_tss_key().is_some()
}

thread_local! {
    /// Thread states of finished coroutines, kept for reuse: a new one costs
    /// an mmap'ed frame stack that `PyThreadState_Delete` unmaps again.
    static POOL: std::cell::RefCell<Vec<ThreadState>> = const { std::cell::RefCell::new(Vec::new()) };
}
const POOLED: usize = 256;

/// A coroutine's own thread state, taken from the per-worker pool (or
/// created) when the coroutine starts and given back when it is done.
pub struct ThreadState(*mut ffi::PyThreadState);

impl ThreadState {
    pub fn new() -> ThreadState {
        auto_tss_key();
        if let Some(ts) = POOL.with_borrow_mut(|p| p.pop()) {
            return ts;
        }
        // SAFETY: GIL held; the interpreter is the one running.
        ThreadState(unsafe { ffi::PyThreadState_New(ffi::PyInterpreterState_Get()) })
    }

    /// Back to the pool (or deleted). Only for a state whose task has ended
    /// through `isolated`, so nothing of the task is left in it.
    pub fn recycle(self) {
        POOL.with_borrow_mut(|p| {
            if p.len() < POOLED {
                p.push(self);
            }
        });
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
        std::mem::forget(self);
    }
}

/// Runs a handler's task in the current (coroutine) thread state so that it
/// leaves nothing behind for the next task using the same state: a fresh
/// contextvars context, and its threading.local data cleared afterwards.
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
        ffi::PyErr_Clear();
    }
}

/// Makes `prev` current again.
pub fn restore(prev: *mut ffi::PyThreadState) {
    // SAFETY: `prev` was current before `enter`.
    unsafe { switch_to(prev) };
}

unsafe fn switch_to(ts: *mut ffi::PyThreadState) -> *mut ffi::PyThreadState {
    let prev = ffi::PyThreadState_Swap(ts);
    if let Some(k) = auto_tss_key() {
        libc::pthread_setspecific(k, ts as *const libc::c_void);
    }
    prev
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
