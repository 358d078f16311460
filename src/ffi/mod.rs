//! The FFI edge: bindgen's bindings for the configured nginx tree, the C
//! shim, and the few raw helpers everything above uses. `unsafe` that touches
//! nginx memory directly belongs here or right at a module's entry points.

#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals, dead_code)]
#![allow(clippy::all, improper_ctypes, unnecessary_transmutes)]

mod bindings {
    #![allow(non_camel_case_types, non_snake_case, non_upper_case_globals, dead_code)]
    #![allow(clippy::all, improper_ctypes, unnecessary_transmutes, unsafe_op_in_unsafe_fn)]
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}
pub use bindings::*;

use std::os::raw::{c_char, c_void};
use std::ptr;

// nginx's result codes as ngx_int_t (bindgen types the macros as u32/i32).
pub const OK: ngx_int_t = 0;
pub const ERROR: ngx_int_t = -1;
pub const AGAIN: ngx_int_t = -2;
pub const BUSY: ngx_int_t = -3;
pub const DONE: ngx_int_t = -4;
pub const DECLINED: ngx_int_t = -5;
pub const ABORT: ngx_int_t = -6;

/// `NGX_CONF_ERROR` for directive handlers.
pub const CONF_ERROR: *mut c_char = usize::MAX as *mut c_char;
/// `NGX_CONF_UNSET_SIZE`.
pub const CONF_UNSET_SIZE: usize = usize::MAX;

/// `ngx_string("...")` for statics: the literal must end in NUL so that the
/// data can also be read as a C string; the length excludes it.
pub const fn ngx_string(s: &'static [u8]) -> ngx_str_t {
    ngx_str_t { len: s.len() - 1, data: s.as_ptr() as *mut u8 }
}

pub const NULL_STR: ngx_str_t = ngx_str_t { len: 0, data: ptr::null_mut() };

/// The bytes of an nginx string (empty for a NULL one).
///
/// # Safety
/// `s.data` must point to `s.len` readable bytes that outlive the result.
pub unsafe fn bytes<'a>(s: &ngx_str_t) -> &'a [u8] {
    if s.len == 0 || s.data.is_null() {
        &[]
    } else {
        std::slice::from_raw_parts(s.data, s.len)
    }
}

/// Copies `data` into `pool`; None when the pool is out of memory.
///
/// # Safety
/// `pool` must be a live nginx pool.
pub unsafe fn pool_str(pool: *mut ngx_pool_t, data: &[u8]) -> Option<ngx_str_t> {
    if data.is_empty() {
        return Some(ngx_str_t { len: 0, data: ptr::NonNull::dangling().as_ptr() });
    }
    let p = ngx_pnalloc(pool, data.len()) as *mut u8;
    if p.is_null() {
        return None;
    }
    ptr::copy_nonoverlapping(data.as_ptr(), p, data.len());
    Some(ngx_str_t { len: data.len(), data: p })
}

/// Moves `value` into memory owned by `pool`: it is dropped (Rust `Drop`)
/// when nginx destroys the pool. This is how configuration structures and
/// per-request state with Rust/Python members get a clear owner.
///
/// # Safety
/// `pool` must be a live nginx pool.
pub unsafe fn pool_box<T>(pool: *mut ngx_pool_t, value: T) -> Option<*mut T> {
    unsafe extern "C" fn drop_box<T>(data: *mut c_void) {
        crate::panic_guard::guard(ptr::null_mut(), "a pool cleanup", || drop(Box::from_raw(data as *mut T)), || ());
    }
    let cln = ngx_pool_cleanup_add(pool, 0);
    if cln.is_null() {
        return None;
    }
    let p = Box::into_raw(Box::new(value));
    (*cln).handler = Some(drop_box::<T>);
    (*cln).data = p as *mut c_void;
    Some(p)
}

/// One error-log entry at `level` (like the `ngx_log_error` macro).
///
/// # Safety
/// `log` must be a live nginx log.
pub unsafe fn log_error(level: ngx_uint_t, log: *mut ngx_log_t, msg: &[u8]) {
    if log.is_null() || (*log).log_level < level {
        return;
    }
    ngx_log_error_core(level, log, 0, c"%*s".as_ptr(), msg.len(), msg.as_ptr());
}

/// An `[emerg]` naming the conf file and line, for directive handlers.
///
/// # Safety
/// `cf` must be the live configuration being parsed.
pub unsafe fn conf_error(cf: *mut ngx_conf_t, msg: &[u8]) {
    ngx_conf_log_error(NGX_LOG_EMERG as ngx_uint_t, cf, 0, c"%*s".as_ptr(), msg.len(), msg.as_ptr());
}

/// The directive's arguments (`cf->args`), name first.
///
/// # Safety
/// `cf` must be the live configuration being parsed.
pub unsafe fn conf_args<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    let a = (*cf).args;
    std::slice::from_raw_parts((*a).elts as *const ngx_str_t, (*a).nelts)
}

/// The file being parsed and the line the current directive ended on.
///
/// # Safety
/// `cf` must be the live configuration being parsed.
pub unsafe fn conf_position(cf: *mut ngx_conf_t) -> (String, usize) {
    let f = (*cf).conf_file;
    if f.is_null() {
        return ("<command line>".into(), 1);
    }
    (String::from_utf8_lossy(bytes(&(*f).file.name)).into_owned(), (*f).line as usize)
}

