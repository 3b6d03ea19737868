use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::Error;
use crate::pool::RouteTicket;
use crate::protocol::Incoming;

/// A successful reply: the frame it came in and where its body starts (decoded by the caller).
#[derive(Debug)]
pub(crate) struct Reply(pub(crate) Incoming);

impl Reply {
    pub(crate) fn body(&self) -> &[u8] {
        self.0.body()
    }
}

/// Where a call's outcome goes: straight back to the caller, never through the pool. Dropped
/// without an answer (e.g. in the mailbox of a worker actor that stopped), it sends `on_drop`.
#[derive(Debug)]
pub(crate) struct ReplyTo {
    tx: Option<oneshot::Sender<Result<Reply, Error>>>,
    pub(crate) on_drop: Option<Box<Error>>,
}

impl ReplyTo {
    pub(crate) fn new(tx: oneshot::Sender<Result<Reply, Error>>) -> Self {
        ReplyTo {
            tx: Some(tx),
            on_drop: None,
        }
    }

    pub(crate) fn send(
        mut self,
        outcome: Result<Reply, Error>,
    ) -> Result<(), Result<Reply, Error>> {
        self.on_drop = None;
        match self.tx.take() {
            Some(tx) => tx.send(outcome),
            None => Err(outcome),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.tx.as_ref().is_none_or(|tx| tx.is_closed())
    }
}

impl Drop for ReplyTo {
    fn drop(&mut self) {
        if let (Some(tx), Some(e)) = (self.tx.take(), self.on_drop.take()) {
            let _ = tx.send(Err(*e));
        }
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
    /// `(slot, generation)` of the worker that holds the refs this job carries: it must run there.
    pub(crate) pin: Option<(usize, u64)>,
    /// Runs even when nobody waits for the reply (the release sent when a session is dropped).
    pub(crate) detached: bool,
    /// The session's route (through a ticket: see `pool/route.rs`), pointed by the pool at the
    /// worker it dispatches the job to.
    pub(crate) route: Option<RouteTicket>,
}

impl Job {
    /// Nobody will read the outcome and the job is not worth running alone.
    pub(crate) fn abandoned(&self) -> bool {
        self.reply.is_closed() && !self.detached
    }
}
