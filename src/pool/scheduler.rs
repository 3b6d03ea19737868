//! The scheduler: the pool's [`Schedule`] behind one lock, and the only code that writes calls
//! to workers.
//!
//! Callers submit their calls here from their own task, and each worker's reader task asks here
//! for its next call when one is answered ([`Dispatch`]): no actor message on the call path. The
//! pool actor drives the lifecycle through the same lock. A decision is made under the lock; the
//! call it assigns is written to the worker's pipe once the lock is released, so one worker's
//! write never holds up decisions for the others (the schedule's module docs say why the order
//! still holds).

use std::sync::{Arc, Mutex, MutexGuard};

use ractor::ActorRef;
use tokio::time::Instant;

use crate::alarm::Alarm;
use crate::call::Job;
use crate::identity::SlotGen;
use crate::worker::{Dispatch, WorkerLink};

use super::schedule::{Assigned, Schedule};
use super::PoolMsg;

/// See the module docs.
pub(crate) struct Scheduler {
    schedule: Mutex<Schedule>,
    /// Rings when the oldest queued call reaches its queue timeout (the pool actor expires it).
    queue_alarm: Alarm,
    /// The pool actor, told when a draining pool has nothing running any more.
    pool: ActorRef<PoolMsg>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

/// The schedule, locked; dropping it arms the queue's timer and tells the pool actor that it
/// drained, when the schedule asks for either.
pub(crate) struct Locked<'a> {
    guard: MutexGuard<'a, Schedule>,
    scheduler: &'a Scheduler,
}

impl std::ops::Deref for Locked<'_> {
    type Target = Schedule;
    fn deref(&self) -> &Schedule {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Schedule {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(at) = self.guard.take_arm() {
            self.scheduler.queue_alarm.arm(at);
        }
        if self.guard.take_drained() {
            let _ = self.scheduler.pool.cast(PoolMsg::Drained);
        }
    }
}

impl Scheduler {
    pub(crate) fn new(schedule: Schedule, queue_alarm: Alarm, pool: ActorRef<PoolMsg>) -> Self {
        Scheduler {
            schedule: Mutex::new(schedule),
            queue_alarm,
            pool,
        }
    }

    /// Locks the schedule.
    pub(crate) fn lock(&self) -> Locked<'_> {
        Locked {
            // A panic under the lock (a pyvisor bug) may leave a step half done; carrying on is
            // still better than poisoning every caller of the pool for good.
            guard: self.schedule.lock().unwrap_or_else(|e| e.into_inner()),
            scheduler: self,
        }
    }

    /// Runs one step of the schedule under the lock, then, with the lock released, writes the
    /// calls it assigned (one, usually, or none).
    pub(crate) fn step<A: IntoIterator<Item = Assigned>>(
        &self,
        step: impl FnOnce(&mut Schedule) -> A,
    ) {
        let writes: Vec<_> = {
            let mut schedule = self.lock();
            let assigned = step(&mut schedule);
            (assigned.into_iter())
                .filter_map(|a| Self::linked(&mut schedule, a))
                .collect()
        };
        for (link, job) in writes {
            link.write(job);
        }
    }

    /// Submits a call: it is written to a worker now, queued, or answered with an error.
    pub(crate) fn submit(&self, job: Job) {
        self.step(|schedule| schedule.submit(job));
    }

    /// The link to write an assigned call through, found under the same lock as the decision. A
    /// ready worker always has one; if it had none, the call is treated as unwritten (routed
    /// again, and that worker gets no more calls).
    fn linked(schedule: &mut Schedule, mut a: Assigned) -> Option<(Arc<WorkerLink>, Job)> {
        loop {
            match schedule.link(a.at) {
                Some(link) => return Some((link, a.job)),
                None => a = schedule.unwritten(a.at, a.job)?,
            }
        }
    }

    /// The queue's timer rang.
    pub(crate) fn expire_queue(&self) {
        self.lock().expire(Instant::now());
    }
}

impl Dispatch for Scheduler {
    fn next_call(&self, worker: SlotGen) -> Option<Job> {
        self.lock().next_call(worker)
    }

    fn unwritten(&self, worker: SlotGen, job: Job) -> Option<(Arc<WorkerLink>, Job)> {
        let mut schedule = self.lock();
        let assigned = schedule.unwritten(worker, job)?;
        Self::linked(&mut schedule, assigned)
    }
}
