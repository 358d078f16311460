//! A compiled handler: what `python_access EXPR` and friends hold.

use std::ptr::NonNull;

use pyo3::ffi;
use pyo3::prelude::*;

/// A function of one argument compiled from a directive's EXPR. It is owned
/// by the configuration's `PyState` and valid for the life of that
/// configuration (cycle), which outlives every request that calls it.
///
/// An EXPR that is a plain call of a global with the request, `hello(r)`,
/// also keeps `direct`: the namespace and the name, so each request looks
/// the name up and calls the function itself, without the frame of the
/// compiled wrapper (`lambda r: (hello(r))`, ~500 instructions). When the
/// name is not a global of the namespace (a builtin, or undefined), the
/// wrapper runs and behaves (NameError and all) as it always did.
#[derive(Clone, Copy)]
pub struct Handler {
    func: NonNull<ffi::PyObject>,
    direct: Option<Direct>,
}

/// The namespace dict and the interned name of a `name(r)` handler, both
/// kept alive by the configuration's `PyState`.
#[derive(Clone, Copy)]
pub(super) struct Direct {
    pub(super) namespace: NonNull<ffi::PyObject>,
    pub(super) name: NonNull<ffi::PyObject>,
}

impl Handler {
    pub(super) fn new(func: &Bound<'_, PyAny>) -> Handler {
        Handler { func: NonNull::new(func.as_ptr()).expect("a live object"), direct: None }
    }

    pub(super) fn with_direct(func: &Bound<'_, PyAny>, direct: Option<Direct>) -> Handler {
        Handler { direct, ..Handler::new(func) }
    }

    /// Calls the handler with the request or session object.
    pub fn call<'py>(&self, arg: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = arg.py();
        if let Some(d) = self.direct {
            // SAFETY: namespace and name are kept alive by the PyState of the
            // configuration the current request belongs to; the GIL is held.
            // The looked-up function is a borrowed reference: it is owned
            // (increfed) before the call, which may rebind the name.
            unsafe {
                let f = ffi::PyDict_GetItemWithError(d.namespace.as_ptr(), d.name.as_ptr());
                if !f.is_null() {
                    let f = Bound::from_borrowed_ptr(py, f);
                    return Bound::from_owned_ptr_or_err(py, ffi::PyObject_CallOneArg(f.as_ptr(), arg.as_ptr()));
                }
                if let Some(e) = PyErr::take(py) {
                    return Err(e);
                }
            }
        }
        // SAFETY: `func` is kept alive by the PyState of the configuration
        // that the current request belongs to; the GIL is held (`py`).
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyObject_CallOneArg(self.func.as_ptr(), arg.as_ptr())) }
    }

    /// Calls a handler compiled with several parameters (`python_body_filter`:
    /// `r, chunk, last`).
    pub fn call_with<'py>(&self, args: &Bound<'py, pyo3::types::PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        let py = args.py();
        // SAFETY: as for `call`.
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyObject_Call(self.func.as_ptr(), args.as_ptr(), std::ptr::null_mut())) }
    }

    /// Calls a handler compiled without a parameter (`python_init_worker`).
    pub fn call0<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY: as for `call`.
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyObject_CallNoArgs(self.func.as_ptr())) }
    }
}
