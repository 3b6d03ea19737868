//! The pool actor: one per named pool, supervising its workers and routing calls by session.
//!
//! The pool never awaits Python: a call's reply channel travels with the job to the worker, which
//! answers the caller directly and then tells the pool it is idle. The pool is the linked parent
//! of its worker actors and decides restarts with a [`Supervisor`]; each restart gives the slot a
//! new generation, and every session bound to the old generation is marked lost (and an event is
//! emitted) before anything else can reach the slot.

mod config;
mod launch;
mod queue;
mod route;
mod sessions;
mod slots;
mod stats;
mod template;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::{Error, LossReason, WorkerId};
use crate::protocol::ReadyInfo;
use crate::runtime::{Event, EventBus};
use crate::supervisor::{ChildExit, Decision, ExponentialBackoff, RestartIntensity, Supervisor};
use crate::worker::{
    Job, Refused, Waiting, Worker, WorkerArgs, WorkerFailure, WorkerLink, WorkerMsg, WorkerSpec,
};

pub use config::{Affinity, PoolConfig};
pub use launch::LaunchMode;
pub(crate) use route::{RouteTicket, SessionRoute};
pub use stats::{Placement, PoolStats, PoolStatus, WorkerStats};

use queue::{Queue, Queued};
use sessions::{Binding, Sessions};
use slots::{any_idle, place_session, Slot, SlotStatus};
use template::TemplateSlot;

/// Escalation step between SHUTDOWN, SIGTERM and SIGKILL once the drain grace is over.
const KILL_STEP: Duration = Duration::from_secs(1);

/// Messages of the pool actor.
#[derive(Debug)]
pub(crate) enum PoolMsg {
    Call {
        job: Job,
        affinity: Option<Affinity>,
    },
    WorkerReady(WorkerReady),
    TemplateReady {
        generation: u64,
        pid: u32,
    },
    RestartTemplate {
        generation: u64,
    },
    WorkerIdle {
        slot: usize,
        generation: u64,
    },
    Restart {
        slot: usize,
        generation: u64,
    },
    /// The queue timer: time out the calls queued for longer than `queue_timeout`.
    QueueTimeout,
    ResetSession(Arc<str>),
    /// The last handle of a session was dropped: release it on its worker (best effort).
    CloseSession(Job),
    Stats(oneshot::Sender<PoolStats>),
    Placement(Arc<str>, oneshot::Sender<Option<Placement>>),
    WaitReady(oneshot::Sender<Result<(), Error>>),
    Shutdown(oneshot::Sender<()>),
    DrainOver,
}

/// A worker's handshake is done.
#[derive(Debug)]
pub(crate) struct WorkerReady {
    pub(crate) slot: usize,
    pub(crate) generation: u64,
    pub(crate) pid: u32,
    pub(crate) forked: bool,
    pub(crate) info: ReadyInfo,
    /// The worker's call path: the pool writes its calls through it.
    pub(crate) link: Arc<WorkerLink>,
}

pub(crate) struct PoolArgs {
    pub(crate) config: PoolConfig,
    pub(crate) spec: Arc<WorkerSpec>,
    pub(crate) events: EventBus,
    /// Linked under a host supervisor: giving up fails the actor (OTP escalation).
    pub(crate) escalate: bool,
    /// Where the pool leaves its failure for callers that find the actor gone.
    pub(crate) failure: Arc<OnceLock<Error>>,
}

enum Phase {
    Starting,
    Running,
    Draining,
    Stopping,
    Failed {
        reason: String,
        stderr_tail: Vec<String>,
    },
}

pub(crate) struct PoolState {
    name: Arc<str>,
    config: PoolConfig,
    spec: Arc<WorkerSpec>,
    events: EventBus,
    phase: Phase,
    slots: Vec<Slot>,
    sessions: Sessions,
    queue: Queue,
    supervisor: Supervisor,
    /// The template (`LaunchMode::Template`).
    template: Option<TemplateSlot>,
    ready_waiters: Vec<oneshot::Sender<Result<(), Error>>>,
    stop_waiters: Vec<oneshot::Sender<()>>,
    restarts: u64,
    saturated: u64,
    queue_timeouts: u64,
    /// A `QueueTimeout` is on its way (one timer for the whole queue, not one per call).
    queue_timer: bool,
    /// Set while calls that waited at a lost worker are routed again ([`PoolState::readmit`]):
    /// `enqueue` then puts them at the front with their own queueing time.
    readmitting: Option<Instant>,
    escalate: bool,
    failure: Arc<OnceLock<Error>>,
    /// Set when the pool gave up and must fail its actor (escalation to a host supervisor).
    escalation: Option<Error>,
}

