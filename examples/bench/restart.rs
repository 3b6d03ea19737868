//! Restart latency: SIGKILL the worker of a 1-worker pool, then time until a call in a fresh
//! session succeeds (default backoff and `backoff_initial(1 ms)`); the floor kills, reaps,
//! spawns, handshakes and calls.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyvisor::{Event, PoolConfig};

use crate::env::Bench;
use crate::floor::{floor_ready, Floor};
use crate::report::{fmt_num, Better, Report};
use crate::stats::median;
use crate::SMALL_ARG;

#[derive(Clone, Copy, Debug)]
enum Seen {
    Exited,
    Restarted,
}

pub fn restart(b: &Bench, rep: &mut Report) {
    eprintln!("[restart] {} SIGKILLs", b.sz.kills);
    let floor_ms = median(floor_restarts(b));
    for (backoff, label) in [
        (None, "default backoff (50 ms)"),
        (Some(Duration::from_millis(1)), "backoff_initial 1 ms"),
    ] {
        let mut cfg = b
            .env
            .pool("restart", 1)
            .max_restarts(100_000)
            .restart_window(Duration::from_secs(1));
        if let Some(backoff) = backoff {
            cfg = cfg.backoff_initial(backoff);
        }
        let (total, exited, restarted) = pyvisor_restarts(b, cfg);
        rep.row(
            format!("restart after SIGKILL → next call OK (fresh session), {label}"),
            "ms",
            Some(total),
            Some(floor_ms),
            Better::Lower,
        )
        .note = format!(
            "kill → WorkerExited event {} ms, → WorkerRestarted {} ms; floor = kill, reap, spawn, handshake, call",
            fmt_num(exited),
            fmt_num(restarted)
        );
    }
}

/// ms of each floor restart: kill, reap, spawn, handshake, first call.
fn floor_restarts(b: &Bench) -> Vec<f64> {
    let mut floor_ms = Vec::new();
    let mut f = floor_ready(b.env, b.place, 0);
    for _ in 0..b.sz.kills {
        let t0 = Instant::now();
        f.kill();
        let mut nf = Floor::spawn(b.env, 0, "").unwrap();
        b.place.pin_worker(nf.pid);
        nf.wait_ready().unwrap();
        nf.sqrt().unwrap();
        floor_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        f = nf;
    }
    floor_ms
}

/// Medians of (kill → next call OK, kill → `WorkerExited`, kill → `WorkerRestarted`), in ms,
/// over `kills` SIGKILLs of the worker of a pool configured by `cfg`.
fn pyvisor_restarts(b: &Bench, cfg: PoolConfig) -> (f64, f64, f64) {
    let (env, place, kills) = (b.env, b.place, b.sz.kills);
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
        for k in 0..kills {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let pid = prt.stats().await[0].workers[0].pid.expect("worker pid");
            place.pin_worker(pid);
            let warm = prt.session("restart", format!("w{k}")).unwrap();
            let _: f64 = warm.call("math", "sqrt", &(SMALL_ARG,), &()).await.unwrap();
            seen.lock().unwrap().clear();
            let t0 = Instant::now();
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let mut i = 0;
            loop {
                i += 1;
                let s = prt.session("restart", format!("k{k}-{i}")).unwrap();
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
        }
        prt.shutdown().await;
        watcher.abort();
        (median(total), median(exited), median(restarted))
    })
}
