//! A pool: one per named pool, supervising its workers and scheduling their calls by session.
//!
//! Two parts, with one owner each:
//!
//! * **Scheduling** — where and when every call runs — is the [`Schedule`] (`pool/schedule.rs`),
//!   behind the [`Scheduler`]'s lock. Callers submit to it from their own task and each worker's
//!   reader task asks it for the next call, so no call goes through an actor. The decision for
//!   one call is the pure function in `pool/route.rs`.
//! * **Lifecycle** — starting workers, supervising them, restarts, the template, shutdown — is
//!   the pool actor here. It is the linked parent of its worker actors, decides restarts with a
//!   [`Supervisor`], and tells the schedule what changed (a worker ready, a worker lost and
//!   whether a new generation comes), in one locked step each, so a session bound to a dead
//!   worker is marked lost before anything else can reach the slot.
//!
//! The pool never awaits Python: a call's reply goes from the worker's reader task straight to
//! its caller.

mod client;
mod config;
mod launch;
mod queue;
mod route;
mod schedule;
mod scheduler;
mod sessions;
mod slots;
mod stats;
mod template;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::alarm::Alarm;
use crate::error::Error;
use crate::event::{Event, EventBus};
use crate::identity::{LossReason, WorkerFailure};
use crate::supervisor::{ChildExit, Decision, ExponentialBackoff, RestartIntensity, Supervisor};
use crate::template::TemplateReady;
use crate::worker::{Worker, WorkerArgs, WorkerMsg, WorkerReady, WorkerSpec};

#[cfg(feature = "fuzzing")]
pub(crate) use client::RequestEncoder;
pub(crate) use client::{CallSession, PoolClient};
pub use config::PoolConfig;
pub use launch::LaunchMode;
pub use stats::{Placement, PoolStats, PoolStatus, WorkerStats};

use schedule::{Next, Phase, Schedule};
use scheduler::Scheduler;
use template::TemplateSlot;

/// Escalation step between SHUTDOWN, SIGTERM and SIGKILL once the drain grace is over.
const KILL_STEP: Duration = Duration::from_secs(1);

/// Messages of the pool actor: lifecycle only (calls never pass through it).
#[derive(Debug)]
pub(crate) enum PoolMsg {
    WorkerReady(WorkerReady),
    TemplateReady(TemplateReady),
    RestartTemplate {
        generation: u64,
    },
    Restart {
        slot: usize,
        generation: u64,
    },
    /// The queue's timer rang: time out the calls queued for longer than `queue_timeout`.
    QueueDue,
    Shutdown(oneshot::Sender<()>),
    /// The drain grace is over.
    DrainOver,
    /// Draining, and no call runs any more.
    Drained,
}

/// What workers and templates report to their pool, each through a narrow handle
/// (`DerivedActorRef`) of its own message type: neither module knows `PoolMsg`.
macro_rules! report_to_pool {
    ($($report:ident),*) => {$(
        impl From<$report> for PoolMsg {
            fn from(report: $report) -> Self {
                PoolMsg::$report(report)
            }
        }

        impl TryFrom<PoolMsg> for $report {
            type Error = PoolMsg;
            fn try_from(msg: PoolMsg) -> Result<Self, PoolMsg> {
                match msg {
                    PoolMsg::$report(report) => Ok(report),
                    other => Err(other),
                }
            }
        }
    )*};
}

report_to_pool!(WorkerReady, TemplateReady);

/// Starts the pool `config` (linked under `supervisor` if given) and returns the caller's side
/// of it. Its workers start in the background.
///
/// # Errors
///
/// [`Error::Internal`] when the actor cannot be spawned.
pub(crate) async fn spawn(
    config: PoolConfig,
    spec: WorkerSpec,
    events: EventBus,
    supervisor: Option<ActorCell>,
) -> Result<(PoolClient, JoinHandle<()>), Error> {
    let failure = Arc::new(OnceLock::new());
    let (tx, rx) = oneshot::channel();
    let args = PoolArgs {
        config: config.clone(),
        spec: Arc::new(spec),
        events,
        escalate: supervisor.is_some(),
        failure: failure.clone(),
        scheduler: tx,
    };
    let spawned = match supervisor {
        Some(sup) => Actor::spawn_linked(None, Pool, args, sup).await,
        None => Actor::spawn(None, Pool, args).await,
    };
    let (actor, join) = spawned.map_err(|e| Error::Internal(format!("pool actor: {e}")))?;
    let scheduler = rx
        .await
        .map_err(|_| Error::Internal("the pool actor did not start".into()))?;
    Ok((PoolClient::new(&config, scheduler, actor, failure), join))
}