impl PoolState {
    /// Ends the handling of a message: opens the direct-call gate only while the pool serves
    /// with nothing queued (a direct call must not overtake a queued one), then escalates if the
    /// pool gave up.
    fn finish_message(&mut self) -> Result<(), ActorProcessingErr> {
        let serving = matches!(self.phase, Phase::Starting | Phase::Running);
        self.spec.gate.set(serving && self.queue.len() == 0);
        match self.escalation.take() {
            Some(e) => Err(Box::new(e)),
            None => Ok(()),
        }
    }
}

/// The pool actor (stateless: everything lives in [`PoolState`]).
pub(crate) struct Pool;

impl Actor for Pool {
    type Msg = PoolMsg;
    type State = PoolState;
    type Arguments = PoolArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<PoolMsg>,
        args: PoolArgs,
    ) -> Result<PoolState, ActorProcessingErr> {
        let PoolArgs {
            config,
            spec,
            events,
            escalate,
            failure,
        } = args;
        let template = match (config.launch.template_preload(), &spec.template) {
            (Some(preload), Some(link)) => Some(TemplateSlot::new(preload.to_vec(), link.clone())),
            _ => None,
        };
        let supervisor = Supervisor::new(
            config.restart,
            RestartIntensity::new(config.max_restarts, config.restart_window),
            ExponentialBackoff::new(config.backoff_initial, config.backoff_max, 2.0, 0.2),
            config.size + usize::from(template.is_some()),
        );
        Ok(PoolState {
            name: config.name.as_str().into(),
            slots: (0..config.size).map(|_| Slot::new()).collect(),
            queue: Queue::new(config.max_queue),
            sessions: Sessions::default(),
            phase: Phase::Starting,
            supervisor,
            template,
            spec,
            events,
            config,
            ready_waiters: Vec::new(),
            stop_waiters: Vec::new(),
            restarts: 0,
            saturated: 0,
            queue_timeouts: 0,
            queue_timer: false,
            readmitting: None,
            escalate,
            failure,
            escalation: None,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<PoolMsg>,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        // Stopped from outside (a host supervisor stopping its tree) rather than by `shutdown`:
        // drain the workers ourselves and wait until their processes are gone.
        state.spec.gate.set(false);
        let template = state.stop_template();
        let workers: Vec<_> = state
            .slots
            .iter_mut()
            .filter_map(|s| s.worker.take())
            .collect();
        let grace = state.config.shutdown_grace;
        for worker in &workers {
            let _ = worker.cast(WorkerMsg::Shutdown { grace });
        }
        let cells = workers.iter().map(|w| w.get_cell());
        for cell in cells.chain(template.map(|t| t.get_cell())) {
            if cell.wait(Some(grace + 3 * KILL_STEP)).await.is_err() {
                cell.kill();
            }
        }
        Ok(())
    }

    async fn post_start(
        &self,
        myself: ActorRef<PoolMsg>,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        if state.template.is_some() {
            state.start_template(&myself).await;
        } else {
            state.start_all_workers(&myself).await;
        }
        state.finish_message()
    }

    async fn handle(
        &self,
        myself: ActorRef<PoolMsg>,
        msg: PoolMsg,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PoolMsg::Call { job, affinity } => state.admit(&myself, job, affinity),
            PoolMsg::WorkerReady(ready) => state.on_ready(ready),
            PoolMsg::TemplateReady { generation, pid } => {
                state.on_template_ready(&myself, generation, pid).await
            }
            PoolMsg::RestartTemplate { generation } => {
                state.restart_template(&myself, generation).await
            }
            PoolMsg::WorkerIdle { slot, generation } => state.on_idle(&myself, slot, generation),
            PoolMsg::Restart { slot, generation } => {
                if state.slots[slot].generation == generation
                    && state.slots[slot].status == SlotStatus::Restarting
                    && state.accepting_workers()
                {
                    state.start_worker(&myself, slot).await;
                }
            }
            PoolMsg::QueueTimeout => state.expire_queue(&myself),
            PoolMsg::ResetSession(session) => {
                if let Some(slot) = state.sessions.remove(&session) {
                    state.slots[slot].sessions -= 1;
                }
            }
            PoolMsg::CloseSession(job) => state.close_session(&myself, job),
            PoolMsg::Placement(session, reply) => {
                let _ = reply.send(state.placement(&session));
            }
            PoolMsg::Stats(reply) => {
                let _ = reply.send(state.stats());
            }
            PoolMsg::WaitReady(reply) => match &state.phase {
                Phase::Starting => state.ready_waiters.push(reply),
                _ => {
                    let _ = reply.send(state.refusal());
                }
            },
            PoolMsg::Shutdown(done) => state.begin_shutdown(&myself, done),
            PoolMsg::DrainOver => {
                if matches!(state.phase, Phase::Draining) {
                    state.stop_workers(&myself);
                }
            }
        }
        state.finish_message()
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<PoolMsg>,
        event: SupervisionEvent,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                let failure = err
                    .downcast_ref::<WorkerFailure>()
                    .cloned()
                    .unwrap_or_else(|| WorkerFailure {
                        reason: LossReason::ActorFailed(err.to_string()),
                        stderr_tail: Vec::new(),
                        fatal: false,
                    });
                (cell, Some(failure))
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            _ => return Ok(()),
        };
        if state.is_template(cell.get_id()) {
            let failure = failure.unwrap_or_else(|| WorkerFailure {
                reason: LossReason::PoolStopped,
                stderr_tail: Vec::new(),
                fatal: false,
            });
            state.on_template_exit(&myself, failure).await;
            return state.finish_message();
        }
        let Some(slot) = state
            .slots
            .iter()
            .position(|s| s.actor.as_ref() == Some(&cell.get_id()))
        else {
            return Ok(()); // an earlier incarnation: already handled
        };
        state.slots[slot].actor = None;
        state.slots[slot].worker = None;
        // Calls waiting at the lost worker never ran: once the loss is recorded, they are routed
        // again like calls of the pool's own queue (lost strict sessions are told, hint sessions
        // move, a stopping pool refuses).
        let waiting = state.slots[slot]
            .link
            .take()
            .map(|link| link.take_waiting())
            .unwrap_or_default();
        match failure {
            _ if matches!(state.phase, Phase::Stopping | Phase::Draining) => {
                state.worker_gone(slot, LossReason::PoolStopped, Vec::new());
                state.slots[slot].status = SlotStatus::Stopped;
                state.maybe_stopped(&myself);
            }
            Some(failure) => state.on_worker_failed(&myself, slot, failure),
            None => {
                // Stopped without failing outside of a shutdown: treat as a normal exit.
                let failure = WorkerFailure {
                    reason: LossReason::PoolStopped,
                    stderr_tail: Vec::new(),
                    fatal: false,
                };
                state.on_worker_failed(&myself, slot, failure);
            }
        }
        state.readmit(&myself, waiting);
        state.finish_message()
    }
}

