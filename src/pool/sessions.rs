use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{LossReason, WorkerId};

/// Where a session's state lives, or the record that it was lost.
#[derive(Debug, Clone)]
pub(crate) enum Binding {
    Bound {
        slot: usize,
        generation: u64,
    },
    Lost {
        worker: WorkerId,
        reason: LossReason,
    },
}

/// The pool's session registry: session id → binding.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    map: HashMap<Arc<str>, Binding>,
}

impl Sessions {
    pub(crate) fn get(&self, session: &str) -> Option<&Binding> {
        self.map.get(session)
    }

    /// Binds `session` to a worker; returns the slot it was bound to before, if any.
    pub(crate) fn bind(
        &mut self,
        session: Arc<str>,
        slot: usize,
        generation: u64,
    ) -> Option<usize> {
        match self
            .map
            .insert(session, Binding::Bound { slot, generation })
        {
            Some(Binding::Bound { slot, .. }) => Some(slot),
            _ => None,
        }
    }

    /// Forgets `session`; returns the slot it was bound to, if it was bound.
    pub(crate) fn remove(&mut self, session: &str) -> Option<usize> {
        match self.map.remove(session) {
            Some(Binding::Bound { slot, .. }) => Some(slot),
            _ => None,
        }
    }

    /// Marks every session bound to `worker` as lost and returns them.
    pub(crate) fn mark_lost(&mut self, worker: &WorkerId, reason: &LossReason) -> Vec<Arc<str>> {
        let mut lost = Vec::new();
        for (id, binding) in self.map.iter_mut() {
            if matches!(binding, Binding::Bound { slot, generation }
                if *slot == worker.slot && *generation == worker.generation)
            {
                *binding = Binding::Lost {
                    worker: worker.clone(),
                    reason: reason.clone(),
                };
                lost.push(id.clone());
            }
        }
        lost.sort();
        lost
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sessions_of_the_dead_generation_are_lost() {
        let mut s = Sessions::default();
        s.bind("a".into(), 0, 1);
        s.bind("b".into(), 0, 2);
        s.bind("c".into(), 1, 1);
        let lost = s.mark_lost(&WorkerId::new("p", 0, 1), &LossReason::HeartbeatTimeout);
        assert_eq!(lost, vec![Arc::<str>::from("a")]);
        assert!(matches!(s.get("a"), Some(Binding::Lost { .. })));
        assert!(matches!(
            s.get("b"),
            Some(Binding::Bound { generation: 2, .. })
        ));
    }

    #[test]
    fn a_lost_session_stays_lost_until_removed() {
        let mut s = Sessions::default();
        s.bind("a".into(), 0, 0);
        s.mark_lost(&WorkerId::new("p", 0, 0), &LossReason::HeartbeatTimeout);
        assert_eq!(s.remove("a"), None);
        assert!(s.get("a").is_none());
    }
}
