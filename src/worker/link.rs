//! The worker link: the call path, shared by the pool, the callers, the worker actor and its
//! reader task.
//!
//! Calls are written to the worker through the link, and the reader task answers the caller
//! straight from the reply frame. Two ways in:
//!
//! * **through the pool** ([`WorkerLink::run`]): the pool routes the call (placement, affinity,
//!   queueing) and writes it; the reader then tells the pool the worker is idle
//!   (`PoolMsg::WorkerIdle`, before the caller gets its reply);
//! * **direct** ([`WorkerLink::run_direct`]): a session whose worker is idle writes its call
//!   itself, through the route the pool gave it at its last dispatch — no actor message at all.
//!   Only while the pool's [`DirectGate`] is open (running, nothing queued), so a direct call never
//!   overtakes a queued one; a closed or stopping worker refuses it and the call goes through
//!   the pool. A busy worker refuses it too, unless the call may wait there
//!   (`worker/waiting.rs`): it then joins the worker's wait list, and the reader task writes it
//!   as soon as the call before it is answered.
//!
//! The link's in-flight slot is the truth about whether the worker is busy. When the pool finds
//! a worker busy with a direct call, it asks to be told when the worker is idle (`pool_waiting`).
//! The worker actor stays off the call path: it handles the handshake, heartbeats, deadlines,
//! exits and shutdown, and closes the link when the worker fails, which answers the call in
//! flight and refuses every later one.
//!
//! Everything that writes to the pipe or touches the call in flight does it under one lock, so
//! frames never interleave and a reply, a failure and a new call always see one consistent state.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ractor::ActorRef;

use super::channel::RequestChannel;
use super::deadline::DeadlineTimer;
use super::job::{Job, Reply, ReplyTo};
use super::waiting::{WaitList, Waiting};
use crate::error::{Error, WorkerId};
use crate::pool::{Affinity, PoolMsg};
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
    /// Calls to write after the one in flight, by the reader task (never waiting while nothing
    /// is in flight on an open link).
    waiting: WaitList,
    /// The pool waits for this worker to become idle: the reply that leaves it idle (nothing
    /// waiting) sends `WorkerIdle`.
    pool_waiting: bool,
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
    /// The worker runs a call the pool did not write (a direct call, or one of its wait list);
    /// the pool is told when it is idle.
    Busy(Job),
    /// The worker is not ready or is stopping (a routing bug).
    Unavailable(Job),
}

/// Whether sessions may write calls to their idle worker directly: one per pool, opened and
/// closed by the pool actor (open while it runs with an empty queue). It counts the direct calls.
#[derive(Debug, Default)]
pub(crate) struct DirectGate {
    open: AtomicBool,
    calls: AtomicU64,
    /// Calls in the wait lists of the pool's workers (`worker/waiting.rs`).
    waiting: AtomicUsize,
    wait_timeouts: AtomicU64,
}

impl DirectGate {
    pub(crate) fn set(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
    }

    fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// Direct calls so far (written by their caller, or waiting and written by a reader task).
    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Calls in the wait lists of the pool's workers, all together.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Counts one more waiting call unless `capacity` are waiting already.
    pub(super) fn reserve_wait(&self, capacity: usize) -> bool {
        (self.waiting)
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < capacity).then_some(n + 1)
            })
            .is_ok()
    }

    /// Counts a call that waits again after it was taken out (never refused).
    pub(super) fn restore_wait(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
    }

    /// `n` calls left the wait lists.
    pub(super) fn release_wait(&self, n: usize) {
        self.waiting.fetch_sub(n, Ordering::SeqCst);
    }

    /// Calls dropped from the workers' wait lists by the queue timeout.
    pub(crate) fn wait_timeouts(&self) -> u64 {
        self.wait_timeouts.load(Ordering::Relaxed)
    }
}