impl PoolState {
    fn worker_id(&self, slot: usize) -> WorkerId {
        WorkerId::new(self.name.as_ref(), slot, self.slots[slot].generation)
    }

    fn accepting_workers(&self) -> bool {
        matches!(self.phase, Phase::Starting | Phase::Running)
    }

    /// The error for calls that cannot be admitted in the current phase (`Ok` when they can).
    fn refusal(&self) -> Result<(), Error> {
        match &self.phase {
            Phase::Starting | Phase::Running => Ok(()),
            Phase::Draining | Phase::Stopping => Err(Error::ShuttingDown {
                pool: self.name.to_string(),
            }),
            Phase::Failed {
                reason,
                stderr_tail,
            } => Err(Error::PoolFailed {
                pool: self.name.to_string(),
                reason: reason.clone(),
                stderr_tail: stderr_tail.clone(),
            }),
        }
    }

    async fn start_worker(&mut self, myself: &ActorRef<PoolMsg>, slot: usize) {
        let args = WorkerArgs {
            id: self.worker_id(slot),
            spec: self.spec.clone(),
            pool: myself.clone(),
        };
        match Actor::spawn_linked(None, Worker, args, myself.get_cell()).await {
            Ok((worker, _)) => {
                let s = &mut self.slots[slot];
                s.actor = Some(worker.get_id());
                s.worker = Some(worker);
                s.link = None;
                s.status = SlotStatus::Starting;
                s.pid = None;
                s.busy = false;
            }
            Err(e) => {
                let reason = LossReason::ActorFailed(format!("cannot start the worker: {e}"));
                let failure = WorkerFailure {
                    reason,
                    stderr_tail: Vec::new(),
                    fatal: false,
                };
                self.on_worker_failed(myself, slot, failure);
            }
        }
    }

    fn on_ready(&mut self, ready: WorkerReady) {
        let WorkerReady {
            slot,
            generation,
            pid,
            forked,
            info,
            link,
        } = ready;
        if self.slots[slot].generation != generation || !self.accepting_workers() {
            return;
        }
        let s = &mut self.slots[slot];
        s.status = SlotStatus::Ready;
        s.link = Some(link);
        s.pid = Some(pid);
        s.forked = forked;
        s.python = Some(info.python);
        self.supervisor.child_healthy(slot);
        let worker = self.worker_id(slot);
        self.events.emit(if self.slots[slot].generation == 0 {
            Event::WorkerStarted { worker, pid }
        } else {
            Event::WorkerRestarted { worker, pid }
        });
        self.maybe_running();
        self.drain_queue(slot);
    }

