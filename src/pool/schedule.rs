//! The pool's schedule: every decision about where and when a call runs, as one state machine.
//!
//! It holds the slots, the session registry and the queue, and it is changed by three kinds of
//! events only: a call submitted (by its caller's task), a worker that answered its call (by
//! that worker's reader task), and lifecycle changes (by the pool actor: a worker ready or lost,
//! a restart, shutdown, failure). It never writes to a pipe and never awaits: a decision to run
//! a call on a worker comes back as an [`Assigned`] for the scheduler (`pool/scheduler.rs`) to
//! write once its lock is released. Everything here is deterministic and tested without Python
//! (`schedule/tests.rs`).
//!
//! # Ordering
//!
//! **No call overtakes an earlier one that could have run in its place, and a session's calls
//! are written to a worker in the order they were submitted.** Why it holds:
//!
//! * Every decision is made under the scheduler's one lock, in the order the events reach it; a
//!   call is submitted from its caller's task before the caller's first await, so in the order
//!   the caller started it, and it gets its number (`Job::seq`) then.
//! * *Work conservation*: after every event, no ready, idle worker could run a queued call (a
//!   worker that becomes idle takes the lowest-numbered call it may run at once, in
//!   [`Schedule::take_for`]; a call is queued only when no idle worker may run it). So a call
//!   that finds an idle worker overtakes nothing that worker could have run.
//! * The queue serves calls by number: a worker takes the lowest-numbered call among those
//!   waiting for it and those waiting for any worker; a call routed again (its worker was lost)
//!   goes back to its place, not to the back.
//! * A worker runs one call at a time, and the next call is chosen only once the previous reply
//!   is in, so the calls written to one worker are written in the order they were chosen.
//!
//! A session's calls all go to its home while it holds state there. A stateless session may have
//! calls running on two workers at once; they were chosen in order, and neither sees the other's
//! state (there is none).
//!
//! One known edge: a call is out of the queue between its assignment and its write. If the write
//! finds the worker's link closed (the worker died and its loss is not recorded yet), the call is
//! routed again with its number, but a later call of its session may have run meanwhile — e.g. a
//! context push that made the session hold state on another worker, which the returning call then
//! waits for, behind the push. Only a stateless session's call can be in that window with a later
//! call of its session.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::call::{Affinity, Job};
use crate::error::Error;
use crate::event::{Event, EventBus};
use crate::identity::{LossReason, SlotGen, WorkerId};
use crate::worker::WorkerLink;

use super::queue::{Queue, Queued, Target};
use super::route::{self, Bind, Call, Refusal, Route, Take};
use super::sessions::{Binding, Sessions};
use super::slots::{Slot, SlotStatus};
use super::stats::{Placement, PoolStats, PoolStatus, WorkerStats};

/// A call chosen for a worker: to be written to `at` now.
#[derive(Debug)]
pub(crate) struct Assigned {
    pub(crate) at: SlotGen,
    pub(crate) job: Job,
}

/// Where the pool is in its life.
#[derive(Debug, Clone)]
pub(crate) enum Phase {
    /// Not every worker has been ready yet: calls run on the ready ones or wait for theirs.
    Starting,
    Running,
    /// Shutting down: no new calls; the calls in flight may finish.
    Draining,
    /// Shutting down: the workers are being stopped.
    Stopping,
    /// Gave up: every call is refused with this.
    Failed {
        reason: String,
        stderr_tail: Vec<String>,
    },
    /// The pool actor is gone: every call and every question is answered with this.
    Closed(Error),
}

/// What happens to a slot after its worker is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// A new worker comes (a new generation).
    Restart,
    /// It stays down.
    Stop,
}

