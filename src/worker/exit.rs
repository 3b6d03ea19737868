use std::fmt;

use crate::error::LossReason;

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

/// Why a worker actor failed: carried in the actor's failure to its supervisor (the pool).
#[derive(Debug, Clone)]
pub(crate) struct WorkerFailure {
    pub(crate) reason: LossReason,
    pub(crate) stderr_tail: Vec<String>,
    /// A restart cannot help (protocol version mismatch): the pool fails at once.
    pub(crate) fatal: bool,
}

impl WorkerFailure {
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