/// The shared call path of one worker incarnation.
pub(crate) struct WorkerLink {
    id: WorkerId,
    pool: ActorRef<PoolMsg>,
    gate: Arc<DirectGate>,
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
        gate: Arc<DirectGate>,
        writer: RequestChannel,
        deadline: DeadlineTimer,
        max_frame: usize,
        waiting: WaitList,
    ) -> Arc<Self> {
        Arc::new(WorkerLink {
            id,
            pool,
            gate,
            deadline,
            max_frame,
            inner: Mutex::new(Inner {
                writer: Some(writer),
                accepting: false,
                stopping: false,
                next_id: 0,
                in_flight: None,
                waiting,
                pool_waiting: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves `Inner` consistent (no multi-step updates).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pool's way in: writes `job`'s request and makes it the call in flight, timed until
    /// its deadline; the pool is told when the worker is idle again.
    ///
    /// # Errors
    ///
    /// Gives the job back when the worker cannot take it (see [`Refused`]).
    pub(crate) fn run(&self, job: Job) -> Result<(), Refused> {
        let mut inner = self.lock();
        if inner.writer.is_none() {
            return Err(Refused::Closed(job));
        }
        if !inner.accepting {
            return Err(Refused::Unavailable(job));
        }
        inner.pool_waiting = true;
        if inner.in_flight.is_some() {
            return Err(Refused::Busy(job));
        }
        self.start(&mut inner, job).map_err(Refused::Closed)
    }

    /// The pool's way to queue `job` for this worker: it joins the wait list (or runs at once if
    /// the worker turned out to be idle); the pool is told when the worker is idle.
    ///
    /// # Errors
    ///
    /// Gives the job back when the worker cannot take calls or the wait list is full: the pool
    /// then queues it itself.
    pub(crate) fn enqueue(&self, job: Job, affinity: Affinity) -> Result<(), Job> {
        let mut inner = self.lock();
        if !inner.accepting {
            return Err(job);
        }
        inner.pool_waiting = true;
        if inner.in_flight.is_none() {
            return self.start(&mut inner, job);
        }
        self.wait(&mut inner, job, affinity)
    }

    /// A session's way in: runs `job` only if the pool's gate is open and the worker is ready and
    /// open. If the worker is busy, `job` joins its wait list when `wait` names the job's
    /// affinity (the caller knows whether the pool would have queued it for this worker anyway).
    ///
    /// # Errors
    ///
    /// Gives the job back otherwise, or when the wait list is full: it then goes through the
    /// pool.
    pub(crate) fn run_direct(&self, job: Job, wait: Option<Affinity>) -> Result<(), Job> {
        let mut inner = self.lock();
        // Tested under the lock: the pool closes the gate before it looks at in-flight slots.
        if !self.gate.is_open() || !inner.accepting {
            return Err(job);
        }
        if inner.in_flight.is_none() {
            self.start(&mut inner, job)?;
        } else {
            let Some(affinity) = wait else {
                return Err(job);
            };
            self.wait(&mut inner, job, affinity)?;
        }
        self.gate.calls.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Puts `job` at the back of the wait list, timing the list if it was empty.
    fn wait(&self, inner: &mut Inner, job: Job, affinity: Affinity) -> Result<(), Job> {
        if let Some(expiry) = inner.waiting.push(job, affinity)? {
            self.deadline.arm_queue(expiry);
        }
        Ok(())
    }

    fn start(&self, inner: &mut Inner, job: Job) -> Result<(), Job> {
        let Some(id) = inner.write(job.op, &job.body) else {
            return Err(job);
        };
        inner.in_flight = Some(InFlight {
            id,
            reply: job.reply,
        });
        self.deadline.arm(id, job.deadline);
        Ok(())
    }

    /// Whether the worker was told to shut down.
    pub(super) fn is_stopping(&self) -> bool {
        self.lock().stopping
    }

    /// Whether a call is in flight; if so, the pool is told when the worker is idle again.
    pub(crate) fn watch_idle(&self) -> bool {
        let mut inner = self.lock();
        inner.pool_waiting |= inner.in_flight.is_some();
        inner.in_flight.is_some()
    }

    /// Whether a call is in flight.
    pub(crate) fn is_busy(&self) -> bool {
        self.lock().in_flight.is_some()
    }

    /// Takes every call of the wait list (none of them was written), for the pool to answer or
    /// route again when the worker is lost or the pool stops or fails. The link takes no new call
    /// after that (the call in flight still gets its reply), so no call can join a list nobody
    /// will take again.
    pub(crate) fn take_waiting(&self) -> Vec<Waiting> {
        let mut inner = self.lock();
        inner.accepting = false;
        inner.waiting.take_all()
    }

    /// Drops the waiting calls whose caller gave up (they count against the pool's capacity).
    pub(crate) fn drop_abandoned(&self) {
        self.lock().waiting.drop_abandoned();
    }

    /// Answers the calls that waited `queue_timeout` with `Error::QueueTimeout` (they never run),
    /// and re-arms the timer for the oldest one left.
    pub(super) fn expire_waiting(&self) {
        let now = tokio::time::Instant::now();
        let expired = {
            let mut inner = self.lock();
            let (expired, next) = inner.waiting.expire(now);
            if let Some(at) = next {
                self.deadline.arm_queue(at);
            }
            expired
        };
        for w in expired {
            self.gate.wait_timeouts.fetch_add(1, Ordering::Relaxed);
            let _ = w.job.reply.send(Err(Error::QueueTimeout {
                pool: self.id.pool.clone(),
                waited: now.duration_since(w.since),
            }));
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
        let (call, notify) = {
            let mut inner = self.lock();
            if inner.in_flight.as_ref().is_none_or(|c| c.id != frame.id) {
                return Err(frame);
            }
            let call = self.take_call(&mut inner).expect("checked above");
            // The next waiting call is written before this reply is delivered: the worker never
            // waits for this caller.
            let next = inner.accepting && self.start_waiting(&mut inner);
            let notify = !next && std::mem::take(&mut inner.pool_waiting) && !inner.stopping;
            (call, notify)
        };
        let outcome = if frame.op == op::OK {
            Ok(Reply(frame))
        } else {
            Err(super::error_reply(&frame, self.max_frame))
        };
        // The pool learns that the worker is idle before the caller gets its reply, so a caller
        // that calls again at once finds its worker free (not WorkerBusy, not moved).
        if notify {
            let _ = self.pool.cast(PoolMsg::WorkerIdle {
                slot: self.id.slot,
                generation: self.id.generation,
            });
        }
        let _ = call.reply.send(outcome);
        Ok(())
    }

    /// Writes the oldest call of the wait list; whether there was one to write.
    fn start_waiting(&self, inner: &mut Inner) -> bool {
        let Some(Waiting {
            job,
            affinity,
            since,
        }) = inner.waiting.pop()
        else {
            return false;
        };
        match self.start(inner, job) {
            Ok(()) => true,
            Err(job) => {
                inner.waiting.put_back(Waiting {
                    job,
                    affinity,
                    since,
                });
                false
            }
        }
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
