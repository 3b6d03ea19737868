use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ractor::ActorRef;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::CallOptions;
use crate::error::Error;
use crate::pool::{Affinity, PoolMsg, SessionRoute};
use crate::value::{collect_refs, from_value, Ref, Value};
use crate::worker::{Job, Reply, ReplyTo};

/// The caller's side of one pool: encodes requests, checks the refs they carry, sends them to the
/// pool actor and waits for the worker's reply up to the deadline.
#[derive(Debug)]
pub(crate) struct PoolClient {
    pub(crate) name: Arc<str>,
    pub(crate) actor: ActorRef<PoolMsg>,
    pub(crate) call_timeout: Duration,
    pub(crate) max_frame: usize,
    /// The pool's default affinity, and whether it has a single worker: which calls may wait at
    /// their busy worker ([`PoolClient::waits_at_worker`]).
    pub(crate) affinity: Affinity,
    pub(crate) single_worker: bool,
    /// Set by the pool when it fails, for callers that find its actor gone (escalated).
    pub(crate) failure: Arc<OnceLock<Error>>,
    /// Request ids handed out by [`PoolClient::next_request`].
    pub(crate) requests: AtomicU64,
}

/// An encoded request, ready for the pool.
pub(crate) struct Encoded {
    op: u8,
    body: Vec<u8>,
    pin: Option<(usize, u64)>,
}

/// A request handed to the pool, waiting for its reply.
pub(crate) struct Pending {
    rx: oneshot::Receiver<Result<Reply, Error>>,
    deadline: Instant,
    timeout: Duration,
    pool: Arc<str>,
    failure: Arc<OnceLock<Error>>,
}

impl Pending {
    /// Waits for the reply until the deadline and decodes it as `R`.
    ///
    /// # Cancel safety
    ///
    /// Cancelling the future drops the reply channel: a queued call is then skipped, and a running
    /// call's result is discarded when it arrives (the worker stays in service).
    pub(crate) async fn finish<R: DeserializeOwned + 'static>(self) -> Result<R, Error> {
        let reply =
            match tokio::time::timeout_at(self.deadline, self.rx).await {
                Ok(Ok(outcome)) => outcome?,
                Ok(Err(_)) => {
                    return Err(self.failure.get().cloned().unwrap_or_else(|| {
                        Error::ShuttingDown {
                            pool: self.pool.to_string(),
                        }
                    }))
                }
                Err(_) => {
                    return Err(Error::Timeout {
                        pool: self.pool.to_string(),
                        after: self.timeout,
                    })
                }
            };
        let value: Value = rmp_serde::from_slice(reply.body()).map_err(|e| Error::Decode {
            expected: "a Python value",
            message: e.to_string(),
        })?;
        from_value(value)
    }
}

impl Encoded {
    /// Pins the request to the worker that holds `target` (for bodies that name refs by id).
    pub(crate) fn pin_to(
        &mut self,
        pool: &PoolClient,
        session: Option<&Arc<str>>,
        target: &Ref,
    ) -> Result<(), Error> {
        self.pin = pool.pin(session, std::slice::from_ref(target))?;
        Ok(())
    }
}

impl PoolClient {
    /// Encodes `body` for `op` and checks its refs: same session, this pool, one worker.
    pub(crate) fn encode<B: Serialize + ?Sized>(
        &self,
        session: Option<&Arc<str>>,
        op: u8,
        body: &B,
    ) -> Result<Encoded, Error> {
        let (body, refs) = collect_refs(|| rmp_serde::to_vec_named(body));
        let body = body.map_err(|e| Error::Encode(e.to_string()))?;
        // 4 bytes of length, up to 11 of envelope: [op, id, body].
        if body.len() + 15 > self.max_frame {
            return Err(Error::FrameTooLarge {
                what: "request",
                size: body.len(),
                limit: self.max_frame,
            });
        }
        Ok(Encoded {
            op,
            body,
            pin: self.pin(session, &refs)?,
        })
    }

