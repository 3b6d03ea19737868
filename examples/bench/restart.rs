//! Restart latency: SIGKILL the worker of a 1-worker pool, then time until a call in a fresh
//! session succeeds (default backoff and `backoff_initial(1 ms)`); the floor kills, reaps,
//! spawns, handshakes and calls. `template` reuses the helpers with a preload and a launch mode.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyvisor::{Event, PoolConfig};

use crate::env::Bench;
use crate::floor::{floor_preloaded, Floor};
use crate::report::{fmt_num, Better, Report};
use crate::stats::median;
use crate::SMALL_ARG;

#[derive(Clone, Copy, Debug)]
enum Seen {
    Exited,
    Restarted,
}

/// Medians over the SIGKILLs of one pool, in ms, and how many restarted workers were forked.
pub struct Restarts {
    /// Kill → a call in a fresh session succeeds.
    pub total: f64,
    /// Kill → `Event::WorkerExited`.
    pub exited: f64,
    /// Kill → `Event::WorkerRestarted`.
    pub restarted: f64,
    /// Restarted workers forked from a template (`WorkerStats::forked`), out of the kills.
    pub forked: usize,
}

pub fn restart(b: &Bench, rep: &mut Report) {
    let kills = b.sz.kills;
    eprintln!("[restart] {kills} SIGKILLs");
    let floor_ms = median(floor_restarts(b, "", kills));
    for (backoff, label) in [
        (None, "default backoff (50 ms)"),
        (Some(Duration::from_millis(1)), "backoff_initial 1 ms"),
    ] {
        let mut cfg = restart_pool(b);
        if let Some(backoff) = backoff {
            cfg = cfg.backoff_initial(backoff);
        }
        let r = pyvisor_restarts(b, cfg, kills);
        rep.row(
            format!("restart after SIGKILL → next call OK (fresh session), {label}"),
            "ms",
            Some(r.total),
            Some(floor_ms),
            Better::Lower,
        )
        .note = format!(
            "kill → WorkerExited event {} ms, → WorkerRestarted {} ms; floor = kill, reap, spawn, handshake, call",
            fmt_num(r.exited),
            fmt_num(r.restarted)
        );
    }
}

/// The 1-worker pool every restart measurement kills (restarts never exhaust its budget).
pub fn restart_pool(b: &Bench) -> PoolConfig {
    b.env
        .pool("restart", 1)
        .max_restarts(100_000)
        .restart_window(Duration::from_secs(1))
}

/// ms of each of `kills` floor restarts: kill, reap, spawn (importing `preload`), handshake,
/// first call.
pub fn floor_restarts(b: &Bench, preload: &str, kills: usize) -> Vec<f64> {
    let mut floor_ms = Vec::new();
    let mut f = floor_preloaded(b.env, b.place, 0, preload);
    for _ in 0..kills {
        let t0 = Instant::now();
        f.kill();
        let mut nf = Floor::spawn(b.env, 0, preload).unwrap();
        b.place.pin_worker(nf.pid);
        nf.wait_ready().unwrap();
        nf.sqrt().unwrap();
        floor_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        f = nf;
    }
    floor_ms
}

/// [`Restarts`] over `kills` SIGKILLs of the worker of the 1-worker pool `cfg`.
pub fn pyvisor_restarts(b: &Bench, cfg: PoolConfig, kills: usize) -> Restarts {
    let (env, place) = (b.env, b.place);
    let pool = cfg.name.clone();
    b.rt.block_on(async move {
        let prt = env.runtime(cfg).await;
        let seen: Arc<Mutex<Vec<(Instant, Seen)>>> = Arc::default();
        let mut events = prt.events();
        let log = seen.clone();
        let watcher = tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                let kind = match e {
                    Event::WorkerExited { .. } => Seen::Exited,
                    Event::WorkerRestarted { .. } => Seen::Restarted,
                    _ => continue,
                };
                log.lock().unwrap().push((Instant::now(), kind));
            }
        });
        let (mut total, mut exited, mut restarted) = (Vec::new(), Vec::new(), Vec::new());
        let mut forked = 0;
        for k in 0..kills {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let pid = prt.stats().await[0].workers[0].pid.expect("worker pid");
            place.pin_worker(pid);
            let warm = prt.session(&pool, format!("w{k}")).unwrap();
            let _: f64 = warm.call("math", "sqrt", &(SMALL_ARG,), &()).await.unwrap();
            seen.lock().unwrap().clear();
            let t0 = Instant::now();
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let mut i = 0;
            loop {
                i += 1;
                let s = prt.session(&pool, format!("k{k}-{i}")).unwrap();
                if s.call::<f64>("math", "sqrt", &(SMALL_ARG,), &())
                    .await
                    .is_ok()
                {
                    break;
                }
            }
            total.push(t0.elapsed().as_secs_f64() * 1000.0);
            for (at, kind) in seen.lock().unwrap().iter() {
                let ms = at.duration_since(t0).as_secs_f64() * 1000.0;
                match kind {
                    Seen::Exited => exited.push(ms),
                    Seen::Restarted => restarted.push(ms),
                }
            }
            forked += usize::from(prt.stats().await[0].workers[0].forked);
        }
        prt.shutdown().await;
        watcher.abort();
        Restarts {
            total: median(total),
            exited: median(exited),
            restarted: median(restarted),
            forked,
        }
    })
}
