//! The embedded Python runtime, shared by the http and stream modules:
//! - `interpreter`: start CPython once in the master, re-arm it after fork
//! - `state`:       one namespace + compiled handlers per configuration
//! - `handler`:     compiling a directive's EXPR, calling it
//! - `convert`:     bytes <-> str across the boundary (surrogateescape)
//! - `errors`:      tracebacks into nginx's error log
//! - `sys_path`:    `python_path` entries in sys.path, per configuration
//! - `set_var`:     evaluating `python_set` variables
//! - `variables`:   the `r.var` / `s.var` mapping
//! - `ngx_module`:  the `ngx` Python module of constants
//! - `venv`:        `python_venv`: checking a venv, the program to start as
//! - `version`:     what each CPython version needs (fork, thread states)
//! - `worker_start`: a worker that cannot start Python exits for good
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
pub mod sys_path;
pub mod variables;
pub mod venv;
pub mod version;
pub mod worker_start;

pub use handler::Handler;
pub use state::PyState;
