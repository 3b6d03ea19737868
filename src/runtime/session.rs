use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::Error;
use crate::pool::{Affinity, PoolMsg};
use crate::protocol::{op, CallBody};
use crate::worker::{Job, Reply};

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
    /// Affinity of this call (the pool's when `None`).
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

    /// Sets the affinity.
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

/// The caller's side of one pool: encodes calls, sends them to the pool actor and waits for the
/// worker's reply up to the deadline.
#[derive(Debug)]
pub(crate) struct PoolClient {
    pub(crate) name: Arc<str>,
    pub(crate) actor: ActorRef<PoolMsg>,
    pub(crate) call_timeout: Duration,
    pub(crate) max_frame: usize,
}

impl PoolClient {
    pub(crate) async fn call<R: DeserializeOwned>(
        &self,
        session: Option<&Arc<str>>,
        opts: CallOptions,
        module: &str,
        function: &str,
        args: &(impl Serialize + ?Sized),
        kwargs: &(impl Serialize + ?Sized),
    ) -> Result<R, Error> {
        let body = CallBody {
            module,
            function,
            args,
            kwargs,
            session: session.map(|s| &**s),
        };
        let body = rmp_serde::to_vec_named(&body).map_err(|e| Error::Encode(e.to_string()))?;
        let reply = self.submit(session, opts, op::CALL, body).await?;
        rmp_serde::from_slice(reply.body()).map_err(|e| Error::Decode {
            expected: std::any::type_name::<R>(),
            message: e.to_string(),
        })
    }

    /// Sends an encoded request and waits for its reply until the deadline.
    ///
    /// # Cancel safety
    ///
    /// Cancelling the future drops the reply channel: a queued call is then skipped, and a running
    /// call's result is discarded when it arrives (the worker stays in service).
    async fn submit(
        &self,
        session: Option<&Arc<str>>,
        opts: CallOptions,
        op: u8,
        body: Vec<u8>,
    ) -> Result<Reply, Error> {
        // 4 bytes of length, up to 11 of envelope: [op, id, body].
        if body.len() + 15 > self.max_frame {
            return Err(Error::FrameTooLarge {
                what: "request",
                size: body.len(),
                limit: self.max_frame,
            });
        }
        let timeout = opts.timeout.unwrap_or(self.call_timeout);
        let deadline = Instant::now() + timeout;
        let (reply, rx) = oneshot::channel();
        let job = Job {
            op,
            body,
            reply,
            deadline,
            session: session.cloned(),
        };
        let msg = PoolMsg::Call {
            job,
            affinity: opts.affinity,
        };
        if self.actor.cast(msg).is_err() {
            return Err(Error::ShuttingDown {
                pool: self.name.to_string(),
            });
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(Error::ShuttingDown {
                pool: self.name.to_string(),
            }),
            Err(_) => Err(Error::Timeout {
                pool: self.name.to_string(),
                after: timeout,
            }),
        }
    }
}

/// A handle on one session of one pool: its calls are routed to the worker that holds the
/// session's state, following the pool's [`Affinity`].
///
/// Cheap to clone; clones name the same session.
///
/// # Examples
///
/// ```no_run
/// # async fn f(rt: pyvisor::Runtime) -> Result<(), pyvisor::Error> {
/// let s = rt.session("triage", "s1")?;
/// let root: f64 = s.call("math", "sqrt", &(2.0,), &()).await?;
/// assert!((root - 1.4142).abs() < 1e-3);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Session {
    pub(crate) pool: Arc<PoolClient>,
    pub(crate) id: Arc<str>,
}

impl Session {
    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The pool name.
    pub fn pool(&self) -> &str {
        &self.pool.name
    }

    /// Calls `module.function(*args, **kwargs)` on the session's worker and decodes the result
    /// as `R` (use [`Value`](crate::Value) for any shape).
    ///
    /// `args` must serialize to a sequence (a tuple, a `Vec`, `()` for none), `kwargs` to a map or
    /// to nothing (`()`). `function` may be dotted (`"path.join"` in module `"os"`).
    ///
    /// # Errors
    ///
    /// [`Error::Python`] when Python raises, [`Error::SessionWorkerUnavailable`] when the session's
    /// state was lost (strict affinity), [`Error::Timeout`], [`Error::QueueTimeout`],
    /// [`Error::PoolSaturated`], [`Error::WorkerBusy`], [`Error::WorkerExited`],
    /// [`Error::Decode`] when the result is not an `R`, and the other variants of [`Error`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the call: if it has not started it never will; if it is
    /// running, its result is discarded and the worker stays in service.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(rt: pyvisor::Runtime) -> Result<(), pyvisor::Error> {
    /// let s = rt.session("analytics", "a1")?;
    /// let joined: String = s.call("os", "path.join", &("a", "b"), &()).await?;
    /// assert_eq!(joined, "a/b");
    /// # Ok(()) }
    /// ```
    pub async fn call<R: DeserializeOwned>(
        &self,
        module: &str,
        function: &str,
        args: &(impl Serialize + ?Sized),
        kwargs: &(impl Serialize + ?Sized),
    ) -> Result<R, Error> {
        self.call_with(CallOptions::default(), module, function, args, kwargs)
            .await
    }

    /// [`Session::call`] with per-call options (deadline, affinity).
    ///
    /// # Errors
    ///
    /// As [`Session::call`].
    ///
    /// # Cancel safety
    ///
    /// As [`Session::call`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(rt: pyvisor::Runtime) -> Result<(), pyvisor::Error> {
    /// use std::time::Duration;
    /// let s = rt.session("triage", "s1")?;
    /// let opts = pyvisor::CallOptions::new().timeout(Duration::from_secs(1));
    /// let _: () = s.call_with(opts, "time", "sleep", &(0.1,), &()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn call_with<R: DeserializeOwned>(
        &self,
        opts: CallOptions,
        module: &str,
        function: &str,
        args: &(impl Serialize + ?Sized),
        kwargs: &(impl Serialize + ?Sized),
    ) -> Result<R, Error> {
        self.pool
            .call(Some(&self.id), opts, module, function, args, kwargs)
            .await
    }

    /// Forgets where the session's state lives, so that its next call starts it afresh on a
    /// worker chosen like for a new session. This is how a caller acknowledges
    /// [`Error::SessionWorkerUnavailable`] after rebuilding (rehydrating) its state.
    ///
    /// # Errors
    ///
    /// [`Error::ShuttingDown`] when the pool is gone.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(rt: pyvisor::Runtime) -> Result<(), pyvisor::Error> {
    /// let s = rt.session("triage", "s1")?;
    /// if let Err(pyvisor::Error::SessionWorkerUnavailable { .. }) = s.call::<()>("m", "f", &(), &()).await {
    ///     s.reset()?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn reset(&self) -> Result<(), Error> {
        self.pool
            .actor
            .cast(PoolMsg::ResetSession(self.id.clone()))
            .map_err(|_| Error::ShuttingDown {
                pool: self.pool.name.to_string(),
            })
    }
}
