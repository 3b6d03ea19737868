//! The caller's side of one pool: the only way into it. It encodes requests and checks the refs
//! they carry ([`RequestEncoder`], no actor needed), submits calls to the pool's scheduler and
//! waits for their replies up to the deadline, and sends the pool actor its few lifecycle
//! messages.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ractor::ActorRef;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::scheduler::Scheduler;
use super::{Placement, PoolConfig, PoolMsg, PoolStats};
use crate::call::{CallOptions, Job, Reply, ReplyTo};
use crate::error::Error;
use crate::identity::SlotGen;
use crate::protocol::{op, ReleaseBody};
use crate::value::{capture_issued, collect_refs, from_value, Ref, Value};

/// Encodes requests for one pool and checks the refs they carry: same session, this pool, one
/// worker. Everything here happens before anything is sent.
#[derive(Debug, Clone)]
pub(crate) struct RequestEncoder {
    pub(crate) pool: Arc<str>,
    pub(crate) max_frame: usize,
}

/// An encoded request, ready for the pool.
#[derive(Debug)]
pub(crate) struct Encoded {
    pub(crate) op: u8,
    pub(crate) body: Vec<u8>,
    /// The worker holding the refs the request carries: it must run there.
    pub(crate) pin: Option<SlotGen>,
}

