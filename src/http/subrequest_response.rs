//! What `r.subrequest()` returns: the subrequest's response as it is
//! captured (`Capture`, shared between nginx's side and Python) and the
//! Python object over it (`Response`), whose attributes wait cooperatively
//! until the subrequest is complete.
//!
//! The body is kept in memory up to a limit (`subrequest_output_buffer_size`
//! of the calling location); beyond it, it goes to an unnamed temporary
//! file in `client_body_temp_path`, read back when `.body` is asked for.

use std::cell::{Cell, OnceCell, RefCell};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::rc::Rc;

use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::executor;
use crate::runtime::convert::to_str;

/// The response of one subrequest, filled by the capture filters.
pub struct Capture {
    /// 0 until the header has passed the filters.
    pub status: Cell<usize>,
    pub headers: RefCell<Vec<(Vec<u8>, Vec<u8>)>>,
    memory: RefCell<Vec<u8>>,
    spill: RefCell<Option<File>>,
    limit: usize,
    temp_dir: PathBuf,
    /// The subrequest is complete: nothing more will be captured.
    pub done: Cell<bool>,
    /// Why the body could not be kept (a temp file error).
    error: RefCell<Option<String>>,
    /// The handler waiting for this response.
    pub waiter: Cell<Option<executor::Handle>>,
}

impl Capture {
    pub fn new(limit: usize, temp_dir: PathBuf) -> Capture {
        Capture {
            status: Cell::new(0),
            headers: RefCell::new(Vec::new()),
            memory: RefCell::new(Vec::new()),
            spill: RefCell::new(None),
            limit,
            temp_dir,
            done: Cell::new(false),
            error: RefCell::new(None),
            waiter: Cell::new(None),
        }
    }

    /// Appends body data; past the memory limit everything goes to a file.
    pub fn append(&self, data: &[u8]) -> Result<(), String> {
        if data.is_empty() {
            return Ok(());
        }
        let mut spill = self.spill.borrow_mut();
        if spill.is_none() && self.memory.borrow().len() + data.len() > self.limit {
            let mut f = temp_file(&self.temp_dir).map_err(|e| format!("cannot create a temporary file in {}: {e}", self.temp_dir.display()))?;
            let kept = std::mem::take(&mut *self.memory.borrow_mut());
            f.write_all(&kept).map_err(|e| format!("cannot write the temporary file: {e}"))?;
            *spill = Some(f);
        }
        match spill.as_mut() {
            Some(f) => f.write_all(data).map_err(|e| format!("cannot write the temporary file: {e}")),
            None => {
                self.memory.borrow_mut().extend_from_slice(data);
                Ok(())
            }
        }
    }

    /// Capturing failed: `.body` raises with `why`.
    pub fn fail(&self, why: String) {
        self.error.borrow_mut().get_or_insert(why);
    }

    fn body(&self) -> std::io::Result<Vec<u8>> {
        match self.spill.borrow_mut().as_mut() {
            Some(f) => {
                let mut out = Vec::new();
                f.seek(SeekFrom::Start(0))?;
                f.read_to_end(&mut out)?;
                Ok(out)
            }
            None => Ok(self.memory.borrow().clone()),
        }
    }
}

/// An unnamed file in `dir` (gone when closed); a named one unlinked at
/// once where the filesystem has no O_TMPFILE.
fn temp_file(dir: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let unnamed = std::fs::OpenOptions::new().read(true).write(true).mode(0o600).custom_flags(libc::O_TMPFILE).open(dir);
    if let Ok(f) = unnamed {
        return Ok(f);
    }
    thread_local!(static SERIAL: Cell<u64> = const { Cell::new(0) });
    let n = SERIAL.with(|s| {
        s.set(s.get() + 1);
        s.get()
    });
    let path = dir.join(format!("ngx-python-subrequest-{}-{n}", std::process::id()));
    let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

/// `r.subrequest()`'s result.
#[pyclass(unsendable, module = "ngx", name = "SubrequestResponse")]
pub struct Response {
    cap: Rc<Capture>,
    uri: String,
    headers: OnceCell<Py<PyAny>>,
    body: OnceCell<Py<PyBytes>>,
}

impl Response {
    pub fn new(cap: Rc<Capture>, uri: String) -> Response {
        Response { cap, uri, headers: OnceCell::new(), body: OnceCell::new() }
    }

    /// Waits (suspending the handler) until the subrequest is complete.
    fn wait(&self) -> PyResult<()> {
        while !self.cap.done.get() {
            let woken = executor::suspend_current(|h| self.cap.waiter.set(Some(h)));
            self.cap.waiter.set(None);
            match woken {
                Some(true) => {}
                Some(false) => return Err(executor::cancelled_error()),
                None => {
                    return Err(PyRuntimeError::new_err(
                        "a subrequest's response can be waited for only in python_access and python_content \
                         (python_set, python_log and the filters never wait)",
                    ))
                }
            }
        }
        Ok(())
    }
}

#[pymethods]
impl Response {
    /// The response status (waits for the subrequest).
    #[getter]
    fn status(&self) -> PyResult<usize> {
        self.wait()?;
        Ok(self.cap.status.get())
    }

    /// The response headers: a case-insensitive mapping (waits).
    #[getter]
    fn headers(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.wait()?;
        if let Some(h) = self.headers.get() {
            return Ok(h.clone_ref(py));
        }
        let pairs = PyList::empty(py);
        for (k, v) in self.cap.headers.borrow().iter() {
            pairs.append((to_str(py, k), to_str(py, v)))?;
        }
        let h = super::subrequest::helper(py)?.getattr("Headers")?.call1((pairs,))?.unbind();
        Ok(self.headers.get_or_init(|| h).clone_ref(py))
    }

    /// The response body, bytes (waits).
    #[getter]
    fn body(&self, py: Python<'_>) -> PyResult<Py<PyBytes>> {
        self.wait()?;
        if let Some(b) = self.body.get() {
            return Ok(b.clone_ref(py));
        }
        if let Some(e) = self.cap.error.borrow().as_ref() {
            return Err(PyOSError::new_err(format!("the body of subrequest {} was lost: {e}", self.uri)));
        }
        let data = self.cap.body().map_err(|e| PyOSError::new_err(format!("reading the body of subrequest {}: {e}", self.uri)))?;
        let b = PyBytes::new(py, &data).unbind();
        Ok(self.body.get_or_init(|| b).clone_ref(py))
    }

    /// Whether the subrequest is complete (never waits).
    #[getter]
    fn done(&self) -> bool {
        self.cap.done.get()
    }

    fn __repr__(&self) -> String {
        match self.cap.done.get() {
            true => format!("<ngx.SubrequestResponse {} {}>", self.uri, self.cap.status.get()),
            false => format!("<ngx.SubrequestResponse {} (pending)>", self.uri),
        }
    }
}
