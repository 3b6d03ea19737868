//! The pool's slots: one worker position each, with the state routing reads.

use std::sync::Arc;

use crate::identity::{ExitStatus, LossReason, SlotGen};
use crate::worker::WorkerLink;

/// How many past generations' loss reasons a slot remembers.
const MAX_LOSSES: usize = 16;

/// Life stage of a slot's current worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotStatus {
    /// Process started, handshake not seen yet.
    Starting,
    /// Handshake done: can take calls.
    Ready,
    /// The worker died; a restart is scheduled.
    Restarting,
    /// Down for good (temporary child, pool failed or shut down).
    Stopped,
}

/// One worker position in a pool. The generation grows with every restart.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) generation: u64,
    pub(crate) status: SlotStatus,
    /// The scheduler chose a call for this worker and has not heard its reply.
    pub(crate) busy: bool,
    /// The worker's link refused a call: it is closed, and the worker's loss is on its way.
    pub(crate) closing: bool,
    /// The ready worker's call path (set by its handshake).
    pub(crate) link: Option<Arc<WorkerLink>>,
    pub(crate) pid: Option<u32>,
    pub(crate) python: Option<String>,
    pub(crate) forked: bool,
    /// Why recent generations of this slot ended (newest last, a bounded history).
    losses: Vec<(u64, LossReason)>,
}

impl Slot {
    pub(crate) fn new() -> Self {
        Slot {
            generation: 0,
            status: SlotStatus::Starting,
            busy: false,
            closing: false,
            link: None,
            pid: None,
            python: None,
            forked: false,
            losses: Vec::new(),
        }
    }

    /// This slot's current worker.
    pub(crate) fn at(&self, slot: usize) -> SlotGen {
        SlotGen::new(slot, self.generation)
    }

    pub(crate) fn record_loss(&mut self, generation: u64, reason: LossReason) {
        if self.losses.len() == MAX_LOSSES {
            self.losses.remove(0);
        }
        self.losses.push((generation, reason));
    }

    /// Why `generation` of this slot ended; `None` for a generation that never existed (then
    /// it is unknown). A generation too old to be remembered ended for an unknown reason.
    pub(crate) fn loss_of(&self, generation: u64) -> Option<LossReason> {
        if generation > self.generation {
            return None;
        }
        if generation == self.generation {
            return (!self.is_live()).then_some(LossReason::PoolStopped);
        }
        Some(
            self.losses
                .iter()
                .find(|(g, _)| *g == generation)
                .map_or(LossReason::WorkerExited(ExitStatus::Unknown), |(_, r)| {
                    r.clone()
                }),
        )
    }

    /// Handshake done and its link open: a call may be written to it.
    pub(crate) fn is_ready(&self) -> bool {
        self.status == SlotStatus::Ready && !self.closing
    }

    /// Ready and running nothing.
    pub(crate) fn is_idle(&self) -> bool {
        self.is_ready() && !self.busy
    }

    /// Supervised: it has a worker, or will have one.
    pub(crate) fn is_live(&self) -> bool {
        self.status != SlotStatus::Stopped
    }
}

/// Where a new session goes, given the sessions bound to each slot (`bound`): fewest bound
/// sessions, then idle first, then lowest slot. Slots that are restarting come after slots that
/// are up or starting; stopped slots are never chosen. So sessions created back to back land on
/// different workers, even before any worker is ready.
pub(crate) fn place_session(slots: &[Slot], bound: &[usize]) -> Option<usize> {
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_live())
        .min_by_key(|(i, s)| {
            (
                s.status == SlotStatus::Restarting,
                bound[*i],
                !s.is_idle(),
                *i,
            )
        })
        .map(|(i, _)| i)
}

/// An idle worker for a call that may run anywhere: the one holding the fewest sessions.
pub(crate) fn any_idle(slots: &[Slot], bound: &[usize]) -> Option<usize> {
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_idle())
        .min_by_key(|(i, _)| (bound[*i], *i))
        .map(|(i, _)| i)
}

#[cfg(test)]
pub(crate) fn slot(status: SlotStatus, busy: bool) -> Slot {
    Slot {
        status,
        busy,
        ..Slot::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_created_back_to_back_spread_over_starting_workers() {
        let slots = vec![
            slot(SlotStatus::Starting, false),
            slot(SlotStatus::Starting, false),
        ];
        let mut bound = [0, 0];
        let first = place_session(&slots, &bound).unwrap();
        bound[first] += 1;
        let second = place_session(&slots, &bound).unwrap();
        assert_ne!(first, second);
    }

    #[test]
    fn among_equally_loaded_workers_an_idle_one_wins() {
        let slots = vec![
            slot(SlotStatus::Ready, true),
            slot(SlotStatus::Ready, false),
        ];
        assert_eq!(place_session(&slots, &[1, 1]), Some(1));
    }

    #[test]
    fn restarting_and_stopped_slots_come_last_or_never() {
        let slots = vec![
            slot(SlotStatus::Restarting, false),
            slot(SlotStatus::Ready, true),
            slot(SlotStatus::Stopped, false),
        ];
        assert_eq!(place_session(&slots, &[0, 5, 0]), Some(1));
        let down = vec![slot(SlotStatus::Stopped, false)];
        assert_eq!(place_session(&down, &[0]), None);
    }

    #[test]
    fn any_idle_skips_busy_starting_and_closing_workers() {
        let mut closing = slot(SlotStatus::Ready, false);
        closing.closing = true;
        let slots = vec![
            slot(SlotStatus::Ready, true),
            slot(SlotStatus::Starting, false),
            closing,
            slot(SlotStatus::Ready, false),
        ];
        assert_eq!(any_idle(&slots, &[0, 0, 0, 3]), Some(3));
    }

    #[test]
    fn a_slot_remembers_why_its_past_generations_ended() {
        let mut s = slot(SlotStatus::Ready, false);
        s.record_loss(0, LossReason::HeartbeatTimeout);
        s.generation = 1;
        assert_eq!(s.loss_of(0), Some(LossReason::HeartbeatTimeout));
        assert_eq!(s.loss_of(1), None, "the current generation lives");
        assert_eq!(s.loss_of(7), None, "a generation that never existed");
    }
}
