//! N workers from spawn to every handshake, light and (optionally) preloading dspy, and the host
//! memory each worker costs. Runs unpinned: pinning would serialise N imports on one core.

use std::time::{Duration, Instant};

use pyvisor::PoolConfig;

use crate::env::Bench;
use crate::floor::Floor;
use crate::proc::vm_rss_kib;
use crate::report::{Better, Report};
use crate::stats::Reps;

pub fn start(b: &Bench, ns: &[usize], preload: &str, reps: usize, rep: &mut Report) {
    b.place.unpin_host();
    let label = if preload.is_empty() { "light" } else { "dspy" };
    for &n in ns {
        eprintln!("[start] {n} {label} workers × {reps} reps");
        let mut r = Reps::default();
        for _ in 0..reps {
            let (ms, kib) = floor_start(b, n, preload);
            r.add("floor", ms);
            r.add("floor_rss", kib);
            let (ms, kib, _) = pyvisor_start(b, start_pool(b, n, preload));
            r.add("pyvisor", ms);
            r.add("pyvisor_rss", kib);
        }
        rep.row(
            format!("start → all ready, N={n}, {label} worker"),
            "ms",
            r.get("pyvisor"),
            r.get("floor"),
            Better::Lower,
        )
        .note =
            "includes pyvisor's preflight (`python -c 'import msgpack, pyvisor_worker'`)".into();
        if preload.is_empty() && n == *ns.iter().max().unwrap() {
            rep.row(
                format!("host memory per worker (VmRSS delta / N, N={n})"),
                "KiB",
                r.get("pyvisor_rss"),
                r.get("floor_rss"),
                Better::Lower,
            )
            .note = "host process only; the Python processes are not counted".into();
        }
    }
    b.place.pin_host();
}

/// (ms until `n` floor workers have all sent READY, host KiB of RSS per worker).
pub fn floor_start(b: &Bench, n: usize, preload: &str) -> (f64, f64) {
    let rss0 = vm_rss_kib();
    let t0 = Instant::now();
    let mut floors: Vec<Floor> = (0..n)
        .map(|i| Floor::spawn(b.env, i, preload).unwrap())
        .collect();
    for f in floors.iter_mut() {
        f.wait_ready().unwrap();
    }
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    (ms, (vm_rss_kib() - rss0) / n as f64)
}

/// A pool of `n` workers importing `preload` (none when empty) before their handshake.
pub fn start_pool(b: &Bench, n: usize, preload: &str) -> PoolConfig {
    let cfg = b
        .env
        .pool("start", n)
        .startup_timeout(Duration::from_secs(120));
    if preload.is_empty() {
        cfg
    } else {
        cfg.preload(preload)
    }
}

/// (ms from `Runtime::builder()` to `wait_ready()` of the pool `cfg`, host KiB per worker,
/// workers forked from a template).
pub fn pyvisor_start(b: &Bench, cfg: PoolConfig) -> (f64, f64, usize) {
    let n = cfg.size;
    b.rt.block_on(async move {
        let rss0 = vm_rss_kib();
        let t0 = Instant::now();
        let prt = b.env.runtime(cfg).await;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        let kib = (vm_rss_kib() - rss0) / n as f64;
        let forked = prt
            .stats()
            .await
            .iter()
            .flat_map(|p| &p.workers)
            .filter(|w| w.forked)
            .count();
        prt.shutdown().await;
        (ms, kib, forked)
    })
}
