//! The worker link: one worker incarnation's call path, shared by its pool's scheduler, the
//! worker actor and the reader task.
//!
//! The link is mechanism only: it writes the request its pool's scheduler chose, matches the
//! reply to it by request id, and answers the caller from the reader task. It decides nothing
//! about which call runs next: when a call is answered, it asks the scheduler ([`Dispatch`]) for
//! the next call of this worker and writes it before the reply is delivered, so a worker under
//! load never waits for a caller's task to be scheduled.
//!
//! Everything that writes to the pipe or touches the call in flight does it under one lock, so
//! frames never interleave and a reply, a failure and a new call always see one consistent state.
//! Lock order: the link's lock is never held while calling the scheduler.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use super::channel::RequestChannel;
use crate::alarm::Alarm;
use crate::call::{Job, Reply, ReplyTo};
use crate::error::Error;
use crate::identity::{SlotGen, WorkerId};
use crate::protocol::{encode_request, op, Incoming};

/// What a worker's link asks of its pool's scheduler (implemented by `pool::Scheduler`).
pub(crate) trait Dispatch: Send + Sync + 'static {
    /// The call in flight on `worker` was answered: the next call to write to it, if any. The
    /// scheduler counts the worker busy with that call.
    fn next_call(&self, worker: SlotGen) -> Option<Job>;

    /// `job`, chosen for `worker`, could not be written: the link is closed (the worker is gone
    /// and its supervision event is on its way). The scheduler routes it again (it never ran)
    /// and returns where to write it now, if anywhere.
    fn unwritten(&self, worker: SlotGen, job: Job) -> Option<(Arc<WorkerLink>, Job)>;
}

/// What [`WorkerLink::start`] did with a call.
#[must_use]
enum Start {
    Written,
    /// The link is closed (or not accepting): the call, unwritten.
    Refused(Job),
}

/// The call a worker is running.
struct InFlight {
    id: u64,
    reply: ReplyTo,
    deadline: Instant,
}

struct Inner {
    /// `None` once the link is closed: the worker failed or its actor stopped.
    writer: Option<RequestChannel>,
    /// Handshake done and not stopping: calls may be written.
    accepting: bool,
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

/// The shared call path of one worker incarnation.
pub(crate) struct WorkerLink {
    id: WorkerId,
    at: SlotGen,
    dispatch: Arc<dyn Dispatch>,
    /// Rings at the deadline of the call in flight (the worker actor then quarantines it).
    deadline: Alarm,
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
        dispatch: Arc<dyn Dispatch>,
        writer: RequestChannel,
        deadline: Alarm,
        max_frame: usize,
    ) -> Arc<Self> {
        Arc::new(WorkerLink {
            at: id.at(),
            id,
            dispatch,
            deadline,
            max_frame,
            inner: Mutex::new(Inner {
                writer: Some(writer),
                accepting: false,
                next_id: 0,
                in_flight: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves `Inner` consistent (no multi-step updates).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `job`'s request and makes it the call in flight, timed until its deadline; gives
    /// the job back, unwritten, when the link is closed or not accepting calls.
    fn start(&self, job: Job) -> Start {
        let mut inner = self.lock();
        if !inner.accepting || inner.in_flight.is_some() {
            debug_assert!(
                inner.in_flight.is_none(),
                "{}: two calls in flight",
                self.id
            );
            return Start::Refused(job);
        }
        let Some(id) = inner.write(job.op, &job.body) else {
            return Start::Refused(job);
        };
        let _span = job.span.enter();
        tracing::trace!(worker = %self.id, id, "call written");
        inner.in_flight = Some(InFlight {
            id,
            reply: job.reply,
            deadline: job.deadline,
        });
        self.deadline.arm(job.deadline);
        Start::Written
    }

    /// Writes `job` to this worker (the scheduler counts it busy with `job`), or, if it cannot
    /// take it, gives it back to the scheduler, which routes it again (maybe to another worker,
    /// written the same way).
    pub(crate) fn write(self: &Arc<Self>, job: Job) {
        let Start::Refused(job) = self.start(job) else {
            return;
        };
        // A loop, not recursion: each refusal closes one more worker to the scheduler.
        let mut next = self.dispatch.unwritten(self.at, job);
        while let Some((link, job)) = next.take() {
            if let Start::Refused(job) = link.start(job) {
                next = link.dispatch.unwritten(link.at, job);
            }
        }
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
        self.lock().accepting = false;
    }

    /// The id of the call in flight if its deadline has passed.
    pub(super) fn overdue(&self) -> Option<u64> {
        let inner = self.lock();
        let call = inner.in_flight.as_ref()?;
        (call.deadline <= Instant::now()).then_some(call.id)
    }

    /// Whether call `id` is still in flight.
    pub(super) fn is_in_flight(&self, id: u64) -> bool {
        self.lock().in_flight.as_ref().is_some_and(|c| c.id == id)
    }

    /// Answers the call in flight with `frame` if `frame` is its reply (from the reader task);
    /// gives any other frame back, for the worker actor.
    pub(super) fn answer(self: &Arc<Self>, frame: Incoming) -> Result<(), Incoming> {
        if !matches!(frame.op, op::OK | op::ERROR) {
            return Err(frame);
        }
        let call = {
            let mut inner = self.lock();
            if inner.in_flight.as_ref().is_none_or(|c| c.id != frame.id) {
                return Err(frame);
            }
            self.take_call(&mut inner).expect("checked above")
        };
        // The next call is written before this reply is delivered: the worker never waits for
        // this caller, and the scheduler counts this worker idle only if nothing is waiting for
        // it.
        if let Some(job) = self.dispatch.next_call(self.at) {
            self.write(job);
        }
        let outcome = if frame.op == op::OK {
            Ok(Reply(frame))
        } else {
            Err(super::error_reply(&frame, self.max_frame))
        };
        call.reply.send(outcome);
        Ok(())
    }

    /// Takes the call in flight and stops timing it. Called under the lock, so that a call
    /// written right after arms the timer only once this one is disarmed.
    fn take_call(&self, inner: &mut Inner) -> Option<InFlight> {
        let call = inner.in_flight.take();
        if call.is_some() {
            self.deadline.disarm();
        }
        call
    }

    /// Answers the call in flight, if any, with `error` (the worker is gone or stopped).
    pub(super) fn answer_in_flight(&self, error: impl FnOnce() -> Error) {
        let call = self.take_call(&mut self.lock());
        if let Some(call) = call {
            call.reply.send(Err(error()));
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
