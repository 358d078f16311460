//! The one primitive everything cooperative is built on: suspend the
//! running coroutine until an nginx event (a timer, a readable or writable
//! fd) or cancellation, then say which.

use std::cell::Cell;
use std::os::raw::c_void;
use std::rc::Rc;

use super::coroutine::{self, Handle, Wake};
use crate::ffi::{self, ngx_connection_t, ngx_event_t};

thread_local! {
    /// >0 while a handler that must not suspend runs (python_set/python_log).
    static NO_SUSPEND: Cell<u32> = const { Cell::new(0) };
}

/// Where the calling Python code runs, for functions that may block.
pub enum Place {
    /// In a coroutine: wait on nginx's event loop.
    Coroutine(Handle),
    /// In python_set / python_log: waiting is an error.
    NoSuspend,
    /// Configuration time (or anything outside handlers): really block.
    Outside,
}

pub fn place() -> Place {
    if NO_SUSPEND.get() > 0 {
        return Place::NoSuspend;
    }
    match coroutine::current() {
        Some(h) => Place::Coroutine(h),
        None => Place::Outside,
    }
}

/// Runs `f` where suspending is refused.
pub fn nonsuspending<R>(f: impl FnOnce() -> R) -> R {
    NO_SUSPEND.set(NO_SUSPEND.get() + 1);
    let r = f();
    NO_SUSPEND.set(NO_SUSPEND.get() - 1);
    r
}

/// The depth `Handle::resume` saves before a switch and puts back after
/// it: a stack overflow can jump out of `nonsuspending` on a coroutine's
/// stack without the decrement.
pub(super) fn no_suspend_depth() -> u32 {
    NO_SUSPEND.get()
}

pub(super) fn set_no_suspend_depth(depth: u32) {
    NO_SUSPEND.set(depth);
}

fn log_of(h: Handle) -> *mut ffi::ngx_log_t {
    let log = h.env().log;
    // SAFETY: ngx_cycle is set for the worker's life.
    if log.is_null() { unsafe { (*ffi::ngx_cycle).log } } else { log }
}

unsafe extern "C" fn timer_fired(ev: *mut ngx_event_t) {
    Handle::from_raw((*ev).data).resume(Wake::Ready);
}

/// How far nginx's clock (`ngx_current_msec`: CLOCK_MONOTONIC truncated to
/// milliseconds, updated once per event-loop turn) is behind the real
/// monotonic time, rounded up. A timer of `ms + lag` fires no earlier than
/// `ms` from now, as Python's time.sleep promises; without it a sleep
/// started late in a busy loop turn ended early by as much as that turn took.
fn clock_lag_ms() -> ffi::ngx_msec_t {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill; ngx_current_msec is nginx's
    // worker-thread clock, read on that thread.
    unsafe {
        if libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) != 0 {
            return 1;
        }
        let now = ts.tv_sec as ffi::ngx_msec_t * 1000 + (ts.tv_nsec as ffi::ngx_msec_t).div_ceil(1_000_000);
        now.saturating_sub(ffi::ngx_current_msec)
    }
}

/// Suspends `h` (the running coroutine) for `ms` milliseconds (at least).
pub fn sleep(h: Handle, ms: ffi::ngx_msec_t) -> Wake {
    let ms = ms.saturating_add(clock_lag_ms());
    // The event lives on the coroutine's own stack, which stays put while
    // it is suspended; it is off the timer tree before this returns.
    let mut ev: ngx_event_t = unsafe { std::mem::zeroed() };
    ev.handler = Some(timer_fired);
    ev.data = h.as_raw();
    ev.log = log_of(h);
    h.arm(Some(coroutine::Armed { withdraw: withdraw_timer, data: &mut ev as *mut ngx_event_t as *mut c_void }));
    // SAFETY: `ev` outlives its registration (deleted below, or by
    // `withdraw_timer` if the coroutine overflows and its stack is kept).
    unsafe { ffi::ngx_python_add_timer(&mut ev, ms) };
    let wake = coroutine::suspend();
    unsafe { ffi::ngx_python_del_timer(&mut ev) };
    h.arm(None);
    wake
}

/// Takes a sleep's timer off the tree (see `Handle::arm`).
///
/// # Safety
/// `ev` is the `ngx_event_t` of a `sleep` on a stack that is still mapped.
unsafe fn withdraw_timer(ev: *mut c_void) {
    // SAFETY: per the contract above; the event is not freed (the stack
    // it lives on is leaked) and del_timer checks `timer_set`.
    unsafe { ffi::ngx_python_del_timer(ev as *mut ngx_event_t) };
}

/// An nginx connection wrapping a socket fd that Python owns, so the
/// coroutine can wait for it on nginx's event loop. `c->data` points here.
/// The connection is shared (`Rc`) with a function deferred on the
/// coroutine that created it: if that coroutine is abandoned after a stack
/// overflow, the Python socket holding this is never freed, and the
/// connection is given back to nginx then (else nginx's exit would find it
/// open). Null once given back.
pub struct FdWaiter {
    conn: Rc<Cell<*mut ngx_connection_t>>,
    waiting: Option<Handle>,
}

unsafe extern "C" fn io_ready(ev: *mut ngx_event_t) {
    let c = (*ev).data as *mut ngx_connection_t;
    let w = &mut *((*c).data as *mut FdWaiter);
    // Edge-triggered events also fire when nobody waits: `ready` keeps it.
    if let Some(h) = w.waiting {
        h.resume(if (*ev).timedout() != 0 { Wake::Timeout } else { Wake::Ready });
    }
}

