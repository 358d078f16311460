//! A worker that cannot start Python must not be respawned in a loop.
//!
//! nginx respawns a worker that dies of a signal at once, forever; one that
//! exits with status 2 (a module's `init_process` failing: nginx calls
//! `exit(2)`) is logged "exited with fatal code 2 and cannot be respawned"
//! and left dead. So the worker's Python start-up (after fork, the
//! self-checks) runs under `guarded`: a failure it reports is an `[emerg]`
//! and status 2, and a CPython fatal error inside it (which prints its own
//! "Fatal Python error" to stderr, i.e. the error log, then calls abort())
//! becomes status 2 as well instead of SIGABRT.

use std::sync::atomic::{AtomicBool, Ordering};

static GUARDING: AtomicBool = AtomicBool::new(false);

/// Runs `start` with SIGABRT turned into `_exit(2)`; the previous SIGABRT
/// disposition is restored afterwards.
pub fn guarded<T>(start: impl FnOnce() -> T) -> T {
    // SAFETY: the worker's only thread, before it serves anything; the
    // handler only calls async-signal-safe functions (write, _exit).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_abort as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut previous: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGABRT, &sa, &mut previous);
        GUARDING.store(true, Ordering::SeqCst);
        let r = start();
        GUARDING.store(false, Ordering::SeqCst);
        libc::sigaction(libc::SIGABRT, &previous, std::ptr::null_mut());
        r
    }
}

extern "C" fn on_abort(_sig: libc::c_int) {
    const MSG: &[u8] = b"nginx-python: Python aborted while this worker started; \
exiting with status 2 so that nginx does not respawn it\n";
    // SAFETY: write(2) and _exit(2) are async-signal-safe; stderr is the
    // error log in an nginx worker.
    unsafe {
        if GUARDING.load(Ordering::SeqCst) {
            libc::write(2, MSG.as_ptr() as *const libc::c_void, MSG.len());
            libc::_exit(2);
        }
    }
}
