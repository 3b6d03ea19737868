use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::pool::Affinity;
use crate::worker::Job;

/// A call waiting for a worker.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) job: Job,
    pub(crate) enqueued: Instant,
    /// `Some(slot)`: only that slot may run it (strict affinity).
    pub(crate) pin: Option<usize>,
    pub(crate) affinity: Affinity,
}

/// The pool's bounded FIFO of waiting calls.
#[derive(Debug)]
pub(crate) struct Queue {
    items: VecDeque<Queued>,
    capacity: usize,
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Self {
        Queue {
            items: VecDeque::new(),
            capacity,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues a job; gives it back when the queue is full, counting the `elsewhere` calls that
    /// wait at their workers (the capacity bounds both together).
    pub(crate) fn push(
        &mut self,
        job: Job,
        pin: Option<usize>,
        affinity: Affinity,
        elsewhere: usize,
    ) -> Result<(), Job> {
        self.items.retain(|q| !q.job.abandoned());
        if self.items.len() + elsewhere >= self.capacity {
            return Err(job);
        }
        self.items.push_back(Queued {
            job,
            enqueued: Instant::now(),
            pin,
            affinity,
        });
        Ok(())
    }

    /// Queues a job at the front with its own queueing time, over the capacity: a call that was
    /// already counted, waiting at a worker that was lost (`PoolState::readmit`).
    pub(crate) fn push_front(
        &mut self,
        job: Job,
        pin: Option<usize>,
        affinity: Affinity,
        enqueued: Instant,
    ) {
        self.items.push_front(Queued {
            job,
            enqueued,
            pin,
            affinity,
        });
    }

    /// Puts back a job taken with [`Queue::take_for`] that could not run after all, at the
    /// front, keeping its place and its queueing time.
    pub(crate) fn put_back(&mut self, queued: Queued) {
        self.items.push_front(queued);
    }

    /// The oldest job `slot` may run. Jobs whose caller gave up are dropped on the way.
    pub(crate) fn take_for(&mut self, slot: usize) -> Option<Queued> {
        self.items.retain(|q| !q.job.abandoned());
        let at = self
            .items
            .iter()
            .position(|q| q.pin.is_none_or(|p| p == slot))?;
        self.items.remove(at)
    }

    /// Removes and returns the jobs queued for `timeout` or longer at `now` (the oldest are at
    /// the front: jobs are queued in time order and removals keep the order).
    pub(crate) fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<Queued> {
        let stale = self
            .items
            .iter()
            .take_while(|q| q.enqueued + timeout <= now)
            .count();
        self.items.drain(..stale).collect()
    }

    /// When the oldest queued job was queued.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.items.front().map(|q| q.enqueued)
    }

    /// Removes and returns the jobs pinned to `slot`.
    pub(crate) fn take_pinned(&mut self, slot: usize) -> Vec<Queued> {
        let mut pinned = Vec::new();
        for q in std::mem::take(&mut self.items) {
            if q.pin == Some(slot) {
                pinned.push(q);
            } else {
                self.items.push_back(q);
            }
        }
        pinned
    }

    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Queued> + '_ {
        self.items.drain(..)
    }
}