    /// Leaves `Starting` once every slot that is still supervised has completed a handshake.
    fn maybe_running(&mut self) {
        let live = || self.slots.iter().filter(|s| s.is_live());
        if !matches!(self.phase, Phase::Starting)
            || live().count() == 0
            || !live().all(|s| s.status == SlotStatus::Ready)
        {
            return;
        }
        self.phase = Phase::Running;
        self.events.emit(Event::PoolReady {
            pool: self.name.to_string(),
        });
        for waiter in self.ready_waiters.drain(..) {
            let _ = waiter.send(Ok(()));
        }
    }

    fn on_idle(&mut self, myself: &ActorRef<PoolMsg>, slot: usize, generation: u64) {
        if self.slots[slot].generation != generation {
            return;
        }
        self.slots[slot].busy = false;
        match self.phase {
            Phase::Draining => self.maybe_stopped(myself),
            _ => self.drain_queue(slot),
        }
    }

    /// Routes a call: to the session's worker, to a free worker, into the queue, or back with an
    /// error, following the call's affinity.
    fn admit(&mut self, myself: &ActorRef<PoolMsg>, job: Job, affinity: Option<Affinity>) {
        if let Err(e) = self.refusal() {
            let _ = job.reply.send(Err(e));
            return;
        }
        let affinity = affinity.unwrap_or(self.config.affinity);
        if let Some((slot, generation)) = job.pin {
            return self.admit_pinned(myself, job, affinity, slot, generation);
        }
        let Some(session) = job.session.clone() else {
            match any_idle(&self.slots) {
                Some(slot) => self.run_on(myself, slot, job, affinity),
                None => self.enqueue(myself, job, None, affinity),
            }
            return;
        };
        let slot = match self.sessions.get(&session) {
            Some(Binding::Bound { slot, .. }) => *slot,
            Some(Binding::Lost { worker, reason }) if affinity.is_strict() => {
                let _ = job.reply.send(Err(Error::SessionWorkerUnavailable {
                    session: session.to_string(),
                    worker: worker.clone(),
                    reason: reason.clone(),
                }));
                return;
            }
            _ => match place_session(&self.slots) {
                Some(slot) => {
                    self.bind(session.clone(), slot);
                    slot
                }
                None => {
                    let _ = job
                        .reply
                        .send(Err(Error::Internal("no live worker slot".into())));
                    return;
                }
            },
        };
        if self.slots[slot].is_idle() {
            return self.run_on(myself, slot, job, affinity);
        }
        match affinity {
            Affinity::Hint => match any_idle(&self.slots) {
                Some(other) => {
                    self.bind(session, other);
                    self.run_on(myself, other, job, affinity);
                }
                None => self.enqueue(myself, job, None, affinity),
            },
            Affinity::StrictQueue => self.enqueue(myself, job, Some(slot), affinity),
            Affinity::StrictFailFast => {
                if self.slots[slot].status == SlotStatus::Ready {
                    let _ = job.reply.send(Err(Error::WorkerBusy {
                        session: session.to_string(),
                        worker: self.worker_id(slot),
                    }));
                } else {
                    // Still starting: wait for readiness rather than fail.
                    self.enqueue(myself, job, Some(slot), affinity);
                }
            }
        }
    }

    /// Routes a call that carries refs: it must run on the worker that holds them.
    fn admit_pinned(
        &mut self,
        myself: &ActorRef<PoolMsg>,
        job: Job,
        affinity: Affinity,
        slot: usize,
        generation: u64,
    ) {
        let session = job.session.clone();
        let lost = |reason: LossReason| Error::SessionWorkerUnavailable {
            session: session.as_deref().unwrap_or_default().to_string(),
            worker: WorkerId::new(self.name.as_ref(), slot, generation),
            reason,
        };
        let Some(s) = self.slots.get(slot) else {
            let _ = job.reply.send(Err(Error::InvalidRef(format!(
                "pool {} has no slot {slot}",
                self.name
            ))));
            return;
        };
        if s.generation != generation || !s.is_live() {
            let reason = s.loss_of(generation);
            let outcome = match reason {
                Some(reason) => lost(reason),
                None => Error::InvalidRef(format!("no worker {}/{slot}#{generation}", self.name)),
            };
            let _ = job.reply.send(Err(outcome));
            return;
        }
        if let Some(session) = session {
            match self.sessions.get(&session) {
                Some(Binding::Lost { worker, reason }) if affinity.is_strict() => {
                    let _ = job.reply.send(Err(Error::SessionWorkerUnavailable {
                        session: session.to_string(),
                        worker: worker.clone(),
                        reason: reason.clone(),
                    }));
                    return;
                }
                Some(Binding::Bound { .. }) => {}
                _ => self.bind(session, slot),
            }
        }
        if self.slots[slot].is_idle() {
            self.run_on(myself, slot, job, affinity);
        } else if affinity == Affinity::StrictFailFast
            && self.slots[slot].status == SlotStatus::Ready
        {
            let _ = job.reply.send(Err(Error::WorkerBusy {
                session: job.session.as_deref().unwrap_or_default().to_string(),
                worker: self.worker_id(slot),
            }));
        } else {
            self.enqueue(myself, job, Some(slot), Affinity::StrictQueue);
        }
    }

