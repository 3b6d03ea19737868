//! A session's route: the worker its calls may be written to directly.
//!
//! Each session handle owns one. Only the pool actor points it at a worker, and only at the worker
//! the session is bound to (when it dispatches one of the session's calls there); the pool clears
//! it whenever that binding ends or changes (reset, close, a hint move, the worker's loss), and the
//! session clears it on reset. A closed link (its worker failed) refuses every direct call. So a
//! route never lets a session run anywhere the pool does not have it bound.
//!
//! A call handed to the pool holds a [`RouteTicket`] until the pool writes it or answers it:
//! while any is held, the session's later calls go through the pool too, behind it, so a
//! session's calls are written in the order they were started.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::pool::Affinity;
use crate::worker::{Job, WorkerLink};

/// Where a session's calls go when its worker is idle (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct SessionRoute {
    to: Mutex<Option<Route>>,
    /// Calls of the session on their way through the pool (live tickets).
    through_pool: AtomicUsize,
}

#[derive(Debug)]
struct Route {
    slot: usize,
    generation: u64,
    link: Arc<WorkerLink>,
}

/// Held by a session's call while it goes through the pool; dropped with the job once the pool
/// wrote it to a worker or answered it.
#[derive(Debug)]
pub(crate) struct RouteTicket(Arc<SessionRoute>);

impl RouteTicket {
    pub(crate) fn route(&self) -> &Arc<SessionRoute> {
        &self.0
    }
}

impl Drop for RouteTicket {
    fn drop(&mut self) {
        self.0.through_pool.fetch_sub(1, Ordering::SeqCst);
    }
}

impl SessionRoute {
    /// A ticket for a call of this session that goes through the pool.
    pub(crate) fn ticket(self: &Arc<Self>) -> RouteTicket {
        self.through_pool.fetch_add(1, Ordering::SeqCst);
        RouteTicket(self.clone())
    }

    /// The session is bound to `(slot, generation)`, reached through `link`.
    pub(crate) fn set(&self, slot: usize, generation: u64, link: &Arc<WorkerLink>) {
        let mut to = self.to.lock().unwrap_or_else(|e| e.into_inner());
        if to
            .as_ref()
            .is_none_or(|r| (r.slot, r.generation) != (slot, generation))
        {
            *to = Some(Route {
                slot,
                generation,
                link: link.clone(),
            });
        }
    }

    /// Forgets the route: the next call goes through the pool.
    pub(crate) fn clear(&self) {
        *self.to.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether no call of the session is on its way through the pool.
    fn nothing_through_pool(&self) -> bool {
        self.through_pool.load(Ordering::SeqCst) == 0
    }

    /// Writes `job` straight to the session's worker if it is idle and the pool allows it; if
    /// the worker is busy, `job` waits there when `wait` names its affinity
    /// ([`WorkerLink::run_direct`]).
    ///
    /// # Errors
    ///
    /// Gives the job back when there is no route, an earlier call of the session is still on its
    /// way through the pool, the job is pinned to another worker, or the link refuses it: the job
    /// then goes through the pool.
    pub(crate) fn try_direct(&self, job: Job, wait: Option<Affinity>) -> Result<(), Job> {
        if !self.nothing_through_pool() {
            return Err(job);
        }
        // The route's lock is never taken under a link's lock, so holding it here is safe.
        let to = self.to.lock().unwrap_or_else(|e| e.into_inner());
        match to.as_ref() {
            Some(r) if job.pin.is_none_or(|pin| pin == (r.slot, r.generation)) => {
                r.link.run_direct(job, wait)
            }
            _ => Err(job),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_with_a_call_on_its_way_through_the_pool_does_not_go_direct() {
        let route = Arc::new(SessionRoute::default());
        assert!(route.nothing_through_pool());
        let first = route.ticket();
        let second = route.ticket();
        drop(first);
        assert!(!route.nothing_through_pool(), "one call still on its way");
        drop(second);
        assert!(route.nothing_through_pool());
    }
}
