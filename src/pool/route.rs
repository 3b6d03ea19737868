//! A session's route: the worker its calls may be written to directly.
//!
//! Each session handle owns one. The pool writes it whenever it dispatches a call of the session
//! (so it names the worker the session is bound to), the session clears it on reset, and a closed
//! link (its worker failed) refuses every direct call, so a stale route only ever sends a call
//! back through the pool, which reports the loss.

use std::sync::{Arc, Mutex};

use crate::worker::{Job, WorkerLink};

/// Where a session's calls go when its worker is idle (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct SessionRoute {
    to: Mutex<Option<Route>>,
}

#[derive(Debug, Clone)]
struct Route {
    slot: usize,
    generation: u64,
    link: Arc<WorkerLink>,
}

impl SessionRoute {
    /// The session was dispatched to `(slot, generation)` through `link`.
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

    /// Writes `job` straight to the session's worker if it is idle and the pool allows it.
    ///
    /// # Errors
    ///
    /// Gives the job back when there is no route, the job is pinned to another worker, or the
    /// link refuses it: the job then goes through the pool.
    pub(crate) fn try_direct(&self, job: Job) -> Result<(), Job> {
        let route = self.to.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match route {
            Some(r) if job.pin.is_none_or(|pin| pin == (r.slot, r.generation)) => {
                r.link.run_direct(job)
            }
            _ => Err(job),
        }
    }
}
