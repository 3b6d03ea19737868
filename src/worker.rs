//! The worker actor: owns one Python process.
//!
//! It starts the process (own process group, `PR_SET_PDEATHSIG`, protocol pipes on dedicated
//! descriptors), waits for the handshake, runs one call at a time with the caller's reply channel,
//! answers heartbeats' absence by failing, and fails whenever the process exits or breaks the
//! protocol, so that its supervisor (the pool) acts. Its state owns the process group and kills it
//! when dropped, which ractor does on every kind of stop, including kill and panic.

mod channel;
mod deadline;
mod exit;
mod job;
mod link;
mod output;
pub(crate) mod process;
mod waiting;

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::{Error, LossReason, PythonError, WorkerId};
use crate::pool::{PoolMsg, WorkerReady};
use crate::protocol::{op, ErrorBody, FrameReader, Incoming, ReadyInfo, NIL_BODY};
use crate::protocol::{ProtocolError, PROTOCOL_VERSION};
use crate::template::{self, TemplateLink};

pub use exit::ExitStatus;
pub(crate) use exit::WorkerFailure;
pub(crate) use job::{Job, Reply, ReplyTo};
pub(crate) use link::{DirectGate, Refused, WorkerLink};
pub(crate) use process::LaunchSpec;
pub(crate) use waiting::Waiting;

use channel::RequestChannel;
use deadline::DeadlineTimer;
pub(crate) use output::{capture, OutputSource, StderrTail, Stream};
use process::ProcessGroup;
use waiting::WaitList;

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

/// How long the reader may see a closed reply channel while the process keeps running.
const CLOSED_CHANNEL_GRACE: Duration = Duration::from_millis(500);
/// Read buffer of the reply channel; larger payloads are read straight into their frame.
const REPLY_BUFFER: usize = 16 * 1024;
/// How long the exit watcher waits for stderr to drain after the process exited.
pub(crate) const STDERR_DRAIN: Duration = Duration::from_millis(500);

/// Everything a worker needs to know, shared by all workers of a pool.
#[derive(Debug)]
pub(crate) struct WorkerSpec {
    pub(crate) launch: LaunchSpec,
    pub(crate) startup_timeout: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) heartbeat_timeout: Duration,
    pub(crate) overrun_grace: Duration,
    pub(crate) stderr_tail: usize,
    /// The pool's template link (`LaunchMode::Template`), `None` in spawn mode.
    pub(crate) template: Option<Arc<TemplateLink>>,
    /// The pool's gate for direct calls (see `worker/link.rs`).
    pub(crate) gate: Arc<DirectGate>,
    /// Bound and timeout of the wait list (the pool's `max_queue` and `queue_timeout`).
    pub(crate) max_queue: usize,
    pub(crate) queue_timeout: Duration,
}

/// Arguments of one worker incarnation.
pub(crate) struct WorkerArgs {
    pub(crate) id: WorkerId,
    pub(crate) spec: Arc<WorkerSpec>,
    pub(crate) pool: ActorRef<PoolMsg>,
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
    Overrun(u64),
    OverrunGraceOver(u64),
    /// The oldest call of the wait list may have waited its queue timeout.
    QueueDue,
    Escalate(i32, Duration),
}

pub(crate) struct WorkerState {
    id: WorkerId,
    spec: Arc<WorkerSpec>,
    pool: ActorRef<PoolMsg>,
    pid: u32,
    forked: bool,
    group: ProcessGroup,
    link: Arc<WorkerLink>,
    tail: StderrTail,
    ready: bool,
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
        // Killed or panicked: the process group dies with `self.group`; the caller must not be
        // left waiting for a reply that will never come.
        let reason = LossReason::ActorFailed("worker actor stopped".into());
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
        let WorkerArgs { id, spec, pool } = args;
        let spawned = match template::fork(&spec, &id).await {
            Some(forked) => forked,
            None => process::spawn_worker(&spec.launch, &id)?,
        };
        let (pid, forked) = (spawned.pid, spawned.forked());
        let tail = StderrTail::new(spec.stderr_tail);
        let mut tasks = JoinSet::new();

        let writer = RequestChannel::new(spawned.requests, &mut tasks);
        let deadline = DeadlineTimer::new(myself.clone(), &mut tasks);
        let link = WorkerLink::new(
            id.clone(),
            pool.clone(),
            spec.gate.clone(),
            writer,
            deadline,
            spec.launch.max_frame,
            WaitList::new(spec.gate.clone(), spec.max_queue, spec.queue_timeout),
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
            let _ = tokio::time::timeout(STDERR_DRAIN, drained_rx).await;
            let _ = me.cast(WorkerMsg::Exited(status));
        });

        myself.send_after(spec.startup_timeout, || WorkerMsg::StartupTimeout);
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
                if !state.link.is_stopping() {
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
            WorkerMsg::Overrun(id) => {
                if state.link.is_in_flight(id) {
                    tracing::warn!(worker = %state.id, "call overran its deadline; waiting for it to finish");
                    myself.send_after(state.spec.overrun_grace, move || {
                        WorkerMsg::OverrunGraceOver(id)
                    });
                }
            }
            WorkerMsg::QueueDue => state.link.expire_waiting(),
            WorkerMsg::OverrunGraceOver(id) => {
                if state.link.is_in_flight(id) {
                    return Err(state.fail(LossReason::DeadlineOverrun));
                }
            }
            WorkerMsg::Shutdown { grace } => {
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
            let _ = state.pool.cast(PoolMsg::WorkerReady(WorkerReady {
                slot: state.id.slot,
                generation: state.id.generation,
                pid: state.pid,
                forked: state.forked,
                info,
                link: state.link.clone(),
            }));
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