/// Counters reported in [`PoolStats`].
#[derive(Debug, Default)]
struct Counters {
    calls: u64,
    restarts: u64,
    saturated: u64,
    queue_timeouts: u64,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Schedule {
    name: Arc<str>,
    affinity: Affinity,
    queue_timeout: Duration,
    phase: Phase,
    slots: Vec<Slot>,
    sessions: Sessions,
    queue: Queue,
    next_seq: u64,
    events: EventBus,
    counters: Counters,
    template_pid: Option<u32>,
    /// Wait for the pool's first readiness.
    ready_waiters: Vec<oneshot::Sender<Result<(), Error>>>,
    /// Wait for every live slot to have a ready worker.
    full_waiters: Vec<oneshot::Sender<Result<(), Error>>>,
    /// When the queue's timer must ring, if it must be armed (read by the scheduler).
    arm_at: Option<Instant>,
    /// Draining and nothing runs any more (read by the scheduler, which tells the pool actor).
    drained: bool,
}

impl Schedule {
    pub(crate) fn new(
        name: Arc<str>,
        size: usize,
        affinity: Affinity,
        max_queue: usize,
        queue_timeout: Duration,
        events: EventBus,
    ) -> Self {
        Schedule {
            name,
            affinity,
            queue_timeout,
            phase: Phase::Starting,
            slots: (0..size).map(|_| Slot::new()).collect(),
            sessions: Sessions::new(size),
            queue: Queue::new(size, max_queue),
            next_seq: 0,
            events,
            counters: Counters::default(),
            template_pid: None,
            ready_waiters: Vec::new(),
            full_waiters: Vec::new(),
            arm_at: None,
            drained: false,
        }
    }

    // ----- calls ---------------------------------------------------------------------------------

    /// A new call: it runs now (returned), waits in the queue, or is answered with an error.
    pub(crate) fn submit(&mut self, mut job: Job) -> Option<Assigned> {
        self.next_seq += 1;
        job.seq = self.next_seq;
        if let Err(e) = self.admission() {
            job.reply.send(Err(e));
            return None;
        }
        self.place(job, None)
    }

    /// The call in flight on `at` was answered: the worker is idle, and takes the next call it
    /// may run, if any.
    pub(crate) fn next_call(&mut self, at: SlotGen) -> Option<Job> {
        let slot = self.slots.get_mut(at.slot)?;
        if slot.generation != at.generation {
            return None;
        }
        slot.busy = false;
        self.check_drained();
        self.take_for(at.slot).map(|a| a.job)
    }

    /// `job`, assigned to `at`, could not be written: that worker's link is closed. No call is
    /// written to it any more; `job` is routed again, keeping its place (its number).
    pub(crate) fn unwritten(&mut self, at: SlotGen, job: Job) -> Option<Assigned> {
        if let Some(slot) = self.slots.get_mut(at.slot) {
            if slot.generation == at.generation {
                slot.busy = false;
                slot.closing = true;
            }
        }
        self.counters.calls -= 1; // counted when it was assigned: it was never written
        self.check_drained();
        if let Err(e) = self.admission() {
            job.reply.send(Err(e));
            return None;
        }
        self.place(job, Some(Instant::now()))
    }

    /// The session whose binding routes `job`: none for a call outside any session, for an
    /// orphan, and for a call of an earlier incarnation of its session (made before a reset),
    /// which becomes an orphan: it runs where it can and never changes the current incarnation.
    fn routing_session(&mut self, job: &mut Job) -> Option<Arc<str>> {
        let session = job.session.clone().filter(|_| !job.orphan)?;
        match self.sessions.incarnation(&session) {
            Some(current) if current > job.incarnation => {
                job.orphan = true;
                return None;
            }
            Some(current) if current < job.incarnation => {
                // Left behind by a handle that is gone: the newer incarnation replaces it.
                self.sessions.remove(&session, current);
            }
            _ => {}
        }
        Some(session)
    }

