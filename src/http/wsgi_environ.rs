//! The WSGI `environ` of a request, built in one pass over nginx's request
//! struct: the request line's parts, the connection's addresses, the input
//! header list — no variable lookups by name. Text is the raw bytes decoded
//! as latin-1 (PEP 3333's "native strings").

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::request::Request;
use super::wsgi_errors::Errors;
use super::wsgi_input::Input;
use crate::ffi::{self, ngx_table_elt_t};

/// PEP 3333 text: each byte one code point.
fn latin1<'py>(py: Python<'py>, b: &[u8]) -> PyResult<Bound<'py, PyString>> {
    // SAFETY: CPython copies `len` bytes from `b` (alive for the call) into
    // a new str and returns a new reference (or NULL with an exception).
    unsafe {
        let s = pyo3::ffi::PyUnicode_DecodeLatin1(b.as_ptr() as *const std::os::raw::c_char, b.len() as pyo3::ffi::Py_ssize_t, std::ptr::null());
        Ok(Bound::from_owned_ptr_or_err(py, s)?.cast_into_unchecked())
    }
}

/// The port of a socket address as text, "" when it has none.
unsafe fn port_text(sa: *mut ffi::sockaddr) -> String {
    if sa.is_null() {
        return String::new();
    }
    match ffi::ngx_inet_get_port(sa) {
        0 => String::new(),
        p => p.to_string(),
    }
}

/// `HTTP_X_FOO` for `X-Foo`.
fn cgi_name(name: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 5);
    key.extend_from_slice(b"HTTP_");
    key.extend(name.iter().map(|&c| if c == b'-' { b'_' } else { c.to_ascii_uppercase() }));
    key
}

/// A copy of `base` (the constant keys) with the request's keys added.
/// `script_name` is the location's prefix (no trailing slash).
#[pyfunction]
pub fn environ<'py>(r: &Bound<'py, Request>, script_name: &str, base: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
    let py = r.py();
    let req = r.borrow().raw()?;
    let env = base.copy()?;
    // SAFETY: `req` is live (checked above) and stays so during this call
    // (nothing here gives control back to nginx); every byte read is
    // copied into Python strings before returning.
    unsafe {
        let c = (*req).connection;
        let uri = ffi::bytes(&(*req).uri);
        let script = script_name.as_bytes();
        let path_info = if !script.is_empty() && uri.starts_with(script) && (uri.len() == script.len() || uri[script.len()] == b'/') {
            &uri[script.len()..]
        } else {
            uri
        };
        env.set_item(intern!(py, "REQUEST_METHOD"), latin1(py, ffi::bytes(&(*req).method_name))?)?;
        env.set_item(intern!(py, "SCRIPT_NAME"), script_name)?;
        env.set_item(intern!(py, "PATH_INFO"), latin1(py, path_info)?)?;
        env.set_item(intern!(py, "QUERY_STRING"), latin1(py, ffi::bytes(&(*req).args))?)?;
        env.set_item(intern!(py, "REQUEST_URI"), latin1(py, ffi::bytes(&(*req).unparsed_uri))?)?;
        let proto = ffi::bytes(&(*req).http_protocol);
        env.set_item(intern!(py, "SERVER_PROTOCOL"), latin1(py, if proto.is_empty() { b"HTTP/1.0" } else { proto })?)?;

        let cscf = *(*req).srv_conf.add(ffi::ngx_http_core_module.ctx_index) as *mut ffi::ngx_http_core_srv_conf_t;
        let mut server_name = ffi::bytes(&(*cscf).server_name).to_vec();
        // The listening socket's address when it is a wildcard (getsockname).
        let mut addr = [0u8; 128]; // NGX_SOCKADDR_STRLEN (a macro) is 112
        let mut text = ffi::ngx_str_t { len: addr.len(), data: addr.as_mut_ptr() };
        let want_text = server_name.is_empty();
        if ffi::ngx_connection_local_sockaddr(c, if want_text { &mut text } else { std::ptr::null_mut() }, 0) != ffi::OK {
            return Err(pyo3::exceptions::PyOSError::new_err("getsockname() failed on the client connection"));
        }
        if want_text {
            server_name = ffi::bytes(&text).to_vec();
        }
        env.set_item(intern!(py, "SERVER_NAME"), latin1(py, &server_name)?)?;
        env.set_item(intern!(py, "SERVER_PORT"), port_text((*c).local_sockaddr))?;
        env.set_item(intern!(py, "REMOTE_ADDR"), latin1(py, ffi::bytes(&(*c).addr_text))?)?;
        env.set_item(intern!(py, "REMOTE_PORT"), port_text((*c).sockaddr))?;
        let scheme = if ffi::ngx_python_connection_is_ssl(c) != 0 { intern!(py, "https") } else { intern!(py, "http") };
        env.set_item(intern!(py, "wsgi.url_scheme"), scheme)?;

        for h in ffi::list_iter::<ngx_table_elt_t>(&(*req).headers_in.headers) {
            let (name, value) = (ffi::bytes(&(*h).key), ffi::bytes(&(*h).value));
            if (*h).hash == 0 || name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"proxy") {
                continue; // deleted; CONTENT_LENGTH below; httpoxy
            }
            let key = if name.eq_ignore_ascii_case(b"content-type") { b"CONTENT_TYPE".to_vec() } else { cgi_name(name) };
            let key = latin1(py, &key)?;
            let value = match env.get_item(&key)? {
                // Repeated headers: one value, joined with ",".
                Some(old) => {
                    let mut joined = old.extract::<String>()?;
                    joined.push(',');
                    joined.push_str(&latin1(py, value)?.to_cow()?);
                    PyString::new(py, &joined)
                }
                None => latin1(py, value)?,
            };
            env.set_item(key, value)?;
        }

        let input = Input::new(r)?;
        if let Some(n) = input.content_length() {
            env.set_item(intern!(py, "CONTENT_LENGTH"), n.to_string())?;
        }
        env.set_item(intern!(py, "wsgi.input"), Bound::new(py, input)?)?;
        env.set_item(intern!(py, "wsgi.errors"), Bound::new(py, Errors::new(r))?)?;
        env.set_item(intern!(py, "ngx.request"), r)?;
    }
    Ok(env)
}
