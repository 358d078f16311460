//! What a stream handler's return value means for the session.
//!
//! access / preread: None, ngx.OK (or ngx.DECLINED) -> go on to the next
//! handler; ngx.AGAIN (preread only) -> wait for more data; ngx.ERROR ->
//! close the session with status 500; ngx.ABORT -> close it as refused
//! (403 in access, 400 in preread: the `$status` nginx's own access and
//! preread modules log for a refused client).
//! content: None, ngx.OK -> the session ends normally (200); ngx.ERROR,
//! ngx.ABORT -> it ends with 500.
//! Anything else is a TypeError / ValueError, handled like an exception.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt};

use crate::ffi::{self, ngx_int_t};

pub const STATUS_OK: ngx_int_t = ffi::NGX_STREAM_OK as ngx_int_t;
pub const STATUS_BAD_REQUEST: ngx_int_t = ffi::NGX_STREAM_BAD_REQUEST as ngx_int_t;
pub const STATUS_FORBIDDEN: ngx_int_t = ffi::NGX_STREAM_FORBIDDEN as ngx_int_t;
pub const STATUS_ERROR: ngx_int_t = ffi::NGX_STREAM_INTERNAL_SERVER_ERROR as ngx_int_t;

/// The phases whose handlers return a value that matters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Access,
    Preread,
    Content,
}

impl Phase {
    /// The directive, for messages.
    pub fn directive(self) -> &'static str {
        match self {
            Phase::Access => "python_access",
            Phase::Preread => "python_preread",
            Phase::Content => "python_content",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    /// Go on with the next handler or phase (content: end normally).
    Continue,
    /// Read more data, then call the handler again (preread only).
    Again,
    /// Close the session with this `$status`.
    Close(ngx_int_t),
}

/// Interprets a handler's return value in `phase`.
pub fn verdict(v: &Bound<'_, PyAny>, phase: Phase) -> PyResult<Verdict> {
    let what = phase.directive();
    if v.is_none() {
        return Ok(Verdict::Continue);
    }
    if !v.is_instance_of::<PyInt>() || v.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{what} returned {}: expected None or an ngx constant",
            v.get_type().name()?
        )));
    }
    let n: i64 = v.extract()?;
    match (n as ngx_int_t, phase) {
        (ffi::OK | ffi::DECLINED, _) => Ok(Verdict::Continue),
        (ffi::AGAIN, Phase::Preread) => Ok(Verdict::Again),
        (ffi::ERROR, _) => Ok(Verdict::Close(STATUS_ERROR)),
        (ffi::ABORT, Phase::Access) => Ok(Verdict::Close(STATUS_FORBIDDEN)),
        (ffi::ABORT, Phase::Preread) => Ok(Verdict::Close(STATUS_BAD_REQUEST)),
        (ffi::ABORT, Phase::Content) => Ok(Verdict::Close(STATUS_ERROR)),
        (ffi::AGAIN, _) => Err(PyValueError::new_err(format!(
            "{what} returned ngx.AGAIN: only python_preread can wait for more data"
        ))),
        _ => Err(PyValueError::new_err(format!(
            "{what} returned {n}: expected None, ngx.OK, ngx.ERROR or ngx.ABORT{}",
            if phase == Phase::Preread { " or ngx.AGAIN" } else { "" }
        ))),
    }
}