impl FdWaiter {
    /// None when nginx has no free connection (worker_connections).
    pub fn new(fd: i32, log: *mut ffi::ngx_log_t) -> Option<Box<FdWaiter>> {
        // SAFETY: `fd` is an open socket owned by the caller.
        let w = unsafe {
            let c = ffi::ngx_get_connection(fd, log);
            if c.is_null() {
                return None;
            }
            let mut w = Box::new(FdWaiter { conn: Rc::new(Cell::new(c)), waiting: None });
            (*c).data = &mut *w as *mut FdWaiter as *mut c_void;
            for ev in [(*c).read, (*c).write] {
                (*ev).handler = Some(io_ready);
                (*ev).log = log;
            }
            (*c).log = log;
            (*(*c).write).set_ready(1); // a fresh socket is writable
            w
        };
        if let Some(h) = coroutine::current() {
            let conn = w.conn.clone();
            h.defer(Box::new(move || {
                if coroutine::releasing_abandoned() {
                    release_connection(conn.replace(std::ptr::null_mut()));
                }
            }));
        }
        Some(w)
    }

    /// Suspends `h` until the fd is readable (`write` false) or writable,
    /// or `timeout_ms` passes. The caller saw EAGAIN just before.
    pub fn wait(&mut self, h: Handle, write: bool, timeout_ms: Option<ffi::ngx_msec_t>) -> Wake {
        let conn = self.conn.get();
        if conn.is_null() {
            return Wake::Cancelled; // given back: its creator overflowed
        }
        // SAFETY: the connection is ours until given back.
        unsafe {
            let ev = if write { (*conn).write } else { (*conn).read };
            (*ev).set_ready(0);
            let rc = if write { ffi::ngx_handle_write_event(ev, 0) } else { ffi::ngx_handle_read_event(ev, 0) };
            if rc != ffi::OK {
                return Wake::Cancelled;
            }
            if let Some(ms) = timeout_ms {
                ffi::ngx_python_add_timer(ev, ms);
            }
            self.waiting = Some(h);
            let wake = coroutine::suspend();
            self.waiting = None;
            ffi::ngx_python_del_timer(ev);
            (*ev).set_timedout(0);
            wake
        }
    }
}

/// Gives an FdWaiter's nginx connection back (null: already done); the fd
/// itself is Python's to close.
fn release_connection(c: *mut ngx_connection_t) {
    if c.is_null() {
        return;
    }
    // SAFETY: `c` came from ngx_get_connection in `FdWaiter::new` and is
    // released once (the shared cell was nulled by the caller).
    unsafe {
        // Still open (socket.detach(): e.g. ssl wraps the same fd next):
        // really unregister it. Already closed (a socket collected
        // without close()): the kernel has dropped it from epoll.
        let closed = libc::fcntl((*c).fd, libc::F_GETFD) == -1;
        ffi::ngx_python_close_events(c, closed as ffi::ngx_uint_t);
        ffi::ngx_free_connection(c);
        (*c).fd = -1;
    }
}

impl Drop for FdWaiter {
    fn drop(&mut self) {
        release_connection(self.conn.replace(std::ptr::null_mut()));
    }
}

thread_local! {
    /// Handlers waiting on an event of a connection nginx owns, with the
    /// event's own handler to put back afterwards.
    static EVENT_WAITERS: std::cell::RefCell<std::collections::HashMap<usize, (Handle, ffi::ngx_event_handler_pt)>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

unsafe extern "C" fn event_fired(ev: *mut ngx_event_t) {
    let h = EVENT_WAITERS.with_borrow(|w| w.get(&(ev as usize)).map(|(h, _)| *h));
    if let Some(h) = h {
        h.resume(if (*ev).timedout() != 0 { Wake::Timeout } else { Wake::Ready });
    }
}

/// Suspends `h` until `ev` — the read or write event of a connection that
/// nginx owns, e.g. a stream client — fires or `timeout_ms` passes. The
/// event's handler is borrowed for the wait and put back after it. The
/// caller saw NGX_AGAIN from the connection's recv/send just before.
pub fn wait_event(h: Handle, ev: *mut ngx_event_t, timeout_ms: Option<ffi::ngx_msec_t>) -> Wake {
    // SAFETY: the event belongs to the handler's live connection; the
    // session's end cancels this wait before the connection is freed.
    unsafe {
        let saved = (*ev).handler;
        (*ev).handler = Some(event_fired);
        EVENT_WAITERS.with_borrow_mut(|w| w.insert(ev as usize, (h, saved)));
        let rc = if (*ev).write() != 0 { ffi::ngx_handle_write_event(ev, 0) } else { ffi::ngx_handle_read_event(ev, 0) };
        let wake = if rc != ffi::OK {
            Wake::Cancelled
        } else {
            if let Some(ms) = timeout_ms {
                ffi::ngx_python_add_timer(ev, ms);
            }
            coroutine::suspend()
        };
        EVENT_WAITERS.with_borrow_mut(|w| w.remove(&(ev as usize)));
        (*ev).handler = saved;
        ffi::ngx_python_del_timer(ev);
        (*ev).set_timedout(0);
        wake
    }
}

impl Handle {
    pub fn as_raw(self) -> *mut c_void {
        self.raw() as *mut c_void
    }
    /// # Safety
    /// `p` must come from `as_raw` of a handle (it is checked for liveness).
    pub unsafe fn from_raw(p: *mut c_void) -> Handle {
        Handle::wrap(p as *mut coroutine::Coroutine)
    }
}
