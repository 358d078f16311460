//! The request of an `r.subrequest()`: the Python arguments checked and
//! normalised (`Spec`, with the embedded subrequest.py), then written into
//! the nginx subrequest — method, headers, body — right after
//! `ngx_http_subrequest` made it (subrequest.rs).

use std::ptr;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

use crate::ffi::{self, ngx_http_request_t, ngx_str_t, ngx_table_elt_t};
use crate::runtime::convert::value_bytes;
use crate::text::{check_header_name, check_header_value};

/// The embedded helper module (argument normalisation, the headers mapping).
pub fn helper(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static HELPER: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    HELPER
        .get_or_try_init(py, || {
            let code = std::ffi::CString::new(include_str!("subrequest.py")).expect("no NUL in subrequest.py");
            Ok::<_, PyErr>(PyModule::from_code(py, &code, c"nginx-python/subrequest.py", c"_ngx_subrequest")?.unbind())
        })
        .map(|m| m.bind(py))
}

/// What the Python arguments become.
pub struct Spec {
    pub uri: Vec<u8>,
    pub method: Vec<u8>,
    pub query: Vec<u8>,
    pub body: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Spec {
    pub fn from_python(
        uri: &Bound<'_, PyAny>,
        method: &str,
        args: Option<&Bound<'_, PyAny>>,
        body: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Spec> {
        let py = uri.py();
        let h = helper(py)?;
        let uri = value_bytes(uri)?.into_owned();
        if !uri.starts_with(b"/") {
            return Err(PyValueError::new_err("r.subrequest(): the URI must start with '/' (named locations cannot be subrequested)"));
        }
        let method = method.as_bytes().to_vec();
        if method.is_empty() || !method.iter().all(|c| c.is_ascii_uppercase() || *c == b'-' || *c == b'_') {
            return Err(PyValueError::new_err("r.subrequest(): method must be an upper-case token such as 'GET'"));
        }
        let query: Vec<u8> = h.call_method1("query", (args,))?.extract()?;
        let body = match body {
            None => None,
            Some(b) if b.is_none() => None,
            Some(b) => Some(crate::runtime::convert::data_bytes(b, "body")?.into_owned()),
        };
        let mut pairs = Vec::new();
        for pair in h.call_method1("header_pairs", (headers,))?.try_iter()? {
            let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair?.extract()?;
            let (name, value) = (value_bytes(&name)?.into_owned(), value_bytes(&value)?.into_owned());
            check_header_name(&name).map_err(|e| PyValueError::new_err(e.to_string()))?;
            check_header_value(&value).map_err(|e| PyValueError::new_err(e.to_string()))?;
            pairs.push((name, value));
        }
        Ok(Spec { uri, method, query, body, headers: pairs })
    }
}

/// The subrequest's method (`proxy_pass` sends `method_name`).
///
/// # Safety
/// `sr` must be a subrequest just made.
pub unsafe fn set_method(sr: *mut ngx_http_request_t, method: &[u8]) -> Option<()> {
    (*sr).method = match method {
        b"GET" => ffi::NGX_HTTP_GET,
        b"HEAD" => ffi::NGX_HTTP_HEAD,
        b"POST" => ffi::NGX_HTTP_POST,
        b"PUT" => ffi::NGX_HTTP_PUT,
        b"DELETE" => ffi::NGX_HTTP_DELETE,
        b"OPTIONS" => ffi::NGX_HTTP_OPTIONS,
        b"PATCH" => ffi::NGX_HTTP_PATCH,
        _ => ffi::NGX_HTTP_UNKNOWN,
    } as ffi::ngx_uint_t;
    (*sr).method_name = ffi::pool_str((*sr).pool, method)?;
    Some(())
}

/// The subrequest's headers and body: the parent's headers (a copy of the
/// list: the parent's own stays untouched) with `spec.headers` replacing
/// those of the same names, and `spec.body` as the request body (none
/// otherwise: the parent's body is not passed on).
///
/// # Safety
/// `sr` must be a subrequest just made.
pub unsafe fn set_request(sr: *mut ngx_http_request_t, spec: &Spec) -> Option<()> {
    let pool = (*sr).pool;
    let hi = &mut (*sr).headers_in;
    let parent_list: *const ffi::ngx_list_t = &hi.headers;
    let parent: Vec<ngx_table_elt_t> = ffi::list_iter::<ngx_table_elt_t>(parent_list).map(|h| *h).filter(|h| h.hash != 0).collect();
    let fresh = ffi::ngx_list_create(pool, (parent.len() + spec.headers.len() + 1).max(4), std::mem::size_of::<ngx_table_elt_t>());
    if fresh.is_null() {
        return None;
    }
    hi.headers = *fresh;
    hi.headers.last = &mut hi.headers.part;
    let replaced = |name: &[u8]| {
        name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
            || spec.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    for h in parent.iter().filter(|h| !replaced(ffi::bytes(&h.key))) {
        let e = ffi::ngx_list_push(&mut hi.headers) as *mut ngx_table_elt_t;
        if e.is_null() {
            return None;
        }
        *e = *h;
    }
    hi.content_length = ptr::null_mut();
    hi.transfer_encoding = ptr::null_mut();
    hi.set_chunked(0);
    hi.content_length_n = -1;
    for (name, value) in &spec.headers {
        push_header(&mut hi.headers, pool, name, value)?;
    }
    (*sr).request_body = ptr::null_mut();
    let body = match &spec.body {
        Some(b) => Some(&b[..]),
        // A body-carrying method gets an empty one rather than none.
        None if matches!(&spec.method[..], b"POST" | b"PUT" | b"PATCH") => Some(&[][..]),
        None => None,
    };
    if let Some(body) = body {
        hi.content_length_n = body.len() as _;
        hi.content_length = push_header(&mut hi.headers, pool, b"Content-Length", body.len().to_string().as_bytes())?;
        (*sr).request_body = request_body(pool, body)?;
    }
    Some(())
}

unsafe fn push_header(list: *mut ffi::ngx_list_t, pool: *mut ffi::ngx_pool_t, name: &[u8], value: &[u8]) -> Option<*mut ngx_table_elt_t> {
    let e = ffi::ngx_list_push(list) as *mut ngx_table_elt_t;
    if e.is_null() {
        return None;
    }
    let lower = name.to_ascii_lowercase();
    let key = ffi::pool_str(pool, name)?;
    let low: ngx_str_t = ffi::pool_str(pool, &lower)?;
    // Zeroed first: the struct differs between nginx versions (`next`
    // appeared in 1.23), and every other field starts empty.
    *e = std::mem::zeroed();
    (*e).hash = ffi::ngx_hash_key(low.data, low.len);
    (*e).key = key;
    (*e).value = ffi::pool_str(pool, value)?;
    (*e).lowcase_key = low.data;
    Some(e)
}

/// A request body of one memory buffer, as nginx's body reader leaves it.
unsafe fn request_body(pool: *mut ffi::ngx_pool_t, body: &[u8]) -> Option<*mut ffi::ngx_http_request_body_t> {
    let rb = ffi::ngx_pcalloc(pool, std::mem::size_of::<ffi::ngx_http_request_body_t>()) as *mut ffi::ngx_http_request_body_t;
    let b = ffi::ngx_pcalloc(pool, std::mem::size_of::<ffi::ngx_buf_t>()) as *mut ffi::ngx_buf_t;
    let cl = ffi::ngx_alloc_chain_link(pool);
    if rb.is_null() || b.is_null() || cl.is_null() {
        return None;
    }
    if !body.is_empty() {
        let data = ffi::pool_str(pool, body)?;
        (*b).start = data.data;
        (*b).pos = data.data;
        (*b).last = data.data.add(data.len);
        (*b).end = (*b).last;
        (*b).set_temporary(1);
    }
    (*b).set_last_buf(1);
    (*cl).buf = b;
    (*cl).next = ptr::null_mut();
    (*rb).bufs = cl;
    (*rb).rest = 0;
    Some(rb)
}
