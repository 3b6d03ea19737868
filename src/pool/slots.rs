use ractor::{ActorId, ActorRef};

use crate::error::LossReason;

use std::sync::Arc;

use crate::worker::{WorkerLink, WorkerMsg};

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
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) generation: u64,
    pub(crate) status: SlotStatus,
    pub(crate) worker: Option<ActorRef<WorkerMsg>>,
    pub(crate) actor: Option<ActorId>,
    /// The ready worker's call path (set by its handshake).
    pub(crate) link: Option<Arc<WorkerLink>>,
    pub(crate) pid: Option<u32>,
    pub(crate) python: Option<String>,
    pub(crate) forked: bool,
    pub(crate) busy: bool,
    pub(crate) sessions: usize,
    /// Why recent generations of this slot ended (newest last, a bounded history).
    losses: Vec<(u64, LossReason)>,
}

impl Slot {
    pub(crate) fn new() -> Self {
        Slot {
            generation: 0,
            status: SlotStatus::Starting,
            worker: None,
            actor: None,
            link: None,
            pid: None,
            python: None,
            forked: false,
            busy: false,
            sessions: 0,
            losses: Vec::new(),
        }
    }

    pub(crate) fn record_loss(&mut self, generation: u64, reason: LossReason) {
        if self.losses.len() == MAX_LOSSES {
            self.losses.remove(0);
        }
        self.losses.push((generation, reason));
    }

    /// Why `generation` of this slot ended; `None` for a generation that never ended or is too old
    /// to be remembered (then it is reported as ended for an unknown reason).
    pub(crate) fn loss_of(&self, generation: u64) -> Option<LossReason> {
        if generation >= self.generation {
            return (!self.is_live()).then_some(LossReason::PoolStopped);
        }
        Some(self.losses.iter().find(|(g, _)| *g == generation).map_or(
            LossReason::WorkerExited(crate::worker::ExitStatus::Unknown),
            |(_, r)| r.clone(),
        ))
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.status == SlotStatus::Ready && !self.busy
    }

    pub(crate) fn is_live(&self) -> bool {
        self.status != SlotStatus::Stopped
    }
}

/// Where a new session goes: fewest bound sessions, then idle first, then lowest slot. Slots that
/// are restarting come after slots that are up or starting; stopped slots are never chosen.
pub(crate) fn place_session(slots: &[Slot]) -> Option<usize> {
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_live())
        .min_by_key(|(i, s)| {
            (
                s.status == SlotStatus::Restarting,
                s.sessions,
                !s.is_idle(),
                *i,
            )
        })
        .map(|(i, _)| i)
}

/// An idle worker for a call that may run anywhere: the one holding the fewest sessions.
pub(crate) fn any_idle(slots: &[Slot]) -> Option<usize> {
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_idle())
        .min_by_key(|(i, s)| (s.sessions, *i))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(status: SlotStatus, busy: bool, sessions: usize) -> Slot {
        Slot {
            status,
            busy,
            sessions,
            ..Slot::new()
        }
    }

    #[test]
    fn sessions_created_back_to_back_spread_over_starting_workers() {
        let mut slots = vec![
            slot(SlotStatus::Starting, false, 0),
            slot(SlotStatus::Starting, false, 0),
        ];
        let first = place_session(&slots).unwrap();
        slots[first].sessions += 1;
        let second = place_session(&slots).unwrap();
        assert_ne!(first, second);
    }

    #[test]
    fn among_equally_loaded_workers_an_idle_one_wins() {
        let slots = vec![
            slot(SlotStatus::Ready, true, 1),
            slot(SlotStatus::Ready, false, 1),
        ];
        assert_eq!(place_session(&slots), Some(1));
    }

    #[test]
    fn restarting_and_stopped_slots_come_last_or_never() {
        let slots = vec![
            slot(SlotStatus::Restarting, false, 0),
            slot(SlotStatus::Ready, true, 5),
            slot(SlotStatus::Stopped, false, 0),
        ];
        assert_eq!(place_session(&slots), Some(1));
        let down = vec![slot(SlotStatus::Stopped, false, 0)];
        assert_eq!(place_session(&down), None);
    }

    #[test]
    fn any_idle_skips_busy_and_starting_workers() {
        let slots = vec![
            slot(SlotStatus::Ready, true, 0),
            slot(SlotStatus::Starting, false, 0),
            slot(SlotStatus::Ready, false, 3),
        ];
        assert_eq!(any_idle(&slots), Some(2));
    }
}
