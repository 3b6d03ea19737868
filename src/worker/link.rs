//! The worker link: the call path, shared by the pool, the worker actor and its reader task.
//!
//! A call costs two actor messages: the caller's `PoolMsg::Call`, and `PoolMsg::WorkerIdle` once
//! the reply is in. The pool writes the request through the link itself, and the reader task
//! answers the caller straight from the reply frame. The worker actor stays off the call path: it
//! handles the handshake, heartbeats, deadlines, exits and shutdown, and closes the link when the
//! worker fails, which answers the call in flight and refuses every later one.
//!
//! Everything that writes to the pipe or touches the call in flight does it under one lock, so
//! frames never interleave and a reply, a failure and a new call always see one consistent state.

use std::sync::{Arc, Mutex, MutexGuard};

use ractor::ActorRef;

use super::channel::RequestChannel;
use super::deadline::DeadlineTimer;
use super::job::{Job, Reply, ReplyTo};
use crate::error::{Error, WorkerId};
use crate::pool::PoolMsg;
use crate::protocol::{encode_request, op, Incoming};

/// The call a worker is running.
struct InFlight {
    id: u64,
    reply: ReplyTo,
}

struct Inner {
    /// `None` once the link is closed: the worker failed or its actor stopped.
    writer: Option<RequestChannel>,
    /// Handshake done and not stopping: calls may be written.
    accepting: bool,
    /// Shutting down: replies no longer make the worker idle for the pool.
    stopping: bool,
    next_id: u64,
    in_flight: Option<InFlight>,
}

impl Inner {
    /// Frames and writes one request with the next id; `None` once closed.
    fn write(&mut self, op: u8, body: &[u8]) -> Option<u64> {
        let writer = self.writer.as_ref()?;
        self.next_id += 1;
        writer.send(encode_request(op, self.next_id, body));
        Some(self.next_id)
    }
}

/// Why [`WorkerLink::run`] gave a job back.
pub(crate) enum Refused {
    /// The link is closed: the worker is gone and its supervision event is on its way.
    Closed(Job),
    /// The worker is not ready, is stopping, or already runs a call (a routing bug).
    Unavailable(Job),
}

/// The shared call path of one worker incarnation.
pub(crate) struct WorkerLink {
    id: WorkerId,
    pool: ActorRef<PoolMsg>,
    deadline: DeadlineTimer,
    max_frame: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for WorkerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerLink").field("id", &self.id).finish()
    }
}

impl WorkerLink {
    pub(super) fn new(
        id: WorkerId,
        pool: ActorRef<PoolMsg>,
        writer: RequestChannel,
        deadline: DeadlineTimer,
        max_frame: usize,
    ) -> Arc<Self> {
        Arc::new(WorkerLink {
            id,
            pool,
            deadline,
            max_frame,
            inner: Mutex::new(Inner {
                writer: Some(writer),
                accepting: false,
                stopping: false,
                next_id: 0,
                in_flight: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves `Inner` consistent (no multi-step updates).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `job`'s request and makes it the call in flight, timed until its deadline.
    ///
    /// # Errors
    ///
    /// Gives the job back when the worker cannot take it (see [`Refused`]).
    pub(crate) fn run(&self, job: Job) -> Result<(), Refused> {
        let mut inner = self.lock();
        if inner.writer.is_none() {
            return Err(Refused::Closed(job));
        }
        if !inner.accepting || inner.in_flight.is_some() {
            return Err(Refused::Unavailable(job));
        }
        let Some(id) = inner.write(job.op, &job.body) else {
            return Err(Refused::Closed(job));
        };
        inner.in_flight = Some(InFlight {
            id,
            reply: job.reply,
        });
        self.deadline.arm(id, job.deadline);
        Ok(())
    }

    /// Writes a control frame (ping, shutdown); its id, or `None` once the link is closed.
    pub(super) fn send(&self, op: u8, body: &[u8]) -> Option<u64> {
        self.lock().write(op, body)
    }

    /// The handshake is done: calls may be written from now on.
    pub(super) fn accept(&self) {
        let mut inner = self.lock();
        inner.accepting = inner.writer.is_some();
    }

    /// Shutting down: no new calls; the one in flight still gets its reply.
    pub(super) fn stop_accepting(&self) {
        let mut inner = self.lock();
        inner.accepting = false;
        inner.stopping = true;
    }

    /// Whether call `id` is still in flight.
    pub(super) fn is_in_flight(&self, id: u64) -> bool {
        self.lock().in_flight.as_ref().is_some_and(|c| c.id == id)
    }

    /// Answers the call in flight with `frame` if `frame` is its reply (from the reader task);
    /// gives any other frame back, for the worker actor.
    pub(super) fn answer(&self, frame: Incoming) -> Result<(), Incoming> {
        if !matches!(frame.op, op::OK | op::ERROR) {
            return Err(frame);
        }
        let (call, stopping) = {
            let mut inner = self.lock();
            if inner.in_flight.as_ref().is_none_or(|c| c.id != frame.id) {
                return Err(frame);
            }
            (
                inner.in_flight.take().expect("checked above"),
                inner.stopping,
            )
        };
        self.deadline.disarm();
        let outcome = if frame.op == op::OK {
            Ok(Reply(frame))
        } else {
            Err(super::error_reply(&frame, self.max_frame))
        };
        // The pool learns that the worker is idle before the caller gets its reply, so a caller
        // that calls again at once finds its worker free (not WorkerBusy, not moved).
        if !stopping {
            let _ = self.pool.cast(PoolMsg::WorkerIdle {
                slot: self.id.slot,
                generation: self.id.generation,
            });
        }
        let _ = call.reply.send(outcome);
        Ok(())
    }

    /// Answers the call in flight, if any, with `error` (the worker is gone or stopped).
    pub(super) fn answer_in_flight(&self, error: impl FnOnce() -> Error) {
        let call = self.lock().in_flight.take();
        if let Some(call) = call {
            self.deadline.disarm();
            let _ = call.reply.send(Err(error()));
        }
    }

    /// Closes the link for good: answers the call in flight with `error`, refuses every later
    /// call and drops the request pipe.
    pub(super) fn close(&self, error: impl FnOnce() -> Error) {
        let writer = {
            let mut inner = self.lock();
            inner.accepting = false;
            inner.writer.take()
        };
        drop(writer);
        self.answer_in_flight(error);
    }
}
