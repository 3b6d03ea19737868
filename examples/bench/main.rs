//! Benchmark harness (issue 6): pyvisor against a raw pipe floor and the Python baselines, in one
//! run, on one machine.
//!
//! ```text
//! cargo run --release --example bench -- [--smoke] [--pin same|split|none] [--json out.json]
//!                                         [--reps N] [--only small,throughput,...]
//!                                         [--loop VARIANT N] [--worker-dir DIR]
//! ```
//!
//! * **floor**: a minimal Rust↔Python ping-pong written here, with std threads and blocking pipes
//!   (plus a tokio variant for the small call). It starts `<venv python> -m pyvisor_worker` itself
//!   with the environment of `docs/protocol.md` and speaks the real worker protocol, so floor and
//!   pyvisor measure the same Python worker; the floor has no actors, no routing, no timers.
//! * **pyvisor**: the same calls through `Runtime` / `Session` / pool / worker.
//! * **baselines**: `examples/python/bench/baselines.py` (multiprocessing `Pool.apply`,
//!   `ProcessPoolExecutor`, Ray actors when `import ray` works).
//!
//! `--pin same` (default) puts the host (every thread) and the workers on one CPU, `split` puts the
//! host on one CPU and the workers on another, `none` leaves placement to the scheduler. Pinning
//! uses `sched_setaffinity` on every thread (`/proc/<pid>/task`) of the host and of each worker,
//! floor and pyvisor alike. Start-to-ready and host memory run unpinned (workers inherit the host's
//! mask, and pinning would serialise N imports on one core).
//!
//! Every workload runs `--reps` times (default 3, interleaving floor and pyvisor), and each figure
//! is the median over the repetitions. `--smoke` runs everything tiny (CI keeps it compiling and
//! working); its numbers mean nothing.
//!
//! For profiling, `--loop VARIANT N` runs one small-call loop only (for `perf stat` or
//! `valgrind --tool=callgrind`), and `--worker-dir DIR` puts DIR first on every worker's
//! `PYTHONPATH` to measure a patched `pyvisor_worker`. Results and findings: `docs/benchmarks.md`.
//!
//! Layout: `cli` (options, sizes), `env` (interpreter, pools), `placement` (CPU pinning), `proc`
//! (host RSS and CPU, worker private memory), `floor` (the raw pipe peer), `stats` (percentiles,
//! repetitions), the workloads (`small`, `throughput`, `payloads`, `routing`: pyvisor against the
//! floor; `startup`, `restart`; `template`: the template launch mode; `baselines`: the Python
//! pools), `profile` (`--loop`), `meta` and `report` (markdown, JSON).

mod baselines;
mod cli;
mod env;
mod floor;
mod meta;
mod payloads;
mod placement;
mod proc;
mod profile;
mod report;
mod restart;
mod routing;
mod small;
mod startup;
mod stats;
mod template;
mod throughput;

use std::time::Instant;

use cli::{die, Opts, Sizes};
use env::{Bench, Env};
use placement::Placement;
use report::Report;

const SMALL_ARG: f64 = 2.0;
const MIB: usize = 1 << 20;
const NDARRAY_LEN: usize = MIB; // 1 Mi float64 = 8 MiB
const PIPELINE_DEPTH: usize = 16;
const THROUGHPUT_SESSIONS: usize = 64;

fn main() {
    let opts = Opts::parse();
    let env = Env::detect(opts.worker_dir.clone());
    let place = Placement::new(opts.pin);
    let sz = Sizes::new(opts.smoke);
    let mut meta = meta::meta(&env, &opts, &place);
    eprintln!("bench: placement {} ({})", place.mode.name(), place.note);
    // Pin before the tokio runtime exists: its threads inherit the mask.
    place.pin_host();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let b = Bench {
        env: &env,
        place: &place,
        rt: &rt,
        sz: &sz,
    };
    if let Some((variant, n)) = &opts.profile {
        profile::profile_loop(&b, variant, *n);
        return;
    }
    let t_all = Instant::now();
    let mut rep = Report::default();
    run_workloads(&b, &opts, &mut rep);
    let goals = report::goals(&rep);
    meta.insert("load average at end".into(), meta::loadavg());

    let wall = t_all.elapsed().as_secs_f64();
    println!(
        "{}",
        report::markdown::document(&rep, &meta, &goals, &opts, &sz, wall)
    );
    if let Some(path) = &opts.json {
        std::fs::write(path, report::json::document(&rep, &meta, &goals))
            .unwrap_or_else(|e| die(&format!("writing {}: {e}", path.display())));
        eprintln!("bench: JSON written to {}", path.display());
    }
    drop(rt);
}

/// The workloads `--only` selects, in the order of the report.
fn run_workloads(b: &Bench, opts: &Opts, rep: &mut Report) {
    let (sz, reps) = (b.sz, opts.reps);
    if opts.runs("start") {
        rep.note_rss("start");
        startup::start(b, &sz.start_ns, "", sz.start_reps, rep);
    }
    if opts.runs("dspy") && !sz.dspy_ns.is_empty() {
        startup::start(b, &sz.dspy_ns, "dspy", sz.start_reps.min(2), rep);
    }
    type Workload<'a> = &'a dyn Fn(&mut Report);
    let workloads: [(&str, Workload); 7] = [
        ("small", &|rep: &mut Report| small::small(b, reps, rep)),
        ("throughput", &|rep: &mut Report| {
            throughput::throughput(b, reps, rep)
        }),
        ("bytes", &|rep: &mut Report| {
            payloads::bytes_echo(b, reps, rep)
        }),
        ("ndarray", &|rep: &mut Report| {
            payloads::ndarray(b, reps, rep)
        }),
        ("restart", &|rep: &mut Report| restart::restart(b, rep)),
        ("template", &|rep: &mut Report| {
            template::template(b, reps, rep)
        }),
        ("routing", &|rep: &mut Report| routing::routing(b, rep)),
    ];
    for (name, run) in workloads {
        if opts.runs(name) {
            rep.note_rss(name);
            run(rep);
        }
    }
    if opts.runs("baselines") {
        baselines::baselines(b.env, opts, b.place, rep);
    }
}
