//! Who a worker is and how it ended: the identity types every layer shares (the bottom of the
//! module graph, `docs/architecture.md`, "Modules").

use std::fmt;

/// Where a worker lives: its pool, its slot in the pool and the generation of that slot.
///
/// The generation starts at 0 and grows by one every time the slot's worker is restarted, so a
/// `(pool, slot, generation)` triple names exactly one Python process over the runtime's life.
///
/// # Examples
///
/// ```
/// use pyvisor::WorkerId;
///
/// let id = WorkerId::new("triage", 1, 3);
/// assert_eq!(id.to_string(), "triage/1#3");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkerId {
    /// Name of the pool.
    pub pool: String,
    /// Slot index inside the pool (`0..size`).
    pub slot: usize,
    /// Generation of the slot: how many times it was restarted.
    pub generation: u64,
}

impl WorkerId {
    /// Builds a worker id.
    ///
    /// # Examples
    ///
    /// ```
    /// let id = pyvisor::WorkerId::new("p", 0, 0);
    /// assert_eq!(id.slot, 0);
    /// ```
    pub fn new(pool: impl Into<String>, slot: usize, generation: u64) -> Self {
        WorkerId {
            pool: pool.into(),
            slot,
            generation,
        }
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}#{}", self.pool, self.slot, self.generation)
    }
}

/// One worker incarnation inside its pool: a slot and the generation of that slot.
///
/// The pool routes by it (a session's home, a ref's worker); [`WorkerId`] adds the pool's name
/// for the outside world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SlotGen {
    pub(crate) slot: usize,
    pub(crate) generation: u64,
}

impl SlotGen {
    pub(crate) fn new(slot: usize, generation: u64) -> Self {
        SlotGen { slot, generation }
    }
}

impl WorkerId {
    /// The slot and generation, without the pool.
    pub(crate) fn at(&self) -> SlotGen {
        SlotGen::new(self.slot, self.generation)
    }
}

/// How a worker process ended.
///
/// # Examples
///
/// ```
/// use pyvisor::ExitStatus;
/// assert_eq!(ExitStatus::Signal(9).to_string(), "killed by signal 9 (SIGKILL)");
/// assert_eq!(ExitStatus::Code(1).to_string(), "exit status 1");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It exited with this status.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// The status could not be read.
    Unknown,
}

impl ExitStatus {
    pub(crate) fn from_std(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitStatus::Code(code),
            (None, Some(sig)) => ExitStatus::Signal(sig),
            _ => ExitStatus::Unknown,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitStatus::Code(c) => write!(f, "exit status {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s} ({})", signal_name(s)),
            ExitStatus::Unknown => f.write_str("unknown exit status"),
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGINT => "SIGINT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// Why a session lost the worker that held its state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LossReason {
    /// The worker process exited (crash, signal, `os._exit`).
    WorkerExited(ExitStatus),
    /// The worker stopped answering heartbeats and was killed.
    HeartbeatTimeout,
    /// A call overran its deadline and did not finish within the grace period; the worker was killed.
    DeadlineOverrun,
    /// The worker did not finish its handshake within the startup timeout and was killed.
    StartupTimeout,
    /// The worker broke the wire protocol and was killed.
    ProtocolViolation(String),
    /// The actor owning the worker failed (a pyvisor bug); the process was killed with it.
    ActorFailed(String),
    /// The pool stopped the worker: it shut down (`Runtime::shutdown`, the runtime dropped, the
    /// host's supervisor stopping it) or gave up (restart intensity exceeded).
    PoolStopped,
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossReason::WorkerExited(status) => write!(f, "worker exited ({status})"),
            LossReason::HeartbeatTimeout => f.write_str("worker stopped answering heartbeats"),
            LossReason::DeadlineOverrun => f.write_str("worker overran a call deadline"),
            LossReason::StartupTimeout => f.write_str("worker did not start in time"),
            LossReason::ProtocolViolation(msg) => write!(f, "worker broke the protocol: {msg}"),
            LossReason::ActorFailed(msg) => write!(f, "worker actor failed: {msg}"),
            LossReason::PoolStopped => f.write_str("pool stopped"),
        }
    }
}

/// Why a worker actor failed: carried in the actor's failure to its supervisor (the pool).
#[derive(Debug, Clone)]
pub(crate) struct WorkerFailure {
    pub(crate) reason: LossReason,
    pub(crate) stderr_tail: Vec<String>,
    /// A restart cannot help (protocol version mismatch): the pool fails at once.
    pub(crate) fatal: bool,
}

impl WorkerFailure {
    /// A failure for `reason`, with no stderr lines, that a restart may fix.
    pub(crate) fn new(reason: LossReason) -> Self {
        WorkerFailure {
            reason,
            stderr_tail: Vec::new(),
            fatal: false,
        }
    }

    /// An exit with status 0 that nobody asked for: "normal" for transient restart rules.
    pub(crate) fn is_normal_exit(&self) -> bool {
        matches!(self.reason, LossReason::WorkerExited(ExitStatus::Code(0)))
    }
}

impl fmt::Display for WorkerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reason)
    }
}

impl std::error::Error for WorkerFailure {}
