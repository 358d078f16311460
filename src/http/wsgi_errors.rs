//! `wsgi.errors`: a text stream whose lines go to nginx's error log (level
//! error, with the request's context), one entry per line.

use pyo3::prelude::*;
use pyo3::types::PyString;

use super::request::Request;
use crate::ffi;

#[pyclass(unsendable, module = "ngx", name = "WsgiErrors")]
pub struct Errors {
    r: Py<Request>,
    /// The start of a line not ended yet.
    partial: String,
}

impl Errors {
    pub fn new(r: &Bound<'_, Request>) -> Self {
        Errors { r: r.clone().unbind(), partial: String::new() }
    }

    fn log(&self, py: Python<'_>, line: &str) -> PyResult<()> {
        let r = self.r.borrow(py).raw()?;
        // SAFETY: the request is live (checked above), so is its connection's log.
        unsafe { ffi::log_error(ffi::NGX_LOG_ERR as usize, (*(*r).connection).log, line.as_bytes()) };
        Ok(())
    }
}

#[pymethods]
impl Errors {
    /// Text only, as PEP 3333 says (lone surrogates become U+FFFD).
    fn write(&mut self, py: Python<'_>, s: &Bound<'_, PyString>) -> PyResult<usize> {
        let s = s.to_string_lossy();
        self.partial.push_str(&s);
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            self.log(py, &line[..i])?;
        }
        Ok(s.chars().count())
    }

    fn writelines(&mut self, py: Python<'_>, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for s in lines.try_iter()? {
            self.write(py, s?.cast::<PyString>()?)?;
        }
        Ok(())
    }

    fn flush(&mut self, py: Python<'_>) -> PyResult<()> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.log(py, &line)?;
        }
        Ok(())
    }
}
