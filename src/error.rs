//! The one error type every public operation returns.

use std::fmt;
use std::time::Duration;

use crate::worker::ExitStatus;

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

/// A Python exception, as the worker reported it.
///
/// # Examples
///
/// ```
/// use pyvisor::PythonError;
///
/// let e = PythonError::new("ValueError", "builtins", "math domain error", "Traceback ...");
/// assert_eq!(e.to_string(), "ValueError: math domain error");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonError {
    /// The exception class's `__qualname__`, e.g. `ValueError`.
    pub type_name: String,
    /// The exception class's `__module__`, e.g. `builtins`.
    pub module: String,
    /// `str(exception)`.
    pub message: String,
    /// The formatted Python traceback.
    pub traceback: String,
}

impl PythonError {
    /// Builds a Python error value (mostly useful in tests).
    ///
    /// # Examples
    ///
    /// ```
    /// let e = pyvisor::PythonError::new("KeyError", "builtins", "'x'", "");
    /// assert_eq!(e.type_name, "KeyError");
    /// ```
    pub fn new(
        type_name: impl Into<String>,
        module: impl Into<String>,
        message: impl Into<String>,
        traceback: impl Into<String>,
    ) -> Self {
        PythonError {
            type_name: type_name.into(),
            module: module.into(),
            message: message.into(),
            traceback: traceback.into(),
        }
    }
}

impl fmt::Display for PythonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.type_name, self.message)
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
    /// The pool gave up restarting (restart intensity exceeded) or shut down.
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

/// Every error pyvisor returns.
///
/// Match on the variants to decide what to do; the enum is `#[non_exhaustive]` so new failure modes
/// can be added without breaking callers.
///
/// # Examples
///
/// ```
/// use pyvisor::Error;
///
/// fn retryable(e: &Error) -> bool {
///     matches!(e, Error::WorkerBusy { .. } | Error::PoolSaturated { .. } | Error::QueueTimeout { .. })
/// }
/// assert!(retryable(&Error::PoolSaturated { pool: "p".into(), capacity: 8 }));
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The session's state lived on a worker that is gone; the caller must rebuild it
    /// ([`Session::reset`](crate::Session::reset)) or use a new session.
    #[error("session {session} lost its worker {worker}: {reason}")]
    SessionWorkerUnavailable {
        /// The session id.
        session: String,
        /// The worker that held the session's state.
        worker: WorkerId,
        /// Why the worker is gone.
        reason: LossReason,
    },
    /// `StrictFailFast`: the session's worker is running another call.
    #[error("worker {worker} of session {session} is busy")]
    WorkerBusy {
        /// The session id.
        session: String,
        /// The busy worker.
        worker: WorkerId,
    },
    /// The pool's queue is full.
    #[error("pool {pool} is saturated ({capacity} calls queued)")]
    PoolSaturated {
        /// Pool name.
        pool: String,
        /// The queue capacity that was reached.
        capacity: usize,
    },
    /// The call waited in the pool's queue longer than the queue timeout and was not run.
    #[error("call waited {waited:?} in the queue of pool {pool} and was dropped")]
    QueueTimeout {
        /// Pool name.
        pool: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The call's deadline passed before its reply arrived.
    #[error("call to {pool} timed out after {after:?}")]
    Timeout {
        /// Pool name.
        pool: String,
        /// The deadline that passed, counted from the call.
        after: Duration,
    },
    /// The worker process running the call exited (or was killed) before replying.
    #[error("worker {worker} exited during the call: {reason}{}", tail_suffix(.stderr_tail))]
    WorkerExited {
        /// The worker that died.
        worker: WorkerId,
        /// How it died.
        reason: LossReason,
        /// The last lines the worker wrote to stderr.
        stderr_tail: Vec<String>,
    },
    /// No pool has this name.
    #[error("no pool named {pool}")]
    PoolNotFound {
        /// The name asked for.
        pool: String,
    },
    /// The pool gave up: its workers failed more often than its restart intensity allows, or it
    /// could not start at all.
    #[error("pool {pool} failed: {reason}{}", tail_suffix(.stderr_tail))]
    PoolFailed {
        /// Pool name.
        pool: String,
        /// What made it fail.
        reason: String,
        /// The last stderr lines of the worker that failed last.
        stderr_tail: Vec<String>,
    },
    /// The runtime or pool is shutting down and accepts no new calls.
    #[error("pool {pool} is shutting down")]
    ShuttingDown {
        /// Pool name.
        pool: String,
    },
    /// The Python code raised.
    #[error("python raised {0}")]
    Python(PythonError),
    /// The worker does not hold this ref (released, evicted by the ref limits, or never issued).
    #[error("ref not found: {0}")]
    RefNotFound(String),
    /// A ref was used in another session than the one that owns it.
    #[error("ref of session {ref_session:?} used in session {session:?}")]
    RefSessionMismatch {
        /// The session that owns the ref.
        ref_session: Option<String>,
        /// The session of the call.
        session: Option<String>,
    },
    /// A ref cannot be used in this call (another pool, or refs of two workers in one call).
    #[error("invalid ref: {0}")]
    InvalidRef(String),
    /// The pool's policy forbids this module, or eval/exec.
    #[error("not allowed by the pool's policy: {0}")]
    NotAllowed(String),
    /// The request or its reply exceeds the configured maximum frame size.
    #[error("{what} is {size} bytes, above the {limit}-byte frame limit")]
    FrameTooLarge {
        /// `"request"` or `"result"`.
        what: &'static str,
        /// The size (0 when Python did not report it).
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Arguments could not be encoded to MessagePack.
    #[error("cannot encode arguments: {0}")]
    Encode(String),
    /// The reply could not be decoded into the requested Rust type.
    #[error("cannot decode the result as {expected}: {message}")]
    Decode {
        /// The Rust type asked for.
        expected: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// The worker reported a malformed request, or a wire-level rule was broken.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The Python interpreter or the worker package cannot be used.
    #[error("python environment: {0}")]
    PythonEnvironment(String),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An internal invariant broke (a pyvisor bug); the message says which.
    #[error("internal error: {0}")]
    Internal(String),
}

fn tail_suffix(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; stderr tail:\n{}", tail.join("\n"))
    }
}

/// `Result` with pyvisor's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
