//! `r.var` (nginx variables) and `r.arg` (decoded query arguments).

use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::request::Request;
use crate::ffi::{self, ngx_http_request_t};
use crate::runtime::convert::{str_bytes, to_str};
use crate::text::parse_query;

/// `r.var`: read-only mapping; an unknown or not-found variable is a KeyError.
#[pyclass(unsendable, module = "ngx")]
pub struct Variables {
    r: Py<Request>,
}

impl Variables {
    pub fn new(r: &Bound<'_, Request>) -> Self {
        Variables { r: r.clone().unbind() }
    }

    fn lookup<'py>(&self, py: Python<'py>, name: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyString>>> {
        let r = self.r.borrow(py).raw()?;
        let s = name.cast::<PyString>().map_err(|_| PyTypeError::new_err("variable names are str"))?;
        let mut lower = str_bytes(s)?.as_bytes().to_ascii_lowercase();
        // SAFETY: r is live; nginx reads the name only during the call.
        unsafe {
            let key = ffi::ngx_hash_key(lower.as_mut_ptr(), lower.len());
            let mut n = ffi::ngx_str_t { len: lower.len(), data: lower.as_mut_ptr() };
            let v = ffi::ngx_http_get_variable(r, &mut n, key);
            if v.is_null() || (*v).not_found() != 0 || (*v).valid() == 0 {
                return Ok(None);
            }
            let bytes = if (*v).len() == 0 { &[][..] } else { std::slice::from_raw_parts((*v).data, (*v).len() as usize) };
            Ok(Some(to_str(py, bytes)))
        }
    }
}

#[pymethods]
impl Variables {
    fn __getitem__<'py>(&self, py: Python<'py>, name: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyString>> {
        self.lookup(py, name)?.ok_or_else(|| PyKeyError::new_err(name.clone().unbind()))
    }

    #[pyo3(signature = (name, default = None))]
    fn get<'py>(&self, py: Python<'py>, name: &Bound<'py, PyAny>, default: Option<Bound<'py, PyAny>>) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(self.lookup(py, name)?.map(|v| v.into_any()).or(default))
    }

    fn __contains__(&self, py: Python<'_>, name: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.lookup(py, name)?.is_some())
    }
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
    Ok(py.import("types")?.getattr("MappingProxyType")?.call1((d,))?.unbind())
}
