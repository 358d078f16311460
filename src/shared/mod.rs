//! `python_shared_dict NAME SIZE` (http and stream main level): a dict in
//! nginx shared memory, the same for every worker of http and stream, kept
//! across reloads while its size is unchanged. Python reaches it as
//! `ngx.shared['NAME']` (`dict`: the Python objects; `zone`: the data in
//! shared memory and its lock).

mod dict;
pub mod zone;

use std::os::raw::{c_char, c_void};
use std::ptr;

use crate::core_module::{self, CoreConf};
use crate::ffi::{self, ngx_command_t, ngx_conf_t, ngx_int_t, ngx_shm_zone_t, ngx_slab_pool_t};

pub use dict::SharedDicts;

/// One declared zone, owned by the cycle's pool. nginx keeps a pointer to
/// it in `ngx_shm_zone_t.data`, and hands the previous cycle's one to
/// `init_zone` on reload.
pub struct Zone {
    pub name: String,
    pub size: usize,
    /// Set once the memory is mapped (`init_zone`), i.e. in workers.
    pool: *mut ngx_slab_pool_t,
    header: *mut zone::Header,
}

impl Zone {
    /// The zone's memory and header, once nginx has mapped it.
    pub fn mapped(&self) -> Option<(*mut ngx_slab_pool_t, *mut zone::Header)> {
        (!self.header.is_null()).then_some((self.pool, self.header))
    }
}

/// `python_shared_dict NAME SIZE`.
///
/// # Safety
/// Called by nginx for the directive, with the live configuration `cf`.
pub unsafe extern "C" fn python_shared_dict(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, _conf: *mut c_void) -> *mut c_char {
    crate::panic_guard::guard_conf(cf, "python_shared_dict", || python_shared_dict_unguarded(cf, _cmd, _conf))
}

unsafe fn python_shared_dict_unguarded(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, _conf: *mut c_void) -> *mut c_char {
    let args = ffi::conf_args(cf);
    let mut name = args[1];
    let name_text = String::from_utf8_lossy(ffi::bytes(&name)).into_owned();
    let size_text = String::from_utf8_lossy(ffi::bytes(&args[2])).into_owned();
    let min = 8 * ffi::ngx_pagesize;
    let size = match crate::text::parse_size(&size_text) {
        Some(n) if n >= min => n,
        _ => {
            let msg = format!("invalid python_shared_dict size \"{size_text}\" (at least {}k)", min / 1024);
            ffi::conf_error(cf, msg.as_bytes());
            return ffi::CONF_ERROR;
        }
    };
    if name.len == 0 {
        ffi::conf_error(cf, b"python_shared_dict needs a name");
        return ffi::CONF_ERROR;
    }
    let tag = (&raw const core_module::ngx_python_module) as *mut c_void;
    let shm = ffi::ngx_shared_memory_add(cf, &mut name, size, tag);
    if shm.is_null() {
        return ffi::CONF_ERROR;
    }
    if !(*shm).data.is_null() {
        return ptr::null_mut(); // declared in http and stream: one zone
    }
    let zone = Zone { name: name_text, size, pool: ptr::null_mut(), header: ptr::null_mut() };
    let Some(z) = ffi::pool_box((*cf).pool, zone) else { return ffi::CONF_ERROR };
    (*shm).data = z as *mut c_void;
    (*shm).init = Some(init_zone);
    core_module::conf(cf).shared.push(z);
    ptr::null_mut()
}

/// nginx maps the zone (master, before forking workers): a new zone gets
/// its header; a zone kept across a reload (`data`: the previous cycle's
/// `Zone`) keeps its entries.
unsafe extern "C" fn init_zone(shm: *mut ngx_shm_zone_t, data: *mut c_void) -> ngx_int_t {
    crate::panic_guard::guard((*shm).shm.log, "python_shared_dict zone", || init_zone_unguarded(shm, data), || ffi::ERROR)
}

unsafe fn init_zone_unguarded(shm: *mut ngx_shm_zone_t, data: *mut c_void) -> ngx_int_t {
    let z = &mut *((*shm).data as *mut Zone);
    let pool = (*shm).shm.addr as *mut ngx_slab_pool_t;
    if !data.is_null() {
        let old = &*(data as *const Zone);
        z.pool = old.pool;
        z.header = old.header;
        return ffi::OK;
    }
    if (*shm).shm.exists != 0 {
        z.pool = pool;
        z.header = (*pool).data as *mut zone::Header;
        return ffi::OK;
    }
    match zone::create(pool) {
        Some(h) => {
            (*pool).data = h as *mut c_void;
            z.pool = pool;
            z.header = h;
            ffi::OK
        }
        None => {
            let msg = format!("python_shared_dict \"{}\": the zone is too small", z.name);
            ffi::log_error(ffi::NGX_LOG_EMERG as usize, (*shm).shm.log, msg.as_bytes());
            ffi::ERROR
        }
    }
}

/// The zones of the running configuration.
pub fn zones<'a>() -> &'a [*mut Zone] {
    if !crate::core_module::worker_started() {
        return &[]; // configuration time: ngx_cycle is not this configuration
    }
    // SAFETY: ngx_cycle is the running cycle, whose core conf lives as
    // long as it; read on the worker's one thread.
    unsafe {
        let conf = ffi::core_conf::<CoreConf>(ffi::ngx_cycle, &*(&raw const core_module::ngx_python_module));
        if conf.is_null() {
            return &[];
        }
        &(*conf).shared
    }
}