    /// Routes `job` and applies the decision. `since` is when a call routed again started
    /// waiting (it was admitted already: the queue's capacity does not apply to it again, nor
    /// to a detached call: a release must not be lost to a full queue). A refused call changes
    /// nothing, not even where its session is placed.
    fn place(&mut self, mut job: Job, since: Option<Instant>) -> Option<Assigned> {
        let session = self.routing_session(&mut job);
        let call = Call {
            in_session: session.is_some(),
            pin: job.pin,
            affinity: job.affinity.unwrap_or(self.affinity),
            keeps_state: job.keeps_state && session.is_some(),
        };
        let binding = session.as_deref().and_then(|s| self.sessions.get(s));
        let pushes = call.keeps_state
            && matches!(
                binding,
                Some(Binding::Bound {
                    stateful: false,
                    ..
                })
            );
        let counts = self.sessions.counts();
        let mut decision = route::route(&self.slots, counts, self.affinity, binding, &call);
        if let Route::Refuse(refusal) = decision.route {
            let e = self.refusal_error(refusal, job.session.as_deref());
            job.reply.send(Err(e));
            return None;
        }
        let admitted = since.is_some() || job.detached;
        if !matches!(decision.route, Route::Run(_)) && !admitted && !self.has_room() {
            self.saturated(job);
            return None;
        }
        let mut woken = None;
        if let (Some(s), true) = (&session, pushes) {
            // A context push makes a stateless session hold state: its earlier calls wait for its
            // worker from now on, and the push never overtakes them.
            match job.pin {
                None => self.sessions.mark_stateful(s),
                Some(at) => self.holds_state_at(s, at),
            }
            woken = self.gather(s).and_then(|home| self.take_for(home));
            if let (Some(a), Route::Run(_)) = (&woken, &decision.route) {
                decision.route = Route::Wait(a.at.slot);
            }
        }
        if let (Some(s), Bind::To(slot)) = (&session, decision.bind) {
            let stateful = self.affinity.is_strict() || call.keeps_state || job.pin.is_some();
            self.bind(s, job.incarnation, slot, stateful);
        }
        let since = since.unwrap_or_else(Instant::now);
        match decision.route {
            Route::Run(slot) => return Some(self.assign(slot, job)),
            Route::Wait(slot) => self.enqueue(Target::Slot(slot), job, since),
            Route::WaitAny => self.enqueue(Target::Any, job, since),
            Route::Refuse(_) => unreachable!("answered above"),
        }
        woken
    }

    fn bind(&mut self, session: &Arc<str>, incarnation: u64, slot: usize, stateful: bool) {
        let home = self.slots[slot].at(slot);
        self.sessions.bind(session, incarnation, home, stateful);
    }

    /// Counts `slot`'s worker busy with `job`.
    fn assign(&mut self, slot: usize, job: Job) -> Assigned {
        let s = &mut self.slots[slot];
        debug_assert!(s.is_idle(), "assigned to a worker that is not idle");
        s.busy = true;
        self.counters.calls += 1;
        Assigned {
            at: s.at(slot),
            job,
        }
    }

    /// Whether the queue can take one more call (calls whose caller gave up still count where
    /// they wait: they are dropped first).
    fn has_room(&mut self) -> bool {
        if self.queue.is_full() {
            self.queue.purge_abandoned();
        }
        !self.queue.is_full()
    }

    fn enqueue(&mut self, target: Target, job: Job, since: Instant) {
        if self.queue.is_empty() {
            self.arm_at = Some(since + self.queue_timeout);
        }
        self.queue.insert(target, Queued { job, since });
    }

    fn saturated(&mut self, job: Job) {
        self.counters.saturated += 1;
        let capacity = self.queue.capacity();
        self.events.emit(Event::PoolSaturated {
            pool: self.name.to_string(),
            capacity,
        });
        job.reply.send(Err(Error::PoolSaturated {
            pool: self.name.to_string(),
            capacity,
        }));
    }

    /// `slot` may have become idle: it takes the lowest-numbered call it may run, skipping calls
    /// nobody waits for. A call that waited for any worker is checked again against its session
    /// (`route::take`): it may have lost its state, come to hold state elsewhere, or move here.
    fn take_for(&mut self, slot: usize) -> Option<Assigned> {
        while self.slots[slot].is_idle() {
            let (Queued { mut job, since }, from) = self.queue.pop_for(slot)?;
            if job.abandoned() {
                continue;
            }
            let session = match from {
                Target::Any => self.routing_session(&mut job),
                Target::Slot(_) => None,
            };
            if let Some(session) = session {
                let binding = self.sessions.get(&session);
                match route::take(&self.slots, binding, slot) {
                    Take::Refuse(refusal) => {
                        job.reply
                            .send(Err(self.refusal_error(refusal, Some(&session))));
                        continue;
                    }
                    Take::Requeue(home) => {
                        self.queue.insert(Target::Slot(home), Queued { job, since });
                        continue;
                    }
                    Take::Run { place: true } => self.bind(&session, job.incarnation, slot, false),
                    Take::Run { place: false } => {}
                }
            }
            return Some(self.assign(slot, job));
        }
        None
    }

