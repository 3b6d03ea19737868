//! Starting Python with `tokio::process`: workers in spawn mode, and templates.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::Command;

use super::ENV_DEFAULTS;
use super::{ExitWatch, LaunchSpec, Launched};
use crate::identity::WorkerId;
use crate::protocol::PROTOCOL_VERSION;

/// A pipe: the host keeps one end, the child gets the other.
#[derive(Debug)]
pub(crate) struct PipePair {
    pub(crate) read: OwnedFd,
    pub(crate) write: OwnedFd,
}

/// A new pipe, both ends close-on-exec.
pub(crate) fn pipe_pair() -> io::Result<PipePair> {
    let (read, write) = io::pipe()?;
    Ok(PipePair {
        read: read.into(),
        write: write.into(),
    })
}

/// `python -m <module>` with the pool's environment, in a process group of its own, with
/// `PR_SET_PDEATHSIG(SIGKILL)`, stdin from `/dev/null`, and exactly the descriptors in `keep`
/// inherited (plus the stdout/stderr pipes the caller sets).
///
/// The child dies with the host thread that started it: pyvisor starts processes from tokio worker
/// threads, which live as long as the tokio runtime.
pub(crate) fn python_command(
    spec: &LaunchSpec,
    module: &str,
    pool: &str,
    keep: Vec<RawFd>,
) -> Command {
    let mut cmd = Command::new(&spec.python);
    cmd.arg("-m").arg(module);
    for (key, value) in ENV_DEFAULTS {
        if std::env::var_os(key).is_none() {
            cmd.env(key, value);
        }
    }
    cmd.env("PYTHONPATH", python_path(&spec.python_path));
    cmd.envs(&spec.env);
    cmd.env("PYVISOR_PROTOCOL", PROTOCOL_VERSION.to_string())
        .env("PYVISOR_MAX_FRAME", spec.max_frame.to_string())
        .env("PYVISOR_POOL", pool)
        .env("PYVISOR_PRELOAD", spec.preload.join(","));
    cmd.stdin(Stdio::null()).process_group(0).kill_on_drop(true);
    let host_pid = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // calls (close_range, fcntl, prctl, getppid); it allocates nothing (`keep` was moved in).
    unsafe {
        cmd.pre_exec(move || {
            // Nothing of the host but the channel: descriptors the host itself inherited or opened
            // without CLOEXEC (a socket-activated listener, a jobserver pipe) close at exec. Best
            // effort: kernels before 5.11 lack CLOSE_RANGE_CLOEXEC.
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            for &fd in &keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The host may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() != host_pid {
                return Err(io::Error::other("host exited during spawn"));
            }
            Ok(())
        });
    }
    cmd
}

/// Starts `python -m pyvisor_worker` for `worker`: its protocol runs on two pipes whose child
/// ends it inherits (`PYVISOR_FD_IN`, `PYVISOR_FD_OUT`), its stdout and stderr are pipes too.
pub(crate) fn spawn_worker(spec: &LaunchSpec, worker: &WorkerId) -> io::Result<Launched> {
    let requests = pipe_pair()?;
    let replies = pipe_pair()?;
    let (stdout, stderr) = (pipe_pair()?, pipe_pair()?);
    let child_in = requests.read.as_raw_fd();
    let child_out = replies.write.as_raw_fd();
    let mut cmd = python_command(
        spec,
        "pyvisor_worker",
        &worker.pool,
        vec![child_in, child_out],
    );
    cmd.env("PYVISOR_SLOT", worker.slot.to_string())
        .env("PYVISOR_GENERATION", worker.generation.to_string())
        .env("PYVISOR_FD_IN", child_in.to_string())
        .env("PYVISOR_FD_OUT", child_out.to_string())
        .stdout(Stdio::from(stdout.write))
        .stderr(Stdio::from(stderr.write));
    let child = cmd.spawn()?;
    // The parent's copies of the child ends close with `cmd` and the pairs' moved halves.
    drop(cmd);
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("worker exited at once"))?;
    let ends = [requests.write, replies.read, stdout.read, stderr.read];
    Launched::new(pid, ends, ExitWatch::Spawned(child))
}

/// The pool's `python_path` entries in front of the host's `PYTHONPATH`.
fn python_path(extra: &[PathBuf]) -> OsString {
    let inherited = std::env::var_os("PYTHONPATH");
    let parts = extra
        .iter()
        .map(|p| p.as_os_str().to_owned())
        .chain(inherited.filter(|p| !p.is_empty()));
    let mut joined = OsString::new();
    for (i, part) in parts.enumerate() {
        if i > 0 {
            joined.push(":");
        }
        joined.push(part);
    }
    joined
}
