//! The one primitive everything cooperative is built on: suspend the
//! running coroutine until an nginx event (a timer, a readable or writable
//! fd) or cancellation, then say which.

#![deny(unsafe_op_in_unsafe_fn)]

use std::cell::{Cell, RefCell};
use std::os::raw::c_void;
use std::ptr;
use std::rc::Rc;
use std::time::{Duration, Instant};

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
    // Lowered again by Drop: also when `f` panics (caught by the entry
    // point's panic guard, after which the worker goes on).
    struct Depth;
    impl Drop for Depth {
        fn drop(&mut self) {
            NO_SUSPEND.set(NO_SUSPEND.get() - 1);
        }
    }
    NO_SUSPEND.set(NO_SUSPEND.get() + 1);
    let _depth = Depth;
    f()
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
    // SAFETY: nginx fires the timer of a sleep's event, which lives on the
    // sleeping coroutine's stack until `sleep_once` deletes it.
    unsafe { crate::panic_guard::guard((*ev).log, "time.sleep", || timer_fired_unguarded(ev), || ()) }
}

unsafe fn timer_fired_unguarded(ev: *mut ngx_event_t) {
    // SAFETY: `data` is the sleeping coroutine's handle (`as_raw`);
    // `from_raw` checks that it is still live.
    unsafe { Handle::from_raw((*ev).data).resume_from_event(Wake::Ready) };
}

/// Suspends `h` (the running coroutine) for `ms` milliseconds — at least
/// that long by the monotonic clock (time.monotonic's): nginx's timers run
/// on its cached clock, which lags while handlers run, so a timer alone
/// can fire early; it is re-armed for what is left.
pub fn sleep(h: Handle, ms: ffi::ngx_msec_t) -> Wake {
    let deadline = Instant::now() + Duration::from_millis(ms as u64);
    let mut left = ms;
    loop {
        let wake = sleep_once(h, left);
        if wake != Wake::Timeout && wake != Wake::Ready {
            return wake;
        }
        match remaining_ms(deadline) {
            Some(ms) => left = ms,
            None => return wake,
        }
    }
}

/// Milliseconds (rounded up) until `deadline`, None when it has passed.
pub fn remaining_ms(deadline: Instant) -> Option<ffi::ngx_msec_t> {
    let left = deadline.checked_duration_since(Instant::now())?;
    if left.is_zero() {
        return None;
    }
    Some(left.as_micros().div_ceil(1000) as ffi::ngx_msec_t)
}

