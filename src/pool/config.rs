//! A pool's configuration, in code or in TOML.

pub(crate) mod duration;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::call::Affinity;
use crate::process::LaunchSpec;
use crate::protocol::DEFAULT_MAX_FRAME;
use crate::supervisor::RestartPolicy;
use crate::template::TemplateLink;
use crate::worker::WorkerSpec;

use super::LaunchMode;

/// Configuration of one named pool.
///
/// Built in code with the builder methods, or read from a TOML file (see
/// [`RuntimeConfig`](crate::RuntimeConfig)); durations in files are written `"250ms"`, `"5s"`,
/// `"2m"`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pyvisor::{Affinity, PoolConfig};
///
/// let cfg = PoolConfig::new("triage")
///     .size(2)
///     .affinity(Affinity::StrictQueue)
///     .call_timeout(Duration::from_secs(30));
/// assert_eq!(cfg.size, 2);
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PoolConfig {
    /// Name of the pool, unique in a runtime.
    pub name: String,
    /// Number of worker processes (default 2).
    pub size: usize,
    /// Default affinity of sessions (default `hint`).
    pub affinity: Affinity,
    /// Calls that may wait for a worker before [`Error::PoolSaturated`](crate::Error::PoolSaturated)
    /// (default 1000).
    pub max_queue: usize,
    /// Longest wait in the queue before [`Error::QueueTimeout`](crate::Error::QueueTimeout)
    /// (default 10 s).
    #[serde(deserialize_with = "duration::deserialize")]
    pub queue_timeout: Duration,
    /// Default deadline of a call, queueing included (default 60 s).
    #[serde(deserialize_with = "duration::deserialize")]
    pub call_timeout: Duration,
    /// How long a call may run past its deadline before its worker is killed (default 2 s).
    #[serde(deserialize_with = "duration::deserialize")]
    pub overrun_grace: Duration,
    /// Longest time from process start to handshake (default 60 s: importing dspy+litellm takes
    /// several seconds per worker on a small machine).
    #[serde(deserialize_with = "duration::deserialize")]
    pub startup_timeout: Duration,
    /// How often the worker is pinged (default 2 s).
    #[serde(deserialize_with = "duration::deserialize")]
    pub heartbeat_interval: Duration,
    /// A ping unanswered this long kills the worker (default 10 s).
    #[serde(deserialize_with = "duration::deserialize")]
    pub heartbeat_timeout: Duration,
    /// On shutdown: time for in-flight calls to finish, then for each of SHUTDOWN, SIGTERM before
    /// SIGKILL (default 5 s).
    #[serde(deserialize_with = "duration::deserialize")]
    pub shutdown_grace: Duration,
    /// Restart type of the workers (default permanent).
    pub restart: RestartPolicy,
    /// Restart intensity: at most this many restarts... (default 3)
    pub max_restarts: u32,
    /// ...within this window (default 5 s); one more and the pool fails.
    #[serde(deserialize_with = "duration::deserialize")]
    pub restart_window: Duration,
    /// First restart delay (default 50 ms), doubling per consecutive failure of a slot.
    #[serde(deserialize_with = "duration::deserialize")]
    pub backoff_initial: Duration,
    /// Longest restart delay (default 5 s).
    #[serde(deserialize_with = "duration::deserialize")]
    pub backoff_max: Duration,
    /// Modules every worker imports before its handshake (e.g. `["dspy", "numpy"]`); in template
    /// mode the template imports them once for all workers.
    pub preload: Vec<String>,
    /// How workers are started (default [`LaunchMode::Spawn`]).
    pub launch: LaunchMode,
    /// Directories put in front of the workers' `PYTHONPATH`.
    pub python_path: Vec<PathBuf>,
    /// Extra environment variables of the workers (they override pyvisor's defaults).
    pub env: BTreeMap<String, String>,
    /// Interpreter for this pool; the runtime's when `None`.
    pub python: Option<PathBuf>,
    /// Largest frame payload in either direction (default 64 MiB).
    pub max_frame: usize,
    /// stderr lines kept per worker for crash reports (default 50).
    pub stderr_tail: usize,
    /// Modules the workers may import for calls, attribute reads and contexts (a listed package
    /// allows its submodules; `builtins` must be listed to be reached). `None` (the default)
    /// allows every module. Methods and attributes of refs are not restricted.
    pub allow_modules: Option<Vec<String>>,
    /// Whether `builtins.eval`, `exec` and `compile` may be called (default `false`).
    pub allow_eval: bool,
    /// Most refs a worker holds, all sessions together; the least recently used is evicted
    /// (default 10 000).
    pub max_refs: usize,
    /// A ref unused this long is evicted (default: never).
    #[serde(deserialize_with = "duration::deserialize_opt")]
    pub ref_ttl: Option<Duration>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            name: String::new(),
            size: 2,
            affinity: Affinity::Hint,
            max_queue: 1000,
            queue_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(60),
            overrun_grace: Duration::from_secs(2),
            startup_timeout: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(2),
            heartbeat_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            restart: RestartPolicy::Permanent,
            max_restarts: 3,
            restart_window: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            preload: Vec::new(),
            launch: LaunchMode::Spawn,
            python_path: Vec::new(),
            env: BTreeMap::new(),
            python: None,
            max_frame: DEFAULT_MAX_FRAME,
            stderr_tail: 50,
            allow_modules: None,
            allow_eval: false,
            max_refs: 10_000,
            ref_ttl: None,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub fn $name(mut self, value: $ty) -> Self {
                self.$name = value;
                self
            }
        )*
    };
}

