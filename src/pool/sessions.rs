use std::collections::HashMap;
use std::sync::{Arc, Weak};

use super::route::SessionRoute;
use crate::error::{LossReason, WorkerId};
use crate::worker::WorkerLink;

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

/// The pool's session registry: session id → binding, and the route (direct calls) the pool
/// last pointed at the bound worker, cleared whenever the binding ends or changes.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    map: HashMap<Arc<str>, Binding>,
    routes: HashMap<Arc<str>, Weak<SessionRoute>>,
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
        let new = Binding::Bound { slot, generation };
        match self.map.insert(session.clone(), new) {
            Some(Binding::Bound {
                slot: old,
                generation: old_generation,
            }) => {
                if (old, old_generation) != (slot, generation) {
                    self.unroute(&session);
                }
                Some(old)
            }
            _ => None,
        }
    }

    /// Points `route` at `link` if `session` is bound to `(slot, generation)`, and clears it
    /// otherwise (a call pinned by its refs to another worker, a session no longer bound).
    pub(crate) fn route(
        &mut self,
        session: &Arc<str>,
        route: &Arc<SessionRoute>,
        (slot, generation): (usize, u64),
        link: &Arc<WorkerLink>,
    ) {
        match self.map.get(session) {
            Some(Binding::Bound {
                slot: s,
                generation: g,
            }) if (*s, *g) == (slot, generation) => {
                route.set(slot, generation, link);
                let known = self.routes.get(session);
                if known.is_none_or(|r| !std::ptr::eq(r.as_ptr(), Arc::as_ptr(route))) {
                    self.routes.insert(session.clone(), Arc::downgrade(route));
                }
            }
            _ => route.clear(),
        }
    }

    fn unroute(&mut self, session: &str) {
        if let Some(route) = self.routes.remove(session).and_then(|r| r.upgrade()) {
            route.clear();
        }
    }

    /// Forgets `session`; returns the slot it was bound to, if it was bound.
    pub(crate) fn remove(&mut self, session: &str) -> Option<usize> {
        self.unroute(session);
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
        for id in &lost {
            self.unroute(id);
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