fn sleep_once(h: Handle, ms: ffi::ngx_msec_t) -> Wake {
    // The event lives on the coroutine's own stack, which stays put while
    // it is suspended; it is off the timer tree before this returns.
    // SAFETY: an all-zero ngx_event_t is nginx's own idle event (it
    // ngx_pcalloc's them).
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

/// Lets a socket fd that Python owns wait on nginx's event loop, on behalf
/// of whichever coroutine waits on it now.
///
/// Ownership: the nginx connection wrapping the fd (taken with
/// `ngx_get_connection`, `c->data` pointing at the `Lease`) is leased by
/// the coroutine that waits: taken at its first wait, with that
/// coroutine's log; handed to a later coroutine (log re-pointed) when that
/// one waits on the same socket; given back (events removed, connection
/// freed, the fd left to Python) when its owner is released (`Handle::defer`)
/// or the socket closes, whichever comes first. So a socket kept between
/// requests (a pool) holds no connection and no pointer into a finished
/// request, and a worker that exits has nothing of Python's left open.
pub struct FdWaiter {
    fd: i32,
    lease: Rc<RefCell<Lease>>,
}

struct Lease {
    fd: i32,
    /// Null while no coroutine holds the lease.
    conn: *mut ngx_connection_t,
    owner: Option<Handle>,
    /// Who waits for readability / writability now.
    reader: Option<Handle>,
    writer: Option<Handle>,
    /// The socket closed while another coroutine waited on it: that one was
    /// woken (it sees EBADF) and frees the connection as it leaves.
    closing: bool,
    /// Coroutines (ids) that have a `defer` pending for this lease: one
    /// each, however often the lease goes back and forth between them.
    deferred: Vec<u64>,
}

/// Why a wait could not start.
pub enum WaitError {
    /// worker_connections are all in use.
    NoConnection,
    /// Another coroutine already waits on this socket in that direction.
    Busy,
}

unsafe extern "C" fn io_ready(ev: *mut ngx_event_t) {
    // SAFETY: nginx fires an event of a leased connection, which lives
    // until the lease gives it back (and then no event is armed).
    unsafe { crate::panic_guard::guard((*ev).log, "a socket wait", || io_ready_unguarded(ev), || ()) }
}

unsafe fn io_ready_unguarded(ev: *mut ngx_event_t) {
    // SAFETY: the event's connection is leased: `c->data` points at the
    // `Lease` (kept alive by the socket's Rc) for as long as it is.
    let (lease, write, timedout) = unsafe {
        let c = (*ev).data as *mut ngx_connection_t;
        (&*((*c).data as *const RefCell<Lease>), (*ev).write() != 0, (*ev).timedout() != 0)
    };
    let waiter = {
        let l = lease.borrow();
        if write { l.writer } else { l.reader }
    };
    // Edge-triggered events also fire when nobody waits: `ready` keeps it.
    if let Some(h) = waiter {
        h.resume_from_event(if timedout { Wake::Timeout } else { Wake::Ready });
    }
}

fn waiting(h: Option<Handle>) -> Option<Handle> {
    h.filter(|h| h.is_live())
}

impl Lease {
    /// Makes `h` the owner, taking a connection if there is none.
    fn acquire(&mut self, h: Handle, this: &Rc<RefCell<Lease>>) -> Result<(), WaitError> {
        let log = log_of(h);
        // SAFETY: `self.fd` is an open socket Python owns; the connection
        // is ours until `give_back`, and `c->data` (the RefCell inside the
        // Rc) stays put while the Rc lives — `Drop` gives the connection
        // back before that.
        unsafe {
            if self.conn.is_null() {
                let c = ffi::ngx_get_connection(self.fd, log);
                if c.is_null() {
                    return Err(WaitError::NoConnection);
                }
                (*c).data = Rc::as_ptr(this) as *mut c_void;
                for ev in [(*c).read, (*c).write] {
                    (*ev).handler = Some(io_ready);
                }
                self.conn = c;
                self.owner = None;
            }
            if self.owner != Some(h) {
                self.owner = Some(h);
                for ev in [(*self.conn).read, (*self.conn).write] {
                    (*ev).log = log;
                }
                (*self.conn).log = log;
                if !self.deferred.contains(&h.id()) {
                    self.deferred.push(h.id());
                    let weak = Rc::downgrade(this);
                    h.defer(Box::new(move || {
                        if let Some(lease) = weak.upgrade() {
                            let mut l = lease.borrow_mut();
                            l.deferred.retain(|&id| id != h.id());
                            l.owner_released(h, &lease);
                        }
                    }));
                }
            }
        }
        Ok(())
    }

    /// `h`, which owned the lease at some point, is being released.
    fn owner_released(&mut self, h: Handle, this: &Rc<RefCell<Lease>>) {
        if self.owner != Some(h) {
            return; // handed on to another coroutine meanwhile
        }
        self.owner = None;
        // Another coroutine still waits the other way: it takes over.
        match waiting(self.reader).or(waiting(self.writer)).filter(|&w| w != h) {
            Some(next) => {
                let _ = self.acquire(next, this);
            }
            None => self.give_back(),
        }
    }

    /// Removes the fd from nginx's event loop and frees the connection.
    fn give_back(&mut self) {
        if self.conn.is_null() {
            return;
        }
        // SAFETY: the connection is ours (taken in `acquire`); the fd is
        // Python's and stays open or closed as Python left it.
        unsafe {
            // Still open (kept in a pool, or socket.detach(): e.g. ssl wraps
            // the same fd next): really unregister it. Already closed (a
            // socket collected without close()): the kernel dropped it.
            let closed = libc::fcntl((*self.conn).fd, libc::F_GETFD) == -1;
            ffi::ngx_python_close_events(self.conn, closed as ffi::ngx_uint_t);
            ffi::ngx_free_connection(self.conn);
            (*self.conn).fd = -1;
        }
        self.conn = ptr::null_mut();
        self.owner = None;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.give_back();
    }
}

impl FdWaiter {
    pub fn new(fd: i32) -> FdWaiter {
        let lease = Lease { fd, conn: ptr::null_mut(), owner: None, reader: None, writer: None, closing: false, deferred: Vec::new() };
        FdWaiter { fd, lease: Rc::new(RefCell::new(lease)) }
    }

    pub fn fd(&self) -> i32 {
        self.fd
    }

    /// Suspends `h` (the running coroutine) until the fd is readable
    /// (`write` false) or writable, or `timeout_ms` passes. The caller saw
    /// EAGAIN just before.
    pub fn wait(&self, h: Handle, write: bool, timeout_ms: Option<ffi::ngx_msec_t>) -> Result<Wake, WaitError> {
        let ev = {
            let mut l = self.lease.borrow_mut();
            let slot = if write { l.writer } else { l.reader };
            if waiting(slot).is_some_and(|w| w != h) {
                return Err(WaitError::Busy);
            }
            l.acquire(h, &self.lease)?;
            if write {
                l.writer = Some(h);
            } else {
                l.reader = Some(h);
            }
            // SAFETY: the connection is held by the lease (just acquired).
            unsafe { if write { (*l.conn).write } else { (*l.conn).read } }
        };
        // SAFETY: `ev` belongs to the leased connection, which is not given
        // back while `h` waits on it (`owner_released` hands it on, `close`
        // only marks it) — it is ours until after the cleanup below.
        let wake = unsafe {
            (*ev).set_ready(0);
            let rc = if write { ffi::ngx_handle_write_event(ev, 0) } else { ffi::ngx_handle_read_event(ev, 0) };
            let wake = if rc != ffi::OK {
                Wake::Cancelled
            } else {
                if let Some(ms) = timeout_ms {
                    ffi::ngx_python_add_timer(ev, ms);
                }
                coroutine::suspend()
            };
            ffi::ngx_python_del_timer(ev);
            (*ev).set_timedout(0);
            wake
        };
        let mut l = self.lease.borrow_mut();
        if write {
            l.writer = None;
        } else {
            l.reader = None;
        }
        if l.closing && waiting(l.reader).is_none() && waiting(l.writer).is_none() {
            l.closing = false;
            l.give_back();
        }
        Ok(wake)
    }

    /// The socket closes its fd next (or detaches it): nginx lets go of it.
    /// A coroutine still waiting on it is woken (its retry sees the socket
    /// closed) and frees the connection as it leaves.
    pub fn close(&self) {
        let mut l = self.lease.borrow_mut();
        let current = coroutine::current();
        let others: Vec<Handle> = [l.reader, l.writer]
            .into_iter()
            .filter_map(waiting)
            .filter(|&w| Some(w) != current)
            .collect();
        if others.is_empty() || l.conn.is_null() {
            l.give_back();
            return;
        }
        l.closing = true;
        // SAFETY: the connection is held by the lease; its events are
        // unregistered (the fd closes next) and the waiters' events posted
        // so that nginx's loop resumes them.
        unsafe {
            let c = l.conn;
            ffi::ngx_python_close_events(c, 0);
            if waiting(l.reader).is_some_and(|w| Some(w) != current) {
                ffi::ngx_python_post_event((*c).read);
            }
            if waiting(l.writer).is_some_and(|w| Some(w) != current) {
                ffi::ngx_python_post_event((*c).write);
            }
        }
    }
}

impl Drop for FdWaiter {
    fn drop(&mut self) {
        // Nobody can be waiting (a waiter borrows the socket, which holds
        // this): give the connection back now rather than when the Rc dies.
        self.lease.borrow_mut().give_back();
    }
}

thread_local! {
    /// Handlers waiting on an event of a connection nginx owns, with the
    /// event's own handler to put back afterwards.
    static EVENT_WAITERS: std::cell::RefCell<std::collections::HashMap<usize, (Handle, ffi::ngx_event_handler_pt)>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

unsafe extern "C" fn event_fired(ev: *mut ngx_event_t) {
    // SAFETY: nginx fires an event of a connection it owns, borrowed by
    // `wait_event` until the wait ends.
    unsafe { crate::panic_guard::guard((*ev).log, "a connection wait", || event_fired_unguarded(ev), || ()) }
}

unsafe fn event_fired_unguarded(ev: *mut ngx_event_t) {
    let h = EVENT_WAITERS.with_borrow(|w| w.get(&(ev as usize)).map(|(h, _)| *h));
    if let Some(h) = h {
        // SAFETY: the event is live (see `event_fired`).
        let timedout = unsafe { (*ev).timedout() != 0 };
        h.resume_from_event(if timedout { Wake::Timeout } else { Wake::Ready });
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
        let deadline = timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms as u64));
        let wake = if rc != ffi::OK {
            Wake::Cancelled
        } else {
            let mut left = timeout_ms;
            loop {
                if let Some(ms) = left {
                    ffi::ngx_python_add_timer(ev, ms);
                }
                let wake = coroutine::suspend();
                // A timer on nginx's lagging clock may fire early: wait on
                // for what is left by the monotonic clock.
                match (wake, deadline.and_then(remaining_ms)) {
                    (Wake::Timeout, Some(ms)) => {
                        (*ev).set_timedout(0);
                        left = Some(ms);
                    }
                    _ => break wake,
                }
            }
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
