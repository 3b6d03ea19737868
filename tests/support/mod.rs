//! Shared helpers of the integration tests: real runtimes over real Python processes.
#![allow(dead_code, unreachable_pub)]

pub mod events;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use pyvisor::{Error, PoolConfig, PoolStats, Runtime, Session};
use tokio::task::JoinHandle;

/// The stats of pool `name`.
pub async fn stats_of(rt: &Runtime, name: &str) -> PoolStats {
    rt.stats()
        .await
        .into_iter()
        .find(|p| p.name == name)
        .expect("pool exists")
}

/// Upper bound of every wait in the tests: a failure guard, never a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The directory of the Python fixtures (`tests/python`).
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// A pool with the fixtures on its path and settings suited to tests.
pub fn pool(name: &str) -> PoolConfig {
    PoolConfig::new(name)
        .size(1)
        .python_path(fixtures_dir())
        .startup_timeout(Duration::from_secs(30))
}

/// Starts a runtime with `pools` and waits until every worker is ready.
pub async fn runtime(pools: Vec<PoolConfig>) -> Runtime {
    let rt = start(pools).await;
    rt.wait_ready().await.expect("pools ready");
    rt
}

/// Starts a runtime with `pools` without waiting for readiness.
pub async fn start(pools: Vec<PoolConfig>) -> Runtime {
    let mut builder = Runtime::builder();
    for p in pools {
        builder = builder.pool(p);
    }
    builder.start().await.expect("runtime starts")
}

/// Polls `check` until it yields `Some`, failing the test after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether a process with this pid exists (zombies count as gone: they run nothing).
pub fn alive(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    match status {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

/// The pids of every process on the machine now (`/proc`).
pub fn all_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

/// Live processes (zombies excluded) whose environment holds exactly `entry` (`KEY=value`),
/// whoever started them.
pub fn processes_with_env(entry: &[u8]) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|environ| environ.split(|b| *b == 0).any(|e| e == entry))
                && alive(*pid)
        })
        .collect()
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
}

/// The pids of the workers of `pool`, once every slot is ready.
pub async fn pids(rt: &Runtime, pool: &str) -> Vec<u32> {
    let stats = rt.stats().await;
    let p = stats.iter().find(|p| p.name == pool).expect("pool exists");
    p.workers
        .iter()
        .map(|w| w.pid.expect("worker started"))
        .collect()
}

/// A gate file for `pyvisor_fixtures.gate`: the call blocks until [`Gate::open`].
pub struct Gate {
    dir: PathBuf,
    pub path: String,
}

impl Gate {
    pub fn new(name: &str) -> Gate {
        let dir = std::env::temp_dir().join(format!(
            "pyvisor-gate-{}-{name}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("open").to_string_lossy().into_owned();
        Gate { dir, path }
    }

    /// Waits until the gated call is running in Python.
    pub async fn wait_started(&self) {
        let marker = format!("{}.started", self.path);
        eventually("the gated call to start", || async {
            std::path::Path::new(&marker).exists().then_some(())
        })
        .await;
    }

    /// Starts `pyvisor_fixtures.gate` on `session` in a task (it returns the worker's pid once
    /// the gate is opened).
    pub fn spawn_call(&self, session: &Session) -> JoinHandle<Result<u32, Error>> {
        let (s, path) = (session.clone(), self.path.clone());
        tokio::spawn(async move { s.call("pyvisor_fixtures", "gate", &(path,), &()).await })
    }

    pub fn open(&self) {
        std::fs::write(&self.path, b"open").unwrap();
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, b"open");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// A hold on worker starts, for pools that preload `pyvisor_start_hold` ([`StartHold::pool`]):
/// while it is held, a worker that starts blocks before its handshake (it stays "starting").
pub struct StartHold {
    dir: PathBuf,
    pub path: String,
}

impl StartHold {
    /// A hold, not held yet.
    pub fn new(name: &str) -> StartHold {
        let dir = std::env::temp_dir().join(format!(
            "pyvisor-hold-{}-{name}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hold").to_string_lossy().into_owned();
        StartHold { dir, path }
    }

    /// `config` with the hold module preloaded; `slot`: only that slot's workers are held.
    pub fn pool(&self, config: PoolConfig, slot: Option<usize>) -> PoolConfig {
        let config = config
            .preload("pyvisor_start_hold")
            .env("PYVISOR_TEST_START_HOLD", self.path.clone());
        match slot {
            Some(slot) => config.env("PYVISOR_TEST_START_HOLD_SLOT", slot.to_string()),
            None => config,
        }
    }

    /// Workers that start from now on block before their handshake.
    pub fn hold(&self) {
        std::fs::write(&self.path, b"hold").unwrap();
    }

    /// Held workers finish their start.
    pub fn release(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Waits until a worker is held, and returns its pid.
    pub async fn wait_held(&self) -> u32 {
        let marker = format!("{}.held", self.path);
        eventually("a worker to be held at its start", || async {
            std::fs::read_to_string(&marker)
                .ok()
                .and_then(|pid| pid.parse().ok())
        })
        .await
    }
}

impl Drop for StartHold {
    fn drop(&mut self) {
        self.release();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
