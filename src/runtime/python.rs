//! Finding the interpreter and checking that it can run the worker package.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// The worker package shipped with this crate, put on every worker's `PYTHONPATH` when present so
/// that the worker always matches the crate's protocol version.
pub(crate) fn bundled_worker_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    dir.join("pyvisor_worker").is_dir().then_some(dir)
}

/// The interpreter: the configured one, else `$PYVISOR_PYTHON`, else `./.venv/bin/python`, else
/// the `.venv` of the pyvisor checkout this crate was built from.
pub(crate) fn resolve(configured: Option<&Path>) -> Result<PathBuf, Error> {
    let candidates: Vec<(PathBuf, &str)> = match configured {
        Some(p) => vec![(p.to_path_buf(), "the configured interpreter")],
        None => match std::env::var_os("PYVISOR_PYTHON") {
            Some(p) => vec![(PathBuf::from(p), "PYVISOR_PYTHON")],
            None => vec![
                (PathBuf::from(".venv/bin/python"), "./.venv"),
                (
                    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
                    "the pyvisor checkout's .venv",
                ),
            ],
        },
    };
    for (path, _) in &candidates {
        if is_executable(path) {
            return std::path::absolute(path).map_err(|e| Error::PythonEnvironment(e.to_string()));
        }
    }
    let tried: Vec<String> = candidates
        .iter()
        .map(|(p, what)| format!("{} ({what})", p.display()))
        .collect();
    Err(Error::PythonEnvironment(format!(
        "no Python interpreter found (tried {}); pass one with RuntimeBuilder::python, set \
         PYVISOR_PYTHON, or create the venv with `scripts/setup-python.sh`",
        tried.join(", ")
    )))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs the interpreter once to check that the worker package and msgpack import, so that a
/// broken environment is one clear error at start instead of a pool that fails its restarts.
pub(crate) async fn preflight(python: &Path, python_path: &[PathBuf]) -> Result<(), Error> {
    let mut path = python_path.to_vec();
    if let Some(existing) = std::env::var_os("PYTHONPATH") {
        path.extend(std::env::split_paths(&existing));
    }
    let joined = std::env::join_paths(path).map_err(|e| Error::Config(e.to_string()))?;
    let out = tokio::process::Command::new(python)
        .args(["-c", "import msgpack, pyvisor_worker"])
        .env("PYTHONPATH", joined)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| Error::PythonEnvironment(format!("cannot run {}: {e}", python.display())))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or("").to_string();
    Err(Error::PythonEnvironment(format!(
        "{} cannot import the worker package ({last}); install it with `{} -m pip install \
         <pyvisor>/python` (or run `scripts/setup-python.sh`)",
        python.display(),
        python.display()
    )))
}
