//! The embedded Python runtime, shared by the http and stream modules:
//! - `interpreter`: start CPython once in the master, re-arm it after fork
//! - `state`:       one namespace + compiled handlers per configuration
//! - `handler`:     compiling a directive's EXPR, calling it
//! - `convert`:     bytes <-> str across the boundary (surrogateescape)
//! - `errors`:      tracebacks into nginx's error log
//! - `set_var`:     evaluating `python_set` variables
//! - `variables`:   the `r.var` / `s.var` mapping
//! - `ngx_module`:  the `ngx` Python module of constants
//! - `children`:    workers leave their children's exit status to Python
//! - `gil`:         Python threads run while the worker waits for events

pub mod children;
pub mod convert;
pub mod errors;
pub mod gil;
pub mod handler;
pub mod interpreter;
pub mod ngx_module;
pub mod set_var;
pub mod state;
pub mod variables;

pub use handler::Handler;
pub use state::PyState;