    fn pin(&self, session: Option<&Arc<str>>, refs: &[Ref]) -> Result<Option<(usize, u64)>, Error> {
        let mut pin = None;
        for r in refs {
            if r.session() != session.map(|s| &**s) {
                return Err(Error::RefSessionMismatch {
                    ref_session: r.session.clone(),
                    session: session.map(|s| s.to_string()),
                });
            }
            if r.worker.pool != *self.name {
                return Err(Error::InvalidRef(format!(
                    "{r} belongs to pool {}, not {}",
                    r.worker.pool, self.name
                )));
            }
            let here = (r.worker.slot, r.worker.generation);
            match pin {
                None => pin = Some(here),
                Some(p) if p == here => {}
                Some(_) => {
                    return Err(Error::InvalidRef(
                        "one call cannot use refs of two workers".into(),
                    ))
                }
            }
        }
        Ok(pin)
    }

    /// Sends an encoded request and decodes its reply as `R`.
    pub(crate) async fn send<R: DeserializeOwned + 'static>(
        &self,
        session: Option<&Arc<str>>,
        route: Option<&Arc<SessionRoute>>,
        opts: CallOptions,
        request: Encoded,
    ) -> Result<R, Error> {
        self.start(session, route, opts, request)?.finish().await
    }

    /// Encodes, sends, decodes.
    pub(crate) async fn request<B: Serialize + ?Sized, R: DeserializeOwned + 'static>(
        &self,
        session: Option<&Arc<str>>,
        route: Option<&Arc<SessionRoute>>,
        opts: CallOptions,
        op: u8,
        body: &B,
    ) -> Result<R, Error> {
        let request = self.encode(session, op, body)?;
        self.send(session, route, opts, request).await
    }

    /// Writes an encoded request straight to the session's idle worker (`route`), or hands it
    /// to the pool, now (so requests are written or reach the pool in the order they are
    /// started); the reply is awaited with [`Pending::finish`].
    pub(crate) fn start(
        &self,
        session: Option<&Arc<str>>,
        route: Option<&Arc<SessionRoute>>,
        opts: CallOptions,
        request: Encoded,
    ) -> Result<Pending, Error> {
        let timeout = opts.timeout.unwrap_or(self.call_timeout);
        let deadline = Instant::now() + timeout;
        let (reply, rx) = oneshot::channel();
        let mut job = self.job(session, request, reply, deadline);
        if let Some(route) = route {
            job = match route.try_direct(job, self.waits_at_worker(opts.affinity)) {
                Ok(()) => return Ok(self.pending(rx, deadline, timeout)),
                Err(job) => job,
            };
            job.route = Some(route.ticket());
        }
        let msg = PoolMsg::Call {
            job,
            affinity: opts.affinity,
        };
        if self.actor.cast(msg).is_err() {
            return Err(self.gone());
        }
        Ok(self.pending(rx, deadline, timeout))
    }

    /// The affinity of a call that may wait at its session's busy worker, if it may: where the
    /// pool would queue it for that same worker anyway (strict queue; hint when the pool has a
    /// single worker, since there is no other worker to move to).
    fn waits_at_worker(&self, affinity: Option<Affinity>) -> Option<Affinity> {
        match affinity.unwrap_or(self.affinity) {
            Affinity::StrictQueue => Some(Affinity::StrictQueue),
            Affinity::Hint if self.single_worker => Some(Affinity::Hint),
            _ => None,
        }
    }

    fn pending(
        &self,
        rx: oneshot::Receiver<Result<Reply, Error>>,
        deadline: Instant,
        timeout: Duration,
    ) -> Pending {
        Pending {
            rx,
            deadline,
            timeout,
            pool: self.name.clone(),
            failure: self.failure.clone(),
        }
    }

    /// The error for a pool whose actor is gone: its failure if it failed, else shutting down.
    pub(crate) fn gone(&self) -> Error {
        self.failure
            .get()
            .cloned()
            .unwrap_or_else(|| Error::ShuttingDown {
                pool: self.name.to_string(),
            })
    }

    /// A fresh request id for calls delivered to actors.
    pub(crate) fn next_request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn job(
        &self,
        session: Option<&Arc<str>>,
        request: Encoded,
        reply: oneshot::Sender<Result<Reply, Error>>,
        deadline: Instant,
    ) -> Job {
        Job {
            op: request.op,
            body: request.body,
            reply: ReplyTo::new(reply),
            deadline,
            session: session.cloned(),
            pin: request.pin,
            detached: false,
            route: None,
        }
    }
}
