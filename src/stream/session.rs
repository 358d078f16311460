//! The session object `s`.
//!
//! Ownership, as for the request object: the first Python handler of a
//! session creates one `Session` and stores it in the module's per-session
//! context, which lives in the connection's pool (`ffi::pool_box`). When
//! nginx closes the session the pool dies, the context is dropped, and the
//! `Session` forgets the nginx pointer: an `s` kept past the end of its
//! session raises RuntimeError on use.

use std::cell::{Cell, OnceCell, RefCell};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::sock::Socket;
use super::{module, stream_ctx, stream_set_ctx};
use crate::executor;
use crate::ffi::{self, ngx_int_t, ngx_stream_session_t, ngx_str_t, ngx_uint_t, ngx_variable_value_t};
use crate::runtime::convert::value_bytes;
use crate::runtime::variables::Variables;

#[pyclass(unsendable, module = "ngx", name = "Session")]
pub struct Session {
    s: Cell<*mut ngx_stream_session_t>,
    ctx: Py<PyDict>,
    sock: OnceCell<Py<Socket>>,
    /// `s.buf` as it was when the running access/preread handlers were called:
    /// nginx empties the buffer when a handler returns (it peeks at the
    /// socket again next time), which a handler that suspended (unblock
    /// builds) must not see.
    frozen_buf: RefCell<Option<Py<PyBytes>>>,
}

/// The module's per-session context, owned by the connection's pool: the
/// one reference that keeps `s` alive for the session, and what a handler
/// that suspended (unblock builds) left behind.
pub struct SessionCtx {
    obj: Option<Py<Session>>,
    /// A suspended handler of this session.
    pub waiting: Cell<Option<executor::Handle>>,
    /// The result of an access/preread handler that finished after
    /// suspending; the phase engine re-runs the phase handler to get it.
    pub resumed_rc: Cell<Option<ngx_int_t>>,
    /// The first `python_preread` handler to run on the next call: the one
    /// that asked for more data (those before it are done).
    pub preread_next: Cell<usize>,
    /// How many bytes `s.buf` had when a `python_preread` handler last
    /// returned ngx.AGAIN: it runs again only once there are more.
    pub preread_asked_at: Cell<Option<usize>>,
}

impl Drop for SessionCtx {
    fn drop(&mut self) {
        Python::attach(|py| {
            if let Some(obj) = self.obj.take() {
                let obj = obj.borrow(py);
                obj.s.set(std::ptr::null_mut());
                // Break reference cycles through s.ctx (s.ctx['me'] = s):
                // the session object is not tracked by Python's collector.
                obj.ctx.bind(py).clear();
            }
        });
        // The session is gone: a handler still waiting for it unwinds now.
        if let Some(h) = self.waiting.take() {
            h.cancel();
        }
    }
}

/// The module context of `s`, created (with the session object) on first use.
///
/// # Safety
/// `s` must be a live session.
pub unsafe fn session_ctx<'a>(py: Python<'_>, s: *mut ngx_stream_session_t) -> PyResult<&'a SessionCtx> {
    let ctx = stream_ctx::<SessionCtx>(s, module());
    if !ctx.is_null() {
        return Ok(&*ctx);
    }
    let obj = Py::new(py, Session { s: Cell::new(s), ctx: PyDict::new(py).unbind(), sock: OnceCell::new(), frozen_buf: RefCell::new(None) })?;
    let ctx = SessionCtx { obj: Some(obj), waiting: Cell::new(None), resumed_rc: Cell::new(None), preread_next: Cell::new(0), preread_asked_at: Cell::new(None) };
    let ctx = ffi::pool_box((*(*s).connection).pool, ctx).ok_or_else(|| PyRuntimeError::new_err("out of memory"))?;
    stream_set_ctx(s, module(), ctx);
    Ok(&*ctx)
}

/// The session object of `s`, created on first use.
///
/// # Safety
/// `s` must be a live session.
pub unsafe fn session_object<'py>(py: Python<'py>, s: *mut ngx_stream_session_t) -> PyResult<Bound<'py, Session>> {
    match &session_ctx(py, s)?.obj {
        Some(obj) => Ok(obj.bind(py).clone()),
        None => Err(PyRuntimeError::new_err("the session has ended")),
    }
}

