//! The WSGI response into nginx with one call per batch: the status and
//! headers of `start_response` with the first body pieces (`respond`), and
//! `wsgi.file_wrapper` around a real file as one in-file buffer that nginx
//! sends with `sendfile` (`sendfile`).

use pyo3::exceptions::{PyMemoryError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use super::request::Request;
use super::{headers, output};
use crate::ffi::{self, ngx_http_request_t};

const HOP_BY_HOP: [&[u8]; 8] =
    [b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailers", b"transfer-encoding", b"upgrade"];

/// A `str` of code points < 256 as its latin-1 bytes.
fn latin1_bytes(s: &Bound<'_, PyString>, what: &str) -> PyResult<Vec<u8>> {
    let text = s.to_cow()?;
    if text.is_ascii() {
        return Ok(text.as_bytes().to_vec());
    }
    text.chars()
        .map(|c| u8::try_from(c as u32).map_err(|_| PyValueError::new_err(format!("WSGI {what} {text:?} is not latin-1"))))
        .collect()
}

/// Status and headers of `start_response` into `r` (not sent yet); true
/// when the application gave a Content-Length.
unsafe fn set_headers(r: *mut ngx_http_request_t, status: usize, list: &Bound<'_, PyList>) -> PyResult<bool> {
    let mut has_length = false;
    for h in list.iter() {
        let pair = h.cast::<PyTuple>().ok().filter(|t| t.len() == 2);
        let strs = pair.as_ref().and_then(|t| Some((t.get_item(0).ok()?.cast_into::<PyString>().ok()?, t.get_item(1).ok()?.cast_into::<PyString>().ok()?)));
        let Some((name, value)) = strs else {
            return Err(PyTypeError::new_err(format!("WSGI response headers must be (str, str) tuples, not {}", h.repr()?)));
        };
        let (name, value) = (latin1_bytes(&name, "header name")?, latin1_bytes(&value, "header value")?);
        if HOP_BY_HOP.iter().any(|hop| hop.eq_ignore_ascii_case(&name)) {
            return Err(PyValueError::new_err(format!(
                "WSGI applications must not set the hop-by-hop header {:?}",
                String::from_utf8_lossy(&name)
            )));
        }
        has_length |= name.eq_ignore_ascii_case(b"content-length");
        headers::add(r, &name, &value)?;
    }
    (*r).headers_out.status = status;
    (*r).headers_out.status_line = ffi::NULL_STR;
    Ok(has_length)
}

/// The code of a `start_response` status line ("NNN Reason").
fn status_code(status: &Bound<'_, PyAny>) -> PyResult<usize> {
    let Ok(text) = status.cast::<PyString>() else {
        return Err(PyTypeError::new_err(format!("WSGI status must be a str, not {}", status.get_type().name()?)));
    };
    let text = text.to_cow()?;
    let b = text.as_bytes();
    if b.len() < 5 || !b[..3].iter().all(u8::is_ascii_digit) || b[3] != b' ' {
        return Err(PyValueError::new_err(format!("WSGI status must be \"NNN Reason\", not {text:?}")));
    }
    Ok(b[..3].iter().fold(0, |n, &c| n * 10 + (c - b'0') as usize))
}

/// `start_response`'s headers: exactly a list.
fn header_list<'a, 'py>(headers: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, PyList>> {
    headers.cast_exact::<PyList>().map_err(|_| {
        let kind = headers.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        PyTypeError::new_err(format!("WSGI response headers must be a list, not {kind}"))
    })
}

/// Sends, in one go: the status line and `headers` of `start_response`
/// (unless `headers` is None: already sent), then the `body` pieces (each
/// must be bytes); `last` ends the response. `count` is the body bytes sent
/// so far; returns the new count, or -1 once the response is complete —
/// at `last`, or as soon as the body reaches the Content-Length, which
/// then needs no further call into nginx. When the whole response is here
/// (`last` with the headers) and the application set no Content-Length,
/// it is the body's size.
#[pyfunction]
#[pyo3(signature = (r, status, headers, body, last, count))]
pub fn respond(r: &Bound<'_, Request>, status: &Bound<'_, PyAny>, headers: Option<&Bound<'_, PyAny>>, body: &Bound<'_, PyAny>, last: bool, count: i64) -> PyResult<i64> {
    let mut data: Vec<u8> = Vec::new();
    let mut one: Option<Bound<'_, PyBytes>> = None;
    let mut pieces = 0;
    for piece in body.try_iter()? {
        let Ok(b) = piece?.cast_into::<PyBytes>() else {
            return Err(PyTypeError::new_err("WSGI body data must be bytes"));
        };
        pieces += 1;
        match pieces {
            1 => one = Some(b),
            2 => {
                data.extend_from_slice(one.as_ref().expect("first piece").as_bytes());
                data.extend_from_slice(b.as_bytes());
            }
            _ => data.extend_from_slice(b.as_bytes()),
        }
    }
    let bytes: &[u8] = if pieces == 1 { one.as_ref().expect("one piece").as_bytes() } else { &data };
    if count < 0 {
        // Complete already: only empty pieces may follow.
        if !bytes.is_empty() {
            return Err(PyValueError::new_err("the WSGI response body is longer than its Content-Length"));
        }
        return Ok(-1);
    }
    let status = match headers {
        Some(_) => status_code(status)?,
        None => 0,
    };
    let headers = headers.map(header_list).transpose()?;
    let total = count + bytes.len() as i64;
    let mut complete = last;
    r.borrow().sending("send", |req, chains| {
        // SAFETY: `sending` hands over the live request of a content handler.
        unsafe {
            if let Some(list) = headers {
                if (*req).header_sent() != 0 {
                    return Err(PyValueError::new_err("the response header has already been sent"));
                }
                if !set_headers(req, status, list)? && last {
                    (*req).headers_out.content_length_n = bytes.len() as i64;
                }
                output::send_header(req)?;
            }
            let length = (*req).headers_out.content_length_n;
            complete |= length >= 0 && total >= length;
            output::send(req, bytes, false, complete, chains)?;
            Ok(complete)
        }
    })?;
    Ok(if complete { -1 } else { total })
}

/// `wsgi.file_wrapper` around a regular file: its bytes from `offset` to
/// the end go out as one in-file buffer (nginx's `sendfile`, or its own
/// reads with `sendfile off`), through a duplicate of `fd` that the
/// request's pool closes; the application's file object can be closed as
/// soon as this returns. False (nothing sent) when `fd` is not a regular
/// file.
#[pyfunction]
pub fn sendfile(r: &Bound<'_, Request>, status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>, fd: i32, offset: i64) -> PyResult<bool> {
    let (status, headers) = (status_code(status)?, header_list(headers)?);
    // SAFETY: fstat of a descriptor the application handed over.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(false);
    }
    let offset = offset.clamp(0, st.st_size);
    let size = st.st_size - offset;
    r.borrow().sending("send", |req, chains| {
        // SAFETY: `sending` hands over the live request of a content
        // handler; the buffer, file and cleanup are in its pool, so they
        // live as long as nginx may still be sending them.
        unsafe {
            if (*req).header_sent() != 0 {
                return Err(PyValueError::new_err("the response header has already been sent"));
            }
            if !set_headers(req, status, headers)? {
                (*req).headers_out.content_length_n = size;
            }
            output::send_header(req)?;
            if (*req).header_only() != 0 || size == 0 {
                return output::send(req, &[], false, true, chains).map(|()| true);
            }
            let file = pool_file(req, fd)?;
            let b = ffi::ngx_pcalloc((*req).pool, std::mem::size_of::<ffi::ngx_buf_t>()) as *mut ffi::ngx_buf_t;
            if b.is_null() {
                return Err(PyMemoryError::new_err("no memory for a buffer"));
            }
            (*b).file = file;
            (*b).file_pos = offset;
            (*b).file_last = offset + size;
            (*b).set_in_file(1);
            (*b).set_last_buf(((*req).main == req) as u32);
            (*b).set_last_in_chain(1);
            let out = ffi::ngx_alloc_chain_link((*req).pool);
            if out.is_null() {
                return Err(PyMemoryError::new_err("no memory for a buffer"));
            }
            (*out).buf = b;
            (*out).next = std::ptr::null_mut();
            output::send_chain(req, out, chains).map(|()| true)
        }
    })?;
    Ok(true)
}

/// An `ngx_file_t` on a duplicate of `fd`, closed when the request's pool
/// is destroyed (after nginx has sent the last byte or given up).
unsafe fn pool_file(r: *mut ngx_http_request_t, fd: i32) -> PyResult<*mut ffi::ngx_file_t> {
    let pool = (*r).pool;
    let cln = ffi::ngx_pool_cleanup_add(pool, std::mem::size_of::<ffi::ngx_pool_cleanup_file_t>());
    let file = ffi::ngx_pcalloc(pool, std::mem::size_of::<ffi::ngx_file_t>()) as *mut ffi::ngx_file_t;
    if cln.is_null() || file.is_null() {
        return Err(PyMemoryError::new_err("no memory for the file"));
    }
    let dup = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0);
    if dup < 0 {
        return Err(PyOSError::new_err("cannot duplicate the file descriptor of wsgi.file_wrapper"));
    }
    let clnf = (*cln).data as *mut ffi::ngx_pool_cleanup_file_t;
    (*clnf).fd = dup;
    (*clnf).name = c"wsgi.file_wrapper".as_ptr() as *mut u8;
    (*clnf).log = (*pool).log;
    (*cln).handler = Some(ffi::ngx_pool_cleanup_file);
    (*file).fd = dup;
    (*file).name = ffi::ngx_str_t { len: 17, data: c"wsgi.file_wrapper".as_ptr() as *mut u8 };
    (*file).log = (*(*r).connection).log;
    Ok(file)
}
