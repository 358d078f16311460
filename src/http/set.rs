//! `python_set $var EXPR`: a variable computed by Python each time nginx
//! evaluates it. str -> UTF-8, bytes-like -> raw bytes, None -> not found,
//! anything else -> str(value); an exception is logged and the variable is
//! not found.

use std::os::raw::{c_char, c_void};
use std::ptr;

use pyo3::prelude::*;

use super::request::request_object;
use crate::core_module;
use crate::executor;
use crate::ffi::{self, ngx_command_t, ngx_conf_t, ngx_http_request_t, ngx_http_variable_value_t, ngx_int_t};
use crate::runtime::convert::value_bytes;
use crate::runtime::errors::log_exception;
use crate::runtime::Handler;

/// What a `python_set` variable carries (owned by the configuration's pool).
struct SetVar {
    handler: Handler,
    /// "python_set $name", for the error log.
    what: String,
}

pub unsafe extern "C" fn python_set(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, _conf: *mut c_void) -> *mut c_char {
    let args = ffi::conf_args(cf);
    let mut name = args[1];
    let raw = ffi::bytes(&name);
    if raw.len() < 2 || raw[0] != b'$' {
        ffi::conf_error(cf, format!("invalid variable name \"{}\"", String::from_utf8_lossy(raw)).as_bytes());
        return ffi::CONF_ERROR;
    }
    name.data = name.data.add(1);
    name.len -= 1;
    let Some(handler) = core_module::compile_arg(cf, 2, "r") else { return ffi::CONF_ERROR };
    let what = format!("python_set ${}", String::from_utf8_lossy(ffi::bytes(&name)));
    let v = ffi::ngx_http_add_variable(cf, &mut name, ffi::NGX_HTTP_VAR_CHANGEABLE as usize);
    if v.is_null() {
        return ffi::CONF_ERROR;
    }
    let Some(data) = ffi::pool_box((*cf).pool, SetVar { handler, what }) else { return ffi::CONF_ERROR };
    (*v).get_handler = Some(get_variable);
    (*v).data = data as usize;
    (*v).flags |= ffi::NGX_HTTP_VAR_NOCACHEABLE as usize;
    ptr::null_mut()
}

unsafe extern "C" fn get_variable(r: *mut ngx_http_request_t, v: *mut ngx_http_variable_value_t, data: usize) -> ngx_int_t {
    let var = &*(data as *const SetVar);
    let log = (*(*r).connection).log;
    let value: Option<Vec<u8>> = executor::run_nonsuspending(|| {
        Python::attach(|py| {
            let result = request_object(py, r).and_then(|obj| var.handler.call(obj.as_any())).and_then(|val| {
                if val.is_none() {
                    return Ok(None);
                }
                Ok(Some(value_bytes(&val)?.into_owned()))
            });
            result.unwrap_or_else(|e| {
                log_exception(py, log, &var.what, &e);
                None
            })
        })
    });
    let v = &mut *v;
    match value.and_then(|b| ffi::pool_str((*r).pool, &b)) {
        Some(s) => {
            v.data = s.data;
            v.set_len(s.len as u32);
            v.set_valid(1);
            v.set_no_cacheable(0);
            v.set_not_found(0);
        }
        None => v.set_not_found(1),
    }
    ffi::OK
}
