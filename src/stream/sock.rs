//! `s.sock`: the client socket, shaped like Python's `socket.socket`.
//!
//! Addresses, `fileno`, `family` and `type` work in every phase and build.
//! I/O (`recv`, `send`, `sendall`, `makefile`, timeouts) needs a handler
//! that can wait without blocking the worker — the unblock build; here the
//! methods exist and raise a RuntimeError that says so.

use std::net::{Ipv4Addr, Ipv6Addr};

use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use super::session::Session;
use crate::ffi;
use crate::runtime::convert::to_str;

/// The largest timeout CPython's own sockets accept (seconds).
const MAX_TIMEOUT_S: f64 = i64::MAX as f64 / 1e9;

#[pyclass(unsendable, module = "ngx", name = "StreamSocket")]
pub struct Socket {
    session: Py<Session>,
    /// `settimeout()`: None waits forever, 0.0 never waits.
    timeout: std::cell::Cell<Option<f64>>,
}

impl Socket {
    pub fn new(session: &Bound<'_, Session>) -> Socket {
        Socket { session: session.clone().unbind(), timeout: std::cell::Cell::new(None) }
    }

    fn connection(&self, py: Python<'_>) -> PyResult<*mut ffi::ngx_connection_t> {
        self.session.borrow(py).connection()
    }
}

/// A socket address as Python's socket module gives it: `(host, port)` for
/// IPv4, `(host, port, flowinfo, scope_id)` for IPv6, the path for unix.
///
/// # Safety
/// `sa` must point to `len` bytes of a socket address (or be null).
unsafe fn address<'py>(py: Python<'py>, sa: *const libc::sockaddr, len: libc::socklen_t) -> PyResult<Bound<'py, PyAny>> {
    if sa.is_null() {
        return Err(PyOSError::new_err("the socket has no address"));
    }
    match (*sa).sa_family as i32 {
        libc::AF_INET => {
            let sin = &*(sa as *const libc::sockaddr_in);
            let host = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).to_string();
            Ok(PyTuple::new(py, [host.into_pyobject(py)?.into_any(), u16::from_be(sin.sin_port).into_pyobject(py)?.into_any()])?.into_any())
        }
        libc::AF_INET6 => {
            let sin6 = &*(sa as *const libc::sockaddr_in6);
            let host = Ipv6Addr::from(sin6.sin6_addr.s6_addr).to_string();
            let items = [
                host.into_pyobject(py)?.into_any(),
                u16::from_be(sin6.sin6_port).into_pyobject(py)?.into_any(),
                u32::from_be(sin6.sin6_flowinfo).into_pyobject(py)?.into_any(),
                sin6.sin6_scope_id.into_pyobject(py)?.into_any(),
            ];
            Ok(PyTuple::new(py, items)?.into_any())
        }
        libc::AF_UNIX => {
            // sun_path up to the first NUL, within the address's length.
            let sun = &*(sa as *const libc::sockaddr_un);
            let max = (len as usize).saturating_sub(std::mem::size_of::<libc::sa_family_t>()).min(sun.sun_path.len());
            let path: Vec<u8> = sun.sun_path[..max].iter().map(|&c| c as u8).take_while(|&c| c != 0).collect();
            Ok(to_str(py, &path).into_any())
        }
        family => Err(PyOSError::new_err(format!("unsupported address family {family}"))),
    }
}

/// I/O on the client connection: reads and writes through nginx's own
/// `c->recv` / `c->send`, waiting on its events (unblock builds).
mod io {
    use super::*;
    use crate::executor::{self, Waited};

    pub fn require_unblock(method: &str) -> PyResult<()> {
        if executor::SUSPENDS {
            return Ok(());
        }
        Err(PyRuntimeError::new_err(format!(
            "s.sock.{method}() needs the unblock build of nginx-python (make module FEATURES=unblock): \
             in this build handlers cannot wait for the client"
        )))
    }

    /// The nginx timer for the socket's timeout; None: no timer. nginx's
    /// timer tree compares keys as signed differences and epoll takes an
    /// int, so a timer beyond i32::MAX ms (24.8 days) would wrap into one
    /// that fires at once: such timeouts are waited without a timer.
    fn timeout_ms(sock: &Socket) -> Option<ffi::ngx_msec_t> {
        let ms = (sock.timeout.get()? * 1000.0).ceil();
        (ms <= i32::MAX as f64).then_some(ms as ffi::ngx_msec_t)
    }

    /// Waits for the read or write event; the errors Python sockets raise.
    fn wait(sock: &Socket, py: Python<'_>, ev: *mut ffi::ngx_event_t, what: &str) -> PyResult<()> {
        if sock.timeout.get() == Some(0.0) {
            return Err(pyo3::exceptions::PyBlockingIOError::new_err((libc::EAGAIN, "Resource temporarily unavailable")));
        }
        match executor::wait_event(ev, timeout_ms(sock)) {
            Waited::Ready => Ok(()),
            Waited::Timeout => Err(py.import("socket")?.getattr("timeout")?.call1(("timed out",)).map(PyErr::from_value)?),
            Waited::Cancelled => Err(executor::cancelled_error()),
            Waited::CannotWait => Err(PyRuntimeError::new_err(format!(
                "s.sock.{what}() would block the nginx worker: python_set and python_log handlers cannot wait"
            ))),
        }
    }