impl RequestEncoder {
    /// Encodes `body` for `op` and checks its refs.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::FrameTooLarge`], [`Error::RefSessionMismatch`],
    /// [`Error::InvalidRef`].
    pub(crate) fn encode<B: Serialize + ?Sized>(
        &self,
        session: Option<&str>,
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

    /// The worker all of `refs` live on, checked against `session` and this pool.
    ///
    /// # Errors
    ///
    /// [`Error::RefSessionMismatch`], [`Error::InvalidRef`].
    pub(crate) fn pin(
        &self,
        session: Option<&str>,
        refs: &[Ref],
    ) -> Result<Option<SlotGen>, Error> {
        let mut pin = None;
        for r in refs {
            if r.session() != session {
                return Err(Error::RefSessionMismatch {
                    ref_session: r.session.clone(),
                    session: session.map(str::to_string),
                });
            }
            if r.worker.pool != *self.pool {
                return Err(Error::InvalidRef(format!(
                    "{r} belongs to pool {}, not {}",
                    r.worker.pool, self.pool
                )));
            }
            let here = r.worker.at();
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
}

/// A session as one of its calls names it: its id, and the incarnation of it the call is made in
/// (a number drawn afresh when its handle is created or reset: `pool/sessions.rs`).
#[derive(Debug, Clone)]
pub(crate) struct CallSession {
    pub(crate) id: Arc<str>,
    pub(crate) incarnation: u64,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct PoolClient {
    pub(crate) name: Arc<str>,
    pub(crate) encoder: RequestEncoder,
    scheduler: Arc<Scheduler>,
    actor: ActorRef<PoolMsg>,
    call_timeout: Duration,
    /// Set by the pool when it fails, for callers that find its actor gone (escalated).
    failure: Arc<OnceLock<Error>>,
    /// Request ids handed out by [`PoolClient::next_request`].
    requests: AtomicU64,
    /// Session incarnations handed out by [`PoolClient::next_incarnation`].
    incarnations: AtomicU64,
}

/// A call submitted to the pool, waiting for its reply.
#[derive(Debug)]
pub(crate) struct Pending {
    rx: oneshot::Receiver<Result<Reply, Error>>,
    deadline: Instant,
    timeout: Duration,
    session: Option<CallSession>,
}

impl PoolClient {
    pub(super) fn new(
        config: &PoolConfig,
        scheduler: Arc<Scheduler>,
        actor: ActorRef<PoolMsg>,
        failure: Arc<OnceLock<Error>>,
    ) -> Self {
        let name: Arc<str> = config.name.as_str().into();
        PoolClient {
            encoder: RequestEncoder {
                pool: name.clone(),
                max_frame: config.max_frame,
            },
            name,
            scheduler,
            actor,
            call_timeout: config.call_timeout,
            failure,
            requests: AtomicU64::new(0),
            incarnations: AtomicU64::new(0),
        }
    }

    /// Encodes `body` for `op` ([`RequestEncoder::encode`]).
    ///
    /// # Errors
    ///
    /// As [`RequestEncoder::encode`].
    pub(crate) fn encode<B: Serialize + ?Sized>(
        &self,
        session: Option<&Arc<str>>,
        op: u8,
        body: &B,
    ) -> Result<Encoded, Error> {
        self.encoder.encode(session.map(|s| &**s), op, body)
    }

    /// Submits an encoded request now (so requests reach the pool in the order they are started),
    /// with the caller's span; the reply is awaited with [`Pending::finish`]. `keeps_state`: the
    /// call leaves state of its session on its worker (a context push).
    pub(crate) fn start(
        &self,
        session: Option<&CallSession>,
        opts: CallOptions,
        request: Encoded,
        keeps_state: bool,
    ) -> Pending {
        let timeout = opts.timeout.unwrap_or(self.call_timeout);
        let deadline = Instant::now() + timeout;
        let (tx, rx) = oneshot::channel();
        let mut job = Job::new(
            request.op,
            request.body,
            ReplyTo::new(tx),
            deadline,
            session.map(|s| s.id.clone()),
        );
        job.incarnation = session.map_or(0, |s| s.incarnation);
        job.pin = request.pin;
        job.affinity = opts.affinity;
        job.keeps_state = keeps_state;
        self.scheduler.submit(job);
        Pending {
            rx,
            deadline,
            timeout,
            session: session.cloned(),
        }
    }

    /// Sends an encoded request and decodes its reply as `R`.
    pub(crate) async fn send<R: DeserializeOwned + 'static>(
        &self,
        session: Option<&CallSession>,
        opts: CallOptions,
        request: Encoded,
    ) -> Result<R, Error> {
        self.start(session, opts, request, false).finish(self).await
    }

    /// Encodes, sends, decodes.
    pub(crate) async fn request<B: Serialize + ?Sized, R: DeserializeOwned + 'static>(
        &self,
        session: Option<&CallSession>,
        opts: CallOptions,
        op: u8,
        body: &B,
    ) -> Result<R, Error> {
        let request = self.encode(session.map(|s| &s.id), op, body)?;
        self.send(session, opts, request).await
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

    /// A fresh session incarnation: every handle and every reset get one, larger than any before.
    pub(crate) fn next_incarnation(&self) -> u64 {
        self.incarnations.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A detached `RELEASE` of `session` (its refs and contexts), for [`PoolClient::forget`].
    fn release_job(&self, session: &Arc<str>, body: &[u8]) -> Job {
        let (tx, _) = oneshot::channel();
        let deadline = Instant::now() + self.call_timeout;
        let reply = ReplyTo::new(tx);
        let mut job = Job::new(
            op::RELEASE,
            body.to_vec(),
            reply,
            deadline,
            Some(session.clone()),
        );
        job.detached = true;
        job
    }

    /// Forgets where `session` (its `incarnation`) lives, and releases its state on the workers
    /// holding it, if they are alive (a dropped session, or
    /// [`Session::reset`](crate::Session::reset)).
    ///
    /// # Errors
    ///
    /// The pool's end ([`Error::ShuttingDown`] or its failure) once its actor is gone.
    pub(crate) fn forget(&self, session: &Arc<str>, incarnation: u64) -> Result<(), Error> {
        self.scheduler.lock().open()?;
        let body = ReleaseBody {
            session: Some(session),
            refs: None,
        };
        let Ok(request) = self.encode(Some(session), op::RELEASE, &body) else {
            return Ok(()); // a session id cannot fail to encode
        };
        let release = || self.release_job(session, &request.body);
        self.scheduler
            .step(|schedule| schedule.forget(session, incarnation, release));
        Ok(())
    }

    /// Where `session` lives, if it is known.
    ///
    /// # Errors
    ///
    /// The pool's end ([`Error::ShuttingDown`] or its failure) once its actor is gone.
    pub(crate) fn placement(&self, session: &str) -> Result<Option<Placement>, Error> {
        let schedule = self.scheduler.lock();
        schedule.open()?;
        Ok(schedule.placement(session))
    }

    /// A snapshot of the pool; `None` once its actor is gone.
    pub(crate) fn stats(&self) -> Option<PoolStats> {
        let schedule = self.scheduler.lock();
        schedule.open().ok().map(|()| schedule.stats())
    }

    /// Waits until the pool has been ready once.
    pub(crate) async fn wait_ready(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.scheduler.lock().wait_ready(tx);
        rx.await.unwrap_or_else(|_| Err(self.gone()))
    }

    /// Waits until every live slot of the pool has a ready worker.
    pub(crate) async fn wait_full_strength(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.scheduler.lock().wait_full_strength(tx);
        rx.await.unwrap_or_else(|_| Err(self.gone()))
    }

    /// Asks the pool to shut down; the receiver completes once its processes are gone.
    pub(crate) fn shutdown(&self) -> Option<oneshot::Receiver<()>> {
        let (tx, rx) = oneshot::channel();
        self.actor.cast(PoolMsg::Shutdown(tx)).ok().map(|()| rx)
    }

    /// Kills the pool actor (the runtime was dropped); its workers die with it.
    pub(crate) fn kill(&self) {
        self.actor.kill();
    }
}

impl Pending {
    /// Waits for the reply until the deadline and decodes it as `R`. Refs of the session in the
    /// reply tell the pool that the session holds state on the worker that issued them.
    ///
    /// # Cancel safety
    ///
    /// Cancelling the future drops the reply channel: a queued call is then skipped, and a running
    /// call's result is discarded when it arrives (the worker stays in service).
    pub(crate) async fn finish<R: DeserializeOwned + 'static>(
        self,
        pool: &PoolClient,
    ) -> Result<R, Error> {
        let reply = match tokio::time::timeout_at(self.deadline, self.rx).await {
            Ok(Ok(outcome)) => outcome?,
            Ok(Err(_)) => return Err(pool.gone()),
            Err(_) => {
                return Err(Error::Timeout {
                    pool: pool.name.to_string(),
                    after: self.timeout,
                })
            }
        };
        let (value, issued) = capture_issued(|| rmp_serde::from_slice::<Value>(reply.body()));
        let value = value.map_err(|e| Error::Decode {
            expected: "a Python value",
            message: e.to_string(),
        })?;
        if let (Some(session), Some(at)) = (&self.session, issued) {
            let (id, incarnation) = (&session.id, session.incarnation);
            pool.scheduler
                .step(|schedule| schedule.note_refs(id, incarnation, at));
        }
        from_value(value)
    }
}
