//! Generates Rust bindings for the nginx tree being built and compiles the C
//! shim for nginx's macros and inline functions.
//!
//! nginx's `configure` decides struct layouts (ngx_auto_config.h), so the
//! bindings must come from the configured build directory. `config.make`
//! (run by nginx's configure) passes it as NGX_OBJS and the source tree as
//! NGX_SRC. Without them only the pure, nginx-independent parts build, which
//! is what `cargo test` exercises.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=NGX_OBJS");
    println!("cargo:rerun-if-env-changed=NGX_SRC");
    println!("cargo:rustc-check-cfg=cfg(ngx_configured)");
    println!("cargo:rustc-check-cfg=cfg(ngx_stream)");

    embedded_python();
    // Py_3_9 .. Py_3_14, Py_GIL_DISABLED, py_sys_config="Py_DEBUG": the
    // interpreter pyo3 links (see runtime/version.rs for what each changes).
    pyo3_build_config::use_pyo3_cfgs();

    let (objs, src) = match (env::var_os("NGX_OBJS"), env::var_os("NGX_SRC")) {
        (Some(o), Some(s)) => (PathBuf::from(o), PathBuf::from(s)),
        _ => return, // pure build: see lib.rs
    };
    for f in ["Makefile", "ngx_auto_config.h", "ngx_modules.c"] {
        let p = objs.join(f);
        if !p.exists() {
            panic!("NGX_OBJS={}: {} missing; run nginx's configure first", objs.display(), f);
        }
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-changed=src/ffi/wrapper.h");
    println!("cargo:rerun-if-changed=src/ffi/shim.c");
    println!("cargo:rustc-cfg=ngx_configured");

    let makefile = fs::read_to_string(objs.join("Makefile")).unwrap();
    // `config` says whether it registered ngx_stream_python_module
    // (NGX_PYTHON_STREAM=yes|no, via config.make): not when nginx has no
    // stream, nor for a static module when stream itself is a dynamic
    // module (the binary could not link against it). By hand: guess.
    println!("cargo:rerun-if-env-changed=NGX_PYTHON_STREAM");
    let stream = match env::var("NGX_PYTHON_STREAM").as_deref() {
        Ok("yes") => true,
        Ok("no") => false,
        _ => {
            fs::read_to_string(objs.join("ngx_modules.c")).unwrap().contains("ngx_stream_module")
                || makefile.contains("src/stream/ngx_stream.h")
        }
    };
    if stream {
        println!("cargo:rustc-cfg=ngx_stream");
    }
    let incs = include_dirs(&makefile, &src, &objs);

    // Bindings: one file, all of nginx's API this crate uses.
    let mut b = bindgen::Builder::default()
        .header("src/ffi/wrapper.h")
        .allowlist_function("ngx_.*")
        .allowlist_type("ngx_.*")
        .allowlist_var("ngx_.*|NGX_.*|nginx_version")
        .blocklist_item("ngx_python_.*_module") // defined in Rust
        .layout_tests(false)
        .derive_default(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    if stream {
        b = b.clang_arg("-DNGX_PYTHON_STREAM=1");
    }
    for i in &incs {
        b = b.clang_arg(format!("-I{}", i.display()));
    }
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    b.generate()
        .expect("bindgen failed on nginx headers (is libclang-dev installed?)")
        .write_to_file(out.join("bindings.rs"))
        .unwrap();

    // The C shim: macros and static inline functions bindgen cannot bind.
    let mut cc = cc::Build::new();
    cc.file("src/ffi/shim.c").warnings(false);
    // `make test-asan`: the shim is instrumented like nginx (the Rust code
    // is not: stable Rust has no -Zsanitizer).
    println!("cargo:rerun-if-env-changed=NGX_PYTHON_SANITIZE");
    if let Ok(s) = env::var("NGX_PYTHON_SANITIZE") {
        if !s.is_empty() {
            cc.flag(format!("-fsanitize={s}")).flag("-fno-omit-frame-pointer");
        }
    }
    if stream {
        cc.define("NGX_PYTHON_STREAM", "1");
    }
    for i in &incs {
        cc.include(i);
    }
    cc.compile("ngx_python_shim");
}

/// The interpreter whose libpython is linked (PYO3_PYTHON, as pyo3 uses
/// it): the embedded Python computes its prefix (stdlib, site-packages) as
/// that program would, instead of from whatever `python3` is first on the
/// PATH of the process that starts nginx.
fn embedded_python() {
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    let python = env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&python)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let exe = String::from_utf8(out.stdout).expect("a UTF-8 path").trim().to_string();
    assert!(!exe.is_empty(), "{python} did not report sys.executable");
    println!("cargo:rustc-env=NGX_PYTHON_EXECUTABLE={exe}");
}

/// The include directories nginx's generated Makefile uses (ALL_INCS, as
/// `-I dir` or `-Idir`, continued with backslashes), resolved against the
/// source tree, plus the objs directory.
fn include_dirs(makefile: &str, src: &Path, objs: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![objs.to_path_buf()];
    let Some(start) = makefile.find("ALL_INCS") else { return dirs };
    let mut text = String::new();
    for line in makefile[start..].lines() {
        text.push_str(line.trim_end().trim_end_matches('\\'));
        text.push(' ');
        if !line.trim_end().ends_with('\\') {
            break;
        }
    }
    let text = text.replace("-I ", "-I");
    for tok in text.split_whitespace().filter_map(|t| t.strip_prefix("-I")) {
        let p = Path::new(tok);
        let p = if p.is_absolute() { p.to_path_buf() } else { src.join(p) };
        if p.is_dir() && !dirs.contains(&p) {
            dirs.push(p);
        }
    }
    dirs
}