    /// A reply of `session` (made in its `incarnation`) carried refs issued by `at`: the session
    /// holds state there. If that makes its worker take a call of it that waited, that call is
    /// returned, to write now. A reply of an earlier incarnation changes nothing.
    pub(crate) fn note_refs(
        &mut self,
        session: &Arc<str>,
        incarnation: u64,
        at: SlotGen,
    ) -> Option<Assigned> {
        if self.sessions.incarnation(session) != Some(incarnation) || !self.accepts_workers() {
            return None;
        }
        let before = self.sessions.get(session).cloned();
        self.holds_state_at(session, at);
        if self.sessions.get(session) == before.as_ref() {
            return None;
        }
        let home = self.gather(session)?;
        self.take_for(home)
    }

    /// The binding side of [`Schedule::note_refs`]: the session holds state on `at`.
    fn holds_state_at(&mut self, session: &Arc<str>, at: SlotGen) {
        let live =
            (self.slots.get(at.slot)).is_some_and(|s| s.generation == at.generation && s.is_live());
        let incarnation = self.sessions.incarnation(session).unwrap_or_default();
        match self.sessions.get(session) {
            None | Some(Binding::Lost { .. }) => {}
            Some(_) if !live => {
                // The worker that issued the refs is gone already, and the session was not told
                // (it was not bound there then): it lost state now.
                let reason = (self.slots.get(at.slot))
                    .and_then(|s| s.loss_of(at.generation))
                    .unwrap_or(LossReason::PoolStopped);
                self.lose(session, at, reason);
            }
            Some(Binding::Bound { home, .. }) if *home == at => {
                self.sessions.mark_stateful(session)
            }
            // It moved (or was unplaced) while the call that made the refs ran: its state is
            // where the refs are.
            Some(Binding::Bound {
                stateful: false, ..
            })
            | Some(Binding::Unplaced) => self.bind(session, incarnation, at.slot, true),
            Some(Binding::Bound { .. }) => self.sessions.hold_also(session, at),
        }
    }

    /// A session came to hold state on its home: its waiting calls that carry no refs wait for
    /// that worker from now on, in their places. Returns its home slot.
    fn gather(&mut self, session: &str) -> Option<usize> {
        let Some(Binding::Bound { home, .. }) = self.sessions.get(session) else {
            return None;
        };
        let home = home.slot;
        let mine = |j: &Job| j.session.as_deref() == Some(session) && j.pin.is_none() && !j.orphan;
        for q in self.queue.take_where(mine) {
            self.queue.insert(Target::Slot(home), q);
        }
        Some(home)
    }

    /// `session` lost its state with `worker`: it is told, and its waiting calls are refused (a
    /// lost session runs nothing until it is reset).
    fn lose(&mut self, session: &Arc<str>, worker: SlotGen, reason: LossReason) {
        self.sessions.lose(session, worker, reason.clone());
        self.emit_lost(session, worker, &reason);
        self.refuse_queued(std::slice::from_ref(session));
    }

    /// Answers the waiting calls of `lost` sessions with `SessionWorkerUnavailable`.
    fn refuse_queued(&mut self, lost: &[Arc<str>]) {
        let losses: HashMap<&str, Refusal> = (lost.iter())
            .filter_map(|s| match self.sessions.get(s) {
                Some(Binding::Lost { worker, reason }) => {
                    let refusal = Refusal::Lost {
                        worker: *worker,
                        reason: reason.clone(),
                    };
                    Some((&**s, refusal))
                }
                _ => None,
            })
            .collect();
        let of_lost =
            |j: &Job| !j.orphan && (j.session.as_deref()).is_some_and(|s| losses.contains_key(s));
        for Queued { job, .. } in self.queue.take_where(of_lost) {
            let session = job.session.as_deref().expect("taken for its session");
            let e = self.refusal_error(losses[session].clone(), Some(session));
            job.reply.send(Err(e));
        }
    }

    /// Forgets `session` (its handle, of `incarnation`, was dropped or reset), unless a newer
    /// incarnation exists. If it held state on live workers, `release` makes a detached
    /// `RELEASE` of the session for each (its home and any other worker holding its refs), so
    /// that a session placed afresh never finds its old contexts; they are returned if they can
    /// run now. Its calls still waiting become orphans: they run where that incarnation's state
    /// is (or learn that it is gone), and never touch the next incarnation.
    pub(crate) fn forget(
        &mut self,
        session: &str,
        incarnation: u64,
        mut release: impl FnMut() -> Job,
    ) -> Vec<Assigned> {
        let Some(binding) = self.sessions.remove(session, incarnation) else {
            return Vec::new();
        };
        let Binding::Bound {
            home,
            stateful,
            also,
        } = binding
        else {
            self.orphan_queued(session, incarnation, None);
            return self.wake_idle();
        };
        self.orphan_queued(session, incarnation, stateful.then_some(home));
        // Orphans that may run anywhere now wait for any worker: an idle one takes them.
        let mut runnable = self.wake_idle();
        if !stateful || self.admission().is_err() {
            return runnable;
        }
        for at in std::iter::once(home).chain(also) {
            let mut job = release();
            self.next_seq += 1;
            job.seq = self.next_seq;
            job.pin = Some(at);
            job.orphan = true;
            // It waits for the worker whatever the pool's affinity (never `WorkerBusy`).
            job.affinity = Some(Affinity::StrictQueue);
            runnable.extend(self.place(job, None));
        }
        runnable
    }

