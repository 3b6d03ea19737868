use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use crate::error::WorkerId;
use crate::protocol::PROTOCOL_VERSION;

/// Environment defaults for every worker; a value set in the host's environment or in the pool's
/// `env` wins. One BLAS/OpenMP thread per worker: a pool is the unit of parallelism, and N workers
/// each starting one thread per core oversubscribe the machine (Snakepit's "fork bomb").
const ENV_DEFAULTS: &[(&str, &str)] = &[
    ("OPENBLAS_NUM_THREADS", "1"),
    ("OMP_NUM_THREADS", "1"),
    ("MKL_NUM_THREADS", "1"),
    ("NUMEXPR_NUM_THREADS", "1"),
    ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
    ("PYTHONUNBUFFERED", "1"),
    ("PYTHONFAULTHANDLER", "1"),
];

/// What it takes to start one worker process.
#[derive(Debug, Clone)]
pub(crate) struct LaunchSpec {
    pub(crate) python: PathBuf,
    pub(crate) python_path: Vec<PathBuf>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) preload: Vec<String>,
    pub(crate) max_frame: usize,
}

/// A started worker process and the host's ends of its channels.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) group: ProcessGroup,
    pub(crate) requests: pipe::Sender,
    pub(crate) replies: pipe::Receiver,
    pub(crate) stdout: ChildStdout,
    pub(crate) stderr: ChildStderr,
}

/// The worker's process group (its pgid is its pid): killed with SIGKILL when any copy is dropped,
/// unless the group was already cleaned up after the process was reaped.
///
/// This is what makes "the actor died, so the process died" hold: ractor skips `post_stop` when an
/// actor is killed or panics, but it always drops the actor's state.
#[derive(Debug, Clone)]
pub(crate) struct ProcessGroup {
    pgid: i32,
    cleaned: Arc<AtomicBool>,
}

impl ProcessGroup {
    /// Sends `signal` to every process of the group.
    pub(crate) fn signal(&self, signal: i32) {
        if !self.cleaned.load(Ordering::Acquire) {
            // SAFETY: killpg has no memory-safety preconditions.
            unsafe { libc::killpg(self.pgid, signal) };
        }
    }

    /// The leader was reaped: kill what is left of the group (forked grandchildren) and stop
    /// signalling it, so that a reused pid is never hit.
    pub(crate) fn reaped(&self) {
        self.signal(libc::SIGKILL);
        self.cleaned.store(true, Ordering::Release);
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

/// Starts `python -m pyvisor_worker` for `worker`.
///
/// The child runs in its own process group, gets `PR_SET_PDEATHSIG(SIGKILL)` (it dies with the
/// host thread that started it: pyvisor starts workers from tokio worker threads, which live as
/// long as the tokio runtime), and inherits exactly two extra descriptors: the request pipe's read
/// end and the reply pipe's write end.
pub(crate) fn spawn(spec: &LaunchSpec, worker: &WorkerId) -> io::Result<Spawned> {
    let (req_read, req_write) = io::pipe()?;
    let (rep_read, rep_write) = io::pipe()?;
    let child_in = req_read.as_raw_fd();
    let child_out = rep_write.as_raw_fd();

    let mut cmd = Command::new(&spec.python);
    cmd.arg("-m").arg("pyvisor_worker");
    for (key, value) in ENV_DEFAULTS {
        if std::env::var_os(key).is_none() {
            cmd.env(key, value);
        }
    }
    cmd.env("PYTHONPATH", python_path(&spec.python_path));
    cmd.envs(&spec.env);
    cmd.env("PYVISOR_FD_IN", child_in.to_string())
        .env("PYVISOR_FD_OUT", child_out.to_string())
        .env("PYVISOR_PROTOCOL", PROTOCOL_VERSION.to_string())
        .env("PYVISOR_MAX_FRAME", spec.max_frame.to_string())
        .env("PYVISOR_POOL", &worker.pool)
        .env("PYVISOR_SLOT", worker.slot.to_string())
        .env("PYVISOR_GENERATION", worker.generation.to_string())
        .env("PYVISOR_PRELOAD", spec.preload.join(","));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let host_pid = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // calls (close_range, fcntl, prctl, getppid); it allocates nothing.
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
            for fd in [child_in, child_out] {
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
    let mut child = cmd.spawn()?;
    drop(req_read);
    drop(rep_write);
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("worker exited at once"))?;
    let group = ProcessGroup {
        pgid: pid as i32,
        cleaned: Arc::new(AtomicBool::new(false)),
    };
    let requests = pipe::Sender::from_owned_fd(OwnedFd::from(req_write))?;
    let replies = pipe::Receiver::from_owned_fd(OwnedFd::from(rep_read))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    Ok(Spawned {
        child,
        pid,
        group,
        requests,
        replies,
        stdout,
        stderr,
    })
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
