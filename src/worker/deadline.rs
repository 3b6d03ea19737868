//! One deadline timer per worker, re-armed for every call.
//!
//! A worker runs one call at a time, so one timer is enough. Arming it stores the call's id and
//! deadline; the timer task only wakes up when the new deadline is earlier than the one it sleeps
//! towards, so a call costs a lock and no task, no allocation (a `send_after` per call would leave
//! one task alive until each call's deadline, long after the reply).

use std::sync::{Arc, Mutex};

use ractor::ActorRef;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::WorkerMsg;

#[derive(Default)]
struct Armed {
    /// The call being timed and its deadline.
    call: Option<(u64, Instant)>,
    /// What the timer task currently sleeps towards (`None`: it waits for a call).
    sleeping_until: Option<Instant>,
}

#[derive(Default)]
struct Shared {
    armed: Mutex<Armed>,
    rearm: Notify,
}

/// The worker's deadline timer: sends [`WorkerMsg::Overrun`] once per armed call whose deadline
/// passes while it is still the armed call.
pub(super) struct DeadlineTimer {
    shared: Arc<Shared>,
}

impl DeadlineTimer {
    /// Starts the timer task in `tasks` (aborted with them).
    pub(super) fn new(worker: ActorRef<WorkerMsg>, tasks: &mut JoinSet<()>) -> Self {
        let shared = Arc::new(Shared::default());
        tasks.spawn(run(worker, shared.clone()));
        Self { shared }
    }

    /// Times call `id` until `deadline`, replacing any earlier call.
    pub(super) fn arm(&self, id: u64, deadline: Instant) {
        let mut armed = self.shared.armed.lock().expect("deadline lock");
        armed.call = Some((id, deadline));
        if armed.sleeping_until.is_none_or(|t| deadline < t) {
            drop(armed);
            self.shared.rearm.notify_one();
        }
    }

    /// Stops timing: the call was answered.
    pub(super) fn disarm(&self) {
        self.shared.armed.lock().expect("deadline lock").call = None;
    }
}

async fn run(worker: ActorRef<WorkerMsg>, shared: Arc<Shared>) {
    loop {
        let next = {
            let mut armed = shared.armed.lock().expect("deadline lock");
            let next = match armed.call {
                Some((id, at)) if at <= Instant::now() => {
                    armed.call = None;
                    Err(id)
                }
                Some((_, at)) => Ok(Some(at)),
                None => Ok(None),
            };
            armed.sleeping_until = next.ok().flatten();
            next
        };
        match next {
            Err(id) => {
                if worker.cast(WorkerMsg::Overrun(id)).is_err() {
                    return;
                }
            }
            Ok(Some(at)) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = shared.rearm.notified() => {}
                }
            }
            // An `arm` that saw `sleeping_until == None` left a permit, so none is missed.
            Ok(None) => shared.rearm.notified().await,
        }
    }
}
