//! The synchronous executor: a handler runs to completion, right away, on
//! nginx's own stack. Blocking Python (time.sleep, sockets) blocks the worker
//! for as long as it waits — the build for handlers that never wait.

/// Runs a handler that could suspend in the `unblock` build; here it never
/// does, so the result is always `Some`.
#[inline]
pub fn run<R>(task: impl FnOnce() -> R) -> Option<R> {
    Some(task())
}

/// Runs a handler that must not suspend.
#[inline]
pub fn run_nonsuspending<R>(task: impl FnOnce() -> R) -> R {
    task()
}
