//! `ngx.timer(delay, fn, *args)` and `ngx.every(interval, fn, *args)`:
//! functions run later in the worker, on nginx's timers. In the unblock
//! build each run is a coroutine that may wait (sockets, sleep); in the
//! sync build it runs to completion. Exceptions are logged with their
//! traceback.
//!
//! Ownership: the worker's timer table owns each timer (its nginx event
//! and its function) from `ngx.timer` until it has fired for the last time
//! or is cancelled; the Python handle only names it. Pending timers are
//! `cancelable` (they do not hold up a graceful stop); when the worker
//! starts a graceful stop (or exits) all are cancelled and runs still
//! waiting are woken with `ngx.Cancelled`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::executor::{self, Env, Outcome};
use crate::ffi::{self, ngx_event_t, ngx_msec_t};
use crate::runtime::errors::log_exception;

struct Timer {
    ev: ngx_event_t,
    func: Py<PyAny>,
    args: Py<PyTuple>,
    /// `ngx.every`: the period.
    interval: Option<ngx_msec_t>,
}

thread_local! {
    static TIMERS: RefCell<HashMap<u64, Box<Timer>>> = RefCell::new(HashMap::new());
    /// Runs that wait (unblock builds), by timer id; a one-shot timer's run
    /// stays here after the timer itself is gone.
    static RUNNING: RefCell<HashMap<u64, executor::Handle>> = RefCell::new(HashMap::new());
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
}

/// What `ngx.timer` / `ngx.every` return.
#[pyclass(frozen, module = "ngx", name = "Timer")]
pub struct TimerHandle {
    id: u64,
}

#[pymethods]
impl TimerHandle {
    /// Stops the timer: it will not fire (again). A run in progress goes
    /// on. True if it was still pending.
    fn cancel(&self) -> bool {
        remove(self.id).is_some()
    }

    /// Whether the timer will still fire.
    #[getter]
    fn pending(&self) -> bool {
        TIMERS.with_borrow(|t| t.contains_key(&self.id))
    }
}

fn millis(secs: f64, what: &str) -> PyResult<ngx_msec_t> {
    if secs.is_nan() || secs < 0.0 {
        return Err(PyValueError::new_err(format!("{what} must be a non-negative number of seconds")));
    }
    Ok((secs * 1000.0).ceil().min((i32::MAX / 2) as f64) as ngx_msec_t)
}

fn in_worker() -> PyResult<()> {
    if !crate::core_module::worker_started() {
        return Err(PyRuntimeError::new_err(
            "timers run in nginx's workers: start them from python_init_worker or a handler, not at configuration time",
        ));
    }
    if EXIT_HOOK.get().is_null() {
        return Err(PyRuntimeError::new_err("the worker is shutting down: no new timers"));
    }
    Ok(())
}

/// `ngx.timer(delay, fn, *args)`: `fn(*args)` once, `delay` seconds from now.
#[pyfunction]
#[pyo3(signature = (delay, func, *args))]
pub fn timer(delay: f64, func: Py<PyAny>, args: Py<PyTuple>) -> PyResult<TimerHandle> {
    start(millis(delay, "delay")?, None, func, args)
}

/// `ngx.every(interval, fn, *args)`: `fn(*args)` every `interval` seconds
/// (a tick that comes while the previous run still waits is skipped).
#[pyfunction]
#[pyo3(signature = (interval, func, *args))]
pub fn every(interval: f64, func: Py<PyAny>, args: Py<PyTuple>) -> PyResult<TimerHandle> {
    let ms = millis(interval, "interval")?;
    if ms == 0 {
        return Err(PyValueError::new_err("interval must be positive"));
    }
    start(ms, Some(ms), func, args)
}

fn start(delay: ngx_msec_t, interval: Option<ngx_msec_t>, func: Py<PyAny>, args: Py<PyTuple>) -> PyResult<TimerHandle> {
    in_worker()?;
    // nginx's cached clock may be well behind (e.g. in python_init_worker,
    // or after a long handler): a timer armed on it would fire early.
    // SAFETY: the worker's own time cache, updated on its one thread.
    unsafe { ffi::ngx_time_update() };
    let id = NEXT_ID.get();
    NEXT_ID.set(id + 1);
    // SAFETY: an all-zero event is nginx's initial state.
    let mut t = Box::new(Timer { ev: unsafe { std::mem::zeroed() }, func, args, interval });
    t.ev.handler = Some(fired);
    t.ev.data = id as usize as *mut std::os::raw::c_void;
    // SAFETY: the cycle's log lives as long as the worker.
    t.ev.log = unsafe { (*ffi::ngx_cycle).log };
    t.ev.set_cancelable(1);
    // SAFETY: the event is owned by the table (boxed: its address stays put)
    // until `remove` takes it off the timer tree.
    unsafe { ffi::ngx_python_add_timer(&mut t.ev, delay) };
    TIMERS.with_borrow_mut(|m| m.insert(id, t));
    Ok(TimerHandle { id })
}