/// Line breaks written inside the directive's last argument in the file
/// (not `\n` escapes, which nginx turned into line breaks too): read back
/// from nginx's read buffer, which holds the whole current token (nginx
/// refuses longer ones) up to the `;` just parsed. None when unknown.
///
/// # Safety
/// `cf` must be the live configuration, in a directive handler.
pub unsafe fn conf_last_arg_newlines(cf: *mut ngx_conf_t) -> Option<usize> {
    let f = (*cf).conf_file;
    if f.is_null() || (*f).buffer.is_null() {
        return None;
    }
    let b = (*f).buffer;
    let start = (*b).start as usize;
    let len = ((*b).pos as usize).checked_sub(start)?;
    let text = std::slice::from_raw_parts((*b).start, len);
    crate::text::last_token_newlines(text)
}

/// Iterates an `ngx_list_t` of `T` (e.g. header lists).
///
/// # Safety
/// `list` must be a live list of `T` that is not modified while iterating.
pub unsafe fn list_iter<'a, T>(list: *const ngx_list_t) -> impl Iterator<Item = *mut T> + 'a {
    let mut part: *const ngx_list_part_t = &(*list).part;
    let mut i = 0usize;
    std::iter::from_fn(move || loop {
        if part.is_null() {
            return None;
        }
        if i < (*part).nelts {
            let e = ((*part).elts as *mut T).add(i);
            i += 1;
            return Some(e);
        }
        part = (*part).next;
        i = 0;
    })
}

/// `ngx_conf_t.ctx` of an http block: the three arrays of module confs.
///
/// # Safety
/// `cf` must be parsing inside `http {}`.
pub unsafe fn http_main_conf<T>(cf: *mut ngx_conf_t, module: &ngx_module_t) -> *mut T {
    let ctx = (*cf).ctx as *mut ngx_http_conf_ctx_t;
    *(*ctx).main_conf.add(module.ctx_index) as *mut T
}

/// `ngx_http_conf_get_module_loc_conf`.
///
/// # Safety
/// `cf` must be parsing inside `http {}`.
pub unsafe fn http_conf_loc_conf<T>(cf: *mut ngx_conf_t, module: &ngx_module_t) -> *mut T {
    let ctx = (*cf).ctx as *mut ngx_http_conf_ctx_t;
    *(*ctx).loc_conf.add(module.ctx_index) as *mut T
}

/// `ngx_http_get_module_loc_conf`.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn http_loc_conf<T>(r: *mut ngx_http_request_t, module: &ngx_module_t) -> *mut T {
    *(*r).loc_conf.add(module.ctx_index) as *mut T
}

/// `ngx_http_get_module_ctx` / `ngx_http_set_ctx`.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn http_ctx<T>(r: *mut ngx_http_request_t, module: &ngx_module_t) -> *mut T {
    *(*r).ctx.add(module.ctx_index) as *mut T
}
pub unsafe fn http_set_ctx<T>(r: *mut ngx_http_request_t, module: &ngx_module_t, ctx: *mut T) {
    *(*r).ctx.add(module.ctx_index) = ctx as *mut c_void;
}

/// `ngx_get_conf(cycle->conf_ctx, module)` for core modules.
///
/// # Safety
/// `cycle` must be live and `module` a core module.
pub unsafe fn core_conf<T>(cycle: *mut ngx_cycle_t, module: &ngx_module_t) -> *mut T {
    *((*cycle).conf_ctx.add(module.index)) as *mut T
}

/// A `ngx_command_t` table entry; `ngx_null_command` is `command_end()`.
pub const fn command(
    name: &'static [u8],
    type_: u32,
    set: unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char,
    conf: usize,
) -> ngx_command_t {
    ngx_command_t { name: ngx_string(name), type_: type_ as ngx_uint_t, set: Some(set), conf, offset: 0, post: ptr::null_mut() }
}
pub const fn command_end() -> ngx_command_t {
    ngx_command_t { name: NULL_STR, type_: 0, set: None, conf: 0, offset: 0, post: ptr::null_mut() }
}

/// The `ngx_module_t` boilerplate (NGX_MODULE_V1 ... NGX_MODULE_V1_PADDING).
pub const fn module(
    ctx: *mut c_void,
    commands: *mut ngx_command_t,
    type_: u32,
    init_process: Option<unsafe extern "C" fn(*mut ngx_cycle_t) -> ngx_int_t>,
    exit_process: Option<unsafe extern "C" fn(*mut ngx_cycle_t)>,
) -> ngx_module_t {
    ngx_module_t {
        ctx_index: ngx_uint_t::MAX,
        index: ngx_uint_t::MAX,
        name: ptr::null_mut(),
        spare0: 0,
        spare1: 0,
        version: nginx_version as ngx_uint_t,
        signature: (&raw const ngx_python_module_signature) as *const c_char,
        ctx,
        commands,
        type_: type_ as ngx_uint_t,
        init_master: None,
        init_module: None,
        init_process,
        init_thread: None,
        exit_thread: None,
        exit_process,
        exit_master: None,
        spare_hook0: 0,
        spare_hook1: 0,
        spare_hook2: 0,
        spare_hook3: 0,
        spare_hook4: 0,
        spare_hook5: 0,
        spare_hook6: 0,
        spare_hook7: 0,
    }
}
