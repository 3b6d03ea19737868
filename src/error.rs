//! The one error type every public operation returns.

use std::fmt;
use std::time::Duration;

use crate::identity::{LossReason, WorkerId};

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
    /// The worker process running the call exited (or was killed, or stopped with its pool)
    /// before replying: the call may have run, partly or fully.
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
    /// The runtime or pool is shutting down: the call was refused, or answered while it still
    /// waited for a worker (it never ran). A call cut off while running gets
    /// [`Error::WorkerExited`] with [`LossReason::PoolStopped`] instead.
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

impl Error {
    /// Whether pyvisor guarantees that the call never ran in Python: it was refused, or dropped
    /// before it was written to a worker (or the worker refused it before running any user
    /// code). Retrying such a call cannot run it twice. `false` means it may have run: the
    /// worker died or was stopped during it ([`Error::WorkerExited`]), its deadline passed
    /// ([`Error::Timeout`]: it may still be running), or it ran and raised or returned
    /// something unusable.
    ///
    /// # Examples
    ///
    /// ```
    /// use pyvisor::Error;
    ///
    /// assert!(Error::ShuttingDown { pool: "p".into() }.never_ran());
    /// let timeout = Error::Timeout { pool: "p".into(), after: std::time::Duration::from_secs(1) };
    /// assert!(!timeout.never_ran());
    /// ```
    pub fn never_ran(&self) -> bool {
        match self {
            Error::SessionWorkerUnavailable { .. }
            | Error::WorkerBusy { .. }
            | Error::PoolSaturated { .. }
            | Error::QueueTimeout { .. }
            | Error::PoolNotFound { .. }
            | Error::PoolFailed { .. }
            | Error::ShuttingDown { .. }
            | Error::RefNotFound(_)
            | Error::RefSessionMismatch { .. }
            | Error::InvalidRef(_)
            | Error::NotAllowed(_)
            | Error::Encode(_)
            | Error::PythonEnvironment(_)
            | Error::Config(_) => true,
            Error::FrameTooLarge { what, .. } => *what == "request",
            Error::WorkerExited { .. }
            | Error::Timeout { .. }
            | Error::Python(_)
            | Error::Decode { .. }
            | Error::Protocol(_)
            | Error::Internal(_) => false,
        }
    }
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