struct PoolArgs {
    config: PoolConfig,
    spec: Arc<WorkerSpec>,
    events: EventBus,
    /// Linked under a host supervisor: giving up fails the actor (OTP escalation).
    escalate: bool,
    /// Where the pool leaves its failure for callers that find the actor gone.
    failure: Arc<OnceLock<Error>>,
    /// Where the pool hands its scheduler to its client.
    scheduler: oneshot::Sender<Arc<Scheduler>>,
}

/// A worker actor of one slot.
struct WorkerActor {
    actor: ActorRef<WorkerMsg>,
    id: ActorId,
}

struct PoolState {
    name: Arc<str>,
    config: PoolConfig,
    spec: Arc<WorkerSpec>,
    events: EventBus,
    scheduler: Arc<Scheduler>,
    workers: Vec<Option<WorkerActor>>,
    supervisor: Supervisor,
    /// The template (`LaunchMode::Template`).
    template: Option<TemplateSlot>,
    stop_waiters: Vec<oneshot::Sender<()>>,
    escalate: bool,
    failure: Arc<OnceLock<Error>>,
    /// Set when the pool gave up and must fail its actor (escalation to a host supervisor).
    escalation: Option<Error>,
    /// The queue's timer task: aborted with the state.
    _tasks: JoinSet<()>,
}

/// The pool actor (stateless: everything lives in [`PoolState`]).
struct Pool;

