//! Template processes: a Python process per pool that imports the pool's heavy modules once and
//! then forks workers on request (`LaunchMode::Template`).
//!
//! The template actor owns the template process exactly as a worker actor owns a worker: own
//! process group, `PR_SET_PDEATHSIG`, output captured, killed when the actor's state is dropped.
//! It is a child of the pool actor, supervised like a worker (same restart intensity).
//!
//! A fork request sends the child ends of four fresh pipes (requests, replies, stdout, stderr)
//! over a private `SOCK_DGRAM` socket pair (`SCM_RIGHTS`). The template clones the worker with
//! `CLONE_PARENT`, so the worker's parent is the host: the host reaps it and reads its exit status
//! (through a pidfd), its `PR_SET_PDEATHSIG` is tied to the host, and a template crash does not
//! take any worker with it. From then on the worker actor treats it as any spawned worker.
//!
//! When the template is not ready (starting, restarting), workers are spawned instead; see
//! `docs/decisions.md`.

mod fdpass;
mod wire;

use std::io;
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef, RpcReplyPort};
use tokio::io::Interest;
use tokio::net::unix::pipe;
use tokio::net::UnixDatagram;
use tokio::task::JoinSet;

use crate::identity::{ExitStatus, LossReason, WorkerFailure, WorkerId};
use crate::process::{
    capture, pipe_pair, python_command, ExitWatch, LaunchSpec, Launched, OutputSource, PidfdChild,
    ProcessGroup, StderrTail, Stream, STDERR_DRAIN,
};
use wire::{ForkRequest, TemplateReply};

/// Exit statuses of a template that a restart cannot fix (`docs/protocol.md`).
const EXIT_USAGE: i32 = 2;
const EXIT_VERSION: i32 = 4;

/// Largest datagram a template sends.
const MAX_REPLY: usize = 64 * 1024;

/// The pool's current template, if one is ready: shared by the pool (which sets it) and its
/// workers (which ask it to fork them).
#[derive(Debug, Default)]
pub(crate) struct TemplateLink {
    ready: Mutex<Option<ActorRef<TemplateMsg>>>,
}

impl TemplateLink {
    pub(crate) fn set(&self, template: Option<ActorRef<TemplateMsg>>) {
        *self.ready.lock().expect("template link lock") = template;
    }

    pub(crate) fn get(&self) -> Option<ActorRef<TemplateMsg>> {
        self.ready.lock().expect("template link lock").clone()
    }
}

/// Asks the ready template, if any, to fork worker `id`; `None` means "spawn it instead" (no
/// template ready, or this fork failed: logged).
pub(crate) async fn fork(
    link: &TemplateLink,
    id: &WorkerId,
    timeout: std::time::Duration,
) -> Option<Launched> {
    let template = link.get()?;
    let asked = template
        .call(|reply| TemplateMsg::Fork(id.clone(), reply), Some(timeout))
        .await;
    match asked {
        Ok(ractor::rpc::CallResult::Success(Ok(launched))) => Some(launched),
        Ok(ractor::rpc::CallResult::Success(Err(e))) => {
            tracing::warn!(worker = %id, error = %e, "template could not fork the worker; spawning it");
            None
        }
        other => {
            tracing::warn!(worker = %id, outcome = ?other.err(), "template did not answer; spawning the worker");
            None
        }
    }
}

/// A template finished its handshake: what it tells its pool.
#[derive(Debug)]
pub(crate) struct TemplateReady {
    pub(crate) generation: u64,
    pub(crate) pid: u32,
}

/// Arguments of one template incarnation.
pub(crate) struct TemplateArgs {
    pub(crate) pool: Arc<str>,
    pub(crate) generation: u64,
    pub(crate) preload: Vec<String>,
    pub(crate) launch: LaunchSpec,
    /// Where the handshake is reported (the pool actor, seen through a narrow handle).
    pub(crate) parent: DerivedActorRef<TemplateReady>,
}

/// Messages of the template actor.
#[derive(Debug)]
pub(crate) enum TemplateMsg {
    /// Fork a worker (answered with its process, or why not).
    Fork(WorkerId, RpcReplyPort<Result<Launched, String>>),
    Ready {
        pid: u32,
        python: String,
    },
    Broken(String),
    Exited(ExitStatus),
    StartupTimeout,
    /// Kill the template and stop once it is reaped (it holds no state worth a graceful stop).
    Shutdown,
}

