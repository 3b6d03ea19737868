/// A point-in-time view of one pool, from [`Runtime::stats`](crate::Runtime::stats).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Pool name.
    pub name: String,
    /// Lifecycle state.
    pub status: PoolStatus,
    /// One entry per slot.
    pub workers: Vec<WorkerStats>,
    /// Calls waiting for a worker in the pool's queue.
    pub queued: usize,
    /// Known sessions (bound or lost).
    pub sessions: usize,
    /// Restarts scheduled since the pool started.
    pub restarts: u64,
    /// Calls refused because the queue was full.
    pub saturated: u64,
    /// Calls dropped from the queue by the queue timeout.
    pub queue_timeouts: u64,
    /// OS pid of the pool's template process while it is ready (`LaunchMode::Template`).
    pub template_pid: Option<u32>,
    /// Calls written to the pool's workers since it started.
    pub calls: u64,
}

/// One slot of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Slot index.
    pub slot: usize,
    /// Current generation of the slot.
    pub generation: u64,
    /// OS pid of the current worker, once started.
    pub pid: Option<u32>,
    /// The handshake is done and the worker takes calls.
    pub ready: bool,
    /// A call is running on it.
    pub busy: bool,
    /// Sessions bound to it.
    pub sessions: usize,
    /// Python version the worker reported in its handshake.
    pub python: Option<String>,
    /// The worker was forked from the pool's template (not spawned).
    pub forked: bool,
}

/// Lifecycle state of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolStatus {
    /// Not every worker has been ready yet.
    Starting,
    /// Every worker has been ready at least once; calls are served.
    Running,
    /// Draining for shutdown.
    Stopping,
    /// Gave up; every call fails with [`Error::PoolFailed`](crate::Error::PoolFailed).
    Failed {
        /// What happened.
        reason: String,
    },
}

/// Where a session's state lives, from [`Session::placement`](crate::Session::placement).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Placement {
    /// The worker the session's calls go to (pool, slot, generation).
    pub worker: crate::WorkerId,
    /// Its OS pid, once it has started.
    pub pid: Option<u32>,
    /// The session's state lives on that worker (a strict session, or a hint session with refs
    /// or contexts there): its calls never run elsewhere, and it is lost with the worker.
    pub holds_state: bool,
    /// Why the worker is gone, if the session lost it.
    pub lost: Option<crate::LossReason>,
}