    /// Every idle worker takes the call it may run, if any (after calls moved between FIFOs).
    fn wake_idle(&mut self) -> Vec<Assigned> {
        (0..self.slots.len())
            .filter_map(|slot| self.take_for(slot))
            .collect()
    }

    /// Makes the waiting calls of `session`'s incarnation `incarnation` (and earlier) orphans,
    /// pinned to `home` when that incarnation held state there.
    fn orphan_queued(&mut self, session: &str, incarnation: u64, home: Option<SlotGen>) {
        let mine = |j: &Job| {
            j.session.as_deref() == Some(session) && !j.orphan && j.incarnation <= incarnation
        };
        for mut q in self.queue.take_where(mine) {
            q.job.orphan = true;
            if let Some(home) = home {
                q.job.pin.get_or_insert(home);
            }
            let target = match q.job.pin {
                Some(pin) => Target::Slot(pin.slot),
                None => Target::Any,
            };
            self.queue.insert(target, q);
        }
    }

    /// The queue's timer rang: answers the calls that waited `queue_timeout` with
    /// `Error::QueueTimeout` (they never run) and asks to be rung for the oldest left.
    pub(crate) fn expire(&mut self, now: Instant) {
        for q in self.queue.expire(now, self.queue_timeout) {
            if q.job.detached {
                // A release nobody waits for never times out: put it back in its place.
                let target = q.job.pin.map_or(Target::Any, |p| Target::Slot(p.slot));
                self.queue.insert(target, Queued { since: now, ..q });
                continue;
            }
            self.counters.queue_timeouts += 1;
            q.job.reply.send(Err(Error::QueueTimeout {
                pool: self.name.to_string(),
                waited: now.duration_since(q.since),
            }));
        }
        self.arm_at = self.queue.oldest().map(|t| t + self.queue_timeout);
    }

    /// Where the queue's timer must ring now, if it must be armed.
    pub(crate) fn take_arm(&mut self) -> Option<Instant> {
        self.arm_at.take()
    }

    /// Whether the pool has just drained (shutting down, and nothing runs).
    pub(crate) fn take_drained(&mut self) -> bool {
        std::mem::take(&mut self.drained)
    }

    /// The link of `at`'s worker, to write a call assigned to it.
    pub(crate) fn link(&self, at: SlotGen) -> Option<Arc<WorkerLink>> {
        let slot = self.slots.get(at.slot)?;
        (slot.generation == at.generation)
            .then(|| slot.link.clone())
            .flatten()
    }

    // ----- workers -------------------------------------------------------------------------------

    /// The worker id of `slot`'s current generation.
    pub(crate) fn worker_id(&self, slot: usize) -> WorkerId {
        WorkerId::new(self.name.as_ref(), slot, self.slots[slot].generation)
    }

    /// Whether `slot`'s generation `generation` waits for its (re)start.
    pub(crate) fn awaits_start(&self, slot: usize, generation: u64) -> bool {
        let s = &self.slots[slot];
        s.generation == generation && s.status == SlotStatus::Restarting && self.accepts_workers()
    }

    /// A worker process was started for `slot` (its handshake is to come).
    pub(crate) fn worker_starting(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        s.status = SlotStatus::Starting;
        s.link = None;
        s.pid = None;
        s.busy = false;
        s.closing = false;
    }

