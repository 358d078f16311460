//! No Rust panic may cross into nginx. A panic unwinding out of an
//! `extern "C"` function aborts the worker (every request on it is lost),
//! so each function nginx calls (phase and event handlers, directive
//! setters, init/exit hooks, variable getters, cleanup handlers) runs its
//! body through `catch` (via the nginx-facing wrappers below): a panic is
//! logged at `[alert]` with its message and where it happened, and becomes
//! that entry's failure result (500, an empty variable, a closed session,
//! `NGX_CONF_ERROR`).
//!
//! Not covered, on purpose: the signal handlers (`unblock::guard::on_fault`,
//! `runtime::worker_start::on_abort`), which call only async-signal-safe
//! functions and never panic. Rust called from Python (pyo3 methods) needs
//! nothing: pyo3 turns a panic there into a Python `PanicException`, which
//! the handler's traceback shows.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// What the panic hook saw of the last panic on this thread: its
    /// message and location (the payload alone has no location).
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces Rust's default hook (which writes to stderr, unformatted, in
/// the middle of nginx's error log) with one that keeps the description for
/// `catch` to log where the panic is caught.
fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        panic::set_hook(Box::new(|info| {
            let mut text = message(info.payload());
            if let Some(at) = info.location() {
                text.push_str(&format!(" at {}:{}", at.file(), at.line()));
            }
            // try_: a panic while the slot is borrowed (or the thread's
            // locals are gone) keeps the payload's message only.
            let _ = LAST.try_with(|last| last.try_borrow_mut().map(|mut l| *l = Some(text)));
        }));
    });
}

/// The message a panic was raised with (`panic!("...")`, `expect`, an
/// index out of bounds, ...).
fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_owned()
    }
}

/// Runs `f`; a panic in it is caught and described ("message at file:line").
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    install_hook();
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        LAST.try_with(|last| last.try_borrow_mut().ok().and_then(|mut l| l.take()))
            .ok()
            .flatten()
            .unwrap_or_else(|| message(&*payload))
    })
}

#[cfg(ngx_configured)]
mod nginx {
    use std::os::raw::c_char;

    use crate::ffi;

    /// The line every caught panic gets in the error log.
    fn text(what: &str, panic: &str) -> String {
        format!("python: {what} panicked (a bug in nginx-python, please report it): {panic}")
    }

    /// Runs the body of an nginx entry point; a panic is logged at
    /// `[alert]` on `log` and `on_panic()` is the entry's result instead.
    ///
    /// # Safety
    /// `log` is null or a live nginx log (the request's, the cycle's, ...).
    pub unsafe fn guard<R>(log: *mut ffi::ngx_log_t, what: &str, f: impl FnOnce() -> R, on_panic: impl FnOnce() -> R) -> R {
        match super::catch(f) {
            Ok(r) => r,
            Err(panic) => {
                let log = if log.is_null() { (*ffi::ngx_cycle).log } else { log };
                ffi::log_error(ffi::NGX_LOG_ALERT as ffi::ngx_uint_t, log, text(what, &panic).as_bytes());
                on_panic()
            }
        }
    }

    /// `guard` for directive setters and other configuration-time entries:
    /// a panic is an `[emerg]` naming the directive's file and line, and
    /// `NGX_CONF_ERROR`.
    ///
    /// # Safety
    /// `cf` is the live configuration being parsed.
    pub unsafe fn guard_conf(cf: *mut ffi::ngx_conf_t, what: &str, f: impl FnOnce() -> *mut c_char) -> *mut c_char {
        match super::catch(f) {
            Ok(r) => r,
            Err(panic) => {
                ffi::conf_error(cf, text(what, &panic).as_bytes());
                ffi::CONF_ERROR
            }
        }
    }
}

#[cfg(ngx_configured)]
pub use nginx::{guard, guard_conf};

#[cfg(test)]
mod tests {
    use super::catch;

    #[test]
    fn a_result_passes_through() {
        assert_eq!(catch(|| 7), Ok(7));
    }

    #[test]
    fn a_panic_becomes_its_message_and_location() {
        let err = catch(|| -> u8 { panic!("boom {}", 42) }).unwrap_err();
        assert!(err.starts_with("boom 42 at src/panic_guard.rs:"), "{err}");
        let err = catch(|| {
            let v: Vec<u8> = Vec::new();
            v[3]
        })
        .unwrap_err();
        assert!(err.contains("index out of bounds"), "{err}");
    }

    #[test]
    fn a_panic_in_a_nested_catch_is_caught_there() {
        let outer = catch(|| catch(|| -> () { panic!("inner") }).unwrap_err());
        assert!(outer.unwrap().starts_with("inner at "));
        // The slot is taken: a later panic does not see the old text.
        let err = catch(|| -> () { std::panic::panic_any(5u8) }).unwrap_err();
        assert!(err.starts_with("(a panic without a message) at "), "{err}");
    }

    #[test]
    fn a_str_slice_on_a_char_boundary_panic_is_described() {
        // The class of panic issue 9 found in traceback shortening.
        let s = String::from("\u{e9}\u{e9}");
        let err = catch(|| s[..1].len()).unwrap_err();
        assert!(err.contains("is not a char boundary"), "{err}");
    }
}
