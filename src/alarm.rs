//! A timer task that wakes an owner at the earliest instant it was armed for.
//!
//! Arming costs a lock and, only when the new instant is earlier than the one the task sleeps
//! towards, a notification: a worker arms it for every call's deadline and a pool for its oldest
//! queued call, and neither wants a task (or a `send_after`) per call, alive until each call's
//! deadline long after its reply. A wake-up that finds nothing due is harmless: the owner checks
//! what is due itself when it is rung.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

#[derive(Default)]
struct Armed {
    /// The earliest instant asked for and not rung yet.
    at: Option<Instant>,
    /// What the task currently sleeps towards (`None`: it waits to be armed).
    sleeping_until: Option<Instant>,
}

#[derive(Default)]
struct Shared {
    armed: Mutex<Armed>,
    rearm: Notify,
}

/// The owner's handle on its timer task (see the module docs).
pub(crate) struct Alarm {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Alarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alarm").finish_non_exhaustive()
    }
}

impl Alarm {
    /// Starts the timer task in `tasks` (aborted with them). `ring` is called each time an armed
    /// instant is reached; when it returns `false` (its owner is gone) the task ends.
    pub(crate) fn new(tasks: &mut JoinSet<()>, ring: impl Fn() -> bool + Send + 'static) -> Self {
        let shared = Arc::new(Shared::default());
        tasks.spawn(run(shared.clone(), ring));
        Alarm { shared }
    }

    fn lock(&self) -> MutexGuard<'_, Armed> {
        self.shared.armed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rings at `at`, or earlier if an earlier instant is armed already.
    pub(crate) fn arm(&self, at: Instant) {
        let mut armed = self.lock();
        armed.at = Some(armed.at.map_or(at, |a| a.min(at)));
        if armed.sleeping_until.is_none_or(|t| at < t) {
            drop(armed);
            self.shared.rearm.notify_one();
        }
    }

    /// Forgets what was armed (the task may still wake once, and then finds nothing).
    pub(crate) fn disarm(&self) {
        self.lock().at = None;
    }
}

async fn run(shared: Arc<Shared>, ring: impl Fn() -> bool) {
    loop {
        let due = {
            let mut armed = shared.armed.lock().unwrap_or_else(|e| e.into_inner());
            let due = armed.at.is_some_and(|at| at <= Instant::now());
            if due {
                armed.at = None;
            }
            armed.sleeping_until = armed.at;
            if due {
                None
            } else {
                Some(armed.at)
            }
        };
        match due {
            None => {
                if !ring() {
                    return;
                }
            }
            Some(Some(at)) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = shared.rearm.notified() => {}
                }
            }
            // An `arm` that saw `sleeping_until == None` left a permit, so none is missed.
            Some(None) => shared.rearm.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// An alarm that counts its rings.
    fn counting(tasks: &mut JoinSet<()>) -> (Alarm, Arc<AtomicUsize>) {
        let rung = Arc::new(AtomicUsize::new(0));
        let count = rung.clone();
        let alarm = Alarm::new(tasks, move || {
            count.fetch_add(1, Ordering::SeqCst);
            true
        });
        (alarm, rung)
    }

    #[tokio::test(start_paused = true)]
    async fn it_rings_once_at_the_earliest_armed_instant() {
        let mut tasks = JoinSet::new();
        let (alarm, rung) = counting(&mut tasks);
        let start = Instant::now();
        alarm.arm(start + Duration::from_secs(10));
        alarm.arm(start + Duration::from_secs(3));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(rung.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(rung.load(Ordering::SeqCst), 1, "rung at 3 s");
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(
            rung.load(Ordering::SeqCst),
            1,
            "the later instant was merged"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_disarmed_alarm_does_not_ring() {
        let mut tasks = JoinSet::new();
        let (alarm, rung) = counting(&mut tasks);
        alarm.arm(Instant::now() + Duration::from_secs(1));
        alarm.disarm();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(rung.load(Ordering::SeqCst), 0);
    }
}
