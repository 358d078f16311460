//! `r.hi` and `r.ho`: case-insensitive mappings over nginx's header lists.
//!
//! Writing `r.ho` keeps nginx's own view in step: Content-Type and
//! Content-Length live in dedicated fields (nginx's header filter writes
//! them), and headers such as Location, Server or ETag are also pointed to
//! from `headers_out` so that nginx's filters (redirects, not-modified,
//! ranges) use the value set from Python.

use std::borrow::Cow;
use std::ptr;

use pyo3::exceptions::{PyKeyError, PyMemoryError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use super::request::Request;
use crate::ffi::{self, ngx_http_request_t, ngx_table_elt_t};
use crate::runtime::convert::{str_bytes, to_str, value_bytes};
use crate::text::{check_header_name, check_header_value};

/// Output headers nginx keeps outside (or in addition to) the plain list.
#[derive(Clone, Copy)]
enum Special {
    ContentType,
    ContentLength,
    /// A `headers_out` field pointing at the list entry.
    Field(fn(&mut ffi::ngx_http_headers_out_t) -> &mut *mut ngx_table_elt_t),
    None,
}

fn special(name: &[u8]) -> Special {
    macro_rules! field {
        ($f:ident) => {
            Special::Field(|h| &mut h.$f)
        };
    }
    // Lowercased on the stack: this runs for every header set.
    let mut low = [0u8; 24];
    let Some(low) = low.get_mut(..name.len()) else { return Special::None };
    for (l, c) in low.iter_mut().zip(name) {
        *l = c.to_ascii_lowercase();
    }
    match &*low {
        b"content-type" => Special::ContentType,
        b"content-length" => Special::ContentLength,
        b"location" => field!(location),
        b"server" => field!(server),
        b"date" => field!(date),
        b"last-modified" => field!(last_modified),
        b"etag" => field!(etag),
        b"expires" => field!(expires),
        b"content-encoding" => field!(content_encoding),
        b"content-range" => field!(content_range),
        b"accept-ranges" => field!(accept_ranges),
        b"www-authenticate" => field!(www_authenticate),
        b"refresh" => field!(refresh),
        _ => Special::None,
    }
}

/// The live entries of a header list (nginx marks deleted ones hash = 0).
unsafe fn entries<'a>(list: *const ffi::ngx_list_t) -> impl Iterator<Item = &'a mut ngx_table_elt_t> {
    ffi::list_iter::<ngx_table_elt_t>(list).map(|h| &mut *h).filter(|h| h.hash != 0)
}

fn name_of(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    match obj.cast::<PyString>() {
        // Valid UTF-8 (every real header name): CPython's cached UTF-8 form,
        // no codec call. Lone surrogates go the surrogateescape way.
        Ok(s) => match s.to_str() {
            Ok(t) => Ok(t.as_bytes().to_vec()),
            Err(_) => Ok(str_bytes(s)?.as_bytes().to_vec()),
        },
        Err(_) => Err(PyTypeError::new_err("header names are str")),
    }
}

/// A header's bytes: borrowed from the request's pool (valid for the
/// method call that reads them, while the request is live) or computed.
type Bytes = Cow<'static, [u8]>;

/// Read access shared by `hi` and `ho`: (name, value) pairs in order.
trait HeaderList {
    fn request(&self) -> &Py<Request>;
    /// # Safety: `r` is live; the result is used before it can end.
    unsafe fn pairs(&self, r: *mut ngx_http_request_t) -> Vec<(&'static [u8], Bytes)>;

    fn all_pairs(&self, py: Python<'_>) -> PyResult<Vec<(&'static [u8], Bytes)>> {
        let r = self.request().borrow(py).raw()?;
        // SAFETY: r is live (checked just above).
        Ok(unsafe { self.pairs(r) })
    }
    /// The first value of `name`: what `h[name]` and `h.get` read.
    fn first_of(&self, py: Python<'_>, name: &[u8]) -> PyResult<Option<Bytes>> {
        Ok(self.values_of(py, name)?.into_iter().next())
    }
    fn values_of(&self, py: Python<'_>, name: &[u8]) -> PyResult<Vec<Bytes>> {
        let pairs = self.all_pairs(py)?;
        Ok(pairs.into_iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v).collect())
    }
    /// The first value of each name, names in first-seen order: what the
    /// mapping shows as keys/values/items.
    fn first_values(&self, py: Python<'_>) -> PyResult<Vec<(&'static [u8], Bytes)>> {
        let mut out: Vec<(&'static [u8], Bytes)> = Vec::new();
        // lowercased names seen: one pass, not a scan of `out` per header
        // (16,000 headers took 1.5 s that way)
        let mut seen = std::collections::HashSet::new();
        for (k, v) in self.all_pairs(py)? {
            if seen.insert(k.to_ascii_lowercase()) {
                out.push((k, v));
            }
        }
        Ok(out)
    }
}

/// The mapping methods, written once for both classes.
macro_rules! mapping_methods {
    ($t:ty { $($extra:tt)* }) => {
        #[pymethods]
        impl $t {
            $($extra)*

            fn __getitem__<'py>(&self, py: Python<'py>, name: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyString>> {
                let n = name_of(name)?;
                match self.first_of(py, &n)? {
                    Some(v) => Ok(to_str(py, &v)),
                    None => Err(PyKeyError::new_err(name.clone().unbind())),
                }
            }
            #[pyo3(signature = (name, default = None))]
            fn get<'py>(&self, py: Python<'py>, name: &Bound<'py, PyAny>, default: Option<Bound<'py, PyAny>>) -> PyResult<Option<Bound<'py, PyAny>>> {
                let n = name_of(name)?;
                Ok(match self.first_of(py, &n)? {
                    Some(v) => Some(to_str(py, &v).into_any()),
                    None => default,
                })
            }
            /// Every value of a repeated header, in order (like `email.message.get_all`).
            #[pyo3(signature = (name, default = None))]
            fn get_all<'py>(&self, py: Python<'py>, name: &Bound<'py, PyAny>, default: Option<Bound<'py, PyAny>>) -> PyResult<Option<Bound<'py, PyAny>>> {
                let n = name_of(name)?;
                let v = self.values_of(py, &n)?;
                if v.is_empty() {
                    return Ok(default);
                }
                Ok(Some(PyList::new(py, v.iter().map(|v| to_str(py, v)))?.into_any()))
            }
            fn __contains__(&self, py: Python<'_>, name: &Bound<'_, PyAny>) -> PyResult<bool> {
                match name_of(name) {
                    Ok(n) => Ok(self.first_of(py, &n)?.is_some()),
                    Err(_) => Ok(false),
                }
            }
            fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
                Ok(self.first_values(py)?.len())
            }
            fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
                PyList::new(py, self.first_values(py)?.iter().map(|(k, _)| to_str(py, k)))
            }
            fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
                PyList::new(py, self.first_values(py)?.iter().map(|(_, v)| to_str(py, v)))
            }
            fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
                let items = self.first_values(py)?;
                let items: PyResult<Vec<_>> =
                    items.iter().map(|(k, v)| PyTuple::new(py, [to_str(py, k), to_str(py, v)])).collect();
                PyList::new(py, items?)
            }
            fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
                self.keys(py)?.try_iter().map(|i| i.into_any())
            }
            fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
                Ok(format!("{}({})", stringify!($t), self.items(py)?.repr()?))
            }
        }
    };
}