impl Actor for Pool {
    type Msg = PoolMsg;
    type State = PoolState;
    type Arguments = PoolArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PoolMsg>,
        args: PoolArgs,
    ) -> Result<PoolState, ActorProcessingErr> {
        let PoolArgs {
            config,
            spec,
            events,
            escalate,
            failure,
            scheduler,
        } = args;
        let template = (config.launch.template_preload())
            .zip(spec.template.clone())
            .map(|(preload, link)| TemplateSlot::new(preload.to_vec(), link));
        let supervisor = Supervisor::new(
            config.restart,
            RestartIntensity::new(config.max_restarts, config.restart_window),
            ExponentialBackoff::new(config.backoff_initial, config.backoff_max, 2.0, 0.2),
            config.size + usize::from(template.is_some()),
        );
        let name: Arc<str> = config.name.as_str().into();
        let mut tasks = JoinSet::new();
        let me = myself.clone();
        let queue_alarm = Alarm::new(&mut tasks, move || me.cast(PoolMsg::QueueDue).is_ok());
        let schedule = Schedule::new(
            name.clone(),
            config.size,
            config.affinity,
            config.max_queue,
            config.queue_timeout,
            events.clone(),
        );
        let shared = Arc::new(Scheduler::new(schedule, queue_alarm, myself.clone()));
        let _ = scheduler.send(shared.clone());
        Ok(PoolState {
            name,
            workers: (0..config.size).map(|_| None).collect(),
            scheduler: shared,
            supervisor,
            template,
            spec,
            events,
            config,
            stop_waiters: Vec::new(),
            escalate,
            failure,
            escalation: None,
            _tasks: tasks,
        })
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
        state.escalation()
    }

    async fn handle(
        &self,
        myself: ActorRef<PoolMsg>,
        msg: PoolMsg,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PoolMsg::WorkerReady(ready) => state.on_ready(ready),
            PoolMsg::TemplateReady(ready) => state.on_template_ready(&myself, ready).await,
            PoolMsg::RestartTemplate { generation } => {
                state.restart_template(&myself, generation).await
            }
            PoolMsg::Restart { slot, generation } => {
                if state.scheduler.lock().awaits_start(slot, generation) {
                    state.start_worker(&myself, slot).await;
                }
            }
            PoolMsg::QueueDue => state.scheduler.expire_queue(),
            PoolMsg::Shutdown(done) => state.begin_shutdown(&myself, done),
            PoolMsg::DrainOver | PoolMsg::Drained => {
                if matches!(state.scheduler.lock().phase(), Phase::Draining) {
                    state.stop_workers(&myself);
                }
            }
        }
        state.escalation()
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<PoolMsg>,
        event: SupervisionEvent,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                let failure = match err.downcast_ref::<WorkerFailure>() {
                    Some(failure) => failure.clone(),
                    None => WorkerFailure::new(LossReason::ActorFailed(err.to_string())),
                };
                (cell, Some(failure))
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            _ => return Ok(()),
        };
        if state.is_template(cell.get_id()) {
            let failure = failure.unwrap_or_else(|| {
                WorkerFailure::new(LossReason::ActorFailed("the template actor stopped".into()))
            });
            state.on_template_exit(&myself, failure).await;
            return state.escalation();
        }
        let id = cell.get_id();
        let Some(slot) =
            (state.workers.iter()).position(|w| w.as_ref().is_some_and(|w| w.id == id))
        else {
            return Ok(()); // an earlier incarnation, or one the pool killed: already handled
        };
        state.workers[slot] = None;
        if !state.scheduler.lock().accepts_workers() {
            // Shutting down: a worker that stopped as asked lost nothing; one that failed is
            // reported, but no session is told (the pool is going away).
            match failure {
                None => state.scheduler.lock().worker_stopped(slot),
                Some(f) => {
                    let mut schedule = state.scheduler.lock();
                    let _ = schedule.worker_lost(slot, f.reason, f.stderr_tail, Next::Stop);
                }
            }
            state.maybe_stopped(&myself);
            return state.escalation();
        }
        let failure = failure.unwrap_or_else(|| {
            WorkerFailure::new(LossReason::ActorFailed(
                "the worker actor stopped unexpectedly".into(),
            ))
        });
        state.on_worker_failed(&myself, slot, failure);
        state.escalation()
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<PoolMsg>,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        // Stopped from outside (a host supervisor stopping its tree) rather than by `shutdown`:
        // no call is admitted any more; drain the workers ourselves and wait until their
        // processes are gone.
        let _ = state.scheduler.lock().begin_shutdown();
        let template = state.stop_template();
        let workers: Vec<_> = state.workers.iter_mut().filter_map(Option::take).collect();
        let grace = state.config.shutdown_grace;
        for w in &workers {
            let _ = w.actor.cast(WorkerMsg::Shutdown { grace });
        }
        let cells = workers.iter().map(|w| w.actor.get_cell());
        for cell in cells.chain(template.map(|t| t.get_cell())) {
            if cell.wait(Some(grace + 3 * KILL_STEP)).await.is_err() {
                cell.kill();
            }
        }
        Ok(())
    }
}

impl PoolState {
    /// Ends the handling of a message: fails the actor if the pool gave up under a host
    /// supervisor (OTP escalation).
    fn escalation(&mut self) -> Result<(), ActorProcessingErr> {
        match self.escalation.take() {
            Some(e) => Err(Box::new(e)),
            None => Ok(()),
        }
    }