    /// Releases a dropped session on its worker (if that worker still holds it) and forgets it.
    fn close_session(&mut self, myself: &ActorRef<PoolMsg>, mut job: Job) {
        let Some(session) = job.session.clone() else {
            return;
        };
        if let Some(Binding::Bound { slot, generation }) = self.sessions.get(&session).cloned() {
            let s = &self.slots[slot];
            if s.generation == generation && s.is_live() && self.refusal().is_ok() {
                job.pin = Some((slot, generation));
                if s.is_idle() {
                    self.run_on(myself, slot, job, Affinity::StrictQueue);
                } else {
                    self.enqueue(myself, job, Some(slot), Affinity::StrictQueue);
                }
            }
        }
        if let Some(slot) = self.sessions.remove(&session) {
            self.slots[slot].sessions -= 1;
        }
    }

    fn bind(&mut self, session: Arc<str>, slot: usize) {
        let generation = self.slots[slot].generation;
        if let Some(old) = self.sessions.bind(session, slot, generation) {
            self.slots[old].sessions -= 1;
        }
        self.slots[slot].sessions += 1;
    }

    fn enqueue(
        &mut self,
        myself: &ActorRef<PoolMsg>,
        job: Job,
        pin: Option<usize>,
        affinity: Affinity,
    ) {
        let queued = if let Some(enqueued) = self.readmitting {
            self.queue.push_front(job, pin, affinity, enqueued);
            Ok(())
        } else {
            if self.queue.len() + self.spec.gate.waiting() >= self.queue.capacity() {
                // Calls whose caller gave up still count where they wait: drop them first.
                for link in self.slots.iter().filter_map(|s| s.link.as_ref()) {
                    link.drop_abandoned();
                }
            }
            let job = match self.wait_at_worker(job, pin, affinity) {
                Ok(()) => return,
                Err(job) => job,
            };
            let elsewhere = self.spec.gate.waiting();
            self.queue.push(job, pin, affinity, elsewhere)
        };
        match queued {
            Ok(()) => {
                // Closed at once, not only at the end of this message: no direct call may
                // overtake the queued one.
                self.spec.gate.set(false);
                self.arm_queue_timer(myself);
            }
            Err(job) => {
                self.saturated += 1;
                let capacity = self.queue.capacity();
                self.events.emit(Event::PoolSaturated {
                    pool: self.name.to_string(),
                    capacity,
                });
                let _ = job.reply.send(Err(Error::PoolSaturated {
                    pool: self.name.to_string(),
                    capacity,
                }));
            }
        }
    }

    /// Routes again the calls that waited at a lost worker (none of them was written), once the
    /// loss is recorded: like calls of the pool's own queue, they keep their place — ahead of
    /// anything queued since, oldest first — and their queueing time.
    fn readmit(&mut self, myself: &ActorRef<PoolMsg>, waiting: Vec<Waiting>) {
        for w in waiting.into_iter().rev() {
            let mut job = w.job;
            job.reply.on_drop = None; // it named the lost worker
            self.readmitting = Some(w.since);
            self.admit(myself, job, Some(w.affinity));
        }
        self.readmitting = None;
    }

    /// Queues a job that can only run on one worker in that worker's wait list, when the worker
    /// is up: the reader task then writes it when the worker is free, with no message to the pool
    /// (`worker/waiting.rs`). That worker is `pin`, or the only one of the pool for a hint call.
    /// Only while the pool's own queue is empty: a wait list is served before the pool's queue,
    /// so a job must not join one while an earlier job (maybe of the same session) waits here.
    ///
    /// # Errors
    ///
    /// Gives the job back when it may run anywhere, the pool's queue is not empty, or its worker
    /// cannot take it now: the pool queues it itself.
    fn wait_at_worker(
        &mut self,
        mut job: Job,
        pin: Option<usize>,
        affinity: Affinity,
    ) -> Result<(), Job> {
        let slot = match pin {
            Some(slot) => slot,
            None if affinity == Affinity::Hint && self.slots.len() == 1 => 0,
            None => return Err(job),
        };
        let Some(link) = self.slots[slot].link.clone() else {
            return Err(job);
        };
        if self.queue.len() > 0 {
            return Err(job);
        }
        self.commit(slot, &link, &mut job);
        link.enqueue(job, affinity).map_err(|mut job| {
            job.reply.on_drop = None;
            job
        })
    }

