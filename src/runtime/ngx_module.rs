//! The `ngx` module: nginx's result codes, log levels and send flags.

use pyo3::prelude::*;

use crate::ffi;

/// `r.send(data, flags)`: flush the output after this piece.
pub const SEND_FLUSH: i64 = 1;
/// `r.send(data, flags)`: this is the last piece of the body.
pub const SEND_LAST: i64 = 2;

/// `ngx.wait_fd(fd, write=False, timeout=None) -> bool`: waits until `fd`
/// (an int or an object with fileno()) is readable (writable with
/// `write=True`) or has an error; False when `timeout` seconds passed
/// first. This is the blocking version (the sync build, and configuration
/// time); the unblock build replaces it with one that waits on nginx's
/// event loop inside handlers (src/unblock/pymodule.rs).
#[pyfunction]
#[pyo3(signature = (fd, write = false, timeout = None))]
fn wait_fd(py: Python<'_>, fd: &Bound<'_, PyAny>, write: bool, timeout: Option<f64>) -> PyResult<bool> {
    let fd: i32 = match fd.extract() {
        Ok(n) => n,
        Err(_) => fd.call_method0("fileno")?.extract()?,
    };
    if fd < 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "file descriptor cannot be a negative integer ({fd})"
        )));
    }
    let deadline = match timeout {
        Some(t) if t.is_nan() => return Err(pyo3::exceptions::PyValueError::new_err("Invalid value NaN (not a number)")),
        Some(t) => Some(std::time::Instant::now() + std::time::Duration::from_secs_f64(t.clamp(0.0, 1e9))),
        None => None,
    };
    let events = if write { libc::POLLOUT } else { libc::POLLIN };
    let n = py.detach(|| loop {
        let ms = deadline.map_or(-1, |d: std::time::Instant| {
            let left = d.saturating_duration_since(std::time::Instant::now());
            left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
        });
        let mut p = libc::pollfd { fd, events, revents: 0 };
        // SAFETY: one valid pollfd on this stack.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break if n < 0 { Err(std::io::Error::last_os_error()) } else { Ok(n) };
        }
    })?;
    Ok(n > 0)
}

#[pymodule]
pub fn ngx(m: &Bound<'_, PyModule>) -> PyResult<()> {
    for (name, v) in [
        ("OK", ffi::OK),
        ("ERROR", ffi::ERROR),
        ("AGAIN", ffi::AGAIN),
        ("BUSY", ffi::BUSY),
        ("DONE", ffi::DONE),
        ("DECLINED", ffi::DECLINED),
        ("ABORT", ffi::ABORT),
    ] {
        m.add(name, v)?;
    }
    for (name, v) in [
        ("LOG_EMERG", ffi::NGX_LOG_EMERG),
        ("LOG_ALERT", ffi::NGX_LOG_ALERT),
        ("LOG_CRIT", ffi::NGX_LOG_CRIT),
        ("LOG_ERR", ffi::NGX_LOG_ERR),
        ("LOG_WARN", ffi::NGX_LOG_WARN),
        ("LOG_NOTICE", ffi::NGX_LOG_NOTICE),
        ("LOG_INFO", ffi::NGX_LOG_INFO),
        ("LOG_DEBUG", ffi::NGX_LOG_DEBUG),
    ] {
        m.add(name, v)?;
    }
    m.add("shared", crate::shared::SharedDicts)?;
    m.add_function(wrap_pyfunction!(crate::timers::timer, m)?)?;
    m.add_function(wrap_pyfunction!(crate::timers::every, m)?)?;
    m.add_function(wrap_pyfunction!(wait_fd, m)?)?;
    m.add("SEND_FLUSH", SEND_FLUSH)?;
    m.add("SEND_LAST", SEND_LAST)?;
    m.add("__doc__", "nginx constants for nginx-python handlers")?;
    Ok(())
}
