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
    /// `r.arg`, decoded at first use (again after `r.args = ...`).
    args: std::cell::RefCell<Option<Py<PyAny>>>,
    /// `r.send(..., SEND_LAST)` happened: the body is complete.
    pub(super) finished: Cell<bool>,
    /// A content handler is running: the only place a response can be sent
    /// from (access runs before it, python_set/python_log anywhere).
    pub(super) may_send: Cell<bool>,
    /// A rewrite, access or content handler is running: the places
    /// `r.internal_redirect()` can end.
    pub(super) may_redirect: Cell<bool>,
    /// A python_rewrite handler is running: `r.uri` / `r.args` can change.
    pub(super) rewriting: Cell<bool>,
    /// Where `r.internal_redirect()` asked to go (taken by the phase glue).
    pub(super) redirect: std::cell::RefCell<Option<Vec<u8>>>,
    /// Body pieces nginx has not written out yet (freed once it has).
    chains: std::cell::RefCell<super::output::Chains>,
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
    /// The same for a rewrite handler.
    pub rewrite_rc: Cell<Option<ffi::ngx_int_t>>,
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
                    req.may_redirect.set(false);
                    req.rewriting.set(false);
                    req.redirect.take();
                    // Pool pointers of the ended request: its pool is freed.
                    req.chains.take();
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
            Request {
                r: Cell::new(r),
                ctx: OnceCell::new(),
                args: Default::default(),
                finished: Cell::new(false),
                may_send: Cell::new(false),
                may_redirect: Cell::new(false),
                rewriting: Cell::new(false),
                redirect: Default::default(),
                chains: Default::default(),
            },
        )?,
    };
    let ctx = ffi::pool_box((*r).pool, RequestCtx { obj: Some(obj), waiting: Cell::new(None), access_rc: Cell::new(None), rewrite_rc: Cell::new(None) })
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

    /// The request line can change only before nginx has chosen where the
    /// request goes: in python_rewrite.
    fn check_rewriting(&self, what: &str) -> PyResult<()> {
        if self.rewriting.get() {
            Ok(())
        } else {
            Err(PyRuntimeError::new_err(format!("{what} can be changed only in python_rewrite")))
        }
    }

    /// Runs `send` (which queues body output) for a content handler:
    /// checks that sending is allowed and the body not complete, lends it
    /// the request's busy/free buffer chains, and records whether `send` completed the
    /// body (its result). `r.send` and the WSGI response both go through
    /// here.
    pub(super) fn sending(
        &self,
        what: &str,
        send: impl FnOnce(*mut ngx_http_request_t, &mut super::output::Chains) -> PyResult<bool>,
    ) -> PyResult<()> {
        let r = self.raw()?;
        self.check_may_send(what)?;
        if self.finished.get() {
            return Err(PyRuntimeError::new_err("the response is complete (sent with ngx.SEND_LAST)"));
        }
        let mut chains = self.chains.take();
        let sent = send(r, &mut chains);
        self.chains.replace(chains);
        if sent? {
            self.finished.set(true);
        }
        Ok(())
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
        Ok(Variables::settable(slf.as_any(), variables::request_variable, variables::store_request_variable))
    }

    /// Query arguments, URL-decoded: read-only mapping (first value wins).
    #[getter]
    fn arg(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let r = self.raw()?;
        if let Some(a) = self.args.borrow().as_ref() {
            return Ok(a.clone_ref(py));
        }
        // SAFETY: r is live (checked above).
        let a = unsafe { variables::decoded_args(py, r)? };
        *self.args.borrow_mut() = Some(a.clone_ref(py));
        Ok(a)
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

    /// The request's URI path (decoded, without arguments). Settable in
    /// python_rewrite: nginx then finds the location again.
    #[getter]
    fn get_uri(&self) -> PyResult<String> {
        // SAFETY: live request.
        Ok(unsafe { String::from_utf8_lossy(ffi::bytes(&(*self.raw()?).uri)).into_owned() })
    }

    #[setter]
    fn set_uri(&self, uri: &str) -> PyResult<()> {
        let r = self.raw()?;
        self.check_rewriting("r.uri")?;
        // SAFETY: live request; the new URI is copied into its pool.
        unsafe { super::rewrite::set_uri(r, uri) }
    }

    /// The raw query string (without `?`); settable in python_rewrite.
    #[getter]
    fn get_args(&self) -> PyResult<String> {
        // SAFETY: live request.
        Ok(unsafe { String::from_utf8_lossy(ffi::bytes(&(*self.raw()?).args)).into_owned() })
    }

    #[setter]
    fn set_args(&self, args: &str) -> PyResult<()> {
        let r = self.raw()?;
        self.check_rewriting("r.args")?;
        // SAFETY: live request; the arguments are copied into its pool.
        unsafe { super::rewrite::set_args(r, args)? };
        self.args.take(); // r.arg decodes the new ones
        Ok(())
    }

    /// The request method (read-only).
    #[getter]
    fn method(&self) -> PyResult<String> {
        // SAFETY: live request.
        Ok(unsafe { String::from_utf8_lossy(ffi::bytes(&(*self.raw()?).method_name)).into_owned() })
    }

    /// Ends the handler; nginx runs the request again for `uri` (a path
    /// with optional `?args`, or a named location `@name`).
    fn internal_redirect(&self, uri: &str) -> PyResult<()> {
        self.raw()?;
        if !self.may_redirect.get() {
            return Err(PyRuntimeError::new_err(
                "r.internal_redirect() works only in python_rewrite, python_access and python_content",
            ));
        }
        // SAFETY: live request (checked above).
        if unsafe { (*self.raw()?).header_sent() } != 0 {
            return Err(PyRuntimeError::new_err("r.internal_redirect(): the response header has already been sent"));
        }
        *self.redirect.borrow_mut() = Some(super::redirect::check_target(uri)?);
        Err(super::redirect::ending())
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
        let bytes = match data {
            Some(d) => crate::runtime::convert::data_bytes(d, "data")?,
            None => std::borrow::Cow::Borrowed(&[][..]),
        };
        let last = flags & SEND_LAST != 0;
        // SAFETY: `sending` hands over a live request.
        self.sending("send", |r, chains| unsafe { output::send(r, &bytes, flags & SEND_FLUSH != 0, last, chains).map(|()| last) })
    }

    /// Starts a subrequest (unblock builds); its response object waits
    /// when read. See `subrequest.rs`.
    #[pyo3(signature = (uri, method = "GET", args = None, body = None, headers = None))]
    fn subrequest(
        &self,
        uri: &Bound<'_, PyAny>,
        method: &str,
        args: Option<&Bound<'_, PyAny>>,
        body: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<super::subrequest::Response> {
        let r = self.raw()?;
        let spec = super::subrequest::Spec::from_python(uri, method, args, body, headers)?;
        // SAFETY: r is live (checked above) and its handler is running.
        unsafe { super::subrequest::start(r, spec) }
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