    /// Prepares `job` to be handed to `slot`'s worker: points the session's route there if the
    /// session is bound there, and makes a job dropped unanswered report the worker as gone.
    fn commit(&mut self, slot: usize, link: &Arc<WorkerLink>, job: &mut Job) {
        let worker = self.worker_id(slot);
        if let (Some(ticket), Some(session)) = (&job.route, &job.session) {
            let at = (slot, worker.generation);
            self.sessions.route(session, ticket.route(), at, link);
        }
        job.reply.on_drop = Some(Box::new(stopped_before_the_call(worker)));
    }

    /// Runs `job` on `slot` ([`PoolState::dispatch`]); if the worker turned out to be busy with a
    /// direct call, admits the job again (the slot now counts as busy).
    fn run_on(&mut self, myself: &ActorRef<PoolMsg>, slot: usize, job: Job, affinity: Affinity) {
        if let Err(job) = self.dispatch(slot, job) {
            self.admit(myself, job, Some(affinity));
        }
    }

    /// Writes `job` to `slot`'s worker through its link, and points the session's route at it if
    /// the session is bound there. A job nobody waits for any more is dropped instead, and the
    /// slot stays idle.
    ///
    /// # Errors
    ///
    /// Gives the job back when the worker runs a direct call: the slot is then marked busy and
    /// the pool is told when it is idle.
    fn dispatch(&mut self, slot: usize, mut job: Job) -> Result<(), Job> {
        if job.abandoned() {
            return Ok(());
        }
        let worker = self.worker_id(slot);
        let Some(link) = self.slots[slot].link.clone() else {
            let _ = job
                .reply
                .send(Err(Error::Internal("dispatch to an empty slot".into())));
            return Ok(());
        };
        self.commit(slot, &link, &mut job);
        let outcome = link.run(job);
        // Busy until the worker says it is idle; a closed link stays busy until its supervision
        // event arrives (no call is sent into a dead worker meanwhile).
        self.slots[slot].busy = !matches!(outcome, Err(Refused::Unavailable(_)));
        match outcome {
            Ok(()) => Ok(()),
            Err(Refused::Busy(mut job)) => {
                job.reply.on_drop = None;
                Err(job)
            }
            Err(Refused::Closed(job)) => {
                let _ = job.reply.send(Err(stopped_before_the_call(worker)));
                Ok(())
            }
            Err(Refused::Unavailable(job)) => {
                let _ = job.reply.send(Err(Error::Internal(format!(
                    "worker {worker} was sent a call it cannot take"
                ))));
                Ok(())
            }
        }
    }

    /// Arms the queue timer for the oldest queued call, unless it is armed already.
    fn arm_queue_timer(&mut self, myself: &ActorRef<PoolMsg>) {
        let Some(oldest) = self.queue.oldest() else {
            return;
        };
        if !self.queue_timer {
            self.queue_timer = true;
            let at = oldest + self.config.queue_timeout;
            myself.send_after(at.saturating_duration_since(Instant::now()), || {
                PoolMsg::QueueTimeout
            });
        }
    }

    /// Answers the calls queued for `queue_timeout` or longer with `Error::QueueTimeout`, then
    /// re-arms the timer for the oldest call left.
    fn expire_queue(&mut self, myself: &ActorRef<PoolMsg>) {
        self.queue_timer = false;
        let now = Instant::now();
        for q in self.queue.expire(now, self.config.queue_timeout) {
            self.queue_timeouts += 1;
            let _ = q.job.reply.send(Err(Error::QueueTimeout {
                pool: self.name.to_string(),
                waited: now.duration_since(q.enqueued),
            }));
        }
        self.arm_queue_timer(myself);
    }

    /// Gives an idle `slot` the oldest queued calls it may run, until one runs.
    fn drain_queue(&mut self, slot: usize) {
        while self.slots[slot].is_idle() {
            let Some(Queued {
                job,
                enqueued,
                pin,
                affinity,
            }) = self.queue.take_for(slot)
            else {
                return;
            };
            if affinity == Affinity::Hint {
                if let Some(session) = job.session.clone() {
                    self.bind(session, slot);
                }
            }
            if let Err(job) = self.dispatch(slot, job) {
                // Busy with a direct call: the job keeps its place (and its queueing time).
                self.queue.put_back(Queued {
                    job,
                    enqueued,
                    pin,
                    affinity,
                });
                return;
            }
        }
    }

