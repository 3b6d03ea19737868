//! The worker actor: owns one Python process.
//!
//! It starts the process (own process group, `PR_SET_PDEATHSIG`, protocol pipes on dedicated
//! descriptors), waits for the handshake, answers heartbeats' absence by failing, quarantines a
//! call past its deadline, and fails whenever the process exits or breaks the protocol, so that
//! its supervisor (the pool) acts. Calls do not pass through the actor: the pool's scheduler
//! writes them through the worker's link (`worker/link.rs`) and the reader task answers them.
//! Its state owns the process group and kills it when dropped, which ractor does on every kind
//! of stop, including kill and panic.

mod channel;
mod link;

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::alarm::Alarm;
use crate::error::{Error, PythonError};
use crate::identity::{LossReason, WorkerFailure, WorkerId};
use crate::process::{self, capture, LaunchSpec, OutputSource, ProcessGroup, StderrTail, Stream};
use crate::protocol::{op, ErrorBody, FrameReader, Incoming, ReadyInfo, NIL_BODY};
use crate::protocol::{ProtocolError, PROTOCOL_VERSION};
use crate::template::{self, TemplateLink};

pub use crate::identity::ExitStatus;
pub use crate::process::ENV_DEFAULTS;
pub(crate) use link::{Dispatch, WorkerLink};

use channel::RequestChannel;

/// How long the reader may see a closed reply channel while the process keeps running.
const CLOSED_CHANNEL_GRACE: Duration = Duration::from_millis(500);
/// Read buffer of the reply channel; larger payloads are read straight into their frame.
const REPLY_BUFFER: usize = 16 * 1024;
/// Everything a worker needs to know, shared by all workers of a pool.
#[derive(Debug)]
pub(crate) struct WorkerSpec {
    pub(crate) launch: LaunchSpec,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) heartbeat_timeout: Duration,
    pub(crate) overrun_grace: Duration,
    /// The pool's template link (`LaunchMode::Template`), `None` in spawn mode.
    pub(crate) template: Option<Arc<TemplateLink>>,
}

/// A worker's handshake is done: what it tells its pool.
#[derive(Debug)]
pub(crate) struct WorkerReady {
    pub(crate) worker: WorkerId,
    pub(crate) pid: u32,
    pub(crate) forked: bool,
    pub(crate) info: ReadyInfo,
    /// The worker's call path: the pool's scheduler writes calls through it.
    pub(crate) link: Arc<WorkerLink>,
}

/// Arguments of one worker incarnation.
pub(crate) struct WorkerArgs {
    pub(crate) id: WorkerId,
    pub(crate) spec: Arc<WorkerSpec>,
    /// Where the handshake is reported (the pool actor, seen through a narrow handle).
    pub(crate) pool: DerivedActorRef<WorkerReady>,
    /// The pool's scheduler: asked for the next call whenever one is answered.
    pub(crate) dispatch: Arc<dyn Dispatch>,
}

/// Messages of the worker actor.
#[derive(Debug)]
pub(crate) enum WorkerMsg {
    /// Stop: send `SHUTDOWN`, then SIGTERM after `grace`, then SIGKILL after `grace` again.
    Shutdown {
        grace: Duration,
    },
    Frame(Incoming),
    ReadFailed(ProtocolError),
    ChannelClosed,
    ChannelClosedTooLong,
    Exited(ExitStatus),
    StartupTimeout,
    HeartbeatTick,
    /// The call in flight may have passed its deadline.
    Overrun,
    OverrunGraceOver(u64),
    Escalate(i32, Duration),
}

pub(crate) struct WorkerState {
    id: WorkerId,
    spec: Arc<WorkerSpec>,
    pool: DerivedActorRef<WorkerReady>,
    pid: u32,
    forked: bool,
    group: ProcessGroup,
    link: Arc<WorkerLink>,
    tail: StderrTail,
    ready: bool,
    /// Told to shut down: its exit is expected.
    stopping: bool,
    ping: Option<(u64, Instant)>,
    /// Background tasks (reader, writer, output capture, exit watcher, timers): aborted on drop.
    _tasks: JoinSet<()>,
}

impl WorkerState {
    /// Tells the caller of the call in flight, if any, that the worker is gone.
    fn answer_in_flight(&self, reason: LossReason) {
        self.link.answer_in_flight(|| self.exited(reason));
    }

    fn exited(&self, reason: LossReason) -> Error {
        Error::WorkerExited {
            worker: self.id.clone(),
            reason,
            stderr_tail: self.tail.snapshot(),
        }
    }

    /// Kills the process, closes the link (answering the call in flight) and builds the failure
    /// the actor returns to its supervisor.
    fn fail(&mut self, reason: LossReason) -> ActorProcessingErr {
        self.group.signal(libc::SIGKILL);
        self.link.close(|| self.exited(reason.clone()));
        Box::new(WorkerFailure {
            reason,
            stderr_tail: self.tail.snapshot(),
            fatal: false,
        })
    }
}