/// `r.hi`
#[pyclass(unsendable, module = "ngx")]
pub struct InputHeaders {
    r: Py<Request>,
}

impl InputHeaders {
    pub fn new(r: &Bound<'_, Request>) -> Self {
        InputHeaders { r: r.clone().unbind() }
    }
}

impl HeaderList for InputHeaders {
    fn request(&self) -> &Py<Request> {
        &self.r
    }
    unsafe fn pairs(&self, r: *mut ngx_http_request_t) -> Vec<(&'static [u8], Bytes)> {
        entries(&(*r).headers_in.headers).map(|h| (ffi::bytes(&h.key), Cow::Borrowed(ffi::bytes(&h.value)))).collect()
    }
    /// One scan of nginx's list, stopping at the first match: no list of
    /// all pairs is built to read one header.
    fn first_of(&self, py: Python<'_>, name: &[u8]) -> PyResult<Option<Bytes>> {
        let r = self.r.borrow(py).raw()?;
        // SAFETY: r is live (checked just above); the borrowed value lives
        // in the request's pool and is turned into a str within this call.
        Ok(unsafe {
            entries(&(*r).headers_in.headers)
                .find(|h| ffi::bytes(&h.key).eq_ignore_ascii_case(name))
                .map(|h| Cow::Borrowed(ffi::bytes(&h.value)))
        })
    }
}
mapping_methods!(InputHeaders {});