    /// Records that `slot`'s current worker is gone: emits `WorkerExited`, then one
    /// `SessionWorkerUnavailable` per session it held, and fails the calls queued for it.
    fn worker_gone(&mut self, slot: usize, reason: LossReason, stderr_tail: Vec<String>) {
        let worker = self.worker_id(slot);
        let pid = self.slots[slot].pid.take();
        let s = &mut self.slots[slot];
        s.busy = false;
        s.sessions = 0;
        s.record_loss(worker.generation, reason.clone());
        self.events.emit(Event::WorkerExited {
            worker: worker.clone(),
            pid,
            reason: reason.clone(),
            stderr_tail,
        });
        for session in self.sessions.mark_lost(&worker, &reason) {
            self.events.emit(Event::SessionWorkerUnavailable {
                pool: self.name.to_string(),
                session: session.to_string(),
                slot,
                generation: worker.generation,
                reason: reason.clone(),
            });
        }
        for q in self.queue.take_pinned(slot) {
            let session = q.job.session.as_deref().unwrap_or_default().to_string();
            let _ = q.job.reply.send(Err(Error::SessionWorkerUnavailable {
                session,
                worker: worker.clone(),
                reason: reason.clone(),
            }));
        }
    }

    fn on_worker_failed(
        &mut self,
        myself: &ActorRef<PoolMsg>,
        slot: usize,
        failure: WorkerFailure,
    ) {
        tracing::warn!(worker = %self.worker_id(slot), reason = %failure.reason, "worker failed");
        let normal = failure.is_normal_exit();
        self.worker_gone(slot, failure.reason.clone(), failure.stderr_tail.clone());
        if !self.accepting_workers() {
            self.slots[slot].status = SlotStatus::Stopped;
            return;
        }
        let decision = if failure.fatal {
            Decision::Escalate {
                restarts: 0,
                within: Duration::ZERO,
            }
        } else {
            let exit = if normal {
                ChildExit::Normal
            } else {
                ChildExit::Abnormal
            };
            self.supervisor.child_exited(slot, exit)
        };
        match decision {
            Decision::Restart { after } => {
                let s = &mut self.slots[slot];
                s.generation += 1;
                s.status = SlotStatus::Restarting;
                self.restarts += 1;
                let generation = s.generation;
                myself.send_after(after, move || PoolMsg::Restart { slot, generation });
            }
            Decision::Leave => {
                self.slots[slot].status = SlotStatus::Stopped;
                if self.slots.iter().any(Slot::is_live) {
                    self.maybe_running();
                } else {
                    self.fail("every worker stopped".into(), failure.stderr_tail);
                }
            }
            Decision::Escalate { restarts, within } => {
                let reason = if failure.fatal {
                    format!("{}", failure.reason)
                } else {
                    format!(
                        "{restarts} restarts within {within:?} exceed the restart intensity; last: {}",
                        failure.reason
                    )
                };
                self.fail(reason, failure.stderr_tail);
            }
        }
    }

    /// Gives up: every worker is killed, every session lost, every waiting call answered.
    fn fail(&mut self, reason: String, stderr_tail: Vec<String>) {
        // No direct call from now on (it could join a wait list taken below).
        self.spec.gate.set(false);
        tracing::error!(pool = %self.name, %reason, "pool failed");
        self.kill_template();
        self.phase = Phase::Failed {
            reason: reason.clone(),
            stderr_tail: stderr_tail.clone(),
        };
        let mut waiting = Vec::new();
        for slot in 0..self.slots.len() {
            if let Some(worker) = self.slots[slot].worker.take() {
                self.slots[slot].actor = None;
                if let Some(link) = self.slots[slot].link.take() {
                    waiting.extend(link.take_waiting());
                }
                worker.kill();
                self.worker_gone(slot, LossReason::PoolStopped, Vec::new());
            }
            self.slots[slot].status = SlotStatus::Stopped;
        }
        self.events.emit(Event::PoolFailed {
            pool: self.name.to_string(),
            reason,
            stderr_tail: stderr_tail.clone(),
        });
        let err = Error::PoolFailed {
            pool: self.name.to_string(),
            reason: self.failure_reason(),
            stderr_tail,
        };
        let _ = self.failure.set(err.clone());
        let queued = self.queue.drain().map(|q| q.job);
        for job in queued.chain(waiting.into_iter().map(|w| w.job)) {
            let _ = job.reply.send(Err(err.clone()));
        }
        for waiter in self.ready_waiters.drain(..) {
            let _ = waiter.send(Err(err.clone()));
        }
        if self.escalate {
            self.escalation = Some(err);
        }
    }

    fn failure_reason(&self) -> String {
        match &self.phase {
            Phase::Failed { reason, .. } => reason.clone(),
            _ => String::new(),
        }
    }

