//! The pool's bounded queue: the calls waiting for a worker, in one FIFO per slot (calls that
//! may run only there) and one for calls that may run on any worker. A call's place is its
//! submission number (`Job::seq`); a worker takes the lowest-numbered call it may run.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::call::Job;

/// A call waiting for a worker.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) job: Job,
    /// When it started waiting (its queue timeout counts from here).
    pub(crate) since: Instant,
}

/// Which workers may take a queued call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Only this slot's worker.
    Slot(usize),
    /// Whichever worker is free first.
    Any,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Queue {
    any: VecDeque<Queued>,
    slots: Vec<VecDeque<Queued>>,
    len: usize,
    capacity: usize,
}

impl Queue {
    pub(crate) fn new(slots: usize, capacity: usize) -> Self {
        Queue {
            any: VecDeque::new(),
            slots: (0..slots).map(|_| VecDeque::new()).collect(),
            len: 0,
            capacity,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len >= self.capacity
    }

    fn fifo(&mut self, target: Target) -> &mut VecDeque<Queued> {
        match target {
            Target::Any => &mut self.any,
            Target::Slot(slot) => &mut self.slots[slot],
        }
    }

    /// Queues `queued` in its place by submission number: at the back for a new call, further
    /// up for one that is routed again (its worker was lost) and keeps its place.
    pub(crate) fn insert(&mut self, target: Target, queued: Queued) {
        let fifo = self.fifo(target);
        let seq = queued.job.seq;
        let at = if fifo.back().is_none_or(|q| q.job.seq < seq) {
            fifo.len()
        } else {
            fifo.partition_point(|q| q.job.seq < seq)
        };
        fifo.insert(at, queued);
        self.len += 1;
    }

    /// The lowest-numbered call `slot` may run (its own FIFO's or the shared one's), and whether
    /// it came from the shared FIFO.
    pub(crate) fn pop_for(&mut self, slot: usize) -> Option<(Queued, Target)> {
        let own = self.slots[slot].front().map(|q| q.job.seq);
        let any = self.any.front().map(|q| q.job.seq);
        let target = match (own, any) {
            (Some(o), Some(a)) if a < o => Target::Any,
            (Some(_), _) => Target::Slot(slot),
            (None, Some(_)) => Target::Any,
            (None, None) => return None,
        };
        let queued = self.fifo(target).pop_front()?;
        self.len -= 1;
        Some((queued, target))
    }

    /// Whether a call `slot` may run waits (whether its caller still waits or not).
    #[cfg(test)]
    pub(crate) fn has_work_for(&self, slot: usize) -> bool {
        !self.slots[slot].is_empty() || !self.any.is_empty()
    }

    /// Removes and returns the waiting calls for which `which` holds, in order within each
    /// FIFO.
    pub(crate) fn take_where(&mut self, which: impl Fn(&Job) -> bool) -> Vec<Queued> {
        let mut taken = Vec::new();
        for fifo in std::iter::once(&mut self.any).chain(&mut self.slots) {
            if !fifo.iter().any(|q| which(&q.job)) {
                continue;
            }
            let mut kept = VecDeque::with_capacity(fifo.len());
            for q in fifo.drain(..) {
                if which(&q.job) {
                    taken.push(q);
                } else {
                    kept.push_back(q);
                }
            }
            *fifo = kept;
        }
        self.len -= taken.len();
        taken
    }

    /// Removes every call that may run only on `slot` (its worker was lost), in order.
    pub(crate) fn take_slot(&mut self, slot: usize) -> VecDeque<Queued> {
        let taken = std::mem::take(&mut self.slots[slot]);
        self.len -= taken.len();
        taken
    }

    /// Removes every queued call.
    pub(crate) fn drain(&mut self) -> Vec<Queued> {
        let mut all: Vec<Queued> = self.any.drain(..).collect();
        for fifo in &mut self.slots {
            all.extend(fifo.drain(..));
        }
        self.len = 0;
        all
    }

    /// Drops the calls whose caller gave up (they count against the capacity until then).
    pub(crate) fn purge_abandoned(&mut self) {
        self.retain(|q| !q.job.abandoned());
    }

    /// Removes and returns the calls that have waited `timeout` at `now`.
    pub(crate) fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<Queued> {
        let mut expired = Vec::new();
        for fifo in std::iter::once(&mut self.any).chain(&mut self.slots) {
            let mut kept = VecDeque::with_capacity(fifo.len());
            for q in fifo.drain(..) {
                if q.since + timeout <= now {
                    expired.push(q);
                } else {
                    kept.push_back(q);
                }
            }
            *fifo = kept;
        }
        self.len -= expired.len();
        expired
    }

    /// When the call that has waited longest started waiting.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        std::iter::once(&self.any)
            .chain(&self.slots)
            .flatten()
            .map(|q| q.since)
            .min()
    }

    fn retain(&mut self, keep: impl Fn(&Queued) -> bool) {
        let mut len = 0;
        for fifo in std::iter::once(&mut self.any).chain(&mut self.slots) {
            fifo.retain(&keep);
            len += fifo.len();
        }
        self.len = len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::ReplyTo;

    fn queued(
        seq: u64,
    ) -> (
        Queued,
        tokio::sync::oneshot::Receiver<Result<crate::call::Reply, crate::Error>>,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut job = Job::new(1, Vec::new(), ReplyTo::new(tx), Instant::now(), None);
        job.seq = seq;
        (
            Queued {
                job,
                since: Instant::now(),
            },
            rx,
        )
    }

    #[test]
    fn a_worker_takes_the_lowest_numbered_call_it_may_run() {
        let mut q = Queue::new(2, 10);
        let mut keep = Vec::new();
        for (seq, target) in [(1, Target::Slot(1)), (2, Target::Any), (3, Target::Slot(0))] {
            let (item, rx) = queued(seq);
            keep.push(rx);
            q.insert(target, item);
        }
        let order: Vec<u64> = std::iter::from_fn(|| q.pop_for(0).map(|(q, _)| q.job.seq)).collect();
        assert_eq!(order, [2, 3], "slot 0 never takes slot 1's call");
        assert_eq!(
            q.pop_for(1).map(|(q, t)| (q.job.seq, t)),
            Some((1, Target::Slot(1)))
        );
        assert!(q.is_empty());
    }

    #[test]
    fn a_call_routed_again_keeps_its_place() {
        let mut q = Queue::new(1, 10);
        let mut keep = Vec::new();
        for seq in [3, 5, 1] {
            let (item, rx) = queued(seq);
            keep.push(rx);
            q.insert(Target::Any, item);
        }
        let order: Vec<u64> = std::iter::from_fn(|| q.pop_for(0).map(|(q, _)| q.job.seq)).collect();
        assert_eq!(order, [1, 3, 5]);
    }

    #[test]
    fn abandoned_calls_stop_counting_once_purged() {
        let mut q = Queue::new(1, 2);
        let (a, rx_a) = queued(1);
        let (b, _rx_b) = queued(2);
        q.insert(Target::Slot(0), a);
        q.insert(Target::Any, b);
        assert!(q.is_full());
        drop(rx_a);
        q.purge_abandoned();
        assert_eq!(q.len(), 1);
    }
}
