//! The results of a run: rows of pyvisor against the floor (and baselines), the goals of issue 6,
//! and their number formatting. `markdown` and `json` print them.

pub mod json;
pub mod markdown;

use std::collections::BTreeMap;

use crate::proc::vm_rss_kib;
use crate::stats::Reps;
use crate::{PIPELINE_DEPTH, THROUGHPUT_SESSIONS};

#[derive(Clone, Copy, PartialEq)]
pub enum Better {
    Lower,
    Higher,
}

pub struct Row {
    pub workload: String,
    pub unit: &'static str,
    pub pyvisor: Option<f64>,
    pub floor: Option<f64>,
    pub better: Better,
    pub baselines: Vec<(String, f64)>,
    pub note: String,
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
    pub extra: BTreeMap<String, f64>,
}

impl Report {
    pub fn row(
        &mut self,
        workload: impl Into<String>,
        unit: &'static str,
        pyvisor: Option<f64>,
        floor: Option<f64>,
        better: Better,
    ) -> &mut Row {
        self.rows.push(Row {
            workload: workload.into(),
            unit,
            pyvisor,
            floor,
            better,
            baselines: Vec::new(),
            note: String::new(),
        });
        self.rows.last_mut().unwrap()
    }

    pub fn find(&self, workload: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.workload == workload)
    }

    pub fn find_mut(&mut self, workload: &str) -> Option<&mut Row> {
        self.rows.iter_mut().find(|r| r.workload == workload)
    }

    /// One row per quantile of `r` (keys `pyvisor.<q>` and `floor.<q>`): `"<title>, <label>"`.
    pub fn latency_rows(&mut self, title: &str, r: &Reps, quantiles: &[(&str, &str)]) {
        for (q, label) in quantiles {
            self.row(
                format!("{title}, {label}"),
                "µs",
                r.get(&format!("pyvisor.{q}")),
                r.get(&format!("floor.{q}")),
                Better::Lower,
            );
        }
    }

    /// Records the host's RSS before `workload` runs (extra `host_rss_kib_before_<workload>`).
    pub fn note_rss(&mut self, workload: &str) {
        self.extra
            .insert(format!("host_rss_kib_before_{workload}"), vm_rss_kib());
    }
}

pub fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else if v.abs() >= 10_000.0 {
        let s = format!("{:.0}", v);
        // thousands separators
        let (sign, digits) = s.split_at(if s.starts_with('-') { 1 } else { 0 });
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn fmt_opt(v: Option<f64>, unit: &str) -> String {
    match v {
        Some(v) if !v.is_nan() => format!("{} {unit}", fmt_num(v)),
        _ => "—".into(),
    }
}

/// The bar of a goal: the value must be at most, or at least, this.
#[derive(Clone, Copy)]
enum Bar {
    AtMost(f64),
    AtLeast(f64),
}

/// Each goal of issue 6: its text, whether it is met (`None`: not measured), and the value.
pub fn goals(rep: &Report) -> Vec<(String, Option<bool>, String)> {
    let ratio = |row: &str| rep.find(row).and_then(|r| Some(r.pyvisor? / r.floor?));
    let base = |row: &str, name: &str| {
        rep.find(row).and_then(|r| {
            let b = r.baselines.iter().find(|(n, _)| n == name)?.1;
            Some(match r.better {
                Better::Lower => b / r.pyvisor?,
                Better::Higher => r.pyvisor? / b,
            })
        })
    };
    let p50 = "small call math.sqrt(2.0), 1 in flight, p50";
    let mut checks = vec![(
        "small call p50 ≤ 1.5× floor".to_string(),
        ratio(p50),
        Bar::AtMost(1.5),
    )];
    for w in [1, 2, 4] {
        let row =
            format!("throughput, {w} worker(s), {THROUGHPUT_SESSIONS} sessions (floor: lock-step)");
        checks.push((
            format!("throughput per worker ≥ 0.7× floor ({w} worker(s), lock-step floor)"),
            ratio(&row),
            Bar::AtLeast(0.7),
        ));
    }
    let pipelined = format!(
        "throughput, 1 worker, {THROUGHPUT_SESSIONS} sessions vs floor pipelined {PIPELINE_DEPTH} deep"
    );
    let rest = [
        (
            "throughput ≥ 0.7× floor (1 worker, floor pipelined 16 deep)",
            ratio(&pipelined),
            Bar::AtLeast(0.7),
        ),
        (
            "small call p50 ≥ 3× faster than Pool.apply",
            base(p50, "Pool.apply"),
            Bar::AtLeast(3.0),
        ),
        (
            "small call p50 ≥ 10× faster than ProcessPoolExecutor",
            base(p50, "ProcessPoolExecutor"),
            Bar::AtLeast(10.0),
        ),
        (
            "small call p50 ≥ 50× faster than Ray actor",
            base(p50, "Ray actor"),
            Bar::AtLeast(50.0),
        ),
        (
            "1 MiB echo p50 ≤ 1.2× floor",
            ratio("1 MiB bytes echo, p50"),
            Bar::AtMost(1.2),
        ),
        (
            "8 MiB ndarray p50 vs floor (no per-element encoding: ≈ 1.2× floor is the bar used here)",
            ratio("8 MiB float64 ndarray round trip, p50"),
            Bar::AtMost(1.2),
        ),
        (
            "routing flat 10 → 100k sessions (p50 ratio ≤ 1.2)",
            rep.extra.get("routing_flatness").copied(),
            Bar::AtMost(1.2),
        ),
    ];
    checks.extend(rest.map(|(goal, v, bar)| (goal.to_string(), v, bar)));
    checks
        .into_iter()
        .map(|(goal, v, bar)| {
            let met = v.map(|v| match bar {
                Bar::AtMost(limit) => v <= limit,
                Bar::AtLeast(limit) => v >= limit,
            });
            (
                goal,
                met,
                v.map_or("not measured".into(), |v| format!("{v:.2}")),
            )
        })
        .collect()
}
