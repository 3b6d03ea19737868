//! The pool's session registry: where each session's calls go, whether its state lives there,
//! the record of a session that lost its state, and how many sessions each slot holds.
//!
//! A session's entry belongs to one **incarnation** of it: a number its handle draws afresh when
//! it is created or reset (`Session::reset`). Calls and replies carry the incarnation they were
//! made in, so a call or a reply of an earlier incarnation never changes the current one.

use std::collections::HashMap;
use std::sync::Arc;

use crate::identity::{LossReason, SlotGen};

/// Where a session's calls go, or the record that its state was lost.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Binding {
    Bound {
        /// The worker its calls run on.
        home: SlotGen,
        /// Its state lives on `home`: a strict session, or a hint session with refs or
        /// contexts there. Its calls never run anywhere else, and it is lost with `home`.
        stateful: bool,
        /// Other workers holding refs of the session (only concurrent calls of a hint session
        /// can leave refs on two workers): it is lost with any of them too.
        also: Vec<SlotGen>,
    },
    /// Placed nowhere: the worker it was placed on died while it held no state there. Its next
    /// call places it afresh.
    Unplaced,
    Lost {
        worker: SlotGen,
        reason: LossReason,
    },
}

/// A session's binding in its current incarnation.
#[derive(Debug)]
struct Entry {
    incarnation: u64,
    binding: Binding,
}

/// What happened to a session when a worker died.
#[derive(Debug, PartialEq)]
pub(crate) struct Told {
    pub(crate) session: Arc<str>,
    /// The session lost its state (it held state there): its calls are refused until reset.
    pub(crate) lost: bool,
}

/// Session id → binding, and the number of sessions bound to each slot.
#[derive(Debug)]
pub(crate) struct Sessions {
    map: HashMap<Arc<str>, Entry>,
    bound: Vec<usize>,
}

impl Sessions {
    pub(crate) fn new(slots: usize) -> Self {
        Sessions {
            map: HashMap::new(),
            bound: vec![0; slots],
        }
    }

    pub(crate) fn get(&self, session: &str) -> Option<&Binding> {
        self.map.get(session).map(|e| &e.binding)
    }

    /// The incarnation the session's entry belongs to.
    pub(crate) fn incarnation(&self, session: &str) -> Option<u64> {
        self.map.get(session).map(|e| e.incarnation)
    }

    /// Sessions bound to each slot.
    pub(crate) fn counts(&self) -> &[usize] {
        &self.bound
    }

    /// Replaces `entry`'s binding, keeping the slots' counts.
    fn set(bound: &mut [usize], entry: &mut Entry, binding: Binding) {
        if let Binding::Bound { home, .. } = &entry.binding {
            bound[home.slot] -= 1;
        }
        if let Binding::Bound { home, .. } = &binding {
            bound[home.slot] += 1;
        }
        entry.binding = binding;
    }

    /// Binds `session` (incarnation `incarnation`) to `home`: placing it, or moving a stateless
    /// one. A session's state is never dropped by a move: `stateful` only adds to it.
    pub(crate) fn bind(
        &mut self,
        session: &Arc<str>,
        incarnation: u64,
        home: SlotGen,
        stateful: bool,
    ) {
        let entry = self.map.entry(session.clone()).or_insert(Entry {
            incarnation,
            binding: Binding::Unplaced,
        });
        let (stateful, also) = match &mut entry.binding {
            Binding::Bound {
                stateful: was,
                also,
                ..
            } if entry.incarnation == incarnation => (*was || stateful, std::mem::take(also)),
            _ => (stateful, Vec::new()),
        };
        entry.incarnation = incarnation;
        let binding = Binding::Bound {
            home,
            stateful,
            also,
        };
        Self::set(&mut self.bound, entry, binding);
    }

    /// The session's state lives on its home from now on.
    pub(crate) fn mark_stateful(&mut self, session: &str) {
        if let Some(Entry {
            binding: Binding::Bound { stateful, .. },
            ..
        }) = self.map.get_mut(session)
        {
            *stateful = true;
        }
    }

    /// The session also holds refs on `at`, which is not its home.
    pub(crate) fn hold_also(&mut self, session: &str, at: SlotGen) {
        if let Some(Entry {
            binding: Binding::Bound { home, also, .. },
            ..
        }) = self.map.get_mut(session)
        {
            if *home != at && !also.contains(&at) {
                also.push(at);
            }
        }
    }

    /// Marks `session` lost with `worker`.
    pub(crate) fn lose(&mut self, session: &str, worker: SlotGen, reason: LossReason) {
        if let Some(entry) = self.map.get_mut(session) {
            Self::set(&mut self.bound, entry, Binding::Lost { worker, reason });
        }
    }

