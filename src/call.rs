//! A call on its way to a worker, and the per-call settings a caller chooses: the types the
//! runtime, the pool and the worker all pass around (the bottom of the module graph).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::Error;
use crate::identity::SlotGen;
use crate::protocol::Incoming;

/// How a pool routes the calls of a session (Snakepit's vocabulary). The full table, with
/// per-call overrides, is in `docs/architecture.md`, "Sessions".
///
/// # Examples
///
/// ```
/// use pyvisor::Affinity;
/// let a: Affinity = toml::from_str::<std::collections::HashMap<String, Affinity>>("a = \"strict_queue\"")
///     .unwrap()["a"];
/// assert_eq!(a, Affinity::StrictQueue);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Affinity {
    /// For stateless sessions: prefer the session's worker; if it is busy, run on any free
    /// worker (the session then moves there). A session that holds refs or contexts on its worker
    /// stays there like a strict one, and is lost with it.
    #[default]
    Hint,
    /// Always run on the session's worker; wait in the queue while it is busy.
    StrictQueue,
    /// Always run on the session's worker; [`Error::WorkerBusy`](crate::Error::WorkerBusy) at once
    /// if it is busy.
    StrictFailFast,
}

impl Affinity {
    pub(crate) fn is_strict(self) -> bool {
        !matches!(self, Affinity::Hint)
    }
}

/// Per-call settings that override the pool's defaults.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pyvisor::{Affinity, CallOptions};
///
/// let opts = CallOptions::new().timeout(Duration::from_secs(2)).affinity(Affinity::StrictFailFast);
/// assert_eq!(opts.timeout, Some(Duration::from_secs(2)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallOptions {
    /// Deadline of the call, queueing included (the pool's `call_timeout` when `None`).
    pub timeout: Option<Duration>,
    /// How this one call waits for its session's worker (the pool's affinity when `None`). An
    /// override never moves a session away from its state: `Hint` on a session that holds state
    /// waits for its worker (`docs/architecture.md`, "Sessions").
    pub affinity: Option<Affinity>,
}

impl CallOptions {
    /// No overrides.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(pyvisor::CallOptions::new(), Default::default());
    /// ```
    pub fn new() -> Self {
        CallOptions::default()
    }

    /// Sets the deadline.
    ///
    /// # Examples
    ///
    /// ```
    /// let o = pyvisor::CallOptions::new().timeout(std::time::Duration::from_millis(5));
    /// assert!(o.timeout.is_some());
    /// ```
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the affinity of this call.
    ///
    /// # Examples
    ///
    /// ```
    /// let o = pyvisor::CallOptions::new().affinity(pyvisor::Affinity::StrictQueue);
    /// assert!(o.affinity.is_some());
    /// ```
    #[must_use]
    pub fn affinity(mut self, affinity: Affinity) -> Self {
        self.affinity = Some(affinity);
        self
    }
}

/// A successful reply: the frame it came in and where its body starts (decoded by the caller).
#[derive(Debug)]
pub(crate) struct Reply(pub(crate) Incoming);

impl Reply {
    pub(crate) fn body(&self) -> &[u8] {
        self.0.body()
    }
}

/// Where a call's outcome goes: straight back to the caller, never through an actor.
#[derive(Debug)]
pub(crate) struct ReplyTo(oneshot::Sender<Result<Reply, Error>>);

impl ReplyTo {
    pub(crate) fn new(tx: oneshot::Sender<Result<Reply, Error>>) -> Self {
        ReplyTo(tx)
    }

    /// Answers the call (nothing happens if the caller has gone).
    pub(crate) fn send(self, outcome: Result<Reply, Error>) {
        let _ = self.0.send(outcome);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// One call on its way to a worker. The body is encoded by the caller, before the pool sees it.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) op: u8,
    pub(crate) body: Vec<u8>,
    pub(crate) reply: ReplyTo,
    pub(crate) deadline: Instant,
    pub(crate) session: Option<Arc<str>>,
    /// The incarnation of its session it was made in (`pool/sessions.rs`).
    pub(crate) incarnation: u64,
    /// The worker that holds the refs this job carries: it must run there.
    pub(crate) pin: Option<SlotGen>,
    /// The caller's per-call affinity (the pool's when `None`).
    pub(crate) affinity: Option<Affinity>,
    /// The call leaves state of its session on the worker (a context push): the session holds
    /// state there from this call on.
    pub(crate) keeps_state: bool,
    /// Runs even when nobody waits for the reply (the release sent when a session is dropped).
    pub(crate) detached: bool,
    /// The call belongs to an incarnation of its session that was forgotten (reset or dropped)
    /// while it waited: it is routed by its pin alone, and never touches the session's binding.
    pub(crate) orphan: bool,
    /// Order of submission within the pool, set by the pool's scheduler.
    pub(crate) seq: u64,
    /// The caller's span: the call's work is traced inside it.
    pub(crate) span: tracing::Span,
}

impl Job {
    /// A call of `session` (or none) with the caller's span and no overrides.
    pub(crate) fn new(
        op: u8,
        body: Vec<u8>,
        reply: ReplyTo,
        deadline: Instant,
        session: Option<Arc<str>>,
    ) -> Self {
        Job {
            op,
            body,
            reply,
            deadline,
            session,
            incarnation: 0,
            pin: None,
            affinity: None,
            keeps_state: false,
            detached: false,
            orphan: false,
            seq: 0,
            span: tracing::Span::current(),
        }
    }

    /// Nobody will read the outcome and the job is not worth running alone.
    pub(crate) fn abandoned(&self) -> bool {
        self.reply.is_closed() && !self.detached
    }
}
