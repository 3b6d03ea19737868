//! Command-line options and the sizes of the workloads.

use std::path::PathBuf;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Pin {
    Same,
    Split,
    None,
}

impl Pin {
    pub fn name(self) -> &'static str {
        match self {
            Pin::Same => "same",
            Pin::Split => "split",
            Pin::None => "none",
        }
    }
}

pub struct Opts {
    pub smoke: bool,
    pub pin: Pin,
    pub json: Option<PathBuf>,
    pub reps: usize,
    pub only: Vec<String>,
    /// `--loop VARIANT N`: run only one small-call loop (for `perf stat` / `perf record`).
    pub profile: Option<(String, usize)>,
    /// `--worker-dir DIR`: put DIR first on every worker's PYTHONPATH (floor and pyvisor), e.g.
    /// a patched copy of `pyvisor_worker`, to measure a worker change before making it.
    pub worker_dir: Option<PathBuf>,
}

impl Opts {
    pub fn parse() -> Opts {
        let mut o = Opts {
            smoke: false,
            pin: Pin::Same,
            json: None,
            reps: 0,
            only: Vec::new(),
            profile: None,
            worker_dir: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--smoke" => o.smoke = true,
                "--pin" => {
                    o.pin = match args.next().as_deref() {
                        Some("same") => Pin::Same,
                        Some("split") => Pin::Split,
                        Some("none") => Pin::None,
                        other => die(&format!("--pin same|split|none, not {other:?}")),
                    }
                }
                "--json" => o.json = Some(args.next().unwrap_or_else(|| die("--json FILE")).into()),
                "--reps" => {
                    o.reps = args
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| die("--reps N"))
                }
                "--only" => {
                    o.only = args
                        .next()
                        .unwrap_or_else(|| die("--only a,b"))
                        .split(',')
                        .map(str::to_string)
                        .collect()
                }
                "--worker-dir" => {
                    o.worker_dir = Some(
                        args.next()
                            .unwrap_or_else(|| die("--worker-dir DIR"))
                            .into(),
                    )
                }
                "--loop" => {
                    let variant = args.next().unwrap_or_else(|| die("--loop VARIANT N"));
                    let n = args
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| die("--loop VARIANT N"));
                    o.profile = Some((variant, n));
                }
                "-h" | "--help" => {
                    println!(
                        "bench [--smoke] [--pin same|split|none] [--json FILE] [--reps N] \
                         [--only start,dspy,small,throughput,bytes,ndarray,restart,template,routing,baselines] \
                         [--loop floor|floor-tokio|pyvisor|pyvisor-nosession|pyvisor-10-sessions|pyvisor-64-sessions[@W]|floor-lockstep[@W]|floor-tokio-64-tasks[@W] N] [--worker-dir DIR]"
                    );
                    std::process::exit(0);
                }
                other => die(&format!("unknown argument {other}")),
            }
        }
        if o.reps == 0 {
            o.reps = if o.smoke { 1 } else { 3 };
        }
        o
    }

    pub fn runs(&self, workload: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|w| w == workload)
    }
}

pub fn die(msg: &str) -> ! {
    eprintln!("bench: {msg}");
    std::process::exit(2)
}

/// Sizes of the workloads.
pub struct Sizes {
    pub small_calls: usize,
    pub tput_calls: usize,
    pub tput_workers: Vec<usize>,
    pub mib_calls: usize,
    pub nd_calls: usize,
    pub start_ns: Vec<usize>,
    pub dspy_ns: Vec<usize>,
    pub start_reps: usize,
    pub kills: usize,
    /// Template launch mode (`template`): the module preloaded by the template and by the
    /// spawned workers it is compared with.
    pub template_preload: &'static str,
    /// Pool sizes of its start rows (the floor of the largest runs once).
    pub template_ns: Vec<usize>,
    /// SIGKILLs of its restart row.
    pub template_kills: usize,
    /// Pool size of its memory row.
    pub template_mem_n: usize,
    pub routing: Vec<usize>,
    pub routing_sample: usize,
}

impl Sizes {
    pub fn new(smoke: bool) -> Sizes {
        if smoke {
            Sizes {
                small_calls: 300,
                tput_calls: 600,
                tput_workers: vec![1, 2],
                mib_calls: 20,
                nd_calls: 5,
                start_ns: vec![2],
                dspy_ns: vec![],
                start_reps: 1,
                kills: 2,
                template_preload: "json",
                template_ns: vec![2],
                template_kills: 1,
                template_mem_n: 2,
                routing: vec![10, 1000],
                routing_sample: 200,
            }
        } else {
            Sizes {
                small_calls: 30_000,
                tput_calls: 60_000,
                tput_workers: vec![1, 2, 4],
                mib_calls: 1_000,
                nd_calls: 150,
                start_ns: vec![2, 8, 32],
                dspy_ns: vec![2, 8],
                start_reps: 3,
                kills: 10,
                template_preload: "dspy",
                template_ns: vec![2, 8, 32],
                template_kills: 5,
                template_mem_n: 8,
                routing: vec![10, 1_000, 100_000],
                routing_sample: 10_000,
            }
        }
    }
}
