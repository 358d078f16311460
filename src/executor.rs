//! The executor runs the handlers that may wait (access, preread, content).
//! Two implementations share one interface, chosen at build time:
//! - `sync` (default): every handler runs to completion on nginx's stack.
//! - `unblock` (cargo feature): such handlers run on their own C stack and
//!   suspend while blocking Python waits on nginx's event loop.
//!
//! Interface (both in `crate::sync` and `crate::unblock`):
//! - `run(env, task, done) -> Outcome<R>`: runs a handler that may suspend.
//!   `Done(r)`: it finished now. `Suspended(handle)`: it waits; `done(Some(r))`
//!   runs on nginx's stack when it finishes — `done(None)` when it died
//!   (stack overflow, already logged) or the worker is exiting — unless
//!   `handle.cancel()` was called first (the request ended), which makes
//!   the waiting call raise in the handler and lets it unwind.
//! - `run_nonsuspending(task)`: runs a handler that must not suspend
//!   (`python_set`, `python_log`, the filters): waiting raises RuntimeError
//!   there. `can_suspend()`: whether the running Python code may wait now.
//! - `wait_event(ev, timeout)`: suspends the running handler until an event
//!   of a connection nginx owns (a stream client) fires; `SUSPENDS` says
//!   whether this build can wait at all.
//! - `install(py)`: at interpreter start (unblock: the cooperative
//!   time/socket functions); `self_check()` at worker start; `set_stack_size`;
//!   `exit_process`; `exiting_process()`: the worker's final exit is under
//!   way (a handler finishing then ends its request instead of going on;
//!   during a graceful quit in-flight work goes on).

use crate::ffi;

cfg_if::cfg_if! {
    if #[cfg(feature = "unblock")] {
        pub use crate::unblock::*;
    } else {
        pub use crate::sync::*;
    }
}

/// What a handler's coroutine needs from where it runs.
#[derive(Clone, Copy)]
pub struct Env {
    /// The request's or session's log.
    pub log: *mut ffi::ngx_log_t,
    /// `resolver` of the location / stream server (may be null).
    pub resolver: *mut ffi::ngx_resolver_t,
    pub resolver_timeout: ffi::ngx_msec_t,
    /// Runs on nginx's stack after an event of the handler's own (its sleep
    /// timer, its socket, a lookup, a lock) resumed it: what nginx's caller
    /// does after a request's own events. http: the connection's posted
    /// requests (subrequests the handler's output started, a parent a
    /// finished subrequest woke), as nginx's modules do after their timers.
    pub after_event: Option<AfterEvent>,
}

/// `run(data)`; `data` is what the owner passed (http: the connection,
/// whose memory nginx keeps for the worker's life: when the request has
/// ended meanwhile, `c->destroyed` says so).
#[derive(Clone, Copy)]
pub struct AfterEvent {
    pub run: unsafe fn(*mut std::os::raw::c_void),
    pub data: *mut std::os::raw::c_void,
}

/// The result of `wait_event`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Waited {
    Ready,
    Timeout,
    /// The request or session ended (or the worker exits): unwind.
    Cancelled,
    /// Not in a handler that can wait (sync build, python_set/python_log).
    CannotWait,
}

/// The result of `run`.
pub enum Outcome<R> {
    Done(R),
    Suspended(Handle),
    /// It could not run, or died (a stack overflow); already logged.
    Failed,
}