    /// A worker finished its handshake: it serves from now on through `link` (its call path;
    /// `None` only in tests), starting with the oldest call waiting for it (returned). The `bool`
    /// is `false` if the worker is stale (a newer generation, or the pool stops), and nothing
    /// changed.
    pub(crate) fn worker_ready(
        &mut self,
        at: SlotGen,
        pid: u32,
        forked: bool,
        python: &str,
        link: Option<Arc<WorkerLink>>,
    ) -> (bool, Option<Assigned>) {
        let current = (self.slots.get(at.slot))
            .is_some_and(|s| s.generation == at.generation && s.status == SlotStatus::Starting);
        if !current || !self.accepts_workers() {
            return (false, None);
        }
        let s = &mut self.slots[at.slot];
        s.status = SlotStatus::Ready;
        s.link = link;
        s.pid = Some(pid);
        s.forked = forked;
        s.python = Some(python.to_string());
        let worker = self.worker_id(at.slot);
        self.events.emit(if at.generation == 0 {
            Event::WorkerStarted { worker, pid }
        } else {
            Event::WorkerRestarted { worker, pid }
        });
        self.maybe_running();
        (true, self.take_for(at.slot))
    }

    /// `slot`'s worker is gone (it failed, or stopped without being asked to). While the pool
    /// serves, that is a loss: `WorkerExited`, then one `SessionWorkerUnavailable` per session
    /// whose state or binding was there (sorted by session id), and the calls waiting for that
    /// worker are routed again (a lost session's are refused). While it shuts down, it is only
    /// `WorkerExited`. Returns the calls that can run at once elsewhere.
    pub(crate) fn worker_lost(
        &mut self,
        slot: usize,
        reason: LossReason,
        stderr_tail: Vec<String>,
        next: Next,
    ) -> Vec<Assigned> {
        let serving = self.accepts_workers();
        self.record_loss(slot, reason, stderr_tail, serving);
        let s = &mut self.slots[slot];
        match next {
            Next::Restart if serving => {
                s.generation += 1;
                s.status = SlotStatus::Restarting;
                self.counters.restarts += 1;
            }
            _ => {
                s.status = SlotStatus::Stopped;
                // The live slots left may all be ready: a pool of fewer workers at full strength.
                self.maybe_running();
            }
        }
        // The calls waiting for that worker never ran: route them again, in their places.
        let mut runnable = Vec::new();
        for Queued { job, since } in self.queue.take_slot(slot) {
            let assigned = match self.admission() {
                Ok(()) => self.place(job, Some(since)),
                Err(e) => {
                    job.reply.send(Err(e));
                    None
                }
            };
            runnable.extend(assigned);
        }
        runnable
    }

    /// `WorkerExited` for `slot`'s current worker, then (if `tell`) the sessions it held.
    fn record_loss(
        &mut self,
        slot: usize,
        reason: LossReason,
        stderr_tail: Vec<String>,
        tell: bool,
    ) {
        let at = self.slots[slot].at(slot);
        let worker = self.worker_id(slot);
        let s = &mut self.slots[slot];
        let pid = s.pid.take();
        s.link = None;
        s.busy = false;
        s.closing = false;
        s.record_loss(at.generation, reason.clone());
        self.check_drained();
        self.events.emit(Event::WorkerExited {
            worker,
            pid,
            reason: reason.clone(),
            stderr_tail,
        });
        if tell {
            let mut lost = Vec::new();
            for told in self.sessions.worker_lost(at, &reason) {
                self.emit_lost(&told.session, at, &reason);
                if told.lost {
                    lost.push(told.session);
                }
            }
            // Their calls waiting elsewhere (for any worker, or pinned to another one) never run.
            self.refuse_queued(&lost);
        }
    }

    /// The template was restarted (its restarts count with the workers').
    pub(crate) fn count_restart(&mut self) {
        self.counters.restarts += 1;
    }

    /// `slot`'s worker stopped because the pool shut down: `WorkerStopped`, nothing is lost.
    pub(crate) fn worker_stopped(&mut self, slot: usize) {
        let worker = self.worker_id(slot);
        let s = &mut self.slots[slot];
        let pid = s.pid.take();
        s.link = None;
        s.busy = false;
        s.status = SlotStatus::Stopped;
        self.check_drained();
        self.events.emit(Event::WorkerStopped { worker, pid });
    }

    /// Draining, and no call runs any more: the pool actor stops the workers now rather than
    /// after the drain grace (read by the scheduler, [`Schedule::take_drained`]).
    fn check_drained(&mut self) {
        if matches!(self.phase, Phase::Draining) && !self.slots.iter().any(|s| s.busy) {
            self.drained = true;
        }
    }

