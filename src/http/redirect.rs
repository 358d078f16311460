//! `r.internal_redirect(uri)`: the handler ends (an `InternalRedirect`
//! exception, a BaseException so that `except Exception` does not stop it)
//! and the phase glue, back on nginx's stack, hands the request to nginx's
//! `ngx_http_internal_redirect` (a URI, `?args` split off) or
//! `ngx_http_named_location` (`@name`). nginx then runs the request's
//! phases again for the new location, with a fresh module context (so a
//! fresh `r`).

use pyo3::create_exception;
use pyo3::exceptions::{PyBaseException, PyValueError};
use pyo3::prelude::*;

use crate::ffi::{self, ngx_http_request_t, ngx_int_t};

create_exception!(
    ngx,
    InternalRedirect,
    PyBaseException,
    "Raised by r.internal_redirect() to end the handler; nginx then runs the request again for the new URI."
);

/// Checks a redirect target: a URI path (with optional `?args`) or `@name`.
pub fn check_target(uri: &str) -> PyResult<Vec<u8>> {
    let ok = (uri.starts_with('/') || (uri.starts_with('@') && uri.len() > 1))
        && !uri.bytes().any(|c| c <= b' ' || c == 0x7f);
    if ok {
        Ok(uri.as_bytes().to_vec())
    } else {
        Err(PyValueError::new_err(format!(
            "r.internal_redirect({uri:?}): expected a URI starting with '/' or a named location '@name', without spaces or control characters"
        )))
    }
}

/// The exception that ends the handler.
pub fn ending() -> PyErr {
    InternalRedirect::new_err("internal redirect")
}

/// Whether `err` is the end of a handler that asked for a redirect.
pub fn is_redirect(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<InternalRedirect>(py)
}

/// Redirects `r` to `target` (from `check_target`). Returns what nginx's
/// own modules pass on after a redirect: NGX_DONE, or an error status.
/// The caller finalizes the request with it (content) or finalizes with
/// NGX_DONE and returns NGX_DONE (rewrite/access phases), which balances
/// the reference nginx's redirect takes.
///
/// # Safety
/// `r` must be a live request, on nginx's stack (the new location's
/// handlers run from here).
pub unsafe fn perform(r: *mut ngx_http_request_t, target: &[u8]) -> ngx_int_t {
    // SAFETY: the strings are copied into the request's pool, which nginx
    // keeps for the redirected request.
    unsafe {
        let pool = (*r).pool;
        if target.starts_with(b"@") {
            let Some(mut name) = ffi::pool_str(pool, target) else { return ffi::ERROR };
            return ffi::ngx_http_named_location(r, &mut name);
        }
        let (path, args) = match target.iter().position(|&c| c == b'?') {
            Some(i) => (&target[..i], &target[i + 1..]),
            None => (target, &b""[..]),
        };
        let (Some(mut uri), Some(mut args)) = (ffi::pool_str(pool, path), ffi::pool_str(pool, args)) else {
            return ffi::ERROR;
        };
        ffi::ngx_http_internal_redirect(r, &mut uri, &mut args)
    }
}


/// A handler's result standing for "ended with r.internal_redirect()"
/// (never an nginx code).
pub const REDIRECT: ngx_int_t = -1000;

/// Performs the redirect the request object of `r` asked for; 500 when
/// there is none (cannot happen: REDIRECT is returned only with one).
///
/// # Safety
/// `r` must be a live request, on nginx's stack.
pub unsafe fn perform_requested(r: *mut ngx_http_request_t) -> ngx_int_t {
    let target = Python::attach(|py| {
        // SAFETY: `r` is live.
        unsafe { super::request::request_object(py, r) }.ok().and_then(|o| o.borrow().redirect.take())
    });
    match target {
        // SAFETY: per the contract.
        Some(target) => unsafe { perform(r, &target) },
        None => ffi::NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
    }
}
