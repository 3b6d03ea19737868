//! The runtime: a set of named pools, their event stream and their lifecycle.

mod config;
mod embed;
mod python;
mod session;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::call::CallOptions;
use crate::error::Error;
use crate::event::{EventBus, EventStream};
use crate::pool::{self, PoolClient, PoolConfig, PoolStats};

pub use config::RuntimeConfig;
pub use embed::Delivered;
pub use session::Session;

type SessionKey = (String, Arc<str>);

use session::SessionInner;

/// Builds a [`Runtime`].
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), pyvisor::Error> {
/// use pyvisor::{Affinity, PoolConfig, Runtime};
///
/// let rt = Runtime::builder()
///     .pool(PoolConfig::new("triage").size(2).affinity(Affinity::StrictQueue))
///     .pool(PoolConfig::new("analytics").size(2))
///     .start()
///     .await?;
/// rt.wait_ready().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct RuntimeBuilder {
    config: RuntimeConfig,
}

impl RuntimeBuilder {
    /// Uses `python` as the interpreter (otherwise `$PYVISOR_PYTHON`, then `./.venv/bin/python`,
    /// then the `.venv` of the pyvisor checkout).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = pyvisor::Runtime::builder().python("/opt/venv/bin/python");
    /// ```
    #[must_use]
    pub fn python(mut self, python: impl Into<PathBuf>) -> Self {
        self.config.python = Some(python.into());
        self
    }

    /// Adds a pool.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = pyvisor::Runtime::builder().pool(pyvisor::PoolConfig::new("p"));
    /// ```
    #[must_use]
    pub fn pool(mut self, pool: PoolConfig) -> Self {
        self.config.pools.push(pool);
        self
    }

    /// Takes the interpreter and pools from a [`RuntimeConfig`] (e.g. read from TOML); pools
    /// added before are kept.
    ///
    /// # Examples
    ///
    /// ```
    /// let cfg = pyvisor::RuntimeConfig::from_toml_str("[[pools]]\nname = \"p\"").unwrap();
    /// let b = pyvisor::Runtime::builder().config(cfg);
    /// ```
    #[must_use]
    pub fn config(mut self, config: RuntimeConfig) -> Self {
        if config.python.is_some() {
            self.config.python = config.python;
        }
        self.config.pools.extend(config.pools);
        self
    }

    /// Checks the configuration and the Python environment, and starts every pool. Workers
    /// start in the background; calls made before they are ready wait for them (use
    /// [`Runtime::wait_ready`] to wait explicitly). The environment check (one interpreter run
    /// per distinct interpreter) runs while the first workers start; if it fails, the pools are
    /// shut down again, with every process they started reaped, before the error is returned.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid or duplicate pool, [`Error::PythonEnvironment`] when no
    /// interpreter is found or it cannot import the worker package (the message says how to fix
    /// it).
    pub async fn start(self) -> Result<Runtime, Error> {
        self.launch(None).await
    }

    /// Like [`RuntimeBuilder::start`], with every pool actor linked under `supervisor`, an actor
    /// of the host application. A pool that exceeds its restart intensity then fails its actor:
    /// the supervisor receives `SupervisionEvent::ActorFailed` whose error downcasts to
    /// [`Error::PoolFailed`] (OTP escalation), and the pool's workers are killed with it. Stopping
    /// the supervisor's tree stops each pool gracefully: calls in flight drain for the pool's
    /// `shutdown_grace`, then no process is left. See `docs/embedding.md`.
    ///
    /// # Errors
    ///
    /// As [`RuntimeBuilder::start`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(host: ractor::ActorCell) -> Result<(), pyvisor::Error> {
    /// let rt = pyvisor::Runtime::builder()
    ///     .pool(pyvisor::PoolConfig::new("triage"))
    ///     .start_linked(host)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn start_linked(self, supervisor: ractor::ActorCell) -> Result<Runtime, Error> {
        self.launch(Some(supervisor)).await
    }

    async fn launch(self, supervisor: Option<ractor::ActorCell>) -> Result<Runtime, Error> {
        let mut seen = std::collections::HashSet::new();
        for pool in &self.config.pools {
            pool.validate().map_err(Error::Config)?;
            if !seen.insert(pool.name.clone()) {
                return Err(Error::Config(format!("two pools named {}", pool.name)));
            }
        }
        let events = EventBus::default();
        let mut pools = HashMap::new();
        let mut joins = Vec::new();
        let mut checked = Vec::new();
        // Unsupervised, each interpreter's preflight runs while the pools start their workers
        // (it takes as long as a worker's start), and a failed one stops those pools again.
        // Under a host supervisor, pools start only after their preflight: a pool started and
        // stopped at once would show up in the host's supervision events.
        let overlap = supervisor.is_none();
        let mut preflights = Vec::new();
        for config in self.config.pools {
            let python =
                python::resolve(config.python.as_deref().or(self.config.python.as_deref()))?;
            let mut python_path = config.python_path.clone();
            python_path.extend(python::bundled_worker_dir());
            if !checked.contains(&(python.clone(), python_path.clone())) {
                checked.push((python.clone(), python_path.clone()));
                if overlap {
                    let (python, python_path) = (python.clone(), python_path.clone());
                    preflights.push(tokio::spawn(async move {
                        python::preflight(&python, &python_path).await
                    }));
                } else {
                    python::preflight(&python, &python_path).await?;
                }
            }
            let spec = config.worker_spec(python, python_path);
            let (client, join) =
                pool::spawn(config.clone(), spec, events.clone(), supervisor.clone()).await?;
            joins.push(join);
            pools.insert(config.name.clone(), Arc::new(client));
        }
        let runtime = Runtime {
            inner: Arc::new(Inner {
                pools,
                events,
                joins: Mutex::new(joins),
                sessions: Mutex::new(HashMap::new()),
            }),
        };
        for preflight in preflights {
            let outcome = preflight
                .await
                .unwrap_or_else(|e| Err(Error::Internal(format!("preflight task: {e}"))));
            if let Err(e) = outcome {
                runtime.shutdown().await; // every process it started is reaped
                return Err(e);
            }
        }
        Ok(runtime)
    }
}

