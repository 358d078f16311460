//! Child processes that Python starts in a worker keep their exit status.
//!
//! nginx installs one SIGCHLD handler for all its processes, and in every
//! process it calls `waitpid(-1, WNOHANG)` (ngx_process_get_status): it
//! reaps any child. A worker has no children of its own, so there it only
//! ever reaps children that other code started — a `subprocess.Popen` of a
//! handler — logging "unknown process ... exited" (at `alert` for a
//! signal) and leaving CPython's own `waitpid(pid)` with ECHILD, which
//! subprocess reports as returncode 0. So workers give SIGCHLD back its
//! default disposition (ignored, no automatic reaping): each child is
//! reaped by whoever waits for it, as in any Python program.
//!
//! The master keeps nginx's handler: it needs it for its workers. Python
//! code run there at configuration time is not affected, because nginx
//! keeps SIGCHLD blocked while it parses configuration (on reload) or has
//! not installed its handler yet (at start).

/// In a worker (or a single-process nginx): SIGCHLD back to SIG_DFL.
pub fn keep_from_nginx() {
    // SAFETY: sigaction with a zeroed, then filled, struct; SIG_DFL has no
    // handler code. Called on nginx's thread at process start.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGCHLD, &sa, std::ptr::null_mut());
    }
}
