//! `python_set $var EXPR`, the part shared by http and stream: calling the
//! handler (never suspends), turning its result into the variable's bytes,
//! and handing them to nginx. Only registering the variable and building
//! the `r` / `s` object differ between the two modules.
//!
//! Results: str -> UTF-8, bytes-like -> raw bytes, None -> not found,
//! anything else -> str(value); an exception is logged and the variable is
//! not found.

use pyo3::prelude::*;

use super::convert::value_bytes;
use super::errors::log_exception;
use super::Handler;
use crate::executor;
use crate::ffi::{self, ngx_log_t, ngx_pool_t, ngx_variable_value_t};

/// What a `python_set` variable carries (owned by the configuration's pool).
pub struct SetVar {
    handler: Handler,
    /// "python_set $name", for the error log.
    what: String,
}

impl SetVar {
    pub fn new(handler: Handler, name: &[u8]) -> SetVar {
        SetVar { handler, what: format!("python_set ${}", String::from_utf8_lossy(name)) }
    }

    /// One evaluation: the handler called with the object `object` builds
    /// (`r` or `s`). None is "not found", also after a logged exception.
    ///
    /// # Safety
    /// `log` must be a live nginx log.
    pub unsafe fn evaluate(
        &self,
        log: *mut ngx_log_t,
        object: impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyAny>>,
    ) -> Option<Vec<u8>> {
        executor::run_nonsuspending(|| {
            Python::attach(|py| {
                let result = object(py).and_then(|obj| self.handler.call(&obj)).and_then(|val| {
                    if val.is_none() {
                        return Ok(None);
                    }
                    Ok(Some(value_bytes(&val)?.into_owned()))
                });
                result.unwrap_or_else(|e| {
                    // SAFETY: the caller guarantees `log`.
                    unsafe { log_exception(py, log, &self.what, &e) };
                    None
                })
            })
        })
    }
}

/// Stores an evaluation's result in nginx's variable value (copied into
/// `pool`); None, or no memory, is "not found".
///
/// # Safety
/// `v` must be the value nginx asked for and `pool` the request's or
/// session's live pool.
pub unsafe fn fill(v: *mut ngx_variable_value_t, pool: *mut ngx_pool_t, value: Option<Vec<u8>>) {
    let v = &mut *v;
    match value.and_then(|b| ffi::pool_str(pool, &b)) {
        Some(s) => {
            v.data = s.data;
            v.set_len(s.len as u32);
            v.set_valid(1);
            v.set_no_cacheable(0);
            v.set_not_found(0);
        }
        None => v.set_not_found(1),
    }
}

/// The variable is not found (what a failed evaluation gives nginx).
///
/// # Safety
/// `v` must be the value nginx asked for.
pub unsafe fn not_found(v: *mut ngx_variable_value_t) -> ffi::ngx_int_t {
    (*v).set_not_found(1);
    ffi::OK
}
