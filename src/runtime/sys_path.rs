//! `python_path DIR`: directories put in front of sys.path, in order.
//!
//! sys.path belongs to the one interpreter, which outlives configurations:
//! each new configuration takes out the entries the previous one added
//! (`forget`, when its namespace is made) before adding its own, so a
//! reload that drops or changes a `python_path` is obeyed.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyList;

/// Entries the current configuration added (master / `nginx -t` only).
static ADDED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn sys_path(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    Ok(py.import("sys")?.getattr("path")?.cast_into::<PyList>()?)
}

/// Takes the previous configuration's entries out of sys.path.
pub fn forget(py: Python<'_>) -> PyResult<()> {
    let path = sys_path(py)?;
    let mut added = ADDED.lock().unwrap_or_else(|e| e.into_inner());
    for dir in added.drain(..) {
        if path.contains(&dir)? {
            path.call_method1("remove", (dir,))?;
        }
    }
    Ok(())
}

/// Inserts `dir` as the `index`th entry of sys.path (the configuration's
/// `index`th `python_path`).
pub fn add(py: Python<'_>, index: usize, dir: &str) -> PyResult<()> {
    sys_path(py)?.insert(index, dir)?;
    ADDED.lock().unwrap_or_else(|e| e.into_inner()).push(dir.to_string());
    Ok(())
}
