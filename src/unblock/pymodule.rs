//! `_ngx_unblock`: what the cooperative Python layer (cooperative.py) is
//! built on — `sleep`, `Waiter` (wait for an fd), `resolve` — each of which
//! waits on nginx's event loop inside a handler's coroutine, really blocks
//! at configuration time, and refuses in python_set/python_log.

use pyo3::create_exception;
use pyo3::exceptions::{PyBaseException, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use super::coroutine::Wake;
use super::wait::{self, FdWaiter, Place};
use crate::ffi;

create_exception!(
    ngx,
    Cancelled,
    PyBaseException,
    "Raised in a waiting handler when its request or session has ended (client gone, timeout, worker exit)."
);

pub(super) fn would_block(what: &str) -> PyErr {
    PyRuntimeError::new_err(format!(
        "{what} would block the nginx worker: python_set and python_log handlers cannot wait \
         (do it in python_access or python_content)"
    ))
}

pub(super) fn cancelled() -> PyErr {
    Cancelled::new_err("the request or session ended while this handler waited")
}

/// Seconds (as time.sleep takes them) -> nginx milliseconds, rounded up.
fn millis(secs: f64) -> PyResult<ffi::ngx_msec_t> {
    if secs.is_nan() {
        return Err(PyValueError::new_err("Invalid value NaN (not a number)"));
    }
    if secs < 0.0 {
        return Err(PyValueError::new_err("sleep length must be non-negative"));
    }
    Ok((secs * 1000.0).ceil().min(ffi::ngx_msec_t::MAX as f64 / 2.0) as ffi::ngx_msec_t)
}

/// `time.sleep` replacement.
#[pyfunction]
fn sleep(py: Python<'_>, secs: f64) -> PyResult<()> {
    let ms = millis(secs)?;
    match wait::place() {
        Place::Coroutine(h) => match wait::sleep(h, ms) {
            Wake::Cancelled => Err(cancelled()),
            _ => Ok(()),
        },
        Place::NoSuspend => Err(would_block("time.sleep()")),
        Place::Outside => {
            py.detach(|| std::thread::sleep(std::time::Duration::from_secs_f64(secs)));
            Ok(())
        }
    }
}

/// Whether `what` should wait cooperatively: True inside a handler that can
/// wait, False outside handlers (configuration time: really block), and a
/// RuntimeError in python_set / python_log.
#[pyfunction]
fn cooperative(what: &str) -> PyResult<bool> {
    match wait::place() {
        Place::Coroutine(_) => Ok(true),
        Place::NoSuspend => Err(would_block(what)),
        Place::Outside => Ok(false),
    }
}

/// Waits for one socket fd. Created lazily by a cooperative socket; closed
/// (releasing its nginx connection) right before the socket's fd closes.
#[pyclass(unsendable, module = "_ngx_unblock")]
struct Waiter {
    fd: i32,
    inner: Option<Box<FdWaiter>>,
}

#[pymethods]
impl Waiter {
    #[new]
    fn new(fd: i32) -> Waiter {
        Waiter { fd, inner: None }
    }

    /// Waits until readable (`write` False) or writable; False on timeout
    /// (seconds, None = forever).
    #[pyo3(signature = (write, timeout = None))]
    fn wait(&mut self, py: Python<'_>, write: bool, timeout: Option<f64>) -> PyResult<bool> {
        let ms = timeout.map(millis).transpose()?;
        match wait::place() {
            Place::Coroutine(h) => {
                if self.inner.is_none() {
                    let w = FdWaiter::new(self.fd, h.env().log)
                        .ok_or_else(|| PyOSError::new_err("no free nginx connection (worker_connections)"))?;
                    self.inner = Some(w);
                }
                match self.inner.as_mut().expect("set above").wait(h, write, ms) {
                    Wake::Ready => Ok(true),
                    Wake::Timeout => Ok(false),
                    Wake::Cancelled => Err(cancelled()),
                }
            }
            Place::NoSuspend => Err(would_block("socket I/O")),
            Place::Outside => {
                let fd = self.fd;
                let events = if write { libc::POLLOUT } else { libc::POLLIN };
                let ms = ms.map_or(-1, |m| m.min(i32::MAX as usize) as i32);
                let n = py.detach(|| {
                    let mut p = libc::pollfd { fd, events, revents: 0 };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut p, 1, ms) }
                });
                if n < 0 {
                    return Err(PyErr::from(std::io::Error::last_os_error()));
                }
                Ok(n > 0)
            }
        }
    }

    /// Releases the nginx connection (the socket closes its fd next).
    fn close(&mut self) {
        self.inner = None;
    }
}

/// Whether C extensions may call PyGILState_Ensure inside handlers (the
/// thread-state key was found; see tstate.rs). Exposed for the tests.
#[pyfunction]
fn gilstate_supported() -> bool {
    super::tstate::gilstate_supported()
}

#[pymodule]
pub fn _ngx_unblock(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sleep, m)?)?;
    m.add_function(wrap_pyfunction!(cooperative, m)?)?;
    m.add_function(wrap_pyfunction!(gilstate_supported, m)?)?;
    m.add_class::<Waiter>()?;
    m.add("Cancelled", m.py().get_type::<Cancelled>())?;
    super::resolver::register(m)?;
    super::park::register(m)?;
    super::reverse::register(m)?;
    Ok(())
}