impl Drop for WorkerState {
    fn drop(&mut self) {
        // Stopped, killed with its pool, or panicked: the process group dies with `self.group`;
        // the caller must not be left waiting for a reply that will never come. Outside a panic
        // (a pyvisor bug) the only way here with a call still in flight is the pool being stopped
        // or killed (the runtime dropped, the host's supervisor, the pool giving up): a shutdown.
        let reason = if std::thread::panicking() {
            LossReason::ActorFailed("worker actor panicked".into())
        } else {
            LossReason::PoolStopped
        };
        self.link.close(|| self.exited(reason));
    }
}

/// The worker actor (stateless: everything lives in [`WorkerState`]).
pub(crate) struct Worker;

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        let WorkerArgs {
            id,
            spec,
            pool,
            dispatch,
        } = args;
        let forked = match &spec.template {
            Some(template) => template::fork(template, &id, spec.launch.startup_timeout).await,
            None => None,
        };
        let spawned = match forked {
            Some(forked) => forked,
            None => process::spawn_worker(&spec.launch, &id)?,
        };
        let (pid, forked) = (spawned.pid, spawned.forked());
        let tail = StderrTail::new(spec.launch.stderr_tail);
        let mut tasks = JoinSet::new();

        let writer = RequestChannel::new(spawned.requests, &mut tasks);
        let me = myself.clone();
        let deadline = Alarm::new(&mut tasks, move || me.cast(WorkerMsg::Overrun).is_ok());
        let link = WorkerLink::new(
            id.clone(),
            dispatch,
            writer,
            deadline,
            spec.launch.max_frame,
        );

        // Buffered: a small reply (length prefix and payload) costs one `read`.
        let replies = tokio::io::BufReader::with_capacity(REPLY_BUFFER, spawned.replies);
        let mut reader = FrameReader::new(replies, spec.launch.max_frame);
        let (me, replies) = (myself.clone(), link.clone());
        tasks.spawn(async move {
            loop {
                let msg = match reader.next().await {
                    // A call's reply goes straight to its caller; the rest to the actor.
                    Ok(Some(frame)) => match replies.answer(frame) {
                        Ok(()) => continue,
                        Err(frame) => WorkerMsg::Frame(frame),
                    },
                    Ok(None) => WorkerMsg::ChannelClosed,
                    Err(e) => WorkerMsg::ReadFailed(e),
                };
                let last = !matches!(msg, WorkerMsg::Frame(_));
                if me.cast(msg).is_err() || last {
                    break;
                }
            }
        });

        tasks.spawn(capture(
            spawned.stdout,
            Stream::Stdout,
            OutputSource::Worker(id.clone()),
            pid,
            None,
        ));
        let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
        let stderr = spawned.stderr;
        let (stderr_id, stderr_tail) = (id.clone(), tail.clone());
        tasks.spawn(async move {
            let source = OutputSource::Worker(stderr_id);
            capture(stderr, Stream::Stderr, source, pid, Some(stderr_tail)).await;
            let _ = drained_tx.send(());
        });

        let mut exit = spawned.exit;
        let group = spawned.group.clone();
        let me = myself.clone();
        tasks.spawn(async move {
            let status = exit.wait().await;
            group.reaped();
            let _ = tokio::time::timeout(process::STDERR_DRAIN, drained_rx).await;
            let _ = me.cast(WorkerMsg::Exited(status));
        });

        myself.send_after(spec.launch.startup_timeout, || WorkerMsg::StartupTimeout);
        tracing::debug!(worker = %id, pid, forked, "worker process started");
        Ok(WorkerState {
            id,
            spec,
            pool,
            pid,
            forked,
            group: spawned.group,
            link,
            tail,
            ready: false,
            stopping: false,
            ping: None,
            _tasks: tasks,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Frame(frame) => return on_frame(&myself, state, frame),
            WorkerMsg::ReadFailed(e) => {
                return Err(state.fail(LossReason::ProtocolViolation(e.to_string())))
            }
            WorkerMsg::ChannelClosed => {
                myself.send_after(CLOSED_CHANNEL_GRACE, || WorkerMsg::ChannelClosedTooLong);
            }
            WorkerMsg::ChannelClosedTooLong => {
                return Err(state.fail(LossReason::ProtocolViolation(
                    "the worker closed its reply channel but kept running".into(),
                )))
            }
            WorkerMsg::Exited(status) => {
                if !state.stopping {
                    return Err(state.fail(LossReason::WorkerExited(status)));
                }
                tracing::debug!(worker = %state.id, %status, "worker process stopped");
                state.answer_in_flight(LossReason::PoolStopped);
                myself.stop(None);
            }
            WorkerMsg::StartupTimeout => {
                if !state.ready {
                    return Err(state.fail(LossReason::StartupTimeout));
                }
            }
            WorkerMsg::HeartbeatTick => {
                match state.ping {
                    Some((_, sent)) if sent.elapsed() >= state.spec.heartbeat_timeout => {
                        return Err(state.fail(LossReason::HeartbeatTimeout));
                    }
                    Some(_) => {}
                    None => {
                        let id = state.link.send(op::PING, NIL_BODY);
                        state.ping = id.map(|id| (id, Instant::now()));
                    }
                }
                myself.send_after(heartbeat_period(&state.spec), || WorkerMsg::HeartbeatTick);
            }
            WorkerMsg::Overrun => {
                if let Some(id) = state.link.overdue() {
                    tracing::warn!(worker = %state.id, "call overran its deadline; waiting for it to finish");
                    myself.send_after(state.spec.overrun_grace, move || {
                        WorkerMsg::OverrunGraceOver(id)
                    });
                }
            }
            WorkerMsg::OverrunGraceOver(id) => {
                if state.link.is_in_flight(id) {
                    return Err(state.fail(LossReason::DeadlineOverrun));
                }
            }
            WorkerMsg::Shutdown { grace } => {
                state.stopping = true;
                state.link.stop_accepting();
                state.link.send(op::SHUTDOWN, NIL_BODY);
                myself.send_after(grace, move || WorkerMsg::Escalate(libc::SIGTERM, grace));
            }
            WorkerMsg::Escalate(signal, grace) => {
                tracing::warn!(worker = %state.id, signal, "worker did not stop in time; signalling");
                state.group.signal(signal);
                if signal != libc::SIGKILL {
                    myself.send_after(grace, || WorkerMsg::Escalate(libc::SIGKILL, Duration::ZERO));
                }
            }
        }
        Ok(())
    }
}

