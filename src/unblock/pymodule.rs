//! `_ngx_unblock`: what the cooperative Python layer (cooperative.py) is
//! built on — `sleep`, `Waiter` (wait for an fd), `resolve` — each of which
//! waits on nginx's event loop inside a handler's coroutine, really blocks
//! at configuration time, and refuses in python_set/python_log.

use pyo3::create_exception;
use pyo3::exceptions::{PyBaseException, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use super::coroutine::Wake;
use std::time::{Duration, Instant};

use super::readiness;
use super::wait::{self, FdWaiter, Place, WaitError};
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

/// Whether the caller runs in a handler that can wait (no error anywhere:
/// for functions that keep their original behaviour elsewhere).
#[pyfunction]
fn can_wait() -> bool {
    matches!(wait::place(), Place::Coroutine(_))
}

/// Waits for one socket fd. Created lazily by a cooperative socket; closed
/// (releasing its nginx connection) right before the socket's fd closes.
/// See `wait::FdWaiter` for who holds the nginx connection and until when.
#[pyclass(unsendable, module = "_ngx_unblock")]
struct Waiter {
    inner: FdWaiter,
}

#[pymethods]
impl Waiter {
    #[new]
    fn new(fd: i32) -> Waiter {
        Waiter { inner: FdWaiter::new(fd) }
    }

    /// Waits until readable (`write` False) or writable; False on timeout
    /// (seconds, None = forever; never earlier by the monotonic clock).
    #[pyo3(signature = (write, timeout = None))]
    fn wait(&self, py: Python<'_>, write: bool, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = deadline(timeout)?;
        match wait::place() {
            Place::Coroutine(h) => loop {
                let ms = match deadline {
                    None => None,
                    Some(d) => match wait::remaining_ms(d) {
                        Some(ms) => Some(ms),
                        None => return Ok(false),
                    },
                };
                match self.inner.wait(h, write, ms) {
                    Ok(Wake::Ready) => return Ok(true),
                    Ok(Wake::Timeout) => continue, // re-checked by the clock above
                    Ok(Wake::Cancelled) => return Err(cancelled()),
                    Err(WaitError::NoConnection) => {
                        return Err(PyOSError::new_err("no free nginx connection (worker_connections)"))
                    }
                    Err(WaitError::Busy) => {
                        return Err(PyRuntimeError::new_err(format!(
                            "socket fd {}: another handler is already waiting to {} it \
                             (a socket is used by one handler at a time: use a pool or a lock)",
                            self.inner.fd(),
                            if write { "write to" } else { "read from" }
                        )))
                    }
                }
            },
            Place::NoSuspend => Err(would_block("socket I/O")),
            Place::Outside => {
                let events = if write { libc::POLLOUT } else { libc::POLLIN };
                let mut p = [libc::pollfd { fd: self.inner.fd(), events, revents: 0 }];
                let n = py.detach(|| readiness::poll_blocking(&mut p, deadline))?;
                Ok(n > 0)
            }
        }
    }

    /// Releases the nginx connection (the socket closes its fd next).
    fn close(&self) {
        self.inner.close();
    }
}

/// A timeout in seconds (None: none) -> a monotonic deadline.
fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    let Some(secs) = timeout else { return Ok(None) };
    if secs.is_nan() {
        return Err(PyValueError::new_err("Invalid value NaN (not a number)"));
    }
    // Negative: already passed (select/poll treat it as "do not wait" here;
    // callers that mean "forever" pass None).
    let secs = secs.clamp(0.0, 1e9);
    Ok(Some(Instant::now() + Duration::from_secs_f64(secs)))
}

/// `wait_fds([(fd, events), ...], timeout)`: poll(2)'s contract — `events`
/// and the returned `revents` are POLLIN/POLLOUT/POLLPRI/POLLERR/POLLHUP/
/// POLLNVAL bits; returns [(fd, revents)] of the ready fds, [] on timeout
/// (seconds, None = forever). Waits on nginx's event loop in a handler that
/// can wait; anywhere else (configuration time, python_set, python_log) it
/// blocks as poll(2) does, since nothing else could run meanwhile.
#[pyfunction]
#[pyo3(signature = (fds, timeout = None))]
fn wait_fds(py: Python<'_>, fds: Vec<(i32, i16)>, timeout: Option<f64>) -> PyResult<Vec<(i32, i16)>> {
    let deadline = deadline(timeout)?;
    let mut p: Vec<libc::pollfd> = fds.iter().map(|&(fd, events)| libc::pollfd { fd, events, revents: 0 }).collect();
    match wait::place() {
        Place::Coroutine(h) => match readiness::wait(h, &mut p, deadline)? {
            readiness::Ended::Ready => {}
            readiness::Ended::Cancelled => return Err(cancelled()),
        },
        _ if p.is_empty() => py.detach(|| {
            if let Some(d) = deadline {
                std::thread::sleep(d.saturating_duration_since(Instant::now()));
            }
        }),
        _ => {
            py.detach(|| readiness::poll_blocking(&mut p, deadline))?;
        }
    }
    Ok(p.iter().filter(|q| q.revents != 0).map(|q| (q.fd, q.revents)).collect())
}

/// `ngx.wait_fd(fd, write=False, timeout=None) -> bool`: waits until `fd`
/// (an int or an object with fileno()) is readable — or writable with
/// `write=True` — or has an error/hang-up; False when `timeout` seconds
/// passed first. Cooperative where `wait_fds` is.
#[pyfunction]
#[pyo3(signature = (fd, write = false, timeout = None))]
fn wait_fd(py: Python<'_>, fd: &Bound<'_, PyAny>, write: bool, timeout: Option<f64>) -> PyResult<bool> {
    let fd: i32 = match fd.extract() {
        Ok(n) => n,
        Err(_) => fd.call_method0("fileno")?.extract()?,
    };
    if fd < 0 {
        return Err(PyValueError::new_err(format!("file descriptor cannot be a negative integer ({fd})")));
    }
    let events = if write { libc::POLLOUT } else { libc::POLLIN };
    Ok(!wait_fds(py, vec![(fd, events)], timeout)?.is_empty())
}

/// Compiles one of the embedded Python modules below and registers it in
/// sys.modules (cooperative.py's install() loads them).
#[pyfunction]
fn load(py: Python<'_>, name: &str) -> PyResult<Py<PyModule>> {
    let (source, file, module): (&str, &std::ffi::CStr, &std::ffi::CStr) = match name {
        "select" => (include_str!("cooperative_select.py"), c"nginx-python/cooperative_select.py", c"_ngx_select"),
        "drivers" => (include_str!("cooperative_drivers.py"), c"nginx-python/cooperative_drivers.py", c"_ngx_drivers"),
        _ => return Err(PyValueError::new_err(format!("no embedded module {name:?}"))),
    };
    let code = std::ffi::CString::new(source).expect("no NUL in embedded Python");
    let m = PyModule::from_code(py, &code, file, module)?;
    py.import("sys")?.getattr("modules")?.set_item(module.to_str().expect("ascii"), &m)?;
    Ok(m.unbind())
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
    m.add_function(wrap_pyfunction!(can_wait, m)?)?;
    m.add_function(wrap_pyfunction!(wait_fds, m)?)?;
    m.add_function(wrap_pyfunction!(wait_fd, m)?)?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_class::<Waiter>()?;
    m.add("Cancelled", m.py().get_type::<Cancelled>())?;
    super::resolver::register(m)?;
    super::park::register(m)?;
    super::reverse::register(m)?;
    Ok(())
}