    /// Every slot's worker is gone for good.
    pub(crate) fn all_stopped(&self) -> bool {
        !self.slots.iter().any(Slot::is_live)
    }

    fn emit_lost(&self, session: &str, at: SlotGen, reason: &LossReason) {
        self.events.emit(Event::SessionWorkerUnavailable {
            pool: self.name.to_string(),
            session: session.to_string(),
            slot: at.slot,
            generation: at.generation,
            reason: reason.clone(),
        });
    }

    pub(crate) fn set_template_pid(&mut self, pid: Option<u32>) {
        self.template_pid = pid;
    }

    // ----- the pool's life -----------------------------------------------------------------------

    /// Whether workers may be (re)started and calls admitted.
    pub(crate) fn accepts_workers(&self) -> bool {
        matches!(self.phase, Phase::Starting | Phase::Running)
    }

    pub(crate) fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Whether calls are admitted in the current phase, or the error they get.
    fn admission(&self) -> Result<(), Error> {
        match &self.phase {
            Phase::Starting | Phase::Running => Ok(()),
            Phase::Draining | Phase::Stopping => Err(self.shutting_down()),
            Phase::Failed {
                reason,
                stderr_tail,
            } => Err(Error::PoolFailed {
                pool: self.name.to_string(),
                reason: reason.clone(),
                stderr_tail: stderr_tail.clone(),
            }),
            Phase::Closed(e) => Err(e.clone()),
        }
    }

