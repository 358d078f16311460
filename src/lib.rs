//! nginx-python: Python 3 inside nginx.
//!
//! Layout (one concern per file):
//! - `ffi`         bindgen output for the configured nginx tree + raw helpers
//! - `panic_guard` every entry from nginx catches Rust panics (logs, fails the phase)
//! - `text`        pure byte/str helpers (argument decoding, header checks, sizes)
//! - `runtime`     the embedded interpreter: init, per-configuration namespace,
//!                 compiling handler expressions, calling them, tracebacks
//! - `core_module` `ngx_python_module`: main-level directives, the cycle's state
//! - `http`        `ngx_http_python_module`: directives, phases, the request `r`
//! - `stream`      `ngx_stream_python_module`: directives, phases, the session `s`
//! - `shared`      `python_shared_dict`: dicts in shared memory (`ngx.shared`)
//! - `timers`      `ngx.timer` / `ngx.every`
//! - `sync` / `unblock` the two executors behind `executor` (cfg-if)
//!
//! Without a configured nginx tree (no NGX_OBJS, e.g. `cargo test`) only the
//! pure modules build.

pub mod panic_guard;
pub mod text;

#[cfg(ngx_configured)]
pub mod ffi;
#[cfg(ngx_configured)]
pub mod runtime;
#[cfg(ngx_configured)]
pub mod core_module;
#[cfg(ngx_configured)]
pub mod http;
#[cfg(all(ngx_configured, ngx_stream))]
pub mod stream;
#[cfg(ngx_configured)]
pub mod executor;
#[cfg(ngx_configured)]
pub mod shared;
#[cfg(ngx_configured)]
pub mod timers;
#[cfg(all(ngx_configured, not(feature = "unblock")))]
pub mod sync;
#[cfg(all(ngx_configured, feature = "unblock"))]
pub mod unblock;