/// Takes a timer out of the table and off nginx's timer tree.
fn remove(id: u64) -> Option<Box<Timer>> {
    let mut t = TIMERS.with_borrow_mut(|m| m.remove(&id))?;
    // SAFETY: the event is ours; deleting an unset timer is a no-op.
    unsafe { ffi::ngx_python_del_timer(&mut t.ev) };
    Some(t)
}

unsafe extern "C" fn fired(ev: *mut ngx_event_t) {
    crate::panic_guard::guard((*ev).log, "ngx.timer", || fired_unguarded(ev), || ())
}

unsafe fn fired_unguarded(ev: *mut ngx_event_t) {
    let id = (*ev).data as usize as u64;
    // Next tick first (periodic), then the run; a tick that finds the
    // previous run still waiting is skipped.
    let call = TIMERS.with_borrow_mut(|m| {
        let t = m.get_mut(&id)?;
        if let Some(ms) = t.interval {
            // SAFETY: the table owns the event.
            unsafe { ffi::ngx_python_add_timer(&mut t.ev, ms) };
        }
        if RUNNING.with_borrow(|r| r.contains_key(&id)) {
            return None;
        }
        Python::attach(|py| Some((t.func.clone_ref(py), t.args.clone_ref(py), t.interval.is_some())))
    });
    let Some((func, args, periodic)) = call else { return };
    if !periodic {
        drop(remove(id));
    }
    let log = (*ffi::ngx_cycle).log;
    let env = Env { log, resolver: std::ptr::null_mut(), resolver_timeout: 0, after_event: None };
    let task = move || {
        Python::attach(|py| {
            if let Err(e) = func.bind(py).call1(args.bind(py)) {
                // SAFETY: the cycle's log lives as long as the worker.
                unsafe { log_exception(py, log, "ngx.timer", &e) };
            }
        })
    };
    let done = move |_: Option<()>| {
        RUNNING.with_borrow_mut(|r| r.remove(&id));
    };
    if let Outcome::Suspended(h) = executor::run(env, task, done) {
        RUNNING.with_borrow_mut(|r| r.insert(id, h));
    }
}

/// Cancels every timer and wakes waiting runs with `ngx.Cancelled`.
pub fn cancel_all() {
    let ids: Vec<u64> = TIMERS.with_borrow(|m| m.keys().copied().collect());
    for id in ids {
        drop(remove(id));
    }
    let running: Vec<executor::Handle> = RUNNING.with_borrow_mut(|r| r.drain().map(|(_, h)| h).collect());
    for h in running {
        h.cancel();
    }
}

thread_local! {
    /// The idle connection nginx closes at the start of a graceful stop.
    static EXIT_HOOK: Cell<*mut ffi::ngx_connection_t> = const { Cell::new(std::ptr::null_mut()) };
}

/// In a worker: learn when a graceful stop begins. nginx then closes its
/// idle connections (`ngx_close_idle_connections`, as for keep-alive
/// clients): one idle connection on a private eventfd, never polled, is
/// how timers hear of it. Without this, nginx would wait for waiting
/// timer runs before exiting.
///
/// # Safety
/// Worker start, on the worker's thread, after the event module's init.
pub unsafe fn watch_exit(cycle: *mut ffi::ngx_cycle_t) {
    let fd = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
    if fd < 0 {
        return;
    }
    let c = ffi::ngx_get_connection(fd, (*cycle).log);
    if c.is_null() {
        libc::close(fd);
        return;
    }
    (*c).set_idle(1);
    (*(*c).read).handler = Some(exiting);
    (*(*c).read).log = (*cycle).log;
    EXIT_HOOK.set(c);
}

unsafe extern "C" fn exiting(_ev: *mut ngx_event_t) {
    crate::panic_guard::guard(std::ptr::null_mut(), "ngx.timer at exit", || exiting_unguarded(_ev), || ())
}

unsafe fn exiting_unguarded(_ev: *mut ngx_event_t) {
    cancel_all();
    unwatch_exit();
}

/// Releases the exit hook's connection (also at worker exit).
pub fn unwatch_exit() {
    let c = EXIT_HOOK.replace(std::ptr::null_mut());
    if c.is_null() {
        return;
    }
    // SAFETY: the connection and its fd are ours (`watch_exit`).
    unsafe {
        let fd = (*c).fd;
        ffi::ngx_free_connection(c);
        (*c).fd = -1;
        libc::close(fd);
    }
}
