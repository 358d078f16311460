//! `python_venv DIR`: the interpreter starts as DIR/bin/python would, so
//! CPython's own start-up (getpath reading DIR/pyvenv.cfg, then `site`)
//! sets sys.prefix to DIR and adds its site-packages with their .pth files.
//! Only a venv made by the Python version this module embeds can work: its
//! site-packages holds extensions built for that ABI.

use std::path::{Path, PathBuf};

use super::version;

/// The program to start Python as for the venv at `dir` (absolute), after
/// checking it is a venv of the embedded version; Err says why not.
pub fn program(dir: &str) -> Result<String, String> {
    let dir = Path::new(dir);
    let cfg_path = dir.join("pyvenv.cfg");
    let cfg = std::fs::read_to_string(&cfg_path)
        .map_err(|e| format!("{} is not a virtualenv: {}: {e}", dir.display(), cfg_path.display()))?;
    let made_with = made_with(&cfg)
        .ok_or_else(|| format!("{}: no \"version\" line: not a virtualenv made by python -m venv", cfg_path.display()))?;
    if minor_of(&made_with) != version::LINKED {
        return Err(format!(
            "{} was made with Python {made_with} but this module embeds Python {}: \
             recreate it with python{} -m venv, or build the module for that Python (PYO3_PYTHON)",
            dir.display(),
            version::LINKED,
            version::LINKED
        ));
    }
    let exe: PathBuf = ["python3", "python"].iter().map(|n| dir.join("bin").join(n)).find(|p| p.exists()).ok_or_else(
        || format!("{} has no bin/python3", dir.display()),
    )?;
    Ok(exe.to_string_lossy().into_owned())
}

/// The Python version a pyvenv.cfg records: `version = 3.11.2` (venv) or
/// `version_info = 3.11.2.final.0` (virtualenv).
fn made_with(cfg: &str) -> Option<String> {
    cfg.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        matches!(key.trim(), "version" | "version_info").then(|| value.trim().to_string())
    })
}

/// "3.11.2" -> "3.11".
fn minor_of(v: &str) -> String {
    v.split('.').take(2).collect::<Vec<_>>().join(".")
}
