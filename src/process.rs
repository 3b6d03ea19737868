//! Python processes: how they are started (spawned, or forked by a pool's template), their
//! process groups, and their output. Shared by the worker and the template actors, below both.

mod output;
mod pidfd;
mod spawn;

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::unix::pipe;
use tokio::process::Child;

use crate::identity::ExitStatus;

pub(crate) use output::{capture, OutputSource, StderrTail, Stream};
pub(crate) use pidfd::PidfdChild;
pub(crate) use spawn::{pipe_pair, python_command, spawn_worker};

/// Environment defaults of every worker process; a value set in the host's environment or in the
/// pool's `env` wins. One BLAS/OpenMP thread per worker: a pool is the unit of parallelism, and N
/// workers each starting one thread per core oversubscribe the machine (Snakepit's "fork bomb").
/// glibc keeps freed buffers up to 16 MiB for reuse instead of faulting fresh pages in for every
/// large payload (`docs/decisions.md`, "Worker environment").
///
/// # Examples
///
/// ```
/// assert!(pyvisor::worker::ENV_DEFAULTS.contains(&("OMP_NUM_THREADS", "1")));
/// ```
pub const ENV_DEFAULTS: &[(&str, &str)] = &[
    ("OPENBLAS_NUM_THREADS", "1"),
    ("OMP_NUM_THREADS", "1"),
    ("MKL_NUM_THREADS", "1"),
    ("NUMEXPR_NUM_THREADS", "1"),
    ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
    ("PYTHONUNBUFFERED", "1"),
    ("PYTHONFAULTHANDLER", "1"),
    (
        "GLIBC_TUNABLES",
        "glibc.malloc.mmap_threshold=16777216:glibc.malloc.trim_threshold=67108864",
    ),
];

/// How long the exit watcher waits for stderr to drain after the process exited.
pub(crate) const STDERR_DRAIN: std::time::Duration = std::time::Duration::from_millis(500);

/// What it takes to start one worker process.
#[derive(Debug, Clone)]
pub(crate) struct LaunchSpec {
    pub(crate) python: PathBuf,
    pub(crate) python_path: Vec<PathBuf>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) preload: Vec<String>,
    pub(crate) max_frame: usize,
    /// Longest time from process start to handshake.
    pub(crate) startup_timeout: std::time::Duration,
    /// stderr lines kept for crash reports.
    pub(crate) stderr_tail: usize,
}

/// A started worker process and the host's ends of its channels, however it was started.
#[derive(Debug)]
pub(crate) struct Launched {
    pub(crate) pid: u32,
    pub(crate) group: ProcessGroup,
    pub(crate) requests: pipe::Sender,
    pub(crate) replies: pipe::Receiver,
    pub(crate) stdout: pipe::Receiver,
    pub(crate) stderr: pipe::Receiver,
    pub(crate) exit: ExitWatch,
}

impl Launched {
    /// Wraps the host's ends of a started worker's pipes (requests: write end; replies, stdout,
    /// stderr: read ends). `pid` leads its own process group.
    pub(crate) fn new(
        pid: u32,
        [requests, replies, stdout, stderr]: [OwnedFd; 4],
        exit: ExitWatch,
    ) -> io::Result<Self> {
        Ok(Launched {
            pid,
            group: ProcessGroup::led_by(pid)?,
            requests: pipe::Sender::from_owned_fd(requests)?,
            replies: pipe::Receiver::from_owned_fd(replies)?,
            stdout: pipe::Receiver::from_owned_fd(stdout)?,
            stderr: pipe::Receiver::from_owned_fd(stderr)?,
            exit,
        })
    }

    /// Forked from a template (rather than spawned).
    pub(crate) fn forked(&self) -> bool {
        matches!(self.exit, ExitWatch::Forked(_))
    }
}

/// Waits for a worker process to end and reaps it. The host is the parent either way: spawned
/// workers are its children, and forked ones are too (the template clones them with
/// `CLONE_PARENT`).
#[derive(Debug)]
pub(crate) enum ExitWatch {
    /// Spawned with `tokio::process` (killed and reaped by tokio if dropped early).
    Spawned(Child),
    /// Forked by a template (killed and reaped by [`PidfdChild`]'s drop if dropped early).
    Forked(PidfdChild),
}

impl ExitWatch {
    /// Waits until the process has exited and returns how.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future before the exit leaves the process unreaped, to be waited
    /// for again (or killed and reaped on drop).
    pub(crate) async fn wait(&mut self) -> ExitStatus {
        match self {
            ExitWatch::Spawned(child) => child
                .wait()
                .await
                .map_or(ExitStatus::Unknown, ExitStatus::from_std),
            ExitWatch::Forked(child) => child.wait().await,
        }
    }
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
    /// The group led by `pid`.
    pub(crate) fn led_by(pid: u32) -> io::Result<Self> {
        let pgid = i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
        Ok(ProcessGroup {
            pgid,
            cleaned: Arc::new(AtomicBool::new(false)),
        })
    }

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
