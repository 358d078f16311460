//! The request object `r`.
//!
//! Ownership: the first Python handler of a request creates one `Request`
//! and stores it in the module's per-request context, which lives in the
//! request's pool (`ffi::pool_box`). When nginx frees the request, the
//! context is dropped: the `Request` forgets the nginx pointer (later use
//! raises RuntimeError) and the context's reference is released. Python code
//! that kept `r` holds a harmless, detached object.

use std::cell::{Cell, OnceCell};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::headers::{InputHeaders, OutputHeaders};
use super::module;
use super::output;
use super::variables;
use crate::runtime::variables::Variables;
use crate::executor;
use crate::ffi::{self, ngx_http_request_t};
use crate::runtime::ngx_module::{SEND_FLUSH, SEND_LAST};

#[pyclass(unsendable, module = "ngx", name = "Request")]
pub struct Request {
    r: Cell<*mut ngx_http_request_t>,
    /// `r.ctx`, made on first use (most handlers never touch it).
    ctx: OnceCell<Py<PyDict>>,
    args: OnceCell<Py<PyAny>>,
    /// `r.send(..., SEND_LAST)` happened: the body is complete.
    pub(super) finished: Cell<bool>,
    /// A content handler is running: the only place a response can be sent
    /// from (access runs before it, python_set/python_log anywhere).
    pub(super) may_send: Cell<bool>,
    /// Body pieces nginx has not written out yet (freed once it has).
    pending: std::cell::RefCell<Vec<*mut u8>>,
}

/// The module's per-request context, owned by the request's pool: the one
/// reference that keeps `r` alive for the request's duration, and the
/// handler waiting on its behalf (unblock builds).
pub struct RequestCtx {
    obj: Option<Py<Request>>,
    /// A suspended access/content handler of this request.
    pub waiting: Cell<Option<executor::Handle>>,
    /// The result of an access handler that finished after suspending.
    pub access_rc: Cell<Option<ffi::ngx_int_t>>,
}

/// Request objects nobody kept after their request, for the next requests
/// (an object made and freed per request cost ~700 instructions). Only an
/// object whose one reference was the context's comes here, reset to the
/// state of a new one: no Python code can tell it was used before.
const SPARE_OBJECTS: usize = 64;
thread_local! {
    static SPARE: std::cell::RefCell<Vec<Py<Request>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Drop for RequestCtx {
    fn drop(&mut self) {
        Python::attach(|py| {
            if let Some(obj) = self.obj.take() {
                {
                    let req = obj.borrow(py);
                    req.r.set(std::ptr::null_mut());
                    // Break reference cycles through r.ctx (r.ctx['me'] = r):
                    // the request object is not tracked by Python's collector.
                    if let Some(d) = req.ctx.get() {
                        d.bind(py).clear();
                    }
                }
                // Still referenced only here (the borrow above is gone): reuse it.
                // SAFETY: GIL held; `obj` is a live object we own a reference to.
                if unsafe { pyo3::ffi::Py_REFCNT(obj.as_ptr()) } == 1 {
                    let mut req = obj.borrow_mut(py);
                    req.ctx.take();
                    req.args.take();
                    req.finished.set(false);
                    req.may_send.set(false);
                    // Pool pointers of the ended request: its pool is freed.
                    req.pending.get_mut().clear();
                    drop(req);
                    SPARE.with_borrow_mut(|s| {
                        if s.len() < SPARE_OBJECTS {
                            s.push(obj);
                        }
                    });
                }
            }
        });
        // The request is gone: a handler still waiting for it unwinds now.
        if let Some(h) = self.waiting.take() {
            h.cancel();
        }
    }
}

/// The module context of `r`, created (with the request object) on first use.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn request_ctx<'a>(py: Python<'_>, r: *mut ngx_http_request_t) -> PyResult<&'a RequestCtx> {
    let ctx = ffi::http_ctx::<RequestCtx>(r, module());
    if !ctx.is_null() {
        return Ok(&*ctx);
    }
    let obj = match SPARE.with_borrow_mut(|s| s.pop()) {
        Some(obj) => {
            obj.borrow(py).r.set(r);
            obj
        }
        None => Py::new(
            py,
            Request { r: Cell::new(r), ctx: OnceCell::new(), args: OnceCell::new(), finished: Cell::new(false), may_send: Cell::new(false), pending: Default::default() },
        )?,
    };
    let ctx = ffi::pool_box((*r).pool, RequestCtx { obj: Some(obj), waiting: Cell::new(None), access_rc: Cell::new(None) })
        .ok_or_else(|| PyRuntimeError::new_err("out of memory"))?;
    ffi::http_set_ctx(r, module(), ctx);
    Ok(&*ctx)
}

/// The request object of `r`, created on first use.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn request_object<'py>(py: Python<'py>, r: *mut ngx_http_request_t) -> PyResult<Bound<'py, Request>> {
    let ctx = request_ctx(py, r)?;
    match &ctx.obj {
        Some(obj) => Ok(obj.bind(py).clone()),
        None => Err(PyRuntimeError::new_err("the request has ended")),
    }
}

impl Request {
    fn check_may_send(&self, what: &str) -> PyResult<()> {
        if self.may_send.get() {
            return Ok(());
        }
        Err(PyRuntimeError::new_err(format!(
            "r.{what}() works only in python_content: python_access, python_set and python_log \
             cannot send a response (return a status from python_access instead)"
        )))
    }

