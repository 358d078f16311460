//! `ngx.shared` (the zones by name) and `ngx.shared['NAME']` (one zone as
//! a mapping-like object). Each method is one locked operation on the zone.

use pyo3::exceptions::{PyKeyError, PyOverflowError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyFloat, PyInt, PyList, PyString};

use super::zone::{Key, Locked, Value};
use super::{zones, Zone};
use crate::ffi;
use crate::runtime::convert::{str_bytes, to_str};

/// `ngx.shared`: the configuration's shared dicts by name.
#[pyclass(frozen, module = "ngx", name = "SharedDicts")]
pub struct SharedDicts;

fn find(name: &str) -> Option<*mut Zone> {
    // SAFETY: zones of the running cycle are live.
    zones().iter().copied().find(|&z| unsafe { (*z).name == name })
}

#[pymethods]
impl SharedDicts {
    fn __getitem__(&self, name: &str) -> PyResult<SharedDict> {
        if !crate::core_module::worker_started() {
            return Err(PyRuntimeError::new_err(format!(
                "python_shared_dict \"{name}\" is usable once nginx runs (handlers, python_init_worker, timers), \
                 not at configuration time"
            )));
        }
        let z = find(name).ok_or_else(|| PyKeyError::new_err(format!("no python_shared_dict \"{name}\"")))?;
        // SAFETY: live zone of the running cycle.
        let zone = unsafe { &*z };
        let (pool, header) = zone.mapped().ok_or_else(|| PyRuntimeError::new_err("the zone is not mapped"))?;
        Ok(SharedDict { pool, header, size: zone.size, name: zone.name.clone() })
    }
    fn __contains__(&self, name: &str) -> bool {
        find(name).is_some()
    }
    fn keys(&self) -> Vec<String> {
        // SAFETY: live zones.
        zones().iter().map(|&z| unsafe { (*z).name.clone() }).collect()
    }
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(PyList::new(py, self.keys())?.try_iter()?.into_any())
    }
    fn __len__(&self) -> usize {
        zones().len()
    }
}

/// One zone. Valid for the worker's life: a worker's configuration (and so
/// its mapped zones) never changes; a reload starts new workers.
#[pyclass(frozen, module = "ngx", name = "SharedDict")]
pub struct SharedDict {
    pool: *mut ffi::ngx_slab_pool_t,
    header: *mut super::zone::Header,
    size: usize,
    name: String,
}

// SAFETY: the pointers are to shared memory that every access locks
// (`Locked`); the object holds nothing thread-bound.
unsafe impl Send for SharedDict {}
unsafe impl Sync for SharedDict {}

/// A key's bytes: str (UTF-8, surrogateescape) or bytes.
fn key_bytes(key: &Bound<'_, PyAny>) -> PyResult<(Vec<u8>, bool)> {
    let (b, is_str) = if let Ok(s) = key.cast::<PyString>() {
        (str_bytes(s)?.as_bytes().to_vec(), true)
    } else if let Ok(b) = key.cast::<PyBytes>() {
        (b.as_bytes().to_vec(), false)
    } else {
        return Err(PyTypeError::new_err(format!("shared dict keys are str or bytes, not {}", key.get_type().name()?)));
    };
    if b.is_empty() || b.len() > 65535 {
        return Err(PyValueError::new_err("shared dict keys are 1 to 65535 bytes long"));
    }
    Ok((b, is_str))
}

