//! Calls waiting at a busy worker: the link's own queue, drained by the reader task.
//!
//! A session whose worker is busy hands its call to the worker's wait list instead of the pool
//! actor, where the pool would only have queued it for that same worker anyway (strict-queue
//! affinity, or hint affinity in a one-worker pool). When the call in flight is answered, the
//! reader task writes the oldest waiting call at once: no actor message either way. The list has
//! the pool queue's rules: `max_queue` bounds the pool's queue and every wait list together (the
//! gate counts the waiting calls), and a call that waits `queue_timeout` is answered with
//! [`Error::QueueTimeout`](crate::Error::QueueTimeout) and never runs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::job::Job;
use super::link::DirectGate;
use crate::pool::Affinity;

/// One waiting call and what the pool needs to route it again if its worker is lost.
#[derive(Debug)]
pub(crate) struct Waiting {
    pub(crate) job: Job,
    pub(crate) affinity: Affinity,
    pub(crate) since: Instant,
}

/// The bounded FIFO of calls waiting at one worker.
#[derive(Debug)]
pub(super) struct WaitList {
    items: VecDeque<Waiting>,
    /// Counts the calls of every wait list of the pool (see [`DirectGate::waiting`]).
    gate: Arc<DirectGate>,
    capacity: usize,
    timeout: Duration,
}

impl WaitList {
    pub(super) fn new(gate: Arc<DirectGate>, capacity: usize, timeout: Duration) -> Self {
        WaitList {
            items: VecDeque::new(),
            gate,
            capacity,
            timeout,
        }
    }

    /// Adds `job` at the back. `Ok(Some(expiry))` when it is the only one (the timer must wake
    /// then); gives the job back when the pool's capacity is used up.
    pub(super) fn push(&mut self, job: Job, affinity: Affinity) -> Result<Option<Instant>, Job> {
        if !self.gate.reserve_wait(self.capacity) {
            self.drop_abandoned();
            if !self.gate.reserve_wait(self.capacity) {
                return Err(job);
            }
        }
        let since = Instant::now();
        self.items.push_back(Waiting {
            job,
            affinity,
            since,
        });
        Ok((self.items.len() == 1).then(|| since + self.timeout))
    }

    /// Drops the calls whose caller gave up: they count against the pool's capacity until then.
    pub(super) fn drop_abandoned(&mut self) {
        let before = self.items.len();
        self.items.retain(|w| !w.job.abandoned());
        self.gate.release_wait(before - self.items.len());
    }

    /// The oldest call somebody still waits for; calls whose caller gave up are dropped.
    pub(super) fn pop(&mut self) -> Option<Waiting> {
        while let Some(w) = self.items.pop_front() {
            self.gate.release_wait(1);
            if !w.job.abandoned() {
                return Some(w);
            }
        }
        None
    }

    /// Puts back a call [`WaitList::pop`] gave that could not be written after all.
    pub(super) fn put_back(&mut self, waiting: Waiting) {
        self.gate.restore_wait();
        self.items.push_front(waiting);
    }

    /// Removes the calls that have waited `timeout` at `now`, and tells when the oldest left
    /// expires.
    pub(super) fn expire(&mut self, now: Instant) -> (Vec<Waiting>, Option<Instant>) {
        let stale = self
            .items
            .iter()
            .take_while(|w| w.since + self.timeout <= now)
            .count();
        let expired = self.items.drain(..stale).collect();
        self.gate.release_wait(stale);
        (expired, self.items.front().map(|w| w.since + self.timeout))
    }

    /// Every waiting call, oldest first.
    pub(super) fn take_all(&mut self) -> Vec<Waiting> {
        self.gate.release_wait(self.items.len());
        self.items.drain(..).collect()
    }
}
