use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::call::CallOptions;
use crate::error::Error;
use crate::pool::{CallSession, Placement, PoolClient};
use crate::protocol::{
    op, CallBody, ContextBody, GetAttrBody, MethodBody, ReleaseBody, SetAttrBody, StreamNextBody,
    StreamPage, Target,
};
use crate::value::{from_value, Ref, StreamRef, Value};

/// A handle on one session of one pool: its calls are routed to the worker that holds the
/// session's state, following the pool's [`Affinity`](crate::Affinity).
///
/// Cheap to clone; clones (and every handle that [`Runtime::session`](crate::Runtime::session)
/// returns for the same pool and id while one is alive) name the same session. When the last handle
/// is dropped, the session is released on its worker (its refs and contexts are dropped) — keep a
/// handle for as long as you need the session's Python state.
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
    pub(crate) inner: Arc<SessionInner>,
}

#[derive(Debug)]
pub(crate) struct SessionInner {
    pub(crate) pool: Arc<PoolClient>,
    pub(crate) id: Arc<str>,
    /// The session's current incarnation: drawn afresh by every reset (`pool/sessions.rs`).
    pub(crate) incarnation: AtomicU64,
}

impl SessionInner {
    pub(crate) fn new(pool: Arc<PoolClient>, id: Arc<str>) -> Self {
        let incarnation = AtomicU64::new(pool.next_incarnation());
        SessionInner {
            pool,
            id,
            incarnation,
        }
    }

    /// The session as a call made now names it.
    pub(crate) fn call_session(&self) -> CallSession {
        CallSession {
            id: self.id.clone(),
            incarnation: self.incarnation.load(Ordering::Acquire),
        }
    }
}

impl Drop for SessionInner {
    /// The last handle is gone: the pool forgets the session and releases its state.
    fn drop(&mut self) {
        let _ = self.pool.forget(&self.id, *self.incarnation.get_mut());
    }
}

impl Session {
    fn key(&self) -> Option<&Arc<str>> {
        Some(&self.inner.id)
    }

    /// The session id.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(rt: pyvisor::Runtime) -> Result<(), pyvisor::Error> {
    /// assert_eq!(rt.session("p", "s1")?.id(), "s1");
    /// # Ok(()) }
    /// ```
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The pool name.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(rt: pyvisor::Runtime) -> Result<(), pyvisor::Error> {
    /// assert_eq!(rt.session("p", "s1")?.pool(), "p");
    /// # Ok(()) }
    /// ```
    pub fn pool(&self) -> &str {
        &self.inner.pool.name
    }

    async fn request<B: Serialize + ?Sized, R: DeserializeOwned + 'static>(
        &self,
        opts: CallOptions,
        op: u8,
        body: &B,
    ) -> Result<R, Error> {
        let session = self.inner.call_session();
        self.inner
            .pool
            .request(Some(&session), opts, op, body)
            .await
    }