fn value_of(v: &Bound<'_, PyAny>) -> PyResult<Value> {
    if v.is_instance_of::<PyBool>() {
        return Ok(Value::Bool(v.extract()?));
    }
    if v.is_instance_of::<PyInt>() {
        return v.extract::<i64>().map(Value::Int).map_err(|_| PyOverflowError::new_err("shared dict ints are 64-bit"));
    }
    if v.is_instance_of::<PyFloat>() {
        return Ok(Value::Float(v.extract()?));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Value::Str(str_bytes(s)?.as_bytes().to_vec()));
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(Value::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(b) = v.cast::<PyByteArray>() {
        return Ok(Value::Bytes(b.to_vec()));
    }
    Err(PyTypeError::new_err(format!(
        "shared dict values are str, bytes, int, float or bool, not {}",
        v.get_type().name()?
    )))
}

fn to_py(py: Python<'_>, v: Value) -> PyResult<Py<PyAny>> {
    Ok(match v {
        Value::Str(b) => to_str(py, &b).into_any().unbind(),
        Value::Bytes(b) => PyBytes::new(py, &b).into_any().unbind(),
        Value::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        Value::Float(f) => f.into_pyobject(py)?.into_any().unbind(),
        Value::Bool(b) => PyBool::new(py, b).to_owned().into_any().unbind(),
    })
}

/// Seconds -> milliseconds; None or 0: never expires.
fn ttl_ms(ttl: Option<f64>) -> PyResult<u64> {
    match ttl {
        None => Ok(0),
        Some(t) if t.is_nan() || t < 0.0 => Err(PyValueError::new_err("ttl must be a non-negative number of seconds")),
        Some(t) => Ok((t * 1000.0).ceil().min(u64::MAX as f64 / 4.0) as u64),
    }
}

impl SharedDict {
    fn lock(&self) -> Locked {
        // SAFETY: a mapped zone of this worker's configuration.
        unsafe { Locked::lock(self.pool, self.header) }
    }
    fn full(&self) -> PyErr {
        PyValueError::new_err(format!("the value does not fit in python_shared_dict \"{}\"", self.name))
    }
    /// set / add / replace: `want` None: always; Some(true): only if the
    /// key exists; Some(false): only if it does not.
    fn store(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>, ttl: Option<f64>, want: Option<bool>) -> PyResult<bool> {
        let (k, is_str) = key_bytes(key)?;
        let v = value_of(value)?;
        let ms = ttl_ms(ttl)?;
        let mut z = self.lock();
        if let Some(exists) = want {
            if z.contains(&k) != exists {
                return Ok(false);
            }
        }
        let forced = z.set(&Key { bytes: &k, is_str }, &v, ms).map_err(|()| self.full())?;
        Ok(if want.is_none() { forced } else { true })
    }
}

#[pymethods]
impl SharedDict {
    #[pyo3(signature = (key, default = None))]
    fn get(&self, py: Python<'_>, key: &Bound<'_, PyAny>, default: Option<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        let (k, _) = key_bytes(key)?;
        let v = self.lock().get(&k);
        match v {
            Some(v) => to_py(py, v),
            None => Ok(default.unwrap_or_else(|| py.None())),
        }
    }

    /// Stores the value; True when other live entries were evicted to fit.
    #[pyo3(signature = (key, value, ttl = None))]
    fn set(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>, ttl: Option<f64>) -> PyResult<bool> {
        self.store(key, value, ttl, None)
    }

    /// Stores the value only if the key is absent; True when stored.
    #[pyo3(signature = (key, value, ttl = None))]
    fn add(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>, ttl: Option<f64>) -> PyResult<bool> {
        self.store(key, value, ttl, Some(false))
    }

    /// Stores the value only if the key is present; True when stored.
    #[pyo3(signature = (key, value, ttl = None))]
    fn replace(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>, ttl: Option<f64>) -> PyResult<bool> {
        self.store(key, value, ttl, Some(true))
    }

    /// Atomically adds `delta`; a missing key is KeyError unless `init`
    /// is given (stored with `ttl`, then incremented). Returns the new value.
    #[pyo3(signature = (key, delta = None, init = None, ttl = None))]
    fn incr(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        delta: Option<&Bound<'_, PyAny>>,
        init: Option<&Bound<'_, PyAny>>,
        ttl: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let (k, is_str) = key_bytes(key)?;
        let delta = match delta {
            None => Value::Int(1),
            Some(d) => number(d, "delta")?,
        };
        let init = init.map(|i| number(i, "init")).transpose()?;
        let ms = ttl_ms(ttl)?;
        let mut z = self.lock();
        let result = match z.update_number(&k, |old| add(old, &delta)) {
            Some(r) => r.map_err(PyTypeError::new_err)?,
            None => {
                let Some(init) = init else {
                    return Err(PyKeyError::new_err(key.clone().unbind()));
                };
                let v = add(&init, &delta).map_err(PyTypeError::new_err)?;
                z.set(&Key { bytes: &k, is_str }, &v, ms).map_err(|()| self.full())?;
                v
            }
        };
        drop(z);
        to_py(py, result)
    }

    /// Removes the key; True if it was there.
    fn delete(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let (k, _) = key_bytes(key)?;
        Ok(self.lock().delete(&k))
    }

    /// Seconds the key has left (None: never expires); KeyError if absent.
    fn ttl(&self, key: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
        let (k, _) = key_bytes(key)?;
        match self.lock().ttl(&k) {
            None => Err(PyKeyError::new_err(key.clone().unbind())),
            Some(ms) => Ok(ms.map(|ms| ms as f64 / 1000.0)),
        }
    }

    /// Sets the key's time to live (None or 0: never expires); True if the
    /// key exists.
    #[pyo3(signature = (key, ttl))]
    fn expire(&self, key: &Bound<'_, PyAny>, ttl: Option<f64>) -> PyResult<bool> {
        let (k, _) = key_bytes(key)?;
        let ms = ttl_ms(ttl)?;
        Ok(self.lock().expire(&k, ms))
    }

    /// Live keys, most recently used first (at most `limit`; 0: all).
    #[pyo3(signature = (limit = 1024))]
    fn keys<'py>(&self, py: Python<'py>, limit: usize) -> PyResult<Bound<'py, PyList>> {
        let keys = self.lock().keys(limit);
        let items: Vec<Py<PyAny>> = keys
            .into_iter()
            .map(|(k, is_str)| if is_str { to_str(py, &k).into_any().unbind() } else { PyBytes::new(py, &k).into_any().unbind() })
            .collect();
        PyList::new(py, items)
    }

    fn flush_all(&self) {
        self.lock().flush_all();
    }

    /// The zone's size in bytes.
    fn capacity(&self) -> usize {
        self.size
    }

    /// Free bytes (whole free pages of the zone).
    fn free_space(&self) -> usize {
        self.lock().free_space()
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let (k, _) = key_bytes(key)?;
        Ok(self.lock().contains(&k))
    }

    fn __len__(&self) -> usize {
        self.lock().len()
    }

    fn __getitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let (k, _) = key_bytes(key)?;
        let v = self.lock().get(&k);
        match v {
            Some(v) => to_py(py, v),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    fn __setitem__(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.store(key, value, None, None).map(|_| ())
    }

    fn __delitem__(&self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.delete(key)? {
            Ok(())
        } else {
            Err(PyKeyError::new_err(key.clone().unbind()))
        }
    }

    fn __repr__(&self) -> String {
        format!("<ngx.SharedDict {:?} ({} bytes)>", self.name, self.size)
    }
}

/// An int or float argument (not bool) as a stored number.
fn number(v: &Bound<'_, PyAny>, what: &str) -> PyResult<Value> {
    if !v.is_instance_of::<PyBool>() && (v.is_instance_of::<PyInt>() || v.is_instance_of::<PyFloat>()) {
        return value_of(v);
    }
    Err(PyTypeError::new_err(format!("{what} must be an int or a float, not {}", v.get_type().name()?)))
}

fn add(old: &Value, delta: &Value) -> Result<Value, String> {
    match (old, delta) {
        (Value::Int(a), Value::Int(b)) => a.checked_add(*b).map(Value::Int).ok_or_else(|| "integer overflow".into()),
        (Value::Int(a), Value::Float(b)) => Ok(Value::Float(*a as f64 + b)),
        (Value::Float(a), Value::Int(b)) => Ok(Value::Float(a + *b as f64)),
        (Value::Float(a), Value::Float(b)) => Ok(Value::Float(a + b)),
        _ => Err("the stored value is not a number".into()),
    }
}