    fn begin_shutdown(&mut self, myself: &ActorRef<PoolMsg>, done: oneshot::Sender<()>) {
        self.stop_waiters.push(done);
        if matches!(self.phase, Phase::Draining | Phase::Stopping) {
            return;
        }
        let failed = matches!(self.phase, Phase::Failed { .. });
        self.phase = Phase::Draining;
        // No direct call from now on; wait for the ones in flight like for the pool's own.
        self.spec.gate.set(false);
        for s in &mut self.slots {
            if s.link.as_ref().is_some_and(|l| l.watch_idle()) {
                s.busy = true;
            }
        }
        let pool = self.name.to_string();
        let waiting: Vec<Job> = (self.slots.iter())
            .filter_map(|s| s.link.as_ref())
            .flat_map(|link| link.take_waiting())
            .map(|w| w.job)
            .collect();
        for job in self.queue.drain().map(|q| q.job).chain(waiting) {
            let _ = job
                .reply
                .send(Err(Error::ShuttingDown { pool: pool.clone() }));
        }
        for waiter in self.ready_waiters.drain(..) {
            let _ = waiter.send(Err(Error::ShuttingDown { pool: pool.clone() }));
        }
        if failed || !self.slots.iter().any(|s| s.busy) {
            self.stop_workers(myself);
        } else {
            myself.send_after(self.config.shutdown_grace, || PoolMsg::DrainOver);
        }
    }

    fn stop_workers(&mut self, myself: &ActorRef<PoolMsg>) {
        self.phase = Phase::Stopping;
        let _ = self.stop_template();
        for s in &mut self.slots {
            match s.worker.as_ref() {
                Some(worker) => {
                    let _ = worker.cast(WorkerMsg::Shutdown { grace: KILL_STEP });
                }
                None => s.status = SlotStatus::Stopped,
            }
        }
        self.maybe_stopped(myself);
    }

    fn maybe_stopped(&mut self, myself: &ActorRef<PoolMsg>) {
        if matches!(self.phase, Phase::Draining) && !self.slots.iter().any(|s| s.busy) {
            return self.stop_workers(myself);
        }
        if matches!(self.phase, Phase::Stopping)
            && self.slots.iter().all(|s| s.worker.is_none())
            && self.template_stopped()
        {
            self.events.emit(Event::PoolStopped {
                pool: self.name.to_string(),
            });
            for done in self.stop_waiters.drain(..) {
                let _ = done.send(());
            }
            myself.stop(None);
        }
    }

    fn placement(&self, session: &str) -> Option<Placement> {
        match self.sessions.get(session)? {
            Binding::Bound { slot, generation } => Some(Placement {
                worker: WorkerId::new(self.name.as_ref(), *slot, *generation),
                pid: self.slots[*slot].pid,
                lost: None,
            }),
            Binding::Lost { worker, reason } => Some(Placement {
                worker: worker.clone(),
                pid: None,
                lost: Some(reason.clone()),
            }),
        }
    }

    fn stats(&self) -> PoolStats {
        PoolStats {
            name: self.name.to_string(),
            status: match &self.phase {
                Phase::Starting => PoolStatus::Starting,
                Phase::Running => PoolStatus::Running,
                Phase::Draining | Phase::Stopping => PoolStatus::Stopping,
                Phase::Failed { reason, .. } => PoolStatus::Failed {
                    reason: reason.clone(),
                },
            },
            workers: self
                .slots
                .iter()
                .enumerate()
                .map(|(slot, s)| WorkerStats {
                    slot,
                    generation: s.generation,
                    pid: s.pid,
                    ready: s.status == SlotStatus::Ready,
                    busy: s.busy || s.link.as_ref().is_some_and(|l| l.is_busy()),
                    sessions: s.sessions,
                    python: s.python.clone(),
                    forked: s.forked,
                })
                .collect(),
            queued: self.queue.len() + self.spec.gate.waiting(),
            sessions: self.sessions.len(),
            restarts: self.restarts,
            saturated: self.saturated,
            queue_timeouts: self.queue_timeouts + self.spec.gate.wait_timeouts(),
            template_pid: self.template.as_ref().and_then(|t| t.pid),
            direct_calls: self.spec.gate.calls(),
        }
    }
}

impl Drop for PoolState {
    /// Stopped or killed from outside (or after `fail` and `shutdown`, with nothing left): the
    /// calls still waiting at workers are answered now rather than at their deadline (a session's
    /// route would keep them alive).
    fn drop(&mut self) {
        self.spec.gate.set(false);
        let error = self
            .failure
            .get()
            .cloned()
            .unwrap_or_else(|| Error::ShuttingDown {
                pool: self.name.to_string(),
            });
        for link in self.slots.iter().filter_map(|s| s.link.as_ref()) {
            for w in link.take_waiting() {
                let _ = w.job.reply.send(Err(error.clone()));
            }
        }
    }
}

/// The error of a call whose worker went away before it could be written.
fn stopped_before_the_call(worker: WorkerId) -> Error {
    Error::WorkerExited {
        worker,
        reason: LossReason::ActorFailed("worker stopped before the call".into()),
        stderr_tail: Vec::new(),
    }
}