impl Session {
    /// The nginx session, or RuntimeError once it has ended.
    pub(super) fn raw(&self) -> PyResult<*mut ngx_stream_session_t> {
        let s = self.s.get();
        if s.is_null() {
            Err(PyRuntimeError::new_err("the session has ended; its object can no longer be used"))
        } else {
            Ok(s)
        }
    }

    /// The buffer's data now (empty when nginx has no buffer yet).
    fn live_buf<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let c = self.connection()?;
        // SAFETY: the buffer belongs to the live connection; pos..last is
        // the data nginx has read (or peeked) into it.
        let data = unsafe {
            let b = (*c).buffer;
            if b.is_null() || (*b).pos.is_null() || (*b).last <= (*b).pos {
                &[][..]
            } else {
                std::slice::from_raw_parts((*b).pos, (*b).last.offset_from((*b).pos) as usize)
            }
        };
        Ok(PyBytes::new(py, data))
    }

    /// Keeps `s.buf` as it is now until `thaw_buf` (see `frozen_buf`).
    pub(super) fn freeze_buf(&self, py: Python<'_>) -> PyResult<()> {
        let buf = self.live_buf(py)?.unbind();
        self.frozen_buf.replace(Some(buf));
        Ok(())
    }

    pub(super) fn thaw_buf(&self) {
        self.frozen_buf.take();
    }

    /// The session's connection, or RuntimeError once it has ended.
    pub(super) fn connection(&self) -> PyResult<*mut ffi::ngx_connection_t> {
        // SAFETY: a live session has a live connection.
        Ok(unsafe { (*self.raw()?).connection })
    }
}

/// `s.var`'s lookup (see `runtime::variables`): the session's variable.
///
/// # Safety
/// nginx reads `name` only during the call.
unsafe fn session_variable(owner: &Bound<'_, PyAny>, name: &mut ngx_str_t, key: ngx_uint_t) -> PyResult<*mut ngx_variable_value_t> {
    let s = owner.cast::<Session>()?.borrow().raw()?;
    Ok(ffi::ngx_stream_get_variable(s, name, key))
}

#[pymethods]
impl Session {
    /// The preread data so far (TCP) or the datagram (UDP): the contents of
    /// the connection's buffer.
    #[getter]
    fn buf<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        self.raw()?;
        match &*self.frozen_buf.borrow() {
            Some(b) => Ok(b.bind(py).clone()),
            None => self.live_buf(py),
        }
    }

    /// The client socket.
    #[getter]
    fn sock(slf: &Bound<'_, Self>) -> PyResult<Py<Socket>> {
        let this = slf.borrow();
        this.raw()?;
        if let Some(sock) = this.sock.get() {
            return Ok(sock.clone_ref(slf.py()));
        }
        let sock = Py::new(slf.py(), Socket::new(slf))?;
        Ok(this.sock.get_or_init(|| sock).clone_ref(slf.py()))
    }

    /// nginx stream variables: read-only mapping.
    #[getter]
    fn var(slf: &Bound<'_, Self>) -> PyResult<Variables> {
        slf.borrow().raw()?;
        Ok(Variables::new(slf.as_any(), session_variable))
    }

    /// A dict private to this session, kept across its phases.
    #[getter]
    fn ctx(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        self.raw()?;
        Ok(self.ctx.clone_ref(py))
    }

    /// One error-log line at `level` (default `ngx.LOG_INFO`).
    #[pyo3(signature = (msg, level = ffi::NGX_LOG_INFO as i64))]
    fn log(&self, msg: &Bound<'_, PyAny>, level: i64) -> PyResult<()> {
        let c = self.connection()?;
        let level = crate::runtime::convert::log_level(level)?;
        let text = value_bytes(msg)?;
        // SAFETY: the live connection's log.
        unsafe { ffi::log_error(level, (*c).log, &text) };
        Ok(())
    }

    fn __repr__(&self) -> String {
        match self.connection() {
            // SAFETY: live connection; addr_text is set when it is accepted.
            Ok(c) => unsafe {
                let proto = if (*c).type_ == libc::SOCK_DGRAM { "udp" } else { "tcp" };
                format!("<ngx.Session {} {proto}>", String::from_utf8_lossy(ffi::bytes(&(*c).addr_text)))
            },
            Err(_) => "<ngx.Session (ended)>".into(),
        }
    }
}
