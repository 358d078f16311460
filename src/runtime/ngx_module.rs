//! The `ngx` module: nginx's result codes, log levels and send flags.

use pyo3::prelude::*;

use crate::ffi;

/// `r.send(data, flags)`: flush the output after this piece.
pub const SEND_FLUSH: i64 = 1;
/// `r.send(data, flags)`: this is the last piece of the body.
pub const SEND_LAST: i64 = 2;

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
    m.add("SEND_FLUSH", SEND_FLUSH)?;
    m.add("SEND_LAST", SEND_LAST)?;
    m.add("__doc__", "nginx constants for nginx-python handlers")?;
    Ok(())
}
