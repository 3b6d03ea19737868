//! The pool's side of `LaunchMode::Template`: the template is one more supervised child of the
//! pool (index `size` in its [`Supervisor`](crate::supervisor::Supervisor), so its restarts count
//! in the same restart intensity as the workers').

use std::sync::Arc;

use ractor::{Actor, ActorId, ActorRef};

use super::{PoolMsg, PoolState};
use crate::event::Event;
use crate::identity::{LossReason, WorkerFailure};
use crate::supervisor::{ChildExit, Decision};
use crate::template::{Template, TemplateArgs, TemplateLink, TemplateMsg, TemplateReady};

/// The pool's template process: its actor, its generation, and the link its workers fork through.
pub(super) struct TemplateSlot {
    pub(super) preload: Vec<String>,
    pub(super) link: Arc<TemplateLink>,
    pub(super) actor: Option<ActorRef<TemplateMsg>>,
    pub(super) actor_id: Option<ActorId>,
    pub(super) generation: u64,
    pub(super) pid: Option<u32>,
    /// The workers were started (they wait for the first template, or its first failure).
    pub(super) workers_started: bool,
}

impl TemplateSlot {
    pub(super) fn new(preload: Vec<String>, link: Arc<TemplateLink>) -> Self {
        TemplateSlot {
            preload,
            link,
            actor: None,
            actor_id: None,
            generation: 0,
            pid: None,
            workers_started: false,
        }
    }
}

impl PoolState {
    /// The template's index in the pool's supervisor.
    fn template_child(&self) -> usize {
        self.workers.len()
    }

    pub(super) fn is_template(&self, id: ActorId) -> bool {
        self.template.as_ref().and_then(|t| t.actor_id) == Some(id)
    }

    /// Starts every worker (once): at pool start they wait for the template's first outcome.
    pub(super) async fn start_all_workers(&mut self, myself: &ActorRef<PoolMsg>) {
        if let Some(t) = self.template.as_mut() {
            if std::mem::replace(&mut t.workers_started, true) {
                return;
            }
        }
        for slot in 0..self.workers.len() {
            self.start_worker(myself, slot).await;
        }
    }

    pub(super) async fn start_template(&mut self, myself: &ActorRef<PoolMsg>) {
        let Some(t) = self.template.as_ref() else {
            return;
        };
        let args = TemplateArgs {
            pool: self.name.clone(),
            generation: t.generation,
            preload: t.preload.clone(),
            launch: self.spec.launch.clone(),
            parent: myself.get_derived(),
        };
        match Actor::spawn_linked(None, Template, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                let t = self.template.as_mut().expect("checked above");
                t.actor_id = Some(actor.get_id());
                t.actor = Some(actor);
            }
            Err(e) => {
                let reason = LossReason::ActorFailed(format!("cannot start the template: {e}"));
                self.on_template_exit(myself, WorkerFailure::new(reason))
                    .await;
            }
        }
    }

    pub(super) async fn on_template_ready(
        &mut self,
        myself: &ActorRef<PoolMsg>,
        ready: TemplateReady,
    ) {
        let TemplateReady { generation, pid } = ready;
        let child = self.template_child();
        let accepting = self.scheduler.lock().accepts_workers();
        let Some(t) = self.template.as_mut() else {
            return;
        };
        if t.generation != generation || !accepting {
            return;
        }
        t.pid = Some(pid);
        t.link.set(t.actor.clone());
        self.scheduler.lock().set_template_pid(Some(pid));
        self.supervisor.child_healthy(child);
        self.events.emit(Event::TemplateReady {
            pool: self.name.to_string(),
            pid,
        });
        self.start_all_workers(myself).await;
    }

    /// The template actor stopped or failed: workers spawn meanwhile; the supervisor decides
    /// whether the template comes back.
    pub(super) async fn on_template_exit(
        &mut self,
        myself: &ActorRef<PoolMsg>,
        failure: WorkerFailure,
    ) {
        let child = self.template_child();
        let Some(t) = self.template.as_mut() else {
            return;
        };
        t.link.set(None);
        t.actor = None;
        t.actor_id = None;
        let pid = t.pid.take();
        self.scheduler.lock().set_template_pid(None);
        if !self.scheduler.lock().accepts_workers() {
            self.maybe_stopped(myself);
            return;
        }
        tracing::warn!(pool = %self.name, reason = %failure.reason, "template failed");
        self.events.emit(Event::TemplateExited {
            pool: self.name.to_string(),
            pid,
            reason: failure.reason.clone(),
            stderr_tail: failure.stderr_tail.clone(),
        });
        let decision = if failure.fatal {
            Decision::Escalate {
                restarts: 0,
                within: std::time::Duration::ZERO,
            }
        } else {
            self.supervisor.child_exited(child, ChildExit::Abnormal)
        };
        match decision {
            Decision::Restart { after } => {
                let t = self.template.as_mut().expect("checked above");
                t.generation += 1;
                self.scheduler.lock().count_restart();
                let generation = t.generation;
                myself.send_after(after, move || PoolMsg::RestartTemplate { generation });
            }
            Decision::Leave => {}
            Decision::Escalate { restarts, within } => {
                let reason = if failure.fatal {
                    format!("the template cannot start: {}", failure.reason)
                } else {
                    format!(
                        "{restarts} restarts within {within:?} exceed the restart intensity; \
                         last: template {}",
                        failure.reason
                    )
                };
                return self.fail(reason, failure.stderr_tail);
            }
        }
        // A template that fails before its first handshake does not hold the workers back.
        self.start_all_workers(myself).await;
    }

    pub(super) async fn restart_template(&mut self, myself: &ActorRef<PoolMsg>, generation: u64) {
        let current = self
            .template
            .as_ref()
            .map(|t| (t.generation, t.actor.is_none()));
        if current == Some((generation, true)) && self.scheduler.lock().accepts_workers() {
            self.start_template(myself).await;
        }
    }

    /// Stops the template (shutdown): it holds no state, so it is killed; its actor stops once
    /// the process is reaped, and the pool counts as stopped only then.
    pub(super) fn stop_template(&mut self) -> Option<ActorRef<TemplateMsg>> {
        let t = self.template.as_mut()?;
        t.link.set(None);
        let actor = t.actor.clone()?;
        let _ = actor.cast(TemplateMsg::Shutdown);
        Some(actor)
    }

    /// Kills the template actor at once (the pool failed); its process group dies with it.
    pub(super) fn kill_template(&mut self) {
        if let Some(t) = self.template.as_mut() {
            t.link.set(None);
            if let Some(actor) = t.actor.take() {
                actor.kill();
            }
        }
    }

    pub(super) fn template_stopped(&self) -> bool {
        self.template.as_ref().is_none_or(|t| t.actor_id.is_none())
    }
}
