//! A compiled handler: what `python_access EXPR` and friends hold.

use std::ptr::NonNull;

use pyo3::ffi;
use pyo3::prelude::*;

/// A function of one argument compiled from a directive's EXPR. It is owned
/// by the configuration's `PyState` and valid for the life of that
/// configuration (cycle), which outlives every request that calls it.
#[derive(Clone, Copy)]
pub struct Handler {
    func: NonNull<ffi::PyObject>,
}

impl Handler {
    pub(super) fn new(func: &Bound<'_, PyAny>) -> Handler {
        Handler { func: NonNull::new(func.as_ptr()).expect("a live object") }
    }

    /// Calls the handler with the request or session object.
    pub fn call<'py>(&self, arg: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = arg.py();
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
