//! Values crossing the boundary. nginx has bytes; Python users get `str`
//! decoded as UTF-8 with `surrogateescape`, so bytes that are not UTF-8
//! survive a round trip unchanged.

use std::borrow::Cow;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};

/// nginx bytes -> Python `str`.
pub fn to_str<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyString> {
    // SAFETY: decoding with surrogateescape cannot fail on any input except
    // out of memory, where we fall back to an empty string.
    unsafe {
        let p = ffi::PyUnicode_DecodeUTF8(b.as_ptr().cast(), b.len() as ffi::Py_ssize_t, c"surrogateescape".as_ptr());
        match Bound::from_owned_ptr_or_err(py, p) {
            Ok(s) => s.cast_into_unchecked(),
            Err(_) => PyString::new(py, ""),
        }
    }
}

/// `str` -> UTF-8 bytes, lone surrogates back to the bytes they stood for.
pub fn str_bytes<'py>(s: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyBytes>> {
    // SAFETY: s is a live str; the result is a new reference or an error.
    unsafe {
        let p = ffi::PyUnicode_AsEncodedString(s.as_ptr(), c"utf-8".as_ptr(), c"surrogateescape".as_ptr());
        Ok(Bound::from_owned_ptr_or_err(s.py(), p)?.cast_into_unchecked())
    }
}

/// Bytes of anything written out: `str` (UTF-8), `bytes`, `bytearray`,
/// `memoryview` (or any buffer). Other types are a TypeError naming `what`.
pub fn data_bytes<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Cow::Owned(str_bytes(s)?.as_bytes().to_vec()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Cow::Owned(b.to_vec()));
    }
    // memoryview and other buffers: bytes(obj) copies through the buffer protocol
    let is_buffer = unsafe { ffi::PyObject_CheckBuffer(obj.as_ptr()) } != 0;
    if is_buffer {
        let b = obj.py().get_type::<PyBytes>().call1((obj,))?;
        return Ok(Cow::Owned(b.cast::<PyBytes>()?.as_bytes().to_vec()));
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be str, bytes, bytearray or memoryview, not {}",
        obj.get_type().name()?
    )))
}

/// An error-log level as `r.log` / `s.log` take it: `ngx.LOG_EMERG` (1)
/// to `ngx.LOG_DEBUG` (8); anything else is a ValueError (nginx indexes its
/// level names with it).
pub fn log_level(level: i64) -> PyResult<crate::ffi::ngx_uint_t> {
    let (lo, hi) = (crate::ffi::NGX_LOG_EMERG as i64, crate::ffi::NGX_LOG_DEBUG as i64);
    if (lo..=hi).contains(&level) {
        Ok(level as crate::ffi::ngx_uint_t)
    } else {
        Err(pyo3::exceptions::PyValueError::new_err(format!(
            "log level must be ngx.LOG_EMERG ({lo}) .. ngx.LOG_DEBUG ({hi}), not {level}"
        )))
    }
}

/// Bytes of a header value: like `data_bytes`, and any other object by its
/// `str()` (so `r.ho['Content-Length'] = 5` works).
pub fn value_bytes<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    match data_bytes(obj, "value") {
        Ok(b) => Ok(b),
        Err(_) => Ok(Cow::Owned(str_bytes(&obj.str()?)?.as_bytes().to_vec())),
    }
}
