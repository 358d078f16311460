//! Python exceptions into nginx's error log: one entry with the traceback.

use pyo3::prelude::*;

use crate::ffi;
use crate::text::shorten_middle;

/// nginx formats each entry in a 2048-byte buffer (NGX_MAX_ERROR_STR) that
/// also holds the time, pid and the request's context; a longer traceback
/// keeps its first line and its end, where the exception is.
const MAX_TRACEBACK: usize = 1500;

/// The traceback as Python prints it, without the final newline. Text that
/// is not valid UTF-8 (lone surrogates from surrogateescape) is shown with
/// backslash escapes rather than lost.
pub fn format_exception(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py
        .import("traceback")
        .and_then(|tb| tb.call_method1("format_exception", (err.get_type(py), err.value(py), err.traceback(py))))
        .and_then(|lines| pyo3::types::PyString::new(py, "").call_method1("join", (lines,)))
        .and_then(|s| s.call_method1("encode", ("utf-8", "backslashreplace")))
        .and_then(|b| Ok(String::from_utf8_lossy(b.cast::<pyo3::types::PyBytes>()?.as_bytes()).into_owned()));
    match formatted {
        Ok(s) => s.trim_end().to_string(),
        Err(_) => format!("{err}"),
    }
}

/// Logs `what: <traceback>` at `error` on `log`.
///
/// # Safety
/// `log` must be a live nginx log.
pub unsafe fn log_exception(py: Python<'_>, log: *mut ffi::ngx_log_t, what: &str, err: &PyErr) {
    if crate::executor::is_cancellation(py, err) {
        let msg = format!("{what}: stopped waiting: the request or session ended");
        ffi::log_error(ffi::NGX_LOG_INFO as ffi::ngx_uint_t, log, msg.as_bytes());
        return;
    }
    let msg = format!("{what}: {}", format_exception(py, err));
    ffi::log_error(ffi::NGX_LOG_ERR as ffi::ngx_uint_t, log, shorten_middle(&msg, MAX_TRACEBACK).as_bytes());
}

/// An `[emerg]` for a configuration-time failure; nginx appends
/// "in FILE:LINE" of the directive.
///
/// # Safety
/// `cf` must be the live configuration being parsed.
pub unsafe fn conf_exception(py: Python<'_>, cf: *mut ffi::ngx_conf_t, what: &str, err: &PyErr) {
    let msg = format!("{what}: {}\n", format_exception(py, err));
    ffi::conf_error(cf, shorten_middle(&msg, MAX_TRACEBACK).as_bytes());
}