    /// The most one recv() returns: a socket may return less than asked,
    /// and allocating what a caller asks for (recv(10**11)) would abort the
    /// worker.
    pub const RECV_MAX: usize = 256 * 1024;

    pub fn recv(sock: &Socket, py: Python<'_>, size: usize) -> PyResult<Vec<u8>> {
        require_unblock("recv")?;
        let size = size.min(RECV_MAX);
        let c = sock.connection(py)?;
        // SAFETY: live connection; its buffer's pos..last is unread data.
        unsafe {
            let b = (*c).buffer;
            if !b.is_null() && (*b).pos < (*b).last {
                let n = size.min((*b).last.offset_from((*b).pos) as usize);
                let data = std::slice::from_raw_parts((*b).pos, n).to_vec();
                (*b).pos = (*b).pos.add(n);
                return Ok(data);
            }
            let mut buf = vec![0u8; size.max(1)];
            loop {
                let recv = (*c).recv.expect("connections have recv");
                let n = recv(c, buf.as_mut_ptr(), size);
                if n >= 0 {
                    buf.truncate(n as usize);
                    return Ok(buf);
                }
                if n != ffi::AGAIN {
                    return Err(pyo3::exceptions::PyConnectionResetError::new_err("reading from the client failed"));
                }
                wait(sock, py, (*c).read, "recv")?;
            }
        }
    }

    pub fn send(sock: &Socket, py: Python<'_>, data: &[u8]) -> PyResult<usize> {
        require_unblock("send")?;
        let c = sock.connection(py)?;
        // SAFETY: live connection.
        unsafe {
            loop {
                let send = (*c).send.expect("connections have send");
                let n = send(c, data.as_ptr() as *mut u8, data.len());
                if n >= 0 {
                    return Ok(n as usize);
                }
                if n != ffi::AGAIN {
                    return Err(pyo3::exceptions::PyBrokenPipeError::new_err("writing to the client failed"));
                }
                wait(sock, py, (*c).write, "send")?;
            }
        }
    }
}

/// Turns `socket` module ints into its enums (`AddressFamily`, `SocketKind`)
/// as Python's own sockets report them; the plain int if that fails.
fn socket_enum<'py>(py: Python<'py>, enum_name: &str, value: i32) -> Bound<'py, PyAny> {
    py.import("socket")
        .and_then(|m| m.getattr(enum_name))
        .and_then(|e| e.call1((value,)))
        .unwrap_or_else(|_| value.into_pyobject(py).expect("int").into_any())
}

#[pymethods]
impl Socket {

