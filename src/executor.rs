//! The executor runs the handlers that may wait (access, preread, content).
//! Two implementations share one interface, chosen at build time:
//! - `sync` (default): every handler runs to completion on nginx's stack.
//! - `unblock` (cargo feature): such handlers run on their own C stack and
//!   suspend while blocking Python waits on nginx's event loop.
//!
//! Interface:
//! - `run(task) -> Option<R>`: runs a handler that may suspend; `None` means it
//!   suspended and the phase glue resumes the request when it finishes.
//! - `run_nonsuspending(task) -> R`: runs a handler that must not suspend
//!   (`python_set`, `python_log`).

cfg_if::cfg_if! {
    if #[cfg(feature = "unblock")] {
        pub use crate::unblock::*;
    } else {
        pub use crate::sync::*;
    }
}