/// `r.ho`
#[pyclass(unsendable, module = "ngx")]
pub struct OutputHeaders {
    r: Py<Request>,
}

impl OutputHeaders {
    /// The request, while its header can still change: once nginx has sent
    /// it, a change would be silently lost, so it raises instead.
    fn changeable(&self, py: Python<'_>) -> PyResult<*mut ngx_http_request_t> {
        let r = self.r.borrow(py).raw()?;
        // SAFETY: `raw` returned the live request.
        if unsafe { (*r).header_sent() } != 0 {
            return Err(PyRuntimeError::new_err("the response header has been sent: r.ho can no longer change"));
        }
        Ok(r)
    }

    pub fn new(r: &Bound<'_, Request>) -> Self {
        OutputHeaders { r: r.clone().unbind() }
    }
}

impl HeaderList for OutputHeaders {
    fn request(&self) -> &Py<Request> {
        &self.r
    }
    unsafe fn pairs(&self, r: *mut ngx_http_request_t) -> Vec<(&'static [u8], Bytes)> {
        let ho = &(*r).headers_out;
        let mut out = Vec::new();
        if ho.content_type.len > 0 {
            out.push((&b"Content-Type"[..], Cow::Borrowed(ffi::bytes(&ho.content_type))));
        }
        if ho.content_length_n >= 0 && ho.content_length.is_null() {
            // nginx prints the number itself when it sends the header.
            out.push((&b"Content-Length"[..], Cow::Owned(ho.content_length_n.to_string().into_bytes())));
        }
        out.extend(entries(&ho.headers).map(|h| (ffi::bytes(&h.key), Cow::Borrowed(ffi::bytes(&h.value)))));
        out
    }
}
mapping_methods!(OutputHeaders {
    fn __setitem__(&self, py: Python<'_>, name: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.store(py, name, value, true)
    }

    /// Adds a header, keeping others of the same name (e.g. Set-Cookie).
    fn add(&self, py: Python<'_>, name: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.store(py, name, value, false)
    }

    fn __delitem__(&self, py: Python<'_>, name: &Bound<'_, PyAny>) -> PyResult<()> {
        let r = self.changeable(py)?;
        let n = name_of(name)?;
        // SAFETY: r is live.
        if unsafe { remove(r, &n) } {
            Ok(())
        } else {
            Err(PyKeyError::new_err(name.clone().unbind()))
        }
    }
});

impl OutputHeaders {
    /// Checks and stores `name: value`; `replace`: the other headers of that
    /// name go (`r.ho[name] = value`), else only those nginx keeps once.
    fn store(&self, py: Python<'_>, name: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>, replace: bool) -> PyResult<()> {
        let r = self.changeable(py)?;
        let name = name_of(name)?;
        let value = value_bytes(value)?;
        check_header_name(&name).map_err(|e| PyValueError::new_err(e.to_string()))?;
        check_header_value(&value).map_err(|e| PyValueError::new_err(e.to_string()))?;
        // SAFETY: r is live; everything stored is copied into its pool.
        unsafe {
            if replace || !matches!(special(&name), Special::None) {
                remove(r, &name);
            }
            set(r, &name, &value)
        }
    }
}

