//! Waiting for a child the host did not start through `tokio::process`: a worker a template cloned
//! with `CLONE_PARENT`, so that its parent is the host.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::identity::ExitStatus;

/// A child process of the host, watched through a pidfd (Linux 5.3+).
///
/// The host is the parent, so the pid cannot be reused before it is reaped here: opening the
/// pidfd from the pid the template reported is race-free. Dropped before the child was reaped, it
/// kills the child and reaps it on a short-lived thread, so no zombie is left.
#[derive(Debug)]
pub(crate) struct PidfdChild {
    pid: u32,
    fd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
}

impl PidfdChild {
    /// Opens a pidfd for the host's child `pid`.
    pub(crate) fn open(pid: u32) -> io::Result<Self> {
        // SAFETY: pidfd_open has no memory-safety preconditions.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        // SAFETY: the `OwnedFd` stays open and keeps its descriptor while the `AsyncFd` owns it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(PidfdChild {
            pid,
            fd: Some(fd),
            status: None,
        })
    }

    /// Waits until the child has exited, reaps it and returns how it ended.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the child is only reaped once its exit has been observed.
    pub(crate) async fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let Some(fd) = self.fd.as_ref() else {
            return ExitStatus::Unknown;
        };
        // A pidfd becomes readable when the process exits.
        let status = match fd.readable().await {
            Ok(_guard) => reap(fd.get_ref(), 0).unwrap_or(ExitStatus::Unknown),
            Err(_) => ExitStatus::Unknown,
        };
        self.status = Some(status);
        self.fd = None;
        status
    }
}

impl Drop for PidfdChild {
    fn drop(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        let fd = fd.into_inner();
        // SAFETY: pidfd_send_signal has no memory-safety preconditions; a null info is allowed.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if reap(&fd, libc::WNOHANG).is_none() {
            let pid = self.pid;
            let spawned = std::thread::Builder::new()
                .name(format!("pyvisor-reap-{pid}"))
                .spawn(move || reap(&fd, 0));
            if spawned.is_err() {
                tracing::warn!(pid, "could not start a thread to reap a killed worker");
            }
        }
    }
}

/// `waitid(P_PIDFD, fd, WEXITED | flags)`: the exit status, or `None` when the child has not
/// exited yet (`WNOHANG`) or cannot be waited for.
fn reap(fd: &OwnedFd, flags: libc::c_int) -> Option<ExitStatus> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value; waitid writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t.
        let rc = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                fd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | flags,
            )
        };
        if rc == -1 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return None;
        }
        // SAFETY: waitid filled `info` for a child state change.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return None; // WNOHANG and still running
        }
        return Some(match info.si_code {
            libc::CLD_EXITED => ExitStatus::Code(status),
            libc::CLD_KILLED | libc::CLD_DUMPED => ExitStatus::Signal(status),
            _ => ExitStatus::Unknown,
        });
    }
}
