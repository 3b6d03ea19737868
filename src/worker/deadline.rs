//! One deadline timer per worker, re-armed for every call.
//!
//! A worker runs one call at a time, so one timer is enough. Arming it stores the call's id and
//! deadline; the timer task only wakes up when the new deadline is earlier than the one it sleeps
//! towards, so a call costs a lock and no task, no allocation (a `send_after` per call would leave
//! one task alive until each call's deadline, long after the reply). The same task wakes the
//! worker actor when the oldest call of the wait list has waited its queue timeout
//! (`worker/waiting.rs`).

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
    /// When the oldest waiting call times out (maybe earlier: a spurious wake-up is harmless).
    queue: Option<Instant>,
    /// What the timer task currently sleeps towards (`None`: it waits for a call).
    sleeping_until: Option<Instant>,
}

#[derive(Default)]
struct Shared {
    armed: Mutex<Armed>,
    rearm: Notify,
}

/// The worker's deadline timer: sends [`WorkerMsg::Overrun`] once per armed call whose deadline
/// passes while it is still the armed call, and [`WorkerMsg::QueueDue`] once per armed queue
/// expiry.
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

    /// Wakes the worker actor at `at` (or earlier) to expire waiting calls.
    pub(super) fn arm_queue(&self, at: Instant) {
        let mut armed = self.shared.armed.lock().expect("deadline lock");
        armed.queue = Some(armed.queue.map_or(at, |q| q.min(at)));
        if armed.sleeping_until.is_none_or(|t| at < t) {
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
            let now = Instant::now();
            let next = match (armed.call, armed.queue) {
                (Some((id, at)), _) if at <= now => {
                    armed.call = None;
                    Err(WorkerMsg::Overrun(id))
                }
                (_, Some(at)) if at <= now => {
                    armed.queue = None;
                    Err(WorkerMsg::QueueDue)
                }
                (call, queue) => Ok(match (call.map(|(_, at)| at), queue) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }),
            };
            armed.sleeping_until = next.as_ref().ok().copied().flatten();
            next
        };
        match next {
            Err(msg) => {
                if worker.cast(msg).is_err() {
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