    async fn start_worker(&mut self, myself: &ActorRef<PoolMsg>, slot: usize) {
        let args = WorkerArgs {
            id: self.scheduler.lock().worker_id(slot),
            spec: self.spec.clone(),
            pool: myself.get_derived(),
            dispatch: self.scheduler.clone(),
        };
        match Actor::spawn_linked(None, Worker, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                let id = actor.get_id();
                self.workers[slot] = Some(WorkerActor { actor, id });
                self.scheduler.lock().worker_starting(slot);
            }
            Err(e) => {
                let reason = LossReason::ActorFailed(format!("cannot start the worker: {e}"));
                self.on_worker_failed(myself, slot, WorkerFailure::new(reason));
            }
        }
    }

    fn on_ready(&mut self, ready: WorkerReady) {
        let WorkerReady {
            worker,
            pid,
            forked,
            info,
            link,
        } = ready;
        let at = worker.at();
        let mut current = false;
        self.scheduler.step(|schedule| {
            let (ready, assigned) =
                schedule.worker_ready(at, pid, forked, &info.python, Some(link));
            current = ready;
            assigned
        });
        if current {
            self.supervisor.child_healthy(at.slot);
        }
    }

    /// A worker failed while the pool serves: the supervisor decides what comes next, and the
    /// schedule records the loss (sessions told, waiting calls routed again) in one step.
    fn on_worker_failed(
        &mut self,
        myself: &ActorRef<PoolMsg>,
        slot: usize,
        failure: WorkerFailure,
    ) {
        let worker = self.scheduler.lock().worker_id(slot);
        tracing::warn!(%worker, reason = %failure.reason, "worker failed");
        let decision = if failure.fatal {
            Decision::Escalate {
                restarts: 0,
                within: Duration::ZERO,
            }
        } else if failure.is_normal_exit() {
            self.supervisor.child_exited(slot, ChildExit::Normal)
        } else {
            self.supervisor.child_exited(slot, ChildExit::Abnormal)
        };
        let next = match decision {
            Decision::Restart { .. } => Next::Restart,
            _ => Next::Stop,
        };
        let (reason, tail) = (failure.reason.clone(), failure.stderr_tail.clone());
        self.scheduler
            .step(|schedule| schedule.worker_lost(slot, reason, tail, next));
        let (generation, all_stopped) = {
            let schedule = self.scheduler.lock();
            (schedule.worker_id(slot).generation, schedule.all_stopped())
        };
        match decision {
            Decision::Restart { after } => {
                myself.send_after(after, move || PoolMsg::Restart { slot, generation });
            }
            Decision::Leave if all_stopped => {
                self.fail("every worker stopped".into(), failure.stderr_tail);
            }
            Decision::Leave => {}
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
        tracing::error!(pool = %self.name, %reason, "pool failed");
        self.kill_template();
        for w in self.workers.iter_mut().filter_map(Option::take) {
            w.actor.kill();
        }
        let err = self.scheduler.lock().fail(reason, stderr_tail);
        let _ = self.failure.set(err.clone());
        if self.escalate {
            self.escalation = Some(err);
        }
    }

    fn begin_shutdown(&mut self, myself: &ActorRef<PoolMsg>, done: oneshot::Sender<()>) {
        self.stop_waiters.push(done);
        let idle = {
            let mut schedule = self.scheduler.lock();
            if matches!(schedule.phase(), Phase::Draining | Phase::Stopping) {
                return;
            }
            schedule.begin_shutdown()
        };
        if idle {
            self.stop_workers(myself);
        } else {
            myself.send_after(self.config.shutdown_grace, || PoolMsg::DrainOver);
        }
    }

    fn stop_workers(&mut self, myself: &ActorRef<PoolMsg>) {
        self.scheduler.lock().stopping();
        let _ = self.stop_template();
        for w in self.workers.iter().flatten() {
            let _ = w.actor.cast(WorkerMsg::Shutdown { grace: KILL_STEP });
        }
        self.maybe_stopped(myself);
    }

    /// Stops the actor once the pool is stopping and every process is gone.
    fn maybe_stopped(&mut self, myself: &ActorRef<PoolMsg>) {
        let stopping = matches!(self.scheduler.lock().phase(), Phase::Stopping);
        if stopping && self.workers.iter().all(Option::is_none) && self.template_stopped() {
            self.events.emit(Event::PoolStopped {
                pool: self.name.to_string(),
            });
            for done in self.stop_waiters.drain(..) {
                let _ = done.send(());
            }
            myself.stop(None);
        }
    }
}

impl Drop for PoolState {
    /// Stopped or killed from outside (or after `fail` and `shutdown`, with nothing left): the
    /// calls still waiting are answered now rather than at their deadline, and later calls are
    /// refused.
    fn drop(&mut self) {
        let error = self
            .failure
            .get()
            .cloned()
            .unwrap_or_else(|| Error::ShuttingDown {
                pool: self.name.to_string(),
            });
        self.scheduler.lock().close(error);
    }
}
