//! Name resolution through nginx's `resolver` (of the handler's location or
//! stream server), for the cooperative socket.gethostbyname/getaddrinfo.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pyo3::prelude::*;

use super::coroutine::{self, Handle, Wake};
use super::pymodule::{cancelled, would_block};
use super::wait::{self, Place};
use crate::ffi;

/// What the resolver's handler hands back to the waiting coroutine; lives
/// on the coroutine's stack for the duration of the query.
struct Query {
    ctx: *mut ffi::ngx_resolver_ctx_t,
    done: bool,
    state: ffi::ngx_int_t,
    addrs: Vec<IpAddr>,
    waiter: Option<Handle>,
}

unsafe extern "C" fn resolved(ctx: *mut ffi::ngx_resolver_ctx_t) {
    crate::panic_guard::guard(std::ptr::null_mut(), "a name lookup", || resolved_unguarded(ctx), || ())
}

unsafe fn resolved_unguarded(ctx: *mut ffi::ngx_resolver_ctx_t) {
    let q = &mut *((*ctx).data as *mut Query);
    q.state = (*ctx).state;
    for i in 0..(*ctx).naddrs {
        let a = &*(*ctx).addrs.add(i);
        if let Some(ip) = ip_of(a.sockaddr) {
            q.addrs.push(ip);
        }
    }
    ffi::ngx_resolve_name_done(ctx);
    q.done = true;
    if let Some(h) = q.waiter {
        h.resume_from_event(Wake::Ready);
    }
}

unsafe fn ip_of(sa: *const ffi::sockaddr) -> Option<IpAddr> {
    match (*sa).sa_family as i32 {
        libc::AF_INET => {
            let sin = &*(sa as *const libc::sockaddr_in);
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))))
        }
        libc::AF_INET6 => {
            let sin6 = &*(sa as *const libc::sockaddr_in6);
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

fn gaierror(py: Python<'_>, code: i32, msg: &str) -> PyErr {
    match py.import("socket").and_then(|s| s.getattr("gaierror")).and_then(|e| e.call1((code, msg))) {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

/// Resolves `name` with nginx's resolver: its IPv4 and IPv6 addresses as
/// strings. Errors are `socket.gaierror` as the C library would raise them.
#[pyfunction]
fn resolve(py: Python<'_>, name: &str) -> PyResult<Vec<String>> {
    let h = match wait::place() {
        Place::Coroutine(h) => h,
        Place::NoSuspend => return Err(would_block("name resolution")),
        Place::Outside => return Err(gaierror(py, libc::EAI_FAIL, "nginx resolver used outside a handler")),
    };
    let env = h.env();
    let no_resolver = || {
        gaierror(
            py,
            libc::EAI_NONAME,
            &format!("cannot resolve \"{name}\": no \"resolver\" is defined for this location or server"),
        )
    };
    if env.resolver.is_null() {
        return Err(no_resolver());
    }
    let mut host = name.as_bytes().to_vec();
    let mut q = Query { ctx: std::ptr::null_mut(), done: false, state: 0, addrs: Vec::new(), waiter: None };
    // SAFETY: `host` and `q` stay on this (coroutine) stack until the
    // resolver has called back or the query was cancelled below.
    unsafe {
        let ctx = ffi::ngx_resolve_start(env.resolver, std::ptr::null_mut());
        if ctx.is_null() {
            return Err(PyErr::new::<pyo3::exceptions::PyMemoryError, _>("no memory for a resolver query"));
        }
        if ctx as isize == -1 {
            return Err(no_resolver());
        }
        (*ctx).name = ffi::ngx_str_t { len: host.len(), data: host.as_mut_ptr() };
        (*ctx).handler = Some(resolved);
        (*ctx).data = &mut q as *mut Query as *mut std::os::raw::c_void;
        (*ctx).timeout = env.resolver_timeout;
        q.ctx = ctx;
        h.arm(Some(coroutine::Armed { withdraw: withdraw_query, data: &mut q as *mut Query as *mut std::os::raw::c_void }));
        if ffi::ngx_resolve_name(ctx) != ffi::OK {
            h.arm(None);
            return Err(gaierror(py, libc::EAI_FAIL, "nginx resolver failed"));
        }
        if !q.done {
            q.waiter = Some(h);
            let wake = coroutine::suspend();
            q.waiter = None;
            if !q.done {
                // Cancelled while the query is in flight: withdraw it.
                ffi::ngx_resolve_name_done(ctx);
                h.arm(None);
                let _ = wake;
                return Err(cancelled());
            }
        }
        h.arm(None);
    }
    match q.state {
        0 if !q.addrs.is_empty() => Ok(q.addrs.iter().map(|a| a.to_string()).collect()),
        0 | 3 => Err(gaierror(py, libc::EAI_NONAME, "Name or service not known")),
        s if s == libc::ETIMEDOUT as ffi::ngx_int_t => {
            Err(gaierror(py, libc::EAI_AGAIN, "Temporary failure in name resolution"))
        }
        _ => Err(gaierror(py, libc::EAI_FAIL, "Non-recoverable failure in name resolution")),
    }
}

/// Withdraws a query still in flight when its coroutine was abandoned
/// after a stack overflow (see `Handle::arm`).
///
/// # Safety
/// `q` is the `Query` of a `resolve` on a stack that is still mapped.
unsafe fn withdraw_query(q: *mut std::os::raw::c_void) {
    let q = q as *mut Query;
    // SAFETY: per the contract above; `ctx` is the resolver's until
    // ngx_resolve_name_done, called once (here or by `resolved`, `done`).
    unsafe {
        if !(*q).done && !(*q).ctx.is_null() {
            (*q).done = true;
            ffi::ngx_resolve_name_done((*q).ctx);
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(resolve, m)?)
}