    /// Calls `module.function(*args, **kwargs)` on the session's worker and decodes the result
    /// as `R` (use [`Value`](crate::Value) for any shape, [`Ref`] for an object). Constructing a
    /// class is the same call (`"collections"`, `"OrderedDict"`).
    ///
    /// `args` must serialize to a sequence (a tuple, a `Vec`, `()` for none), `kwargs` to a map or
    /// to nothing (`()`). Refs may appear anywhere inside them. `function` may be dotted
    /// (`"path.join"` in module `"os"`).
    ///
    /// # Errors
    ///
    /// [`Error::Python`] when Python raises, [`Error::SessionWorkerUnavailable`] when the session's
    /// state was lost (a strict session, or a hint session with refs or contexts, whose worker
    /// died; or a call with refs of a dead worker), [`Error::Timeout`],
    /// [`Error::QueueTimeout`], [`Error::PoolSaturated`], [`Error::WorkerBusy`],
    /// [`Error::WorkerExited`], [`Error::RefNotFound`], [`Error::RefSessionMismatch`],
    /// [`Error::NotAllowed`], [`Error::Decode`] when the result is not an `R`, and the other
    /// variants of [`Error`].
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
    pub async fn call<R: DeserializeOwned + 'static>(
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
    pub async fn call_with<R: DeserializeOwned + 'static>(
        &self,
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
            session: Some(self.id()),
        };
        self.request(opts, op::CALL, &body).await
    }

    /// Calls the method `method` of the object behind `target`.
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
    /// let s = rt.session("p", "s1")?;
    /// let pattern: pyvisor::Ref = s.call("re", "compile", &(r"\d+",), &()).await?;
    /// let found: Vec<String> = s.call_method(&pattern, "findall", &("a1b22",), &()).await?;
    /// assert_eq!(found, ["1", "22"]);
    /// # Ok(()) }
    /// ```
    pub async fn call_method<R: DeserializeOwned + 'static>(
        &self,
        target: &Ref,
        method: &str,
        args: &(impl Serialize + ?Sized),
        kwargs: &(impl Serialize + ?Sized),
    ) -> Result<R, Error> {
        let body = MethodBody {
            target,
            method,
            args,
            kwargs,
            session: Some(self.id()),
        };
        self.request(CallOptions::default(), op::CALL_METHOD, &body)
            .await
    }

    /// Reads the attribute `name` of a module (`numpy.__version__`).
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
    /// let pi: f64 = rt.session("p", "s1")?.get("math", "pi").await?;
    /// # Ok(()) }
    /// ```
    pub async fn get<R: DeserializeOwned + 'static>(
        &self,
        module: &str,
        name: &str,
    ) -> Result<R, Error> {
        let body = GetAttrBody {
            target: Target::Module(module),
            name,
            session: Some(self.id()),
        };
        self.request(CallOptions::default(), op::GET_ATTR, &body)
            .await
    }

    /// Reads the attribute `name` of the object behind `target`.
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
    /// # async fn f(s: pyvisor::Session, pattern: pyvisor::Ref) -> Result<(), pyvisor::Error> {
    /// let source: String = s.get_attr(&pattern, "pattern").await?;
    /// # Ok(()) }
    /// ```
    pub async fn get_attr<R: DeserializeOwned + 'static>(
        &self,
        target: &Ref,
        name: &str,
    ) -> Result<R, Error> {
        let body = GetAttrBody {
            target: Target::Ref(target),
            name,
            session: Some(self.id()),
        };
        self.request(CallOptions::default(), op::GET_ATTR, &body)
            .await
    }

    /// Sets the attribute `name` of the object behind `target` to `value`.
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
    /// # async fn f(s: pyvisor::Session, obj: pyvisor::Ref) -> Result<(), pyvisor::Error> {
    /// s.set_attr(&obj, "temperature", &0.7).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_attr(
        &self,
        target: &Ref,
        name: &str,
        value: &(impl Serialize + ?Sized),
    ) -> Result<(), Error> {
        let body = SetAttrBody {
            target,
            name,
            value,
            session: Some(self.id()),
        };
        self.request::<_, Value>(CallOptions::default(), op::SET_ATTR, &body)
            .await
            .map(drop)
    }

    /// Evaluates a Python expression with `globals` (a map; refs inside it are the live objects).
    /// Needs a pool with `allow_eval`.
    ///
    /// # Errors
    ///
    /// As [`Session::call`]; [`Error::NotAllowed`] when the pool forbids eval.
    ///
    /// # Cancel safety
    ///
    /// As [`Session::call`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(s: pyvisor::Session, lm: pyvisor::Ref) -> Result<(), pyvisor::Error> {
    /// use std::collections::HashMap;
    /// let globals = HashMap::from([("lm", &lm)]);
    /// let last: pyvisor::Value = s.eval("list(lm.history[-6:])", &globals).await?;
    /// # Ok(()) }
    /// ```
    pub async fn eval<R: DeserializeOwned + 'static>(
        &self,
        expr: &str,
        globals: &(impl Serialize + ?Sized),
    ) -> Result<R, Error> {
        self.call("builtins", "eval", &(expr, globals), &()).await
    }

    /// Executes Python statements with `globals` (refs inside it are the live objects). Needs a
    /// pool with `allow_eval`.
    ///
    /// # Errors
    ///
    /// As [`Session::eval`].
    ///
    /// # Cancel safety
    ///
    /// As [`Session::call`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(s: pyvisor::Session) -> Result<(), pyvisor::Error> {
    /// s.exec("import math\nx = math.tau", &std::collections::HashMap::<String, ()>::new()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn exec(&self, code: &str, globals: &(impl Serialize + ?Sized)) -> Result<(), Error> {
        self.call::<Value>("builtins", "exec", &(code, globals), &())
            .await
            .map(drop)
    }

    /// Releases one ref: the worker drops the object (if nothing else holds it). Returns whether
    /// the worker still held it.
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
    /// # async fn f(s: pyvisor::Session, r: pyvisor::Ref) -> Result<(), pyvisor::Error> {
    /// assert!(s.release(&r).await?);
    /// # Ok(()) }
    /// ```
    pub async fn release(&self, target: &Ref) -> Result<bool, Error> {
        let pool = &self.inner.pool;
        let body = ReleaseBody {
            session: Some(self.id()),
            refs: Some(vec![target.id]),
        };
        let mut request = pool.encode(self.key(), op::RELEASE, &body)?;
        // The body names the ref by id only: pin the request to the ref's worker explicitly.
        request.pin = pool
            .encoder
            .pin(Some(self.id()), std::slice::from_ref(target))?;
        let n: u64 = pool
            .send(
                Some(&self.inner.call_session()),
                CallOptions::default(),
                request,
            )
            .await?;
        Ok(n > 0)
    }

    /// Releases every ref of the session and its contexts, on its worker; the session stays
    /// usable. Returns how many refs were released.
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
    /// # async fn f(s: pyvisor::Session) -> Result<(), pyvisor::Error> {
    /// let released = s.release_all().await?;
    /// # Ok(()) }
    /// ```
    pub async fn release_all(&self) -> Result<u64, Error> {
        let body = ReleaseBody {
            session: Some(self.id()),
            refs: None,
        };
        self.request(CallOptions::default(), op::RELEASE, &body)
            .await
    }

    /// Registers a context manager that the worker enters around every later request of this
    /// session: `module.function(*args, **kwargs)` is called afresh each time (refs resolved) and
    /// entered; e.g. `("dspy", "context", (), {"lm": lm})` gives the session its own DSPy LM while
    /// other sessions on the same worker keep theirs.
    ///
    /// # Errors
    ///
    /// As [`Session::call`]; the factory is tried once and not registered if that raises.
    ///
    /// # Cancel safety
    ///
    /// As [`Session::call`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(s: pyvisor::Session, lm: pyvisor::Ref) -> Result<(), pyvisor::Error> {
    /// use std::collections::HashMap;
    /// s.push_context("dspy", "context", &(), &HashMap::from([("lm", &lm)])).await?;
    /// # Ok(()) }
    /// ```
    pub async fn push_context(
        &self,
        module: &str,
        function: &str,
        args: &(impl Serialize + ?Sized),
        kwargs: &(impl Serialize + ?Sized),
    ) -> Result<(), Error> {
        let body = ContextBody {
            session: Some(self.id()),
            module: Some(module),
            function,
            args,
            kwargs,
        };
        let pool = &self.inner.pool;
        let request = pool.encode(self.key(), op::CONTEXT, &body)?;
        // The session holds state on its worker from now on: its calls never run elsewhere.
        let session = self.inner.call_session();
        pool.start(Some(&session), CallOptions::default(), request, true)
            .finish::<Value>(pool)
            .await
            .map(drop)
    }

    /// Removes every context registered with [`Session::push_context`].
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
    /// # async fn f(s: pyvisor::Session) -> Result<(), pyvisor::Error> {
    /// s.clear_contexts().await?;
    /// # Ok(()) }
    /// ```
    pub async fn clear_contexts(&self) -> Result<(), Error> {
        let body = ContextBody::<(), ()> {
            session: Some(self.id()),
            module: None,
            function: "",
            args: &(),
            kwargs: &(),
        };
        self.request::<_, Value>(CallOptions::default(), op::CONTEXT, &body)
            .await
            .map(drop)
    }

    /// Consumes the Python iterator behind `stream` as an async stream of `T`, fetching items in
    /// batches. The stream ends when the iterator is exhausted (the worker then releases it); an
    /// exception raised by the iterator is yielded as an error and ends the stream.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(s: pyvisor::Session) -> Result<(), pyvisor::Error> {
    /// use futures::TryStreamExt;
    /// let gen: pyvisor::StreamRef = s.call("builtins", "iter", &(vec![1, 2, 3],), &()).await?;
    /// let items: Vec<i64> = s.stream::<i64>(&gen).try_collect().await?;
    /// # Ok(()) }
    /// ```
    pub fn stream<T: DeserializeOwned + Send + 'static>(
        &self,
        stream: &StreamRef,
    ) -> impl Stream<Item = Result<T, Error>> + Send + 'static {
        let state = Pages {
            session: self.clone(),
            target: stream.clone(),
            buffered: VecDeque::new(),
            done: false,
        };
        futures::stream::unfold(state, |mut st| async move {
            loop {
                if let Some(v) = st.buffered.pop_front() {
                    return Some((from_value::<T>(v), st));
                }
                if st.done {
                    return None;
                }
                let body = StreamNextBody {
                    target: &st.target,
                    max: STREAM_BATCH,
                    session: Some(st.session.id()),
                };
                match st
                    .session
                    .request::<_, Value>(CallOptions::default(), op::STREAM_NEXT, &body)
                    .await
                {
                    Ok(page) => match from_value::<StreamPage>(page) {
                        Ok(page) => {
                            st.buffered.extend(page.items);
                            st.done = page.done;
                        }
                        Err(e) => {
                            st.done = true;
                            return Some((Err(e), st));
                        }
                    },
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
            }
        })
    }

    /// Where the session's calls go: its worker (slot, generation, pid) and whether its state
    /// lives there, or the worker it lost. `None` before the session's first call and after a
    /// reset.
    ///
    /// # Errors
    ///
    /// [`Error::ShuttingDown`] when the pool is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(s: pyvisor::Session) -> Result<(), pyvisor::Error> {
    /// if let Some(p) = s.placement().await? {
    ///     println!("{} on {} (pid {:?})", s.id(), p.worker, p.pid);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn placement(&self) -> Result<Option<Placement>, Error> {
        self.inner.pool.placement(self.id())
    }

    /// Forgets where the session's state lives, so that its next call starts it afresh on a
    /// worker chosen like for a new session. This is how a caller acknowledges
    /// [`Error::SessionWorkerUnavailable`] after deciding to rebuild (rehydrate) its state. If
    /// the session's worker is still alive, the session's refs and contexts are released there
    /// (after the calls already submitted), so a session placed afresh never finds its old
    /// contexts around its calls; refs issued before the reset are then
    /// [`Error::RefNotFound`].
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
        let pool = &self.inner.pool;
        let forgotten = self
            .inner
            .incarnation
            .swap(pool.next_incarnation(), Ordering::AcqRel);
        pool.forget(&self.inner.id, forgotten)
    }
}

/// Items fetched per `STREAM_NEXT`.
const STREAM_BATCH: usize = 64;

struct Pages {
    session: Session,
    target: StreamRef,
    buffered: VecDeque<Value>,
    done: bool,
}
