//! Reverse name resolution (PTR) through nginx's `resolver`, for the
//! cooperative socket.gethostbyaddr / getnameinfo / getfqdn (names.py).

use std::net::IpAddr;

use pyo3::prelude::*;

use super::coroutine::{self, Handle, Wake};
use super::pymodule::{cancelled, would_block};
use super::wait::{self, Place};
use crate::ffi;

/// What the resolver's handler hands back; on the coroutine's stack for
/// the duration of the query.
struct Query {
    done: bool,
    state: ffi::ngx_int_t,
    name: Option<String>,
    waiter: Option<Handle>,
}

unsafe extern "C" fn resolved(ctx: *mut ffi::ngx_resolver_ctx_t) {
    crate::panic_guard::guard(std::ptr::null_mut(), "a reverse lookup", || resolved_unguarded(ctx), || ())
}

unsafe fn resolved_unguarded(ctx: *mut ffi::ngx_resolver_ctx_t) {
    let q = &mut *((*ctx).data as *mut Query);
    q.state = (*ctx).state;
    if q.state == 0 {
        // nginx frees the name right after this handler: copy it.
        q.name = Some(String::from_utf8_lossy(ffi::bytes(&(*ctx).name)).into_owned());
    }
    ffi::ngx_resolve_addr_done(ctx);
    q.done = true;
    if let Some(h) = q.waiter {
        h.resume_from_event(Wake::Ready);
    }
}

fn error(py: Python<'_>, kind: &str, code: i32, msg: &str) -> PyErr {
    match py.import("socket").and_then(|s| s.getattr(kind)).and_then(|e| e.call1((code, msg))) {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

/// The host name of `ip` (a numeric IPv4/IPv6 address) from nginx's
/// resolver (a PTR query); None when there is no PTR record. Errors are
/// `socket.herror` / `socket.gaierror` as the C library would raise them.
#[pyfunction]
fn resolve_address(py: Python<'_>, ip: &str) -> PyResult<Option<String>> {
    let h = match wait::place() {
        Place::Coroutine(h) => h,
        Place::NoSuspend => return Err(would_block("name resolution")),
        Place::Outside => return Err(error(py, "gaierror", libc::EAI_FAIL, "nginx resolver used outside a handler")),
    };
    let ip: IpAddr = ip.parse().map_err(|_| error(py, "gaierror", libc::EAI_NONAME, "Name or service not known"))?;
    let env = h.env();
    let no_resolver = || {
        error(
            py,
            "herror",
            1,
            &format!("cannot look up {ip}: no \"resolver\" is defined for this location or server"),
        )
    };
    if env.resolver.is_null() {
        return Err(no_resolver());
    }
    // The address nginx reads (also in ngx_resolve_addr_done): on this
    // stack until the query is done or withdrawn.
    // SAFETY: all-zero sockaddr_storage is valid; filled below.
    let mut sa: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let socklen = match ip {
        IpAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough.
            let sin = unsafe { &mut *(&mut sa as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from(v4).to_be();
            std::mem::size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(v6) => {
            // SAFETY: as above.
            let sin6 = unsafe { &mut *(&mut sa as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = v6.octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    let mut q = Query { done: false, state: 0, name: None, waiter: None };
    // SAFETY: `sa` and `q` stay on this (coroutine) stack until the
    // resolver has called back or the query was withdrawn below.
    unsafe {
        let ctx = ffi::ngx_resolve_start(env.resolver, std::ptr::null_mut());
        if ctx.is_null() {
            return Err(PyErr::new::<pyo3::exceptions::PyMemoryError, _>("no memory for a resolver query"));
        }
        if ctx as isize == -1 {
            return Err(no_resolver());
        }
        (*ctx).addr.sockaddr = &mut sa as *mut _ as *mut ffi::sockaddr;
        (*ctx).addr.socklen = socklen as ffi::socklen_t;
        (*ctx).handler = Some(resolved);
        (*ctx).data = &mut q as *mut Query as *mut std::os::raw::c_void;
        (*ctx).timeout = env.resolver_timeout;
        // On error nginx has freed the context itself.
        if ffi::ngx_resolve_addr(ctx) != ffi::OK {
            return Err(error(py, "gaierror", libc::EAI_FAIL, "nginx resolver failed"));
        }
        if !q.done {
            q.waiter = Some(h);
            let _ = coroutine::suspend();
            q.waiter = None;
            if !q.done {
                // Cancelled while the query is in flight: withdraw it.
                ffi::ngx_resolve_addr_done(ctx);
                return Err(cancelled());
            }
        }
    }
    match q.state {
        0 => Ok(q.name),
        3 => Ok(None), // NXDOMAIN: no name for this address
        // SERVFAIL, REFUSED, timed out...: TRY_AGAIN, as glibc says it
        _ => Err(error(py, "herror", 2, "Host name lookup failure")),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(resolve_address, m)?)
}