pub(crate) struct TemplateState {
    pool: Arc<str>,
    generation: u64,
    pid: u32,
    group: ProcessGroup,
    socket: Arc<UnixDatagram>,
    launch: LaunchSpec,
    parent: DerivedActorRef<TemplateReady>,
    tail: StderrTail,
    ready: bool,
    stopping: bool,
    next_id: u64,
    /// Output capture, exit watcher, handshake: aborted on drop.
    _tasks: JoinSet<()>,
}

impl TemplateState {
    fn fail(&self, reason: LossReason) -> ActorProcessingErr {
        self.group.signal(libc::SIGKILL);
        Box::new(WorkerFailure {
            reason,
            stderr_tail: self.tail.snapshot(),
            fatal: false,
        })
    }

    /// Sends one fork request and waits for its answer. `Err` means the template is broken.
    async fn fork(&mut self, worker: &WorkerId) -> io::Result<Result<Launched, String>> {
        let requests = pipe_pair()?;
        let replies = pipe_pair()?;
        let (stdout, stderr) = (pipe_pair()?, pipe_pair()?);
        self.next_id += 1;
        let id = self.next_id;
        let request = ForkRequest {
            op: "fork",
            id,
            slot: worker.slot,
            generation: worker.generation,
        };
        let body = rmp_serde::to_vec_named(&request).map_err(io::Error::other)?;
        let fds = [
            requests.read.as_raw_fd(),
            replies.write.as_raw_fd(),
            stdout.write.as_raw_fd(),
            stderr.write.as_raw_fd(),
        ];
        let socket = &self.socket;
        socket
            .async_io(Interest::WRITABLE, || {
                fdpass::send_with_fds(socket.as_raw_fd(), &body, &fds)
            })
            .await?;
        // The datagram holds its own references: the host's copies of the child ends go now, so
        // that the host sees end-of-file when the worker's ends close.
        drop((requests.read, replies.write, stdout.write, stderr.write));
        let reply = tokio::time::timeout(self.launch.startup_timeout, recv(socket))
            .await
            .map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, "no answer to a fork request")
            })??;
        let pid = match reply {
            TemplateReply::Forked { id: got, pid } if got == id => pid,
            TemplateReply::ForkFailed {
                id: got,
                error,
                pid,
            } if got == id => {
                // A child that died during its setup is still the host's: reap it (drop does).
                if let Some(pid) = pid {
                    drop(PidfdChild::open(pid));
                }
                return Ok(Err(error));
            }
            other => return Err(io::Error::other(format!("unexpected reply {other:?}"))),
        };
        // The worker is the host's child (CLONE_PARENT): its pid cannot be reused before we reap it.
        let exit = PidfdChild::open(pid)?;
        let ends = [requests.write, replies.read, stdout.read, stderr.read];
        Launched::new(pid, ends, ExitWatch::Forked(exit)).map(Ok)
    }
}

/// The next datagram from the template. A dead template does not show here (a datagram socket has
/// no end of stream): the exit watcher reports it, and a send fails with `ECONNREFUSED`.
async fn recv(socket: &UnixDatagram) -> io::Result<TemplateReply> {
    let mut buf = vec![0u8; MAX_REPLY];
    let n = socket.recv(&mut buf).await?;
    rmp_serde::from_slice(&buf[..n]).map_err(|e| io::Error::other(format!("bad datagram: {e}")))
}

/// The template actor (stateless: everything lives in [`TemplateState`]).
pub(crate) struct Template;