    /// `Err` once the pool actor is gone: the pool answers nothing any more.
    pub(crate) fn open(&self) -> Result<(), Error> {
        match &self.phase {
            Phase::Closed(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    fn shutting_down(&self) -> Error {
        Error::ShuttingDown {
            pool: self.name.to_string(),
        }
    }

    fn refusal_error(&self, refusal: Refusal, session: Option<&str>) -> Error {
        let worker = |at: SlotGen| WorkerId::new(self.name.as_ref(), at.slot, at.generation);
        match refusal {
            Refusal::Lost { worker: at, reason } => Error::SessionWorkerUnavailable {
                session: session.unwrap_or_default().to_string(),
                worker: worker(at),
                reason,
            },
            Refusal::Busy(at) => Error::WorkerBusy {
                session: session.unwrap_or_default().to_string(),
                worker: worker(at),
            },
            Refusal::UnknownWorker(at) => Error::InvalidRef(format!(
                "pool {} never had worker {}",
                self.name,
                worker(at)
            )),
            Refusal::NoWorker => Error::PoolFailed {
                pool: self.name.to_string(),
                reason: "every worker stopped".into(),
                stderr_tail: Vec::new(),
            },
        }
    }

    /// Leaves `Starting` once every slot that is still supervised has a ready worker, and
    /// answers the waiters of full strength when the pool is back to it.
    fn maybe_running(&mut self) {
        if matches!(self.phase, Phase::Starting) && self.at_full_strength() {
            self.phase = Phase::Running;
            self.events.emit(Event::PoolReady {
                pool: self.name.to_string(),
            });
            for waiter in self.ready_waiters.drain(..) {
                let _ = waiter.send(Ok(()));
            }
        }
        self.maybe_full_strength();
    }

    fn at_full_strength(&self) -> bool {
        let mut live = self.slots.iter().filter(|s| s.is_live()).peekable();
        live.peek().is_some() && live.all(Slot::is_ready)
    }

    fn maybe_full_strength(&mut self) {
        if matches!(self.phase, Phase::Running) && self.at_full_strength() {
            for waiter in self.full_waiters.drain(..) {
                let _ = waiter.send(Ok(()));
            }
        }
    }

    /// Answers `waiter` once the pool has been ready once (now, if it has).
    pub(crate) fn wait_ready(&mut self, waiter: oneshot::Sender<Result<(), Error>>) {
        match self.phase {
            Phase::Starting => self.ready_waiters.push(waiter),
            _ => {
                let _ = waiter.send(self.admission());
            }
        }
    }

    /// Answers `waiter` once every live slot has a ready worker (now, if so).
    pub(crate) fn wait_full_strength(&mut self, waiter: oneshot::Sender<Result<(), Error>>) {
        match self.admission() {
            Err(e) => {
                let _ = waiter.send(Err(e));
            }
            Ok(()) => {
                self.full_waiters.push(waiter);
                self.maybe_full_strength();
            }
        }
    }

    /// Starts a graceful shutdown: no call is admitted any more, the queued ones are answered
    /// `ShuttingDown`, the calls in flight may finish. Returns whether none is in flight.
    pub(crate) fn begin_shutdown(&mut self) -> bool {
        if matches!(
            self.phase,
            Phase::Draining | Phase::Stopping | Phase::Closed(_)
        ) {
            return false;
        }
        let failed = matches!(self.phase, Phase::Failed { .. });
        self.phase = Phase::Draining;
        self.answer_all(self.shutting_down());
        failed || !self.slots.iter().any(|s| s.busy)
    }

    /// The workers are being stopped.
    pub(crate) fn stopping(&mut self) {
        self.phase = Phase::Stopping;
    }

    /// Gives up: every worker is lost (every session bound to one is told), every waiting call
    /// and waiter answered with `Error::PoolFailed`.
    pub(crate) fn fail(&mut self, reason: String, stderr_tail: Vec<String>) -> Error {
        let serving = self.accepts_workers();
        for slot in 0..self.slots.len() {
            let status = self.slots[slot].status;
            if matches!(status, SlotStatus::Ready | SlotStatus::Starting) {
                self.record_loss(slot, LossReason::PoolStopped, Vec::new(), serving);
            }
            self.slots[slot].status = SlotStatus::Stopped;
        }
        self.phase = Phase::Failed {
            reason: reason.clone(),
            stderr_tail: stderr_tail.clone(),
        };
        self.events.emit(Event::PoolFailed {
            pool: self.name.to_string(),
            reason: reason.clone(),
            stderr_tail: stderr_tail.clone(),
        });
        let err = Error::PoolFailed {
            pool: self.name.to_string(),
            reason,
            stderr_tail,
        };
        self.answer_all(err.clone());
        err
    }

    /// The pool actor is gone (stopped or killed from outside, or after shutdown): every call
    /// still waiting is answered with `error`, and no call is admitted any more.
    pub(crate) fn close(&mut self, error: Error) {
        self.phase = Phase::Closed(error.clone());
        for s in &mut self.slots {
            s.link = None;
        }
        self.answer_all(error);
    }

    fn answer_all(&mut self, error: Error) {
        for q in self.queue.drain() {
            q.job.reply.send(Err(error.clone()));
        }
        for waiter in self
            .ready_waiters
            .drain(..)
            .chain(self.full_waiters.drain(..))
        {
            let _ = waiter.send(Err(error.clone()));
        }
    }

    // ----- views ---------------------------------------------------------------------------------

    pub(crate) fn placement(&self, session: &str) -> Option<Placement> {
        match self.sessions.get(session)? {
            Binding::Unplaced => None,
            Binding::Bound { home, stateful, .. } => Some(Placement {
                worker: WorkerId::new(self.name.as_ref(), home.slot, home.generation),
                pid: self.slots[home.slot].pid,
                holds_state: *stateful,
                lost: None,
            }),
            Binding::Lost { worker, reason } => Some(Placement {
                worker: WorkerId::new(self.name.as_ref(), worker.slot, worker.generation),
                pid: None,
                holds_state: true,
                lost: Some(reason.clone()),
            }),
        }
    }

    pub(crate) fn stats(&self) -> PoolStats {
        PoolStats {
            name: self.name.to_string(),
            status: match &self.phase {
                Phase::Starting => PoolStatus::Starting,
                Phase::Running => PoolStatus::Running,
                Phase::Draining | Phase::Stopping | Phase::Closed(_) => PoolStatus::Stopping,
                Phase::Failed { reason, .. } => PoolStatus::Failed {
                    reason: reason.clone(),
                },
            },
            workers: (self.slots.iter().enumerate())
                .map(|(slot, s)| WorkerStats {
                    slot,
                    generation: s.generation,
                    pid: s.pid,
                    ready: s.status == SlotStatus::Ready,
                    busy: s.busy,
                    sessions: self.sessions.counts()[slot],
                    python: s.python.clone(),
                    forked: s.forked,
                })
                .collect(),
            queued: self.queue.len(),
            sessions: self.sessions.len(),
            restarts: self.counters.restarts,
            saturated: self.counters.saturated,
            queue_timeouts: self.counters.queue_timeouts,
            template_pid: self.template_pid,
            calls: self.counters.calls,
        }
    }
}

#[cfg(test)]
mod tests;
