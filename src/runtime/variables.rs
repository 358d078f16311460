//! `r.var` / `s.var`: one mapping of nginx variables for both modules.
//! The owner (request or session) supplies the lookup, and the store where
//! variables can be set (`r.var[name] = value`; `s.var` is read-only); an
//! unknown or not-found variable is a KeyError.

use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyString;

use super::convert::{str_bytes, to_str};
use crate::ffi::{self, ngx_str_t, ngx_uint_t, ngx_variable_value_t};

/// Finds a variable of `owner` (`ngx_http_get_variable` /
/// `ngx_stream_get_variable`): `name` is lowercase, `key` its hash. Err when
/// the owner has ended; null when nginx has no such variable.
pub type Lookup = unsafe fn(owner: &Bound<'_, PyAny>, name: &mut ngx_str_t, key: ngx_uint_t) -> PyResult<*mut ngx_variable_value_t>;

/// Sets variable `name` (lowercase, `[a-z0-9_]`) of `owner` to `value`, or
/// explains why nginx does not let it be set.
pub type Store = fn(owner: &Bound<'_, PyAny>, name: &[u8], value: &[u8]) -> PyResult<()>;

#[pyclass(unsendable, module = "ngx")]
pub struct Variables {
    owner: Py<PyAny>,
    lookup: Lookup,
    store: Option<Store>,
}

impl Variables {
    pub fn new(owner: &Bound<'_, PyAny>, lookup: Lookup) -> Self {
        Variables { owner: owner.clone().unbind(), lookup, store: None }
    }

    /// Variables that `r.var[name] = value` can set through `store`.
    pub fn settable(owner: &Bound<'_, PyAny>, lookup: Lookup, store: Store) -> Self {
        Variables { owner: owner.clone().unbind(), lookup, store: Some(store) }
    }

    fn get_value<'py>(&self, py: Python<'py>, name: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyString>>> {
        let s = name.cast::<PyString>().map_err(|_| PyTypeError::new_err("variable names are str"))?;
        let mut lower = str_bytes(s)?.as_bytes().to_ascii_lowercase();
        // Only names nginx's configuration could spell ([a-z0-9_]): nginx's
        // prefix variables parse the rest of the name (`arg_a&b` made
        // ngx_http_arg compute a negative length), so anything else is
        // simply not a variable.
        if lower.is_empty() || !lower.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_') {
            return Ok(None);
        }
        // SAFETY: nginx reads the name only during the call; the value it
        // returns lives in the owner's pool, which is live (lookup checked
        // it) while we copy it into a str.
        unsafe {
            let key = ffi::ngx_hash_key(lower.as_mut_ptr(), lower.len());
            let mut n = ngx_str_t { len: lower.len(), data: lower.as_mut_ptr() };
            let v = (self.lookup)(self.owner.bind(py), &mut n, key)?;
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
        self.get_value(py, name)?.ok_or_else(|| PyKeyError::new_err(name.clone().unbind()))
    }

    #[pyo3(signature = (name, default = None))]
    fn get<'py>(&self, py: Python<'py>, name: &Bound<'py, PyAny>, default: Option<Bound<'py, PyAny>>) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(self.get_value(py, name)?.map(|v| v.into_any()).or(default))
    }

    fn __contains__(&self, py: Python<'_>, name: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.get_value(py, name)?.is_some())
    }

    fn __setitem__(&self, py: Python<'_>, name: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some(store) = self.store else {
            return Err(PyTypeError::new_err("s.var is read-only"));
        };
        let s = name.cast::<PyString>().map_err(|_| PyTypeError::new_err("variable names are str"))?;
        let lower = str_bytes(s)?.as_bytes().to_ascii_lowercase();
        if lower.is_empty() || !lower.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_') {
            return Err(PyKeyError::new_err(name.clone().unbind()));
        }
        let value = super::convert::value_bytes(value)?;
        store(self.owner.bind(py), &lower, &value)
    }
}