/// Checks and adds one response header as `r.ho.add` does (headers nginx
/// keeps once, such as Content-Type, are replaced): the WSGI response's
/// headers go straight in through here.
///
/// # Safety
/// `r` must be a live request whose header is not sent yet.
pub(super) unsafe fn add(r: *mut ngx_http_request_t, name: &[u8], value: &[u8]) -> PyResult<()> {
    check_header_name(name).map_err(|e| PyValueError::new_err(e.to_string()))?;
    check_header_value(value).map_err(|e| PyValueError::new_err(e.to_string()))?;
    if !matches!(special(name), Special::None) {
        remove(r, name);
    }
    set(r, name, value)
}

/// Removes every output header called `name`; true if there was one.
unsafe fn remove(r: *mut ngx_http_request_t, name: &[u8]) -> bool {
    let ho = &mut (*r).headers_out;
    let mut found = false;
    match special(name) {
        Special::ContentType => {
            found = ho.content_type.len > 0;
            ho.content_type = ffi::NULL_STR;
            ho.content_type_len = 0;
            ho.content_type_lowcase = ptr::null_mut();
            ho.charset = ffi::NULL_STR;
        }
        Special::ContentLength => {
            found = ho.content_length_n >= 0 || !ho.content_length.is_null();
            ho.content_length_n = -1;
            ho.content_length = ptr::null_mut();
        }
        Special::Field(field) => {
            *field(ho) = ptr::null_mut();
            if name.eq_ignore_ascii_case(b"last-modified") {
                ho.last_modified_time = -1;
            }
        }
        Special::None => {}
    }
    for h in entries(&ho.headers) {
        if ffi::bytes(&h.key).eq_ignore_ascii_case(name) {
            h.hash = 0;
            found = true;
        }
    }
    found
}

/// Adds `name: value` to the response (after `remove`).
unsafe fn set(r: *mut ngx_http_request_t, name: &[u8], value: &[u8]) -> PyResult<()> {
    let pool = (*r).pool;
    let oom = || PyMemoryError::new_err("no memory for a header");
    let ho = &mut (*r).headers_out;
    match special(name) {
        Special::ContentType => {
            ho.content_type = ffi::pool_str(pool, value).ok_or_else(oom)?;
            ho.content_type_len = value.iter().position(|&c| c == b';').unwrap_or(value.len());
            return Ok(());
        }
        Special::ContentLength => {
            let n = std::str::from_utf8(value).ok().and_then(|s| s.trim().parse::<i64>().ok()).filter(|&n| n >= 0);
            ho.content_length_n = n.ok_or_else(|| PyValueError::new_err("Content-Length must be a non-negative integer"))?;
            return Ok(());
        }
        _ => {}
    }
    let h = ffi::ngx_list_push(&mut ho.headers) as *mut ngx_table_elt_t;
    if h.is_null() {
        return Err(oom());
    }
    let lowcase = name.to_ascii_lowercase();
    // Zeroed first: the struct differs between nginx versions (`next`
    // appeared in 1.23), and every other field starts empty.
    *h = std::mem::zeroed();
    (*h).hash = 1;
    (*h).key = ffi::pool_str(pool, name).ok_or_else(oom)?;
    (*h).value = ffi::pool_str(pool, value).ok_or_else(oom)?;
    (*h).lowcase_key = ffi::pool_str(pool, &lowcase).ok_or_else(oom)?.data;
    if let Special::Field(field) = special(name) {
        *field(ho) = h;
        if lowcase == b"last-modified" {
            // nginx's not-modified and range filters compare this time (-1
            // when the value is not an HTTP date: they then do nothing)
            ho.last_modified_time = ffi::ngx_parse_http_time((*h).value.data, (*h).value.len);
        }
    }
    Ok(())
}