    /// The local address (`c->local_sockaddr`; for a wildcard listener
    /// nginx asks the kernel which address the client connected to).
    fn getsockname<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.connection(py)?;
        // SAFETY: live connection; with s == NULL nginx only fills
        // c->local_sockaddr (getsockname() for a wildcard address).
        unsafe {
            if ffi::ngx_connection_local_sockaddr(c, std::ptr::null_mut(), 0) != ffi::OK {
                return Err(PyOSError::new_err("getsockname() failed"));
            }
            address(py, (*c).local_sockaddr as *const libc::sockaddr, (*c).local_socklen)
        }
    }

    /// The client's address (`c->sockaddr`: what `$remote_addr` shows).
    fn getpeername<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.connection(py)?;
        // SAFETY: live connection; sockaddr/socklen are set at accept.
        unsafe { address(py, (*c).sockaddr as *const libc::sockaddr, (*c).socklen) }
    }

    /// The socket's file descriptor (for UDP, the listening socket's: nginx
    /// shares it between the sessions of one listener).
    fn fileno(&self, py: Python<'_>) -> PyResult<i32> {
        // SAFETY: live connection.
        Ok(unsafe { (*self.connection(py)?).fd })
    }

    /// `socket.AF_INET`, `socket.AF_INET6` or `socket.AF_UNIX`.
    #[getter]
    fn family<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.connection(py)?;
        // SAFETY: live connection.
        let family = unsafe { (*((*c).sockaddr as *const libc::sockaddr)).sa_family as i32 };
        Ok(socket_enum(py, "AddressFamily", family))
    }

    /// `socket.SOCK_STREAM` (TCP, unix) or `socket.SOCK_DGRAM` (UDP).
    #[getter(r#type)]
    fn kind<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY: live connection.
        let kind = unsafe { (*self.connection(py)?).type_ };
        Ok(socket_enum(py, "SocketKind", kind))
    }

    /// Receives up to `bufsize` bytes (b'' at end of stream). Data nginx
    /// already read from the client (preread, the UDP datagram) comes first.
    /// At most `io::RECV_MAX` bytes per call, as sockets may return less.
    #[pyo3(signature = (bufsize, flags = 0))]
    fn recv<'py>(&self, py: Python<'py>, bufsize: isize, flags: i32) -> PyResult<Bound<'py, PyBytes>> {
        let _ = flags;
        if bufsize < 0 {
            return Err(pyo3::exceptions::PyValueError::new_err("negative buffersize in recv"));
        }
        let data = io::recv(self, py, bufsize as usize)?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (buffer, nbytes = 0, flags = 0))]
    fn recv_into(&self, py: Python<'_>, buffer: &Bound<'_, PyAny>, nbytes: usize, flags: i32) -> PyResult<usize> {
        let _ = flags;
        let view = py.import("builtins")?.getattr("memoryview")?.call1((buffer,))?.call_method1("cast", ("B",))?;
        let room = view.len()?;
        let want = if nbytes == 0 { room } else { nbytes.min(room) };
        let data = io::recv(self, py, want)?;
        view.set_item(pyo3::types::PySlice::new(py, 0, data.len() as isize, 1), PyBytes::new(py, &data))?;
        Ok(data.len())
    }

    /// `(data, address)`: the client is the only peer.
    #[pyo3(signature = (bufsize, flags = 0))]
    fn recvfrom<'py>(&self, py: Python<'py>, bufsize: isize, flags: i32) -> PyResult<Bound<'py, PyTuple>> {
        let data = self.recv(py, bufsize, flags)?;
        PyTuple::new(py, [data.into_any(), self.getpeername(py)?])
    }

    /// Sends what the client connection takes now (waiting until it takes
    /// something); for UDP, a datagram to the client.
    #[pyo3(signature = (data, flags = 0))]
    fn send(&self, py: Python<'_>, data: &Bound<'_, PyAny>, flags: i32) -> PyResult<usize> {
        let _ = flags;
        let bytes = crate::runtime::convert::data_bytes(data, "data")?;
        io::send(self, py, &bytes)
    }

    #[pyo3(signature = (data, flags = 0))]
    fn sendall(&self, py: Python<'_>, data: &Bound<'_, PyAny>, flags: i32) -> PyResult<()> {
        let _ = flags;
        let bytes = crate::runtime::convert::data_bytes(data, "data")?;
        let mut sent = 0;
        while sent < bytes.len() {
            sent += io::send(self, py, &bytes[sent..])?;
        }
        Ok(())
    }

    /// Only to the client: s.sock is not a general-purpose socket.
    fn sendto(&self, py: Python<'_>, data: &Bound<'_, PyAny>, address: &Bound<'_, PyAny>) -> PyResult<usize> {
        if !address.eq(self.getpeername(py)?)? {
            return Err(PyOSError::new_err("s.sock sends only to its client"));
        }
        self.send(py, data, 0)
    }

    fn settimeout(&self, value: Option<f64>) -> PyResult<()> {
        io::require_unblock("settimeout")?;
        if value.is_some_and(|v| v < 0.0 || v.is_nan()) {
            return Err(pyo3::exceptions::PyValueError::new_err("Timeout value out of range"));
        }
        // As CPython's sockets (nanoseconds in an int64).
        if value.is_some_and(|v| v > MAX_TIMEOUT_S) {
            return Err(pyo3::exceptions::PyOverflowError::new_err("timestamp out of range for platform time_t"));
        }
        self.timeout.set(value);
        Ok(())
    }

    fn gettimeout(&self) -> PyResult<Option<f64>> {
        io::require_unblock("gettimeout")?;
        Ok(self.timeout.get())
    }

    fn setblocking(&self, flag: bool) -> PyResult<()> {
        io::require_unblock("setblocking")?;
        self.timeout.set(if flag { None } else { Some(0.0) });
        Ok(())
    }

    fn getblocking(&self) -> PyResult<bool> {
        io::require_unblock("getblocking")?;
        Ok(self.timeout.get() != Some(0.0))
    }

    /// `socket.SHUT_RD`, `SHUT_WR` or `SHUT_RDWR` on the client connection.
    fn shutdown(&self, py: Python<'_>, how: i32) -> PyResult<()> {
        io::require_unblock("shutdown")?;
        let c = self.connection(py)?;
        // SAFETY: live connection's fd.
        if unsafe { libc::shutdown((*c).fd, how) } != 0 {
            return Err(PyErr::from(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// A file object over the client connection, as `socket.makefile`.
    #[pyo3(signature = (mode = "r", buffering = None, encoding = None, errors = None, newline = None))]
    fn makefile<'py>(
        slf: &Bound<'py, Self>,
        mode: &str,
        buffering: Option<i64>,
        encoding: Option<&str>,
        errors: Option<&str>,
        newline: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        io::require_unblock("makefile")?;
        slf.py()
            .import("_ngx_cooperative")?
            .call_method1("makefile", (slf, mode, buffering, encoding, errors, newline))
    }

    /// What `socket.SocketIO.close()` calls on its socket.
    fn _decref_socketios(&self) {}

    fn __repr__(&self, py: Python<'_>) -> String {
        match self.connection(py) {
            // SAFETY: live connection.
            Ok(c) => format!("<ngx.StreamSocket fd={}>", unsafe { (*c).fd }),
            Err(_) => "<ngx.StreamSocket (closed)>".into(),
        }
    }
}
