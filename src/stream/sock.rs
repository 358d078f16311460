//! `s.sock`: the client socket, shaped like Python's `socket.socket`.
//!
//! Addresses, `fileno`, `family` and `type` work in every phase and build.
//! I/O (`recv`, `send`, `sendall`, `makefile`, timeouts) needs a handler
//! that can wait without blocking the worker — the unblock build; here the
//! methods exist and raise a RuntimeError that says so.

use std::net::{Ipv4Addr, Ipv6Addr};

use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::session::Session;
use crate::ffi;
use crate::runtime::convert::to_str;

#[pyclass(unsendable, module = "ngx", name = "StreamSocket")]
pub struct Socket {
    session: Py<Session>,
}

impl Socket {
    pub fn new(session: &Bound<'_, Session>) -> Socket {
        Socket { session: session.clone().unbind() }
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

/// The error of an I/O method in a build whose handlers cannot wait.
fn needs_unblock(method: &str) -> PyErr {
    if cfg!(feature = "unblock") {
        PyRuntimeError::new_err(format!("s.sock.{method}() is not available in this version of nginx-python"))
    } else {
        PyRuntimeError::new_err(format!(
            "s.sock.{method}() needs the unblock build of nginx-python (make module FEATURES=unblock): \
             in this build handlers cannot wait for the client"
        ))
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

/// The `#[pymethods]` block (PyO3 allows one per class): the methods
/// given, plus the I/O methods named in `io: [...]`, each taking any
/// arguments and raising `needs_unblock`.
macro_rules! socket_methods {
    (io: [$($io:ident),*], $($methods:tt)*) => {
        #[pymethods]
        impl Socket {
            $(
                #[pyo3(signature = (*_args, **_kwargs))]
                fn $io(&self, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
                    Err(needs_unblock(stringify!($io)))
                }
            )*
            $($methods)*
        }
    };
}

socket_methods! {
    io: [recv, recv_into, recvfrom, send, sendall, sendto, makefile, settimeout, gettimeout, setblocking, getblocking, shutdown],

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

    fn __repr__(&self, py: Python<'_>) -> String {
        match self.connection(py) {
            // SAFETY: live connection.
            Ok(c) => format!("<ngx.StreamSocket fd={}>", unsafe { (*c).fd }),
            Err(_) => "<ngx.StreamSocket (closed)>".into(),
        }
    }
}
