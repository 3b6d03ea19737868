//! The interpreter and paths every worker uses, and the context every workload runs in.

use std::future::Future;
use std::path::{Path, PathBuf};

use pyvisor::{PoolConfig, Runtime};

use crate::cli::{die, Sizes};
use crate::placement::Placement;

pub struct Env {
    pub python: PathBuf,
    pub bench_dir: PathBuf,
    pub worker_dir: PathBuf,
    /// Put first on every worker's PYTHONPATH (`--worker-dir`).
    pub override_dir: Option<PathBuf>,
}

impl Env {
    pub fn detect(override_dir: Option<PathBuf>) -> Env {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var_os("PYVISOR_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".venv/bin/python"));
        if !python.exists() {
            die(&format!(
                "no interpreter at {} (run scripts/setup-python.sh or set PYVISOR_PYTHON)",
                python.display()
            ));
        }
        Env {
            python,
            bench_dir: root.join("examples/python/bench"),
            worker_dir: root.join("python"),
            override_dir,
        }
    }

    pub fn pool(&self, name: &str, size: usize) -> PoolConfig {
        let mut cfg = PoolConfig::new(name).size(size);
        if let Some(dir) = &self.override_dir {
            cfg = cfg.python_path(dir.clone());
        }
        cfg.python_path(self.bench_dir.clone())
    }

    pub async fn runtime(&self, pool: PoolConfig) -> Runtime {
        let rt = Runtime::builder()
            .python(self.python.clone())
            .pool(pool)
            .start()
            .await
            .unwrap_or_else(|e| die(&format!("pyvisor start: {e}")));
        rt.wait_ready()
            .await
            .unwrap_or_else(|e| die(&format!("pyvisor wait_ready: {e}")));
        rt
    }
}

/// Everything a workload needs: where the interpreter is, how to place processes, the tokio
/// runtime the pyvisor side runs in, and the sizes of this run.
pub struct Bench<'a> {
    pub env: &'a Env,
    pub place: &'a Placement,
    pub rt: &'a tokio::runtime::Runtime,
    pub sz: &'a Sizes,
}

impl Bench<'_> {
    /// A started pyvisor runtime with `pool`, its workers placed like the floor's.
    pub async fn pinned_runtime(&self, pool: PoolConfig) -> Runtime {
        let prt = self.env.runtime(pool).await;
        self.place.pin_pool(&prt).await;
        prt
    }

    /// [`Bench::pinned_runtime`], from outside the tokio runtime.
    pub fn start_pinned(&self, pool: PoolConfig) -> Runtime {
        self.rt.block_on(self.pinned_runtime(pool))
    }

    /// Runs `fut` as a spawned task (as an actor program would make its calls) and waits for it.
    pub fn on_task<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        self.rt
            .block_on(async move { tokio::spawn(fut).await.unwrap() })
    }
}
