//! `r.body`: the request body nginx has read, as bytes — from its memory
//! buffers and, for a large body, from the temporary file it wrote.

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::ffi::ngx_http_request_t;

/// The body, or None when the request has none or it has not been read
/// (only content handlers read it first).
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn body<'py>(py: Python<'py>, r: *mut ngx_http_request_t) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let rb = (*r).request_body;
    if rb.is_null() || (*rb).rest > 0 {
        return Ok(None); // not read (yet)
    }
    let mut out = Vec::new();
    let mut cl = (*rb).bufs;
    while !cl.is_null() {
        let b = (*cl).buf;
        if (*b).in_file() != 0 && !(*b).file.is_null() {
            let len = ((*b).file_last - (*b).file_pos) as usize;
            let start = out.len();
            out.resize(start + len, 0);
            let n = libc::pread((*(*b).file).fd, out[start..].as_mut_ptr() as *mut libc::c_void, len, (*b).file_pos);
            if n < 0 || n as usize != len {
                return Err(PyOSError::new_err("cannot read the request body from nginx's temporary file"));
            }
        } else if !(*b).pos.is_null() && (*b).last > (*b).pos {
            out.extend_from_slice(std::slice::from_raw_parts((*b).pos, (*b).last.offset_from((*b).pos) as usize));
        }
        cl = (*cl).next;
    }
    if out.is_empty() && (*r).headers_in.content_length_n < 0 && (*r).headers_in.chunked() == 0 {
        return Ok(None);
    }
    Ok(Some(PyBytes::new(py, &out)))
}
