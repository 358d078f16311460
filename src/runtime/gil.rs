//! Letting other Python threads run while the worker sleeps in its event
//! wait.
//!
//! The worker holds the GIL for good (see `interpreter`), so a thread that
//! Python code starts in a worker (an exporter, a pool thread) would only
//! run when the worker's own Python code gives the GIL away, and never
//! while the worker sits idle in `epoll_wait`. So, from the first thread a
//! worker starts on, the event module's `process_events` is wrapped: while
//! such threads exist, the GIL is released around it. nginx calls event
//! handlers (which run Python) from inside `process_events`; the wrapper
//! passes `NGX_POST_EVENTS`, which makes the event module queue them
//! instead (as it does under `accept_mutex`), and nginx runs the queue
//! right after `process_events` returns — by then the GIL is held again.
//!
//! Threads are counted by the `_thread.start_new_thread` wrapper of
//! `threads.py`; threads that C code starts on its own are not seen.

use std::sync::atomic::{AtomicIsize, Ordering};

use pyo3::prelude::*;

use crate::ffi;

/// Python threads started (through `_thread`) and not yet finished.
static THREADS: AtomicIsize = AtomicIsize::new(0);

type ProcessEvents = unsafe extern "C" fn(*mut ffi::ngx_cycle_t, ffi::ngx_msec_t, ffi::ngx_uint_t) -> ffi::ngx_int_t;

thread_local! {
    /// The event module's own `process_events`, once wrapped (worker thread).
    static ORIGINAL: std::cell::Cell<Option<ProcessEvents>> = const { std::cell::Cell::new(None) };
}

unsafe extern "C" fn process_events(
    cycle: *mut ffi::ngx_cycle_t,
    timer: ffi::ngx_msec_t,
    flags: ffi::ngx_uint_t,
) -> ffi::ngx_int_t {
    // SAFETY: the cycle's log lives as long as the worker.
    crate::panic_guard::guard((*cycle).log, "the event loop wrapper", || {
        let original = ORIGINAL.get().expect("installed before use");
        if THREADS.load(Ordering::Acquire) <= 0 {
            return original(cycle, timer, flags);
        }
        // SAFETY: nginx's event loop runs on the worker's thread, which holds
        // the GIL with its own thread state current (no handler is running).
        // While released, nothing here touches Python: with NGX_POST_EVENTS
        // the event module only queues handlers, and they run after the GIL is
        // taken back below.
        let ts = pyo3::ffi::PyEval_SaveThread();
        let rc = original(cycle, timer, flags | ffi::NGX_POST_EVENTS as ffi::ngx_uint_t);
        pyo3::ffi::PyEval_RestoreThread(ts);
        rc
    }, || ffi::ERROR)
}

/// Wraps the event module's `process_events` (once per worker, when its
/// first thread starts; a no-op before the event module is initialised,
/// e.g. at configuration time, where the master never waits for events).
fn wrap_process_events() {
    if ORIGINAL.get().is_some() {
        return;
    }
    // SAFETY: ngx_event_actions belongs to nginx's thread, and only that
    // thread gets here (`thread_started` checks EVENT_THREAD); nginx reads
    // process_events afresh on each loop iteration.
    unsafe {
        let actions = &raw mut ffi::ngx_event_actions;
        match (*actions).process_events {
            Some(f) if f as usize != process_events as ProcessEvents as usize => {
                ORIGINAL.set(Some(f));
                (*actions).process_events = Some(process_events);
            }
            _ => {}
        }
    }
}

thread_local! {
    static EVENT_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// At process start (a worker): marks the calling thread as nginx's, and
/// forgets the threads counted before fork (fork copies only this one).
pub fn event_thread_started() {
    EVENT_THREAD.set(true);
    THREADS.store(0, Ordering::Release);
}

/// A thread is about to start: count it and, on nginx's thread, make sure
/// the event wait lets it run.
#[pyfunction]
fn thread_started() {
    THREADS.fetch_add(1, Ordering::AcqRel);
    if EVENT_THREAD.get() {
        wrap_process_events();
    }
}

/// A thread counted by `thread_started` has finished (or failed to start).
#[pyfunction]
fn thread_ended() {
    THREADS.fetch_sub(1, Ordering::AcqRel);
}

/// Threads counted now (for the tests).
#[pyfunction]
fn threads() -> isize {
    THREADS.load(Ordering::Acquire)
}

/// Installs `_ngx_threads` and the `_thread.start_new_thread` wrapper.
pub fn install(py: Python<'_>) -> PyResult<()> {
    let native = PyModule::new(py, "_ngx_threads")?;
    native.add_function(wrap_pyfunction!(thread_started, &native)?)?;
    native.add_function(wrap_pyfunction!(thread_ended, &native)?)?;
    native.add_function(wrap_pyfunction!(threads, &native)?)?;
    py.import("sys")?.getattr("modules")?.set_item("_ngx_threads", &native)?;
    let code = std::ffi::CString::new(include_str!("threads.py")).expect("no NUL in threads.py");
    let module = PyModule::from_code(py, &code, c"nginx-python/threads.py", c"_ngx_threads_py")?;
    module.call_method0("install")?;
    Ok(())
}
