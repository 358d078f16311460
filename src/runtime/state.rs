//! One configuration's Python state: its namespace and every handler
//! compiled from it.
//!
//! Ownership: `PyState` lives in the core module's configuration, which is
//! allocated in the cycle's pool (`ffi::pool_box`). When nginx frees the cycle
//! (after a reload, a failed reload, `nginx -t`, exit) the state is dropped:
//! the namespace is cleared, the handlers released, and the garbage cycles
//! they leave (functions <-> globals, classes) collected. `Handler`s held by
//! http/stream configurations are borrowed from here and die with the same
//! cycle.

use std::ptr::NonNull;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use super::handler::{Direct, Handler};
use crate::text::first_line;

pub struct PyState {
    namespace: Option<Py<PyDict>>,
    handlers: Vec<Py<PyAny>>,
}

/// Where a piece of configuration code came from, for tracebacks.
pub struct Origin<'a> {
    pub file: &'a str,
    /// The line the code's last line is on (what nginx reports).
    pub end_line: usize,
}

impl<'a> Origin<'a> {
    /// Blank lines that put `code`'s first line where it stands in `file`,
    /// so that tracebacks and syntax errors name the real line.
    fn padding(&self, code: &str) -> String {
        "\n".repeat(first_line(self.end_line, code.as_bytes()) - 1)
    }
}

/// Puts `code` in `linecache` under `name` (a name that is no file), so
/// that tracebacks through it show its lines.
pub fn remember_source(py: Python<'_>, name: &str, code: &str) {
    let entry = py.import("linecache").and_then(|lc| {
        let lines: Vec<String> = code.split_inclusive('\n').map(|l| if l.ends_with('\n') { l.to_owned() } else { format!("{l}\n") }).collect();
        lc.getattr("cache")?.set_item(name, (code.len(), py.None(), lines, name))
    });
    let _ = entry; // without linecache, tracebacks just lack the source lines
}

impl PyState {
    /// A fresh namespace. `conf_prefix` (the directory of nginx.conf) goes
    /// on `sys.path` so that modules kept next to the configuration import.
    pub fn new(py: Python<'_>, conf_prefix: &str) -> PyResult<PyState> {
        let ns = PyDict::new(py);
        ns.set_item("__builtins__", py.import("builtins")?)?;
        ns.set_item("__name__", "__nginx__")?;
        // Handlers use ngx.OK, ngx.SEND_LAST, ... without importing it.
        ns.set_item("ngx", py.import("ngx")?)?;
        let path = py.import("sys")?.getattr("path")?.cast_into::<PyList>()?;
        let prefix = conf_prefix.trim_end_matches('/');
        if !prefix.is_empty() && !path.contains(prefix)? {
            path.insert(0, prefix)?;
        }
        Ok(PyState { namespace: Some(ns.unbind()), handlers: Vec::new() })
    }

    fn namespace<'py>(&self, py: Python<'py>) -> &Bound<'py, PyDict> {
        self.namespace.as_ref().expect("namespace lives as long as the state").bind(py)
    }

    /// Runs `python` / `python_include` code in the namespace.
    pub fn exec(&self, py: Python<'_>, code: &str, origin: &Origin<'_>) -> PyResult<()> {
        let builtins = py.import("builtins")?;
        let source = format!("{}{}", origin.padding(code), code);
        let compiled = builtins.getattr("compile")?.call1((source, origin.file, "exec"))?;
        builtins.getattr("exec")?.call1((compiled, self.namespace(py)))?;
        Ok(())
    }

    /// Runs a `python_include` file's bytes (decoded by the compiler, as
    /// Python decodes a module: PEP 263 cookie, BOM, else UTF-8).
    pub fn exec_file(&self, py: Python<'_>, code: &[u8], file: &str) -> PyResult<()> {
        let builtins = py.import("builtins")?;
        let compiled = builtins.getattr("compile")?.call1((pyo3::types::PyBytes::new(py, code), file, "exec"))?;
        builtins.getattr("exec")?.call1((compiled, self.namespace(py)))?;
        Ok(())
    }

    /// Compiles a directive's EXPR into a function of one argument named
    /// `param` (`r` or `s`), so the request is a local of each call and no
    /// handler can see another's. `name` (the directive) names the function
    /// in tracebacks.
    pub fn compile_handler(
        &mut self,
        py: Python<'_>,
        expr: &str,
        origin: &Origin<'_>,
        param: &str,
        name: &str,
    ) -> PyResult<Handler> {
        let builtins = py.import("builtins")?;
        let compile = builtins.getattr("compile")?;
        let pad = origin.padding(expr);
        // The bare expression first: its SyntaxError is the one users should see.
        compile.call1((format!("{pad}{expr}"), origin.file, "eval"))?;
        let code = compile.call1((format!("{pad}lambda {param}: ({expr}\n)"), origin.file, "eval"))?;
        let func = builtins.getattr("eval")?.call1((code, self.namespace(py)))?;
        let fcode = func.getattr("__code__")?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("co_name", name)?;
        if fcode.hasattr("co_qualname")? {
            kwargs.set_item("co_qualname", name)?;
        }
        func.setattr("__code__", fcode.call_method("replace", (), Some(&kwargs))?)?;
        func.setattr("__name__", name)?;
        func.setattr("__qualname__", name)?;
        let direct = match direct_call(py, expr, param)? {
            Some(callee) => {
                let callee = PyString::intern(py, &callee);
                let d = Direct {
                    namespace: NonNull::new(self.namespace(py).as_ptr()).expect("a live object"),
                    name: NonNull::new(callee.as_ptr()).expect("a live object"),
                };
                self.handlers.push(callee.into_any().unbind());
                Some(d)
            }
            None => None,
        };
        let handler = Handler::with_direct(&func, direct);
        self.handlers.push(func.unbind());
        Ok(handler)
    }
}

/// `NAME` when `expr` is exactly `NAME(param)` (one positional argument,
/// the request or session itself): such a handler can be called directly.
fn direct_call(py: Python<'_>, expr: &str, param: &str) -> PyResult<Option<String>> {
    if param.is_empty() {
        return Ok(None);
    }
    let ast = py.import("ast")?;
    let body = ast.call_method1("parse", (expr.trim(), "<expr>", "eval"))?.getattr("body")?;
    if !body.is_instance(&ast.getattr("Call")?)? || body.getattr("keywords")?.is_truthy()? {
        return Ok(None);
    }
    let (func, args) = (body.getattr("func")?, body.getattr("args")?.cast_into::<PyList>()?);
    let name_type = ast.getattr("Name")?;
    if !func.is_instance(&name_type)? || args.len() != 1 || !args.get_item(0)?.is_instance(&name_type)? {
        return Ok(None);
    }
    let (callee, arg): (String, String) = (func.getattr("id")?.extract()?, args.get_item(0)?.getattr("id")?.extract()?);
    Ok((arg == param && callee != param).then_some(callee))
}

impl PyState {
    /// Keeps `func` (a callable taking `r` or `s`) for this configuration's
    /// life and returns it as a handler (e.g. a WSGI application's adapter).
    pub fn keep(&mut self, func: &Bound<'_, PyAny>) -> Handler {
        let handler = Handler::new(func);
        self.handlers.push(func.clone().unbind());
        handler
    }
}

impl Drop for PyState {
    fn drop(&mut self) {
        Python::attach(|py| {
            if let Some(ns) = self.namespace.take() {
                ns.bind(py).clear();
            }
            self.handlers.clear();
            if let Ok(gc) = py.import("gc") {
                let _ = gc.call_method0("collect");
            }
        });
    }
}
