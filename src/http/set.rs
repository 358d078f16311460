//! `python_set $var EXPR` in http: registers the variable; evaluating it is
//! `runtime::set_var`, shared with stream.

use std::os::raw::{c_char, c_void};
use std::ptr;

use super::request::request_object;
use crate::core_module;
use crate::ffi::{self, ngx_command_t, ngx_conf_t, ngx_http_request_t, ngx_http_variable_value_t, ngx_int_t};
use crate::runtime::set_var::{self, SetVar};

pub unsafe extern "C" fn python_set(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, _conf: *mut c_void) -> *mut c_char {
    crate::panic_guard::guard_conf(cf, "python_set", || python_set_unguarded(cf, _cmd, _conf))
}

unsafe fn python_set_unguarded(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, _conf: *mut c_void) -> *mut c_char {
    let Some(mut name) = core_module::variable_arg(cf, 1) else { return ffi::CONF_ERROR };
    let Some(handler) = core_module::compile_arg(cf, 2, "r") else { return ffi::CONF_ERROR };
    let var = SetVar::new(handler, ffi::bytes(&name));
    let v = ffi::ngx_http_add_variable(cf, &mut name, ffi::NGX_HTTP_VAR_CHANGEABLE as usize);
    if v.is_null() {
        return ffi::CONF_ERROR;
    }
    let Some(data) = ffi::pool_box((*cf).pool, var) else { return ffi::CONF_ERROR };
    (*v).get_handler = Some(get_variable);
    (*v).data = data as usize;
    (*v).flags |= ffi::NGX_HTTP_VAR_NOCACHEABLE as usize;
    ptr::null_mut()
}

unsafe extern "C" fn get_variable(r: *mut ngx_http_request_t, v: *mut ngx_http_variable_value_t, data: usize) -> ngx_int_t {
    crate::panic_guard::guard((*(*r).connection).log, "python_set", || get_variable_unguarded(r, v, data), || set_var::not_found(v))
}

unsafe fn get_variable_unguarded(r: *mut ngx_http_request_t, v: *mut ngx_http_variable_value_t, data: usize) -> ngx_int_t {
    let var = &*(data as *const SetVar);
    // SAFETY: nginx evaluates variables of live requests only.
    let value = var.evaluate((*(*r).connection).log, |py| unsafe { request_object(py, r) }.map(|o| o.into_any()));
    set_var::fill(v, (*r).pool, value);
    ffi::OK
}
