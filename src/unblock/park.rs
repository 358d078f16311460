//! Parking a handler until another handler unparks it (or a timeout): what
//! the cooperative locks of `locks.py` wait with. A handler's identity for
//! Python (`threading.get_ident()`) is its coroutine's `Handle::id`.

use std::cell::RefCell;
use std::collections::HashMap;

use pyo3::prelude::*;

use super::coroutine::{self, Handle, Wake};
use super::pymodule::cancelled;
use super::wait::{self, Place};
use crate::ffi::{self, ngx_event_t};

thread_local! {
    /// Parked handlers by id -> their wake-up event (on their own stack).
    static PARKED: RefCell<HashMap<u64, *mut ngx_event_t>> = RefCell::new(HashMap::new());
}

unsafe extern "C" fn unparked(ev: *mut ngx_event_t) {
    crate::panic_guard::guard((*ev).log, "a parked handler", || unparked_unguarded(ev), || ())
}

unsafe fn unparked_unguarded(ev: *mut ngx_event_t) {
    Handle::from_raw((*ev).data).resume_from_event(Wake::Ready);
}

unsafe extern "C" fn timed_out(ev: *mut ngx_event_t) {
    crate::panic_guard::guard((*ev).log, "a parked handler", || timed_out_unguarded(ev), || ())
}

unsafe fn timed_out_unguarded(ev: *mut ngx_event_t) {
    Handle::from_raw((*ev).data).resume_from_event(Wake::Timeout);
}

/// Suspends the running handler until `unpark(its id)` or `timeout`
/// seconds (None: no limit). True when unparked, False on timeout; raises
/// ngx.Cancelled when its request ended. Only inside a handler that can
/// wait (RuntimeError elsewhere: callers check `place()` first).
#[pyfunction]
#[pyo3(signature = (timeout = None))]
fn park(timeout: Option<f64>) -> PyResult<bool> {
    let h = match wait::place() {
        Place::Coroutine(h) => h,
        _ => return Err(pyo3::exceptions::PyRuntimeError::new_err("park() outside a handler that can wait")),
    };
    // Both events live on this coroutine's stack, which stays put while it
    // is suspended; both are off nginx's queues before this returns.
    // SAFETY: zeroed ngx_event_t is nginx's own idea of a fresh event.
    let mut wake: ngx_event_t = unsafe { std::mem::zeroed() };
    let mut timer: ngx_event_t = unsafe { std::mem::zeroed() };
    let log = h.env().log;
    // SAFETY: ngx_cycle is set for the worker's life.
    let log = if log.is_null() { unsafe { (*ffi::ngx_cycle).log } } else { log };
    for (ev, handler) in [(&mut wake, unparked as unsafe extern "C" fn(_)), (&mut timer, timed_out)] {
        ev.handler = Some(handler);
        ev.data = h.as_raw();
        ev.log = log;
    }
    if let Some(t) = timeout {
        let ms = (t.max(0.0) * 1000.0).ceil().min(ffi::ngx_msec_t::MAX as f64 / 2.0) as ffi::ngx_msec_t;
        // SAFETY: `timer` outlives its registration (deleted below).
        unsafe { ffi::ngx_python_add_timer(&mut timer, ms) };
    }
    PARKED.with_borrow_mut(|p| p.insert(h.id(), &mut wake as *mut ngx_event_t));
    let woke = coroutine::suspend();
    PARKED.with_borrow_mut(|p| p.remove(&h.id()));
    // SAFETY: both events are ours; withdrawn whatever woke us.
    unsafe {
        ffi::ngx_python_del_timer(&mut timer);
        ffi::ngx_python_unpost_event(&mut wake);
    }
    match woke {
        Wake::Cancelled => Err(cancelled()),
        Wake::Ready => Ok(true),
        Wake::Timeout => Ok(false),
    }
}

/// Wakes the parked handler `id` (soon: from nginx's event loop, not from
/// the caller's stack). False if it is not parked. On a thread other than
/// nginx's there is nobody parked (the map is per thread): a no-op.
#[pyfunction]
fn unpark(id: u64) -> bool {
    match PARKED.with_borrow(|p| p.get(&id).copied()) {
        Some(ev) => {
            // SAFETY: the event is on the parked coroutine's stack and is
            // withdrawn (unposted) before that coroutine's park returns.
            unsafe {
                if (*ev).posted() == 0 {
                    ffi::ngx_python_post_event(ev);
                }
            }
            true
        }
        None => false,
    }
}

/// The running handler's id, None outside handlers that can wait.
#[pyfunction]
fn handler_id() -> Option<u64> {
    coroutine::current().map(|h| h.id())
}

/// Where the caller runs: 0 in a handler that can wait, 1 in python_set /
/// python_log (no waiting), 2 anywhere else (config time, other threads).
#[pyfunction]
fn place() -> u8 {
    match wait::place() {
        Place::Coroutine(_) => 0,
        Place::NoSuspend => 1,
        Place::Outside => 2,
    }
}

/// Calls `f()` on nginx's stack when the running handler is released
/// (finished or cancelled): for state kept per handler.
#[pyfunction]
fn at_handler_end(f: Py<PyAny>) -> bool {
    match coroutine::current() {
        Some(h) => {
            h.defer(Box::new(move || {
                Python::attach(|py| {
                    if let Err(e) = f.call0(py) {
                        e.print(py);
                    }
                })
            }));
            true
        }
        None => false,
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(park, m)?)?;
    m.add_function(wrap_pyfunction!(unpark, m)?)?;
    m.add_function(wrap_pyfunction!(handler_id, m)?)?;
    m.add_function(wrap_pyfunction!(place, m)?)?;
    m.add_function(wrap_pyfunction!(at_handler_end, m)?)?;
    Ok(())
}