    /// The nginx request, or RuntimeError once it has ended.
    pub(super) fn raw(&self) -> PyResult<*mut ngx_http_request_t> {
        let r = self.r.get();
        if r.is_null() {
            Err(PyRuntimeError::new_err("the request has ended; its object can no longer be used"))
        } else {
            Ok(r)
        }
    }
}

#[pymethods]
impl Request {
    /// Input headers: read-only, case-insensitive mapping.
    #[getter]
    fn hi(slf: &Bound<'_, Self>) -> PyResult<InputHeaders> {
        slf.borrow().raw()?;
        Ok(InputHeaders::new(slf))
    }

    /// Output headers: read-write, case-insensitive mapping.
    #[getter]
    fn ho(slf: &Bound<'_, Self>) -> PyResult<OutputHeaders> {
        slf.borrow().raw()?;
        Ok(OutputHeaders::new(slf))
    }

    /// nginx variables: read-only mapping.
    #[getter]
    fn var(slf: &Bound<'_, Self>) -> PyResult<Variables> {
        slf.borrow().raw()?;
        Ok(Variables::new(slf.as_any(), variables::request_variable))
    }

    /// Query arguments, URL-decoded: read-only mapping (first value wins).
    #[getter]
    fn arg(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let r = self.raw()?;
        if let Some(a) = self.args.get() {
            return Ok(a.clone_ref(py));
        }
        // SAFETY: r is live (checked above).
        let a = unsafe { variables::decoded_args(py, r)? };
        Ok(self.args.get_or_init(|| a).clone_ref(py))
    }

    /// The request body (bytes) once nginx has read it (content handlers),
    /// None when there is none.
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, pyo3::types::PyBytes>>> {
        let r = self.raw()?;
        // SAFETY: r is live (checked above).
        unsafe { super::body::body(py, r) }
    }

    /// A dict private to this request, kept across its phases.
    #[getter]
    fn ctx(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        self.raw()?;
        Ok(self.ctx.get_or_init(|| PyDict::new(py).unbind()).clone_ref(py))
    }

    #[getter]
    fn get_status(&self) -> PyResult<usize> {
        // SAFETY: live request.
        Ok(unsafe { (*self.raw()?).headers_out.status })
    }

    #[setter]
    fn set_status(&self, status: i64) -> PyResult<()> {
        let r = self.raw()?;
        // 1xx are interim responses: nginx would send one as the final answer.
        if !(200..=999).contains(&status) {
            return Err(PyValueError::new_err(format!("status must be 200..999, not {status}")));
        }
        // SAFETY: live request; nginx rebuilds the status line from `status`.
        unsafe {
            (*r).headers_out.status = status as usize;
            (*r).headers_out.status_line = ffi::NULL_STR;
        }
        Ok(())
    }

    /// One error-log line at `level` (default `ngx.LOG_INFO`).
    #[pyo3(signature = (msg, level = ffi::NGX_LOG_INFO as i64))]
    fn log(&self, msg: &Bound<'_, PyAny>, level: i64) -> PyResult<()> {
        let r = self.raw()?;
        let level = crate::runtime::convert::log_level(level)?;
        let text = crate::runtime::convert::value_bytes(msg)?;
        // SAFETY: live request and its connection's log.
        unsafe { ffi::log_error(level, (*(*r).connection).log, &text) };
        Ok(())
    }

    /// Sends the status line and headers.
    #[pyo3(name = "sendHeader")]
    fn send_header(&self) -> PyResult<()> {
        let r = self.raw()?;
        self.check_may_send("sendHeader")?;
        // SAFETY: live request.
        unsafe {
            if (*r).header_sent() != 0 {
                return Err(PyRuntimeError::new_err("the header has already been sent"));
            }
            output::send_header(r)
        }
    }

    /// Sends a piece of the body (headers first if not sent yet).
    #[pyo3(signature = (data = None, flags = 0))]
    fn send(&self, data: Option<&Bound<'_, PyAny>>, flags: i64) -> PyResult<()> {
        let r = self.raw()?;
        self.check_may_send("send")?;
        if self.finished.get() {
            return Err(PyRuntimeError::new_err("the response is complete (sent with ngx.SEND_LAST)"));
        }
        let bytes = match data {
            Some(d) => crate::runtime::convert::data_bytes(d, "data")?,
            None => std::borrow::Cow::Borrowed(&[][..]),
        };
        let last = flags & SEND_LAST != 0;
        let mut pending = self.pending.take();
        // SAFETY: live request.
        let sent = unsafe { output::send(r, &bytes, flags & SEND_FLUSH != 0, last, &mut pending) };
        self.pending.replace(pending);
        sent?;
        if last {
            self.finished.set(true);
        }
        Ok(())
    }

    fn __repr__(&self) -> String {
        match self.raw() {
            // SAFETY: live request.
            Ok(r) => unsafe {
                format!("<ngx.Request {}>", String::from_utf8_lossy(ffi::bytes(&(*r).request_line)))
            },
            Err(_) => "<ngx.Request (ended)>".into(),
        }
    }
}

/// The context of a request that already has one.
///
/// # Safety
/// `r` must be live and have had `request_ctx` called.
pub unsafe fn existing_ctx(r: *mut ngx_http_request_t) -> *const RequestCtx {
    ffi::http_ctx::<RequestCtx>(r, module())
}