/// The heartbeat timer period: a quarter of the timeout, at most the interval.
fn heartbeat_period(spec: &WorkerSpec) -> Duration {
    spec.heartbeat_interval
        .min(spec.heartbeat_timeout / 4)
        .max(Duration::from_millis(10))
}

fn on_frame(
    myself: &ActorRef<WorkerMsg>,
    state: &mut WorkerState,
    frame: Incoming,
) -> Result<(), ActorProcessingErr> {
    match frame.op {
        op::READY if !state.ready => {
            let info: ReadyInfo = rmp_serde::from_slice(frame.body()).map_err(|e| {
                state.fail(LossReason::ProtocolViolation(format!("bad handshake: {e}")))
            })?;
            if info.protocol != PROTOCOL_VERSION {
                let mut failure = state.fail(LossReason::ProtocolViolation(format!(
                    "worker speaks protocol {}, host speaks {PROTOCOL_VERSION}",
                    info.protocol
                )));
                if let Some(f) = failure.downcast_mut::<WorkerFailure>() {
                    f.fatal = true;
                }
                return Err(failure);
            }
            state.ready = true;
            state.link.accept();
            tracing::debug!(worker = %state.id, pid = state.pid, python = %info.python, "worker ready");
            myself.send_after(heartbeat_period(&state.spec), || WorkerMsg::HeartbeatTick);
            let _ = state.pool.send_message(WorkerReady {
                worker: state.id.clone(),
                pid: state.pid,
                forked: state.forked,
                info,
                link: state.link.clone(),
            });
        }
        op::PONG if state.ping.is_some_and(|(id, _)| id == frame.id) => state.ping = None,
        other => {
            return Err(state.fail(LossReason::ProtocolViolation(format!(
                "unexpected frame op {other} id {}",
                frame.id
            ))))
        }
    }
    Ok(())
}

pub(super) fn error_reply(frame: &Incoming, max_frame: usize) -> Error {
    let body: ErrorBody = match rmp_serde::from_slice(frame.body()) {
        Ok(body) => body,
        Err(e) => return Error::Protocol(format!("undecodable error reply: {e}")),
    };
    match body.kind.as_str() {
        "exception" => Error::Python(PythonError {
            type_name: body.type_name,
            module: body.module,
            message: body.message,
            traceback: body.traceback,
        }),
        "frame_too_large" => Error::FrameTooLarge {
            what: "result",
            size: 0,
            limit: max_frame,
        },
        "encode" => Error::Python(PythonError {
            type_name: "EncodeError".into(),
            module: "pyvisor_worker".into(),
            message: body.message,
            traceback: body.traceback,
        }),
        "ref_not_found" => Error::RefNotFound(body.message),
        "ref_session_mismatch" => Error::RefSessionMismatch {
            ref_session: None,
            session: None,
        },
        "not_allowed" => Error::NotAllowed(body.message),
        kind => Error::Protocol(format!(
            "worker refused the request ({kind}): {}",
            body.message
        )),
    }
}
