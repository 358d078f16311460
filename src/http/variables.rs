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

/// `r.var[name] = value`: variables nginx lets be set — those of `set
/// $name` and nginx's changeable ones (`$args`, `$limit_rate`, ...),
/// through their own setter where they have one. The value is copied into
/// the request's pool; later reads of the variable (in nginx too) see it.
pub fn store_request_variable(owner: &Bound<'_, PyAny>, name: &[u8], value: &[u8]) -> PyResult<()> {
    use pyo3::exceptions::{PyKeyError, PyMemoryError, PyValueError};
    let r = owner.cast::<Request>()?.borrow().raw()?;
    let shown = String::from_utf8_lossy(name).into_owned();
    // SAFETY: `r` is live (raw() checked it); the variables' table is the
    // configuration's, which outlives the request; the value goes into the
    // request's pool, where nginx keeps variable values.
    unsafe {
        let core = &*(&raw const ffi::ngx_http_core_module);
        let cmcf = *(*r).main_conf.add(core.ctx_index) as *mut ffi::ngx_http_core_main_conf_t;
        let mut lower = name.to_vec();
        let key = ffi::ngx_hash_key(lower.as_mut_ptr(), lower.len());
        let v = ffi::ngx_hash_find(&mut (*cmcf).variables_hash, key, lower.as_mut_ptr(), lower.len()) as *mut ffi::ngx_http_variable_t;
        if v.is_null() {
            return Err(PyKeyError::new_err(format!("${shown}: no such variable to set (define it with `set ${shown} ...;` in nginx.conf)")));
        }
        if (*v).flags & ffi::NGX_HTTP_VAR_CHANGEABLE as usize == 0 {
            return Err(PyValueError::new_err(format!("${shown} is not a variable nginx lets be changed")));
        }
        if value.len() >= 1 << 28 {
            return Err(PyValueError::new_err("a variable's value is at most 256 MB (nginx's limit)"));
        }
        let data = ffi::pool_str((*r).pool, value).ok_or_else(|| PyMemoryError::new_err("no memory for the value"))?;
        let mut vv: ngx_variable_value_t = std::mem::zeroed();
        vv.set_len(value.len() as u32);
        vv.set_valid(1);
        vv.data = data.data;
        if let Some(set) = (*v).set_handler {
            set(r, &mut vv, (*v).data);
            return Ok(());
        }
        if (*v).flags & ffi::NGX_HTTP_VAR_INDEXED as usize == 0 {
            return Err(PyValueError::new_err(format!("${shown} cannot be set from Python")));
        }
        *(*r).variables.add((*v).index) = vv;
        Ok(())
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
    // Imported once per process (the interpreter is never finalized): an
    // import per request cost ~3,000 instructions.
    static PROXY: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    Ok(PROXY.import(py, "types", "MappingProxyType")?.call1((d,))?.unbind())
}
