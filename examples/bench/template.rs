//! Template launch mode (issue 7): pools whose workers are forked from a template process that
//! imported the preload once (`LaunchMode::template([preload])`, nothing else set), against
//! workers that import it themselves. The preload is `Sizes::template_preload` (dspy; `json` in
//! smoke runs).
//!
//! * **start → all ready**, N = `Sizes::template_ns`: `Runtime::builder()` to `wait_ready()` of a
//!   template pool, the template's own import included (as `startup`); floor: spawn N floor
//!   workers with the preload and read N handshakes. The floor of the largest N (N imports)
//!   runs in the first repetition only. Unpinned, like `startup`.
//! * **restart after SIGKILL** (1-worker pool, `backoff_initial(1 ms)`, as `restart`): template
//!   pool; floor: kill, reap, spawn with the preload, handshake, call. The spawn-mode pool with
//!   the same preload goes in the note.
//! * **private memory per worker** (N = `Sizes::template_mem_n`): `Private_Clean` +
//!   `Private_Dirty` of each worker's `/proc/<pid>/smaps_rollup` right after `wait_ready()`;
//!   the floor column is a spawn-mode pool with the same preload. The template's own resident
//!   memory (paid once per pool) is in the note, not in the figure.

use std::time::Duration;

use pyvisor::{LaunchMode, PoolConfig};

use crate::env::Bench;
use crate::proc::{private_kib, smaps_kib};
use crate::report::{fmt_num, Better, Report};
use crate::restart::{floor_restarts, pyvisor_restarts, restart_pool};
use crate::startup::{floor_start, pyvisor_start, start_pool};
use crate::stats::{median, Reps};

pub fn template(b: &Bench, reps: usize, rep: &mut Report) {
    let preload = b.sz.template_preload;
    let launch = LaunchMode::template([preload]);
    b.place.unpin_host();
    start(b, preload, &launch, reps, rep);
    memory(b, preload, &launch, rep);
    b.place.pin_host();
    restart(b, preload, &launch, rep);
}

fn start(b: &Bench, preload: &str, launch: &LaunchMode, reps: usize, rep: &mut Report) {
    let largest = b.sz.template_ns.iter().copied().max().unwrap_or(0);
    for &n in &b.sz.template_ns {
        eprintln!("[template] start {n} workers, {preload} preloaded × {reps} reps");
        let mut r = Reps::default();
        let mut forked = Vec::new();
        for i in 0..reps {
            if i == 0 || n < largest {
                r.add("floor", floor_start(b, n, preload).0);
            }
            let (ms, _, f) = pyvisor_start(b, start_pool(b, n, "").launch(launch.clone()));
            r.add("pyvisor", ms);
            forked.push(f);
        }
        let floor_runs = if n < largest { reps } else { 1 };
        rep.row(
            format!("template: start → all ready, N={n}, {preload} preloaded"),
            "ms",
            r.get("pyvisor"),
            r.get("floor"),
            Better::Lower,
        )
        .note = format!(
            "includes the template's import and pyvisor's preflight; forked {}/{n} \
             (fewest over the reps); floor = spawn N workers importing {preload} \
             ({floor_runs} run(s))",
            forked.iter().min().unwrap_or(&0)
        );
    }
}

fn memory(b: &Bench, preload: &str, launch: &LaunchMode, rep: &mut Report) {
    let n = b.sz.template_mem_n;
    eprintln!("[template] private memory, {n} workers, template and spawn");
    let (template, template_rss) =
        private_per_worker(b, start_pool(b, n, "").launch(launch.clone()));
    let (spawn, _) = private_per_worker(b, start_pool(b, n, preload));
    rep.row(
        format!(
            "template: private memory per worker (N={n}, smaps_rollup Private_Clean+Private_Dirty)"
        ),
        "MiB",
        Some(template / 1024.0),
        Some(spawn / 1024.0),
        Better::Lower,
    )
    .note = format!(
        "right after wait_ready, median over the workers; floor = spawn-mode pyvisor workers \
         importing {preload}; the template itself (not counted): {} MiB resident, shared \
         copy-on-write with its workers",
        template_rss.map_or("—".into(), |k| fmt_num(k / 1024.0))
    );
}

/// (median private KiB over the workers of the pool `cfg` right after `wait_ready()`, resident
/// KiB of its template process if it has one).
fn private_per_worker(b: &Bench, cfg: PoolConfig) -> (f64, Option<f64>) {
    b.rt.block_on(async move {
        let prt = b.env.runtime(cfg).await;
        let stats = prt.stats().await;
        let workers = stats
            .iter()
            .flat_map(|p| &p.workers)
            .filter_map(|w| private_kib(w.pid?))
            .collect();
        let template = stats
            .iter()
            .find_map(|p| smaps_kib(p.template_pid?, &["Rss:"]));
        prt.shutdown().await;
        (median(workers), template)
    })
}

fn restart(b: &Bench, preload: &str, launch: &LaunchMode, rep: &mut Report) {
    let kills = b.sz.template_kills;
    eprintln!("[template] {kills} SIGKILLs, template, floor and spawn, {preload} preloaded");
    let backoff = Duration::from_millis(1);
    let cfg = restart_pool(b).backoff_initial(backoff);
    let template = pyvisor_restarts(b, cfg.clone().launch(launch.clone()), kills);
    let floor_ms = median(floor_restarts(b, preload, kills));
    let spawn = pyvisor_restarts(b, cfg.preload(preload), kills);
    rep.row(
        format!(
            "template: restart after SIGKILL → next call OK (fresh session), {preload} \
             preloaded, backoff_initial 1 ms"
        ),
        "ms",
        Some(template.total),
        Some(floor_ms),
        Better::Lower,
    )
    .note = format!(
        "kill → WorkerExited {} ms, → WorkerRestarted {} ms; restarted workers forked {}/{kills}; \
         spawn-mode pyvisor (same preload) {} ms; floor = kill, reap, spawn importing {preload}, \
         handshake, call",
        fmt_num(template.exited),
        fmt_num(template.restarted),
        template.forked,
        fmt_num(spawn.total),
    );
}
