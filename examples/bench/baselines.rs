//! The Python baselines: runs `examples/python/bench/baselines.py` (multiprocessing `Pool.apply`,
//! `ProcessPoolExecutor`, Ray actors when `import ray` works, with the interpreter named by
//! `PYVISOR_BENCH_RAY_PYTHON` if set) and attaches its figures to the rows.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cli::Opts;
use crate::env::Env;
use crate::placement::{set_affinity, Placement};
use crate::report::Report;
use crate::THROUGHPUT_SESSIONS;

/// Where Ray is measured when it is not installed in the workers' venv (it must never become a
/// dependency): the path of another interpreter that has `ray`, e.g. a throw-away venv.
pub const RAY_PYTHON: &str = "PYVISOR_BENCH_RAY_PYTHON";

/// Runs examples/python/bench/baselines.py and attaches its figures to the rows.
pub fn baselines(env: &Env, opts: &Opts, place: &Placement, rep: &mut Report) {
    eprintln!("[baselines] multiprocessing, ProcessPoolExecutor, Ray");
    let mut got = Figures::new();
    let mut only = selected(opts);
    let ray_python = std::env::var_os(RAY_PYTHON).map(PathBuf::from);
    let ray_apart = ray_python.is_some() && only.contains(&"ray");
    if ray_apart {
        only.retain(|w| *w != "ray");
    }
    let cmd = command(&env.python, env, opts, place, &only);
    run(cmd, "baselines.py", rep, &mut got);
    if let (true, Some(python)) = (ray_apart, ray_python) {
        rep.notes.push(format!(
            "Ray measured with {} ({RAY_PYTHON})",
            python.display()
        ));
        let cmd = command(&python, env, opts, place, &["ray"]);
        run(cmd, "baselines.py (Ray)", rep, &mut got);
    }
    attach(rep, &got);
}

/// Runs one baselines.py command and collects its figures and notes.
fn run(mut cmd: Command, what: &str, rep: &mut Report, got: &mut Figures) {
    let out = match cmd.output() {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            rep.notes.push(format!("{what} failed: {}", o.status));
            return;
        }
        Err(e) => {
            rep.notes.push(format!("{what} could not run: {e}"));
            return;
        }
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let parts: Vec<&str> = line.splitn(3, '\t').collect();
        match parts.as_slice() {
            ["note", text] => rep.notes.push(text.to_string()),
            [name, metric, v] => {
                if let Ok(v) = v.parse() {
                    got.insert((name.to_string(), metric.to_string()), v);
                }
            }
            _ => {}
        }
    }
}

/// The script's workloads that `--only` selects.
fn selected(opts: &Opts) -> Vec<&'static str> {
    let mut only = Vec::new();
    for w in ["start", "dspy", "restart"] {
        if opts.runs(w) || opts.runs("baselines") {
            only.push(w);
        }
    }
    if opts.runs("small") || opts.runs("throughput") || opts.runs("bytes") || opts.runs("baselines")
    {
        only.extend(["pool", "ppe", "ray"]);
    }
    only
}

/// The script run by `python` with the workloads `only`, started unpinned.
fn command(python: &Path, env: &Env, opts: &Opts, place: &Placement, only: &[&str]) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(env.bench_dir.join("baselines.py"))
        .args(["--pin", opts.pin.name(), "--reps", &opts.reps.to_string()])
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("PYTHONPATH", &env.bench_dir)
        .stderr(Stdio::inherit());
    if opts.smoke {
        cmd.arg("--smoke");
    }
    cmd.args(["--only", &only.join(",")]);
    // The script pins itself (after its start-to-ready part): let it start unpinned.
    let all = place.all.clone();
    // SAFETY: sched_setaffinity is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let _ = set_affinity(0, &all);
            Ok(())
        });
    }
    cmd
}

/// Baseline figures by (baseline, metric), as `baselines.py` prints them.
type Figures = BTreeMap<(String, String), f64>;

/// Adds the figures of `got` to the rows they compare with.
fn attach(rep: &mut Report, got: &Figures) {
    let names = [
        ("mp_pool_apply", "Pool.apply"),
        ("ppe", "ProcessPoolExecutor"),
        ("ray_actor", "Ray actor"),
    ];
    let tput =
        format!("throughput, 2 worker(s), {THROUGHPUT_SESSIONS} sessions (floor: lock-step)");
    let rows = [
        (
            "small call math.sqrt(2.0), 1 in flight, p50",
            "small_p50_us",
        ),
        (
            "small call math.sqrt(2.0), 1 in flight, p99",
            "small_p99_us",
        ),
        (
            "small call math.sqrt(2.0), 1 in flight, p99.9",
            "small_p999_us",
        ),
        (
            "small call, sequential throughput (1/mean)",
            "small_seq_calls_s",
        ),
        ("1 MiB bytes echo, p50", "mib_p50_us"),
        ("1 MiB bytes echo, p99", "mib_p99_us"),
        (tput.as_str(), "burst_calls_s"),
        (
            "restart after SIGKILL → next call OK (fresh session), default backoff (50 ms)",
            "restart_ms",
        ),
    ];
    for (row, metric) in rows {
        if let Some(r) = rep.find_mut(row) {
            for (key, label) in names {
                if let Some(v) = got.get(&(key.to_string(), metric.to_string())) {
                    r.baselines.push((label.to_string(), *v));
                }
            }
        }
    }
    for n in [2, 8, 32] {
        for (kind, label) in [
            ("light", "Pool(spawn)"),
            ("dspy", "Pool(spawn)+import dspy"),
        ] {
            let metric = format!("start_{kind}_{n}_ms");
            if let Some(v) = got.get(&("mp_pool_spawn".into(), metric)) {
                if let Some(r) = rep.find_mut(&format!("start → all ready, N={n}, {kind} worker"))
                {
                    r.baselines.push((label.into(), *v));
                }
            }
        }
    }
    if let Some(r) = rep.find_mut(&tput) {
        r.note
            .push_str("; baselines: 2 workers, burst of async submits");
    }
}