impl Actor for Template {
    type Msg = TemplateMsg;
    type State = TemplateState;
    type Arguments = TemplateArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TemplateMsg>,
        args: TemplateArgs,
    ) -> Result<TemplateState, ActorProcessingErr> {
        let TemplateArgs {
            pool,
            generation,
            preload,
            launch,
            parent,
        } = args;
        let (host_end, child_end) = std::os::unix::net::UnixDatagram::pair()?;
        let (stdout, stderr) = (pipe_pair()?, pipe_pair()?);
        let child_fd = child_end.as_raw_fd();
        let mut cmd = python_command(&launch, "pyvisor_worker.template", &pool, vec![child_fd]);
        cmd.env("PYVISOR_TEMPLATE_FD", child_fd.to_string())
            .env("PYVISOR_TEMPLATE_PRELOAD", preload.join(","))
            .env("PYVISOR_HOST_PID", std::process::id().to_string())
            .stdout(Stdio::from(stdout.write))
            .stderr(Stdio::from(stderr.write));
        let mut child = cmd.spawn()?;
        drop((cmd, child_end));
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("template exited at once"))?;
        let group = ProcessGroup::led_by(pid)?;
        host_end.set_nonblocking(true)?;
        let socket = Arc::new(UnixDatagram::from_std(host_end)?);
        let tail = StderrTail::new(launch.stderr_tail);
        let source = OutputSource::Template {
            pool: pool.to_string(),
            generation,
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(capture(
            pipe::Receiver::from_owned_fd(stdout.read)?,
            Stream::Stdout,
            source.clone(),
            pid,
            None,
        ));
        let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
        let (stderr, stderr_tail) = (pipe::Receiver::from_owned_fd(stderr.read)?, tail.clone());
        tasks.spawn(async move {
            capture(stderr, Stream::Stderr, source, pid, Some(stderr_tail)).await;
            let _ = drained_tx.send(());
        });
        let (me, reaped) = (myself.clone(), group.clone());
        tasks.spawn(async move {
            let status = child
                .wait()
                .await
                .map_or(ExitStatus::Unknown, ExitStatus::from_std);
            reaped.reaped();
            let _ = tokio::time::timeout(STDERR_DRAIN, drained_rx).await;
            let _ = me.cast(TemplateMsg::Exited(status));
        });
        let (me, handshake) = (myself.clone(), socket.clone());
        tasks.spawn(async move {
            let msg = match recv(&handshake).await {
                Ok(TemplateReply::Ready { pid, python, .. }) => TemplateMsg::Ready { pid, python },
                Ok(other) => TemplateMsg::Broken(format!("expected ready, got {other:?}")),
                Err(e) => TemplateMsg::Broken(e.to_string()),
            };
            let _ = me.cast(msg);
        });
        myself.send_after(launch.startup_timeout, || TemplateMsg::StartupTimeout);
        tracing::debug!(pool = %pool, generation, pid, "template process started");
        Ok(TemplateState {
            pool,
            generation,
            pid,
            group,
            socket,
            launch,
            parent,
            tail,
            ready: false,
            stopping: false,
            next_id: 0,
            _tasks: tasks,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<TemplateMsg>,
        msg: TemplateMsg,
        state: &mut TemplateState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TemplateMsg::Shutdown => {
                state.stopping = true;
                state.group.signal(libc::SIGKILL);
            }
            TemplateMsg::Exited(status) if state.stopping => {
                tracing::debug!(pool = %state.pool, %status, "template stopped");
                myself.stop(None);
            }
            TemplateMsg::Fork(worker, reply) => {
                if !state.ready || state.stopping {
                    let _ = reply.send(Err("the template is not ready".into()));
                    return Ok(());
                }
                match state.fork(&worker).await {
                    Ok(outcome) => {
                        let _ = reply.send(outcome);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                        return Err(state.fail(LossReason::ProtocolViolation(format!(
                            "template failed a fork request: {e}"
                        ))));
                    }
                }
            }
            TemplateMsg::Ready { pid, python } if !state.ready => {
                state.ready = true;
                tracing::debug!(pool = %state.pool, pid, %python, "template ready");
                let _ = state.parent.send_message(TemplateReady {
                    generation: state.generation,
                    pid: state.pid,
                });
            }
            TemplateMsg::Ready { .. } => {
                return Err(state.fail(LossReason::ProtocolViolation(
                    "the template announced itself twice".into(),
                )))
            }
            TemplateMsg::Broken(e) => {
                return Err(state.fail(LossReason::ProtocolViolation(e)));
            }
            TemplateMsg::Exited(status) => {
                let mut failure = state.fail(LossReason::WorkerExited(status));
                // Usage (2) and version (4) errors: the preload list starts threads, the platform
                // cannot clone, the package does not match. A restart cannot help.
                if matches!(status, ExitStatus::Code(EXIT_USAGE | EXIT_VERSION)) {
                    if let Some(f) = failure.downcast_mut::<WorkerFailure>() {
                        f.fatal = true;
                    }
                }
                return Err(failure);
            }
            TemplateMsg::StartupTimeout => {
                if !state.ready {
                    return Err(state.fail(LossReason::StartupTimeout));
                }
            }
        }
        Ok(())
    }
}
