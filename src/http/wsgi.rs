//! `python_wsgi MODULE:CALLABLE` (location, if in location): a PEP 3333
//! application as the location's content handler. The application is
//! imported at configuration time; `wsgi.py` runs it, with the per-request
//! work in Rust: `environ` (`wsgi_environ`), `wsgi.input` (`wsgi_input`)
//! and the response (`wsgi_response`). Everything else (reading the body
//! first, suspending in the unblock build, errors) is the content
//! handler's.

use std::os::raw::{c_char, c_void};
use std::ptr;

use pyo3::prelude::*;
use pyo3::types::PyModule;

use super::{content, LocConf};
use crate::core_module;
use crate::executor;
use crate::ffi::{self, ngx_command_t, ngx_conf_t};
use crate::runtime::errors;

/// The embedded `wsgi.py`, created once per process.
fn wsgi_module(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let modules = py.import("sys")?.getattr("modules")?;
    if let Ok(m) = modules.get_item("_ngx_wsgi") {
        return Ok(m);
    }
    let code = std::ffi::CString::new(include_str!("wsgi.py")).expect("no NUL in wsgi.py");
    let m = PyModule::from_code(py, &code, c"nginx-python/wsgi.py", c"_ngx_wsgi")?;
    m.add_function(wrap_pyfunction!(super::wsgi_environ::environ, &m)?)?;
    m.add_function(wrap_pyfunction!(super::wsgi_response::respond, &m)?)?;
    m.add_function(wrap_pyfunction!(super::wsgi_response::sendfile, &m)?)?;
    modules.set_item("_ngx_wsgi", &m)?;
    Ok(m.into_any())
}

/// SCRIPT_NAME for the location being configured: its prefix without the
/// trailing slash ("" for `/`, regex and named locations).
unsafe fn script_name(clcf: *mut ffi::ngx_http_core_loc_conf_t) -> String {
    if (*clcf).named() != 0 || !(*clcf).regex.is_null() {
        return String::new();
    }
    let name = String::from_utf8_lossy(ffi::bytes(&(*clcf).name)).into_owned();
    name.trim_end_matches('/').to_string()
}

/// # Safety
/// Called by nginx for the directive, with the live configuration `cf`.
pub unsafe extern "C" fn python_wsgi(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    crate::panic_guard::guard_conf(cf, "python_wsgi", || python_wsgi_unguarded(cf, _cmd, conf))
}

unsafe fn python_wsgi_unguarded(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    let lcf = &mut *(conf as *mut LocConf);
    if lcf.content.is_some() {
        return c"is duplicate".as_ptr() as *mut c_char;
    }
    let spec = String::from_utf8_lossy(ffi::bytes(&ffi::conf_args(cf)[1])).into_owned();
    let clcf = ffi::http_conf_loc_conf::<ffi::ngx_http_core_loc_conf_t>(cf, &*(&raw const ffi::ngx_http_core_module));
    let script = script_name(clcf);
    let conf_id = (*cf).cycle as usize;
    let Some(state) = core_module::state(cf) else { return ffi::CONF_ERROR };
    let handler = Python::attach(|py| {
        let made = wsgi_module(py).and_then(|m| m.call_method1("handler", (&spec, &script, conf_id)));
        match made {
            Ok(f) => Some(state.keep(&f)),
            Err(e) => {
                errors::conf_exception(py, cf, &format!("python_wsgi \"{spec}\""), &e);
                None
            }
        }
    });
    let Some(h) = handler else { return ffi::CONF_ERROR };
    lcf.content = Some(h);
    lcf.stream_body = executor::SUSPENDS;
    (*clcf).handler = Some(content::content_handler);
    ptr::null_mut()
}
