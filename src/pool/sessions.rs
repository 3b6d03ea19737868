//! The pool's session registry: where each session's calls go, whether its state lives there,
//! and the record of a session that lost its state.

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
    Lost {
        worker: SlotGen,
        reason: LossReason,
    },
}

/// What happened to a session when a worker died.
#[derive(Debug, PartialEq)]
pub(crate) struct Told {
    pub(crate) session: Arc<str>,
    /// The session was bound to the dead worker (its home), as opposed to holding refs there.
    pub(crate) was_home: bool,
}

/// Session id → binding.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    map: HashMap<Arc<str>, Binding>,
}

impl Sessions {
    pub(crate) fn get(&self, session: &str) -> Option<&Binding> {
        self.map.get(session)
    }

    /// Binds `session` to `home` (placing it, or moving a stateless one); returns its previous
    /// home, if it was bound.
    pub(crate) fn bind(
        &mut self,
        session: &Arc<str>,
        home: SlotGen,
        stateful: bool,
    ) -> Option<SlotGen> {
        match self.map.get_mut(session) {
            Some(Binding::Bound {
                home: old,
                stateful: s,
                ..
            }) => {
                *s |= stateful;
                Some(std::mem::replace(old, home))
            }
            _ => {
                let bound = Binding::Bound {
                    home,
                    stateful,
                    also: Vec::new(),
                };
                self.map.insert(session.clone(), bound);
                None
            }
        }
    }

    /// The session's state lives on its home from now on.
    pub(crate) fn hold_state(&mut self, session: &str) {
        if let Some(Binding::Bound { stateful, .. }) = self.map.get_mut(session) {
            *stateful = true;
        }
    }

    /// The session also holds refs on `at`, which is not its home.
    pub(crate) fn hold_state_also(&mut self, session: &str, at: SlotGen) {
        if let Some(Binding::Bound { home, also, .. }) = self.map.get_mut(session) {
            if *home != at && !also.contains(&at) {
                also.push(at);
            }
        }
    }

    /// Marks `session` lost with `worker`; returns its home if it was bound.
    pub(crate) fn lose(
        &mut self,
        session: &str,
        worker: SlotGen,
        reason: LossReason,
    ) -> Option<SlotGen> {
        let binding = self.map.get_mut(session)?;
        let old = std::mem::replace(binding, Binding::Lost { worker, reason });
        match old {
            Binding::Bound { home, .. } => Some(home),
            Binding::Lost { .. } => None,
        }
    }

    /// Forgets `session`; returns its binding.
    pub(crate) fn remove(&mut self, session: &str) -> Option<Binding> {
        self.map.remove(session)
    }

    /// `worker` died: every session whose state was there is now lost; every stateless session
    /// bound there is forgotten (its next call places it afresh). Returns both kinds, sorted by
    /// session id: each must be told.
    pub(crate) fn worker_lost(&mut self, worker: SlotGen, reason: &LossReason) -> Vec<Told> {
        let mut told = Vec::new();
        self.map.retain(|id, binding| {
            let Binding::Bound {
                home,
                stateful,
                also,
            } = binding
            else {
                return true;
            };
            let was_home = *home == worker;
            if !was_home && !also.contains(&worker) {
                return true;
            }
            told.push(Told {
                session: id.clone(),
                was_home,
            });
            if *stateful || !was_home {
                *binding = Binding::Lost {
                    worker,
                    reason: reason.clone(),
                };
                return true;
            }
            false
        });
        told.sort_by(|a, b| a.session.cmp(&b.session));
        told
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(slot: usize, generation: u64) -> SlotGen {
        SlotGen::new(slot, generation)
    }

    fn told(s: &str, was_home: bool) -> Told {
        Told {
            session: s.into(),
            was_home,
        }
    }

    #[test]
    fn only_sessions_of_the_dead_generation_are_told() {
        let mut s = Sessions::default();
        s.bind(&"a".into(), at(0, 1), true);
        s.bind(&"b".into(), at(0, 2), true);
        s.bind(&"c".into(), at(1, 1), true);
        let lost = s.worker_lost(at(0, 1), &LossReason::HeartbeatTimeout);
        assert_eq!(lost, vec![told("a", true)]);
        assert!(matches!(s.get("a"), Some(Binding::Lost { .. })));
        assert!(matches!(
            s.get("b"),
            Some(Binding::Bound { home, .. }) if home.generation == 2
        ));
    }

    #[test]
    fn a_stateless_session_is_told_and_forgotten_a_stateful_one_stays_lost() {
        let mut s = Sessions::default();
        s.bind(&"free".into(), at(0, 0), false);
        s.bind(&"held".into(), at(0, 0), false);
        s.hold_state("held");
        let lost = s.worker_lost(at(0, 0), &LossReason::HeartbeatTimeout);
        assert_eq!(lost, vec![told("free", true), told("held", true)]);
        assert_eq!(s.get("free"), None, "placed afresh by its next call");
        assert!(matches!(s.get("held"), Some(Binding::Lost { .. })));
        assert!(s.remove("held").is_some());
        assert!(s.get("held").is_none());
    }

    #[test]
    fn refs_left_on_another_worker_lose_the_session_with_that_worker() {
        let mut s = Sessions::default();
        s.bind(&"h".into(), at(0, 0), false);
        s.hold_state_also("h", at(1, 0));
        let lost = s.worker_lost(at(1, 0), &LossReason::HeartbeatTimeout);
        assert_eq!(lost, vec![told("h", false)]);
        assert!(matches!(
            s.get("h"),
            Some(Binding::Lost { worker, .. }) if *worker == at(1, 0)
        ));
    }
}