    /// Forgets `session` if its entry is of `incarnation` or an earlier one; returns its
    /// binding.
    pub(crate) fn remove(&mut self, session: &str, incarnation: u64) -> Option<Binding> {
        if self.map.get(session)?.incarnation > incarnation {
            return None; // a newer handle of the session made it since
        }
        let mut entry = self.map.remove(session)?;
        let binding = entry.binding.clone();
        Self::set(&mut self.bound, &mut entry, Binding::Unplaced);
        Some(binding)
    }

    /// `worker` died: every session whose state was there is now lost; every stateless session
    /// bound there is unplaced (its next call places it afresh). Returns both kinds, sorted by
    /// session id: each must be told.
    pub(crate) fn worker_lost(&mut self, worker: SlotGen, reason: &LossReason) -> Vec<Told> {
        let mut told = Vec::new();
        for (id, entry) in self.map.iter_mut() {
            let Binding::Bound {
                home,
                stateful,
                also,
            } = &entry.binding
            else {
                continue;
            };
            let was_home = *home == worker;
            if !was_home && !also.contains(&worker) {
                continue;
            }
            let lost = *stateful || !was_home;
            let next = if lost {
                Binding::Lost {
                    worker,
                    reason: reason.clone(),
                }
            } else {
                Binding::Unplaced
            };
            Self::set(&mut self.bound, entry, next);
            told.push(Told {
                session: id.clone(),
                lost,
            });
        }
        told.sort_by(|a, b| a.session.cmp(&b.session));
        told
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The counts, recounted from the bindings (for tests: they must equal [`Sessions::counts`]).
    #[cfg(test)]
    pub(crate) fn recount(&self) -> Vec<usize> {
        let mut counts = vec![0; self.bound.len()];
        for e in self.map.values() {
            if let Binding::Bound { home, .. } = e.binding {
                counts[home.slot] += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(slot: usize, generation: u64) -> SlotGen {
        SlotGen::new(slot, generation)
    }

    fn told(s: &str, lost: bool) -> Told {
        Told {
            session: s.into(),
            lost,
        }
    }

    #[test]
    fn only_sessions_of_the_dead_generation_are_told() {
        let mut s = Sessions::new(2);
        s.bind(&"a".into(), 1, at(0, 1), true);
        s.bind(&"b".into(), 1, at(0, 2), true);
        s.bind(&"c".into(), 1, at(1, 1), true);
        let lost = s.worker_lost(at(0, 1), &LossReason::HeartbeatTimeout);
        assert_eq!(lost, vec![told("a", true)]);
        assert!(matches!(s.get("a"), Some(Binding::Lost { .. })));
        assert!(matches!(
            s.get("b"),
            Some(Binding::Bound { home, .. }) if home.generation == 2
        ));
        assert_eq!(s.counts(), [1, 1]);
    }

    #[test]
    fn a_stateless_session_is_told_and_unplaced_a_stateful_one_stays_lost() {
        let mut s = Sessions::new(1);
        s.bind(&"free".into(), 1, at(0, 0), false);
        s.bind(&"held".into(), 1, at(0, 0), false);
        s.mark_stateful("held");
        let lost = s.worker_lost(at(0, 0), &LossReason::HeartbeatTimeout);
        assert_eq!(lost, vec![told("free", false), told("held", true)]);
        assert_eq!(s.get("free"), Some(&Binding::Unplaced));
        assert!(matches!(s.get("held"), Some(Binding::Lost { .. })));
        assert_eq!(s.counts(), [0]);
        assert!(s.remove("held", 1).is_some());
        assert!(s.get("held").is_none());
    }

    #[test]
    fn refs_left_on_another_worker_lose_the_session_with_that_worker() {
        let mut s = Sessions::new(2);
        s.bind(&"h".into(), 1, at(0, 0), false);
        s.hold_also("h", at(1, 0));
        let lost = s.worker_lost(at(1, 0), &LossReason::HeartbeatTimeout);
        assert_eq!(lost, vec![told("h", true)]);
        assert!(matches!(
            s.get("h"),
            Some(Binding::Lost { worker, .. }) if *worker == at(1, 0)
        ));
        assert_eq!(s.counts(), [0, 0], "no longer bound to its home either");
    }

    #[test]
    fn an_older_handle_never_forgets_a_newer_incarnation() {
        let mut s = Sessions::new(1);
        s.bind(&"s".into(), 7, at(0, 0), true);
        assert!(s.remove("s", 6).is_none());
        assert_eq!(s.incarnation("s"), Some(7));
        assert!(s.remove("s", 7).is_some());
        assert_eq!(s.counts(), [0]);
    }
}