#[derive(Debug)]
struct Inner {
    pools: HashMap<String, Arc<PoolClient>>,
    events: EventBus,
    joins: Mutex<Vec<JoinHandle<()>>>,
    /// Live session handles, so that every handle of one session shares one release-on-drop.
    sessions: Mutex<HashMap<SessionKey, Weak<SessionInner>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropped without `shutdown`: kill the pools; their workers are killed with them (linked
        // children), and each worker's state kills its process group.
        for pool in self.pools.values() {
            pool.kill();
        }
    }
}

/// A running set of pools of Python workers.
///
/// Cheap to clone; the pools are killed (with their processes) when the last clone is dropped,
/// and stopped gracefully by [`Runtime::shutdown`].
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), pyvisor::Error> {
/// use pyvisor::{PoolConfig, Runtime};
///
/// let rt = Runtime::builder().pool(PoolConfig::new("p").size(1)).start().await?;
/// let root: f64 = rt.session("p", "s1")?.call("math", "sqrt", &(16.0,), &()).await?;
/// assert_eq!(root, 4.0);
/// rt.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl Runtime {
    /// A builder.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = pyvisor::Runtime::builder();
    /// ```
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    fn pool(&self, pool: &str) -> Result<&Arc<PoolClient>, Error> {
        self.inner
            .pools
            .get(pool)
            .ok_or_else(|| Error::PoolNotFound {
                pool: pool.to_string(),
            })
    }

    /// A handle on session `id` of `pool`. Creating the handle sends nothing; the session is
    /// placed on a worker by its first call. While a handle is alive, this returns a clone of it;
    /// when the last one is dropped, the session is released on its worker.
    ///
    /// # Errors
    ///
    /// [`Error::PoolNotFound`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(rt: pyvisor::Runtime) -> Result<(), pyvisor::Error> {
    /// let s = rt.session("triage", "ticket-42")?;
    /// assert_eq!(s.id(), "ticket-42");
    /// # Ok(()) }
    /// ```
    pub fn session(&self, pool: &str, id: impl Into<Arc<str>>) -> Result<Session, Error> {
        let client = self.pool(pool)?.clone();
        let id: Arc<str> = id.into();
        let mut sessions = self.inner.sessions.lock().expect("sessions lock");
        let key = (pool.to_string(), id.clone());
        if let Some(inner) = sessions.get(&key).and_then(Weak::upgrade) {
            return Ok(Session { inner });
        }
        if sessions.len() >= 64 && sessions.len().is_power_of_two() {
            sessions.retain(|_, s| s.strong_count() > 0);
        }
        let inner = Arc::new(SessionInner::new(client, id));
        sessions.insert(key, Arc::downgrade(&inner));
        Ok(Session { inner })
    }

    /// Calls `module.function(*args, **kwargs)` on any free worker of `pool`, outside any session.
    ///
    /// # Errors
    ///
    /// As [`Session::call`], plus [`Error::PoolNotFound`].
    ///
    /// # Cancel safety
    ///
    /// As [`Session::call`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(rt: pyvisor::Runtime) -> Result<(), pyvisor::Error> {
    /// let n: i64 = rt.call("analytics", "builtins", "len", &(vec![1, 2, 3],), &()).await?;
    /// assert_eq!(n, 3);
    /// # Ok(()) }
    /// ```
    pub async fn call<R: DeserializeOwned + 'static>(
        &self,
        pool: &str,
        module: &str,
        function: &str,
        args: &(impl Serialize + ?Sized),
        kwargs: &(impl Serialize + ?Sized),
    ) -> Result<R, Error> {
        let body = crate::protocol::CallBody {
            module,
            function,
            args,
            kwargs,
            session: None,
        };
        self.pool(pool)?
            .request(
                None,
                CallOptions::default(),
                crate::protocol::op::CALL,
                &body,
            )
            .await
    }

    /// Subscribes to the runtime's events, from now on.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(rt: pyvisor::Runtime) {
    /// let mut events = rt.events();
    /// # }
    /// ```
    pub fn events(&self) -> EventStream {
        self.inner.events.subscribe()
    }

    /// A snapshot of every pool, sorted by name.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(rt: pyvisor::Runtime) {
    /// for pool in rt.stats().await {
    ///     println!("{}: {} queued, {} restarts", pool.name, pool.queued, pool.restarts);
    /// }
    /// # }
    /// ```
    pub async fn stats(&self) -> Vec<PoolStats> {
        let mut out: Vec<PoolStats> = self
            .inner
            .pools
            .values()
            .filter_map(|p| p.stats())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Waits until every worker of every pool has been ready once.
    ///
    /// # Errors
    ///
    /// [`Error::PoolFailed`] when a pool gave up before it was ready (the error carries the last
    /// stderr lines of its workers), [`Error::ShuttingDown`] after shutdown began.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(rt: pyvisor::Runtime) -> Result<(), pyvisor::Error> {
    /// rt.wait_ready().await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_ready(&self) -> Result<(), Error> {
        let mut names: Vec<_> = self.inner.pools.keys().collect();
        names.sort();
        for name in names {
            self.wait_pool_ready(name).await?;
        }
        Ok(())
    }

    /// Waits until every worker of `pool` has been ready once.
    ///
    /// # Errors
    ///
    /// As [`Runtime::wait_ready`], plus [`Error::PoolNotFound`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(rt: pyvisor::Runtime) -> Result<(), pyvisor::Error> {
    /// rt.wait_pool_ready("triage").await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_pool_ready(&self, pool: &str) -> Result<(), Error> {
        self.pool(pool)?.wait_ready().await
    }

    /// Waits until every worker of every pool is ready: after restarts too, not only once (see
    /// [`Runtime::wait_pool_full_strength`]).
    ///
    /// # Errors
    ///
    /// As [`Runtime::wait_pool_full_strength`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(rt: pyvisor::Runtime) -> Result<(), pyvisor::Error> {
    /// rt.wait_full_strength().await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_full_strength(&self) -> Result<(), Error> {
        let mut names: Vec<_> = self.inner.pools.keys().collect();
        names.sort();
        for name in names {
            self.wait_pool_full_strength(name).await?;
        }
        Ok(())
    }

    /// Waits until every worker slot of `pool` has a ready worker: a pool that is restarting a
    /// worker is back to full strength once the replacement finished its handshake. (A slot
    /// whose worker is down for good, a `temporary` worker that exited, does not count.) Unlike
    /// [`Runtime::wait_pool_ready`], which means "ready once", this waits again after every
    /// worker loss.
    ///
    /// # Errors
    ///
    /// [`Error::PoolFailed`] when the pool gave up (now or while waiting),
    /// [`Error::ShuttingDown`] when it is shutting down, [`Error::PoolNotFound`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(rt: pyvisor::Runtime) -> Result<(), pyvisor::Error> {
    /// // After a worker crash: wait for its replacement before measuring again.
    /// rt.wait_pool_full_strength("triage").await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_pool_full_strength(&self, pool: &str) -> Result<(), Error> {
        self.pool(pool)?.wait_full_strength().await
    }

    /// Stops every pool: no new calls are admitted (queued ones get [`Error::ShuttingDown`]),
    /// calls in flight may finish within each pool's `shutdown_grace`, then each worker is asked
    /// to exit, then SIGTERMed, then SIGKILLed. Returns when no worker process is left.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(rt: pyvisor::Runtime) {
    /// rt.shutdown().await;
    /// # }
    /// ```
    pub async fn shutdown(&self) {
        let waits: Vec<_> = self
            .inner
            .pools
            .values()
            .filter_map(|p| p.shutdown())
            .collect();
        for rx in waits {
            let _ = rx.await;
        }
        let joins = std::mem::take(&mut *self.inner.joins.lock().expect("joins lock"));
        for join in joins {
            let _ = join.await;
        }
    }
}
