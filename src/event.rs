//! The runtime's events: what happened to workers, sessions and pools, in the order each pool
//! observed it, delivered to every subscriber without loss.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::identity::{LossReason, WorkerId};

/// Something that happened in a runtime, in the order the pool observed it.
///
/// Every event is also logged through `tracing` (target `pyvisor::event`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A slot's first worker finished its handshake.
    WorkerStarted {
        /// The worker (generation 0 unless earlier starts failed).
        worker: WorkerId,
        /// Its OS pid.
        pid: u32,
    },
    /// A worker process ended or was killed while its pool was serving: a failure (a graceful
    /// shutdown reports [`Event::WorkerStopped`] instead).
    WorkerExited {
        /// The worker that ended.
        worker: WorkerId,
        /// Its OS pid, if it had started.
        pid: Option<u32>,
        /// How it ended (exit status, signal, heartbeat timeout, ...).
        reason: LossReason,
        /// The last lines it wrote to stderr.
        stderr_tail: Vec<String>,
    },
    /// A replacement worker finished its handshake.
    WorkerRestarted {
        /// The new worker; `generation` is the slot's new generation.
        worker: WorkerId,
        /// Its OS pid.
        pid: u32,
    },
    /// A worker stopped because its pool shut down (`Runtime::shutdown`, or the host's supervisor
    /// stopping the pool): not a failure, and no session is reported lost for it.
    WorkerStopped {
        /// The worker that stopped.
        worker: WorkerId,
        /// Its OS pid, if it had started.
        pid: Option<u32>,
    },
    /// A session's state was on a worker that is gone. Emitted once per session, at once, for
    /// every session bound to the worker (`docs/architecture.md`, "Sessions"); never for a
    /// graceful shutdown.
    SessionWorkerUnavailable {
        /// Pool name.
        pool: String,
        /// Session id.
        session: String,
        /// Slot that held the session.
        slot: usize,
        /// Generation of the worker that held the session.
        generation: u64,
        /// Why it is gone.
        reason: LossReason,
    },
    /// Every worker of the pool is ready for the first time.
    PoolReady {
        /// Pool name.
        pool: String,
    },
    /// A call was refused because the pool's queue is full.
    PoolSaturated {
        /// Pool name.
        pool: String,
        /// The queue capacity.
        capacity: usize,
    },
    /// The pool gave up (restart intensity exceeded, or a fatal start error).
    PoolFailed {
        /// Pool name.
        pool: String,
        /// What happened.
        reason: String,
        /// The last stderr lines of the worker that failed last.
        stderr_tail: Vec<String>,
    },
    /// The pool shut down; none of its processes is left.
    PoolStopped {
        /// Pool name.
        pool: String,
    },
    /// The pool's template process (`LaunchMode::Template`) imported its preload list and forks
    /// workers from now on.
    TemplateReady {
        /// Pool name.
        pool: String,
        /// The template's OS pid.
        pid: u32,
    },
    /// The pool's template process ended; workers are spawned until a new one is ready. Running
    /// workers are not affected (they are the host's children, not the template's).
    TemplateExited {
        /// Pool name.
        pool: String,
        /// Its OS pid, if it had finished its handshake.
        pid: Option<u32>,
        /// How it ended.
        reason: LossReason,
        /// The last lines it wrote to stderr.
        stderr_tail: Vec<String>,
    },
}

/// Subscribers of a runtime's events. Each subscriber has its own unbounded channel, so no event
/// is ever dropped for a slow reader (memory grows instead; drop the stream to unsubscribe).
#[derive(Debug, Clone, Default)]
pub(crate) struct EventBus {
    subscribers: Arc<Mutex<Vec<mpsc::UnboundedSender<Event>>>>,
}

impl EventBus {
    pub(crate) fn emit(&self, event: Event) {
        tracing::info!(target: "pyvisor::event", ?event);
        let mut subs = self.subscribers.lock().expect("event bus lock");
        subs.retain(|s| s.send(event.clone()).is_ok());
    }

    pub(crate) fn subscribe(&self) -> EventStream {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.lock().expect("event bus lock").push(tx);
        EventStream { rx }
    }
}

/// A subscription to a runtime's events, from [`Runtime::events`](crate::Runtime::events).
///
/// # Examples
///
/// ```no_run
/// # async fn f(rt: pyvisor::Runtime) {
/// use pyvisor::Event;
/// let mut events = rt.events();
/// while let Some(event) = events.recv().await {
///     if let Event::SessionWorkerUnavailable { session, .. } = event {
///         println!("rebuild {session}");
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl EventStream {
    /// The next event; `None` once the runtime is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is never lost when the future is dropped before it completes.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(rt: pyvisor::Runtime) {
    /// let mut events = rt.events();
    /// assert!(events.try_recv().is_none());
    /// # }
    /// ```
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}