impl PoolConfig {
    /// A pool named `name` with the defaults.
    ///
    /// # Examples
    ///
    /// ```
    /// let cfg = pyvisor::PoolConfig::new("analytics");
    /// assert_eq!((cfg.name.as_str(), cfg.size), ("analytics", 2));
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        PoolConfig {
            name: name.into(),
            ..PoolConfig::default()
        }
    }

    setters! {
        /// Sets [`PoolConfig::size`].
        size: usize,
        /// Sets [`PoolConfig::launch`].
        launch: LaunchMode,
        /// Sets [`PoolConfig::affinity`].
        affinity: Affinity,
        /// Sets [`PoolConfig::max_queue`].
        max_queue: usize,
        /// Sets [`PoolConfig::queue_timeout`].
        queue_timeout: Duration,
        /// Sets [`PoolConfig::call_timeout`].
        call_timeout: Duration,
        /// Sets [`PoolConfig::overrun_grace`].
        overrun_grace: Duration,
        /// Sets [`PoolConfig::startup_timeout`].
        startup_timeout: Duration,
        /// Sets [`PoolConfig::heartbeat_interval`].
        heartbeat_interval: Duration,
        /// Sets [`PoolConfig::heartbeat_timeout`].
        heartbeat_timeout: Duration,
        /// Sets [`PoolConfig::shutdown_grace`].
        shutdown_grace: Duration,
        /// Sets [`PoolConfig::restart`].
        restart: RestartPolicy,
        /// Sets [`PoolConfig::max_restarts`].
        max_restarts: u32,
        /// Sets [`PoolConfig::restart_window`].
        restart_window: Duration,
        /// Sets [`PoolConfig::backoff_initial`].
        backoff_initial: Duration,
        /// Sets [`PoolConfig::backoff_max`].
        backoff_max: Duration,
        /// Sets [`PoolConfig::max_frame`].
        max_frame: usize,
        /// Sets [`PoolConfig::stderr_tail`].
        stderr_tail: usize,
        /// Sets [`PoolConfig::allow_eval`].
        allow_eval: bool,
        /// Sets [`PoolConfig::max_refs`].
        max_refs: usize,
    }

    /// Sets [`PoolConfig::ref_ttl`].
    ///
    /// # Examples
    ///
    /// ```
    /// let cfg = pyvisor::PoolConfig::new("p").ref_ttl(std::time::Duration::from_secs(600));
    /// assert!(cfg.ref_ttl.is_some());
    /// ```
    #[must_use]
    pub fn ref_ttl(mut self, ttl: Duration) -> Self {
        self.ref_ttl = Some(ttl);
        self
    }

    /// Restricts the modules workers may reach (see [`PoolConfig::allow_modules`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let cfg = pyvisor::PoolConfig::new("p").allow_modules(["numpy", "math"]);
    /// assert_eq!(cfg.allow_modules.unwrap().len(), 2);
    /// ```
    #[must_use]
    pub fn allow_modules<I: IntoIterator<Item = S>, S: Into<String>>(mut self, modules: I) -> Self {
        self.allow_modules = Some(modules.into_iter().map(Into::into).collect());
        self
    }

    /// The environment that carries the pool's policy and ref limits to its workers.
    pub(crate) fn policy_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            (
                "PYVISOR_ALLOW_EVAL",
                if self.allow_eval { "1" } else { "0" }.to_string(),
            ),
            ("PYVISOR_MAX_REFS", self.max_refs.to_string()),
            (
                "PYVISOR_REF_TTL",
                self.ref_ttl.map_or(0.0, |t| t.as_secs_f64()).to_string(),
            ),
        ];
        if let Some(modules) = &self.allow_modules {
            env.push(("PYVISOR_ALLOW_MODULES", modules.join(",")));
        }
        env
    }

    /// Adds a module to [`PoolConfig::preload`].
    ///
    /// # Examples
    ///
    /// ```
    /// let cfg = pyvisor::PoolConfig::new("p").preload("json");
    /// assert_eq!(cfg.preload, ["json"]);
    /// ```
    #[must_use]
    pub fn preload(mut self, module: impl Into<String>) -> Self {
        self.preload.push(module.into());
        self
    }

    /// Adds a directory to [`PoolConfig::python_path`].
    ///
    /// # Examples
    ///
    /// ```
    /// let cfg = pyvisor::PoolConfig::new("p").python_path("/opt/app");
    /// assert_eq!(cfg.python_path.len(), 1);
    /// ```
    #[must_use]
    pub fn python_path(mut self, dir: impl Into<PathBuf>) -> Self {
        self.python_path.push(dir.into());
        self
    }

    /// Sets one worker environment variable.
    ///
    /// # Examples
    ///
    /// ```
    /// let cfg = pyvisor::PoolConfig::new("p").env("OMP_NUM_THREADS", "2");
    /// assert_eq!(cfg.env["OMP_NUM_THREADS"], "2");
    /// ```
    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Sets this pool's interpreter.
    ///
    /// # Examples
    ///
    /// ```
    /// let cfg = pyvisor::PoolConfig::new("p").python("/usr/bin/python3");
    /// assert!(cfg.python.is_some());
    /// ```
    #[must_use]
    pub fn python(mut self, path: impl Into<PathBuf>) -> Self {
        self.python = Some(path.into());
        self
    }

    /// What every worker of this pool needs, with the interpreter and path resolved.
    pub(crate) fn worker_spec(&self, python: PathBuf, python_path: Vec<PathBuf>) -> WorkerSpec {
        let mut env = self.env.clone();
        env.extend(
            self.policy_env()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v)),
        );
        WorkerSpec {
            launch: LaunchSpec {
                python,
                python_path,
                env,
                preload: self.worker_preload(),
                max_frame: self.max_frame,
                startup_timeout: self.startup_timeout,
                stderr_tail: self.stderr_tail,
            },
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_timeout: self.heartbeat_timeout,
            overrun_grace: self.overrun_grace,
            template: (self.launch.template_preload()).map(|_| Arc::new(TemplateLink::default())),
        }
    }

    /// What each worker imports before its handshake. In template mode that is the template's
    /// list and then the pool's: a forked worker finds them imported already, and a worker
    /// spawned while the template is down imports the same modules, so both kinds look alike to
    /// calls.
    fn worker_preload(&self) -> Vec<String> {
        let mut preload = self.launch.template_preload().unwrap_or_default().to_vec();
        for module in &self.preload {
            if !preload.contains(module) {
                preload.push(module.clone());
            }
        }
        preload
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("a pool needs a name".into());
        }
        if self.size == 0 {
            return Err(format!("pool {} has size 0", self.name));
        }
        if self.max_frame < 1024 {
            return Err(format!("pool {}: max_frame below 1 KiB", self.name));
        }
        if self.allow_modules.as_ref().is_some_and(Vec::is_empty) {
            return Err(format!(
                "pool {}: an empty allow_modules list would allow nothing",
                self.name
            ));
        }
        if self.heartbeat_timeout.is_zero() || self.call_timeout.is_zero() {
            return Err(format!("pool {}: timeouts must be above zero", self.name));
        }
        Ok(())
    }
}
