//! `r.var` (nginx variables) and `r.arg` (decoded query arguments).

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};

use super::request::Request;
use crate::ffi::{self, ngx_http_request_t, ngx_str_t, ngx_uint_t, ngx_variable_value_t};
use crate::runtime::convert::to_str;
use crate::text::parse_query;

/// `r.var`'s lookup (see `runtime::variables`): the request's variable.
///
/// # Safety
/// nginx reads `name` only during the call.
pub unsafe fn request_variable(owner: &Bound<'_, PyAny>, name: &mut ngx_str_t, key: ngx_uint_t) -> PyResult<*mut ngx_variable_value_t> {
    let r = owner.cast::<Request>()?.borrow().raw()?;
    Ok(ffi::ngx_http_get_variable(r, name, key))
}

/// `r.arg`: the query string decoded once into a read-only mapping
/// (`types.MappingProxyType` over a dict); the first of repeated names wins.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn decoded_args(py: Python<'_>, r: *mut ngx_http_request_t) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    for (k, v) in parse_query(ffi::bytes(&(*r).args)) {
        let k = to_str(py, &k);
        if !d.contains(&k)? {
            d.set_item(k, to_str(py, &v))?;
        }
    }
    // Imported once per process (the interpreter is never finalized): an
    // import per request cost ~3,000 instructions.
    static PROXY: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    Ok(PROXY.import(py, "types", "MappingProxyType")?.call1((d,))?.unbind())
}
