//! The markdown report: the run's metadata, the table, the goals, extras and notes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{fmt_num, fmt_opt, Better, Report};
use crate::cli::{Opts, Sizes};

/// The whole report as printed on stdout; `wall` is the run's wall time in seconds.
pub fn document(
    rep: &Report,
    meta: &BTreeMap<String, String>,
    goals: &[(String, Option<bool>, String)],
    opts: &Opts,
    sz: &Sizes,
    wall: f64,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## pyvisor benchmark{}\n",
        if opts.smoke {
            " (smoke: numbers mean nothing)"
        } else {
            ""
        }
    );
    for (k, v) in meta {
        let _ = writeln!(out, "- {k}: {v}");
    }
    let _ = writeln!(out, "- wall time: {:.1} s", wall);
    let _ = writeln!(
        out,
        "- every figure is the median of {} repetitions (start: {} / dspy: {})\n",
        opts.reps,
        sz.start_reps,
        sz.start_reps.min(2)
    );
    out.push_str(&table(rep));
    out.push_str("\n### Goals\n\n| goal | value | met |\n|---|---|---|\n");
    for (goal, ok, v) in goals {
        let _ = writeln!(
            out,
            "| {goal} | {v} | {} |",
            match ok {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            }
        );
    }
    if !rep.extra.is_empty() {
        out.push_str("\n### Extra\n\n");
        for (k, v) in &rep.extra {
            let _ = writeln!(out, "- {k}: {}", fmt_num(*v));
        }
    }
    if !rep.notes.is_empty() {
        out.push_str("\n### Notes\n\n");
        for n in &rep.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}

/// The table of rows: pyvisor, floor, their ratio, the baselines.
pub fn table(rep: &Report) -> String {
    let mut s = String::new();
    s.push_str("| workload | pyvisor | floor | pyvisor/floor | baselines (value, baseline÷pyvisor for times, pyvisor÷baseline for rates) | notes |\n");
    s.push_str("|---|---|---|---|---|---|\n");
    for r in &rep.rows {
        let ratio = match (r.pyvisor, r.floor) {
            (Some(p), Some(f)) if f > 0.0 && !p.is_nan() && !f.is_nan() => format!("{:.2}×", p / f),
            _ => "—".into(),
        };
        let base = r
            .baselines
            .iter()
            .map(|(name, v)| {
                let adv = match (r.pyvisor, r.better) {
                    (Some(p), Better::Lower) if p > 0.0 => format!(" ({:.1}×)", v / p),
                    (Some(p), Better::Higher) if *v > 0.0 => format!(" ({:.1}×)", p / v),
                    _ => String::new(),
                };
                format!("{name} {}{adv}", fmt_opt(Some(*v), r.unit))
            })
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            r.workload,
            fmt_opt(r.pyvisor, r.unit),
            fmt_opt(r.floor, r.unit),
            ratio,
            if base.is_empty() { "—".into() } else { base },
            r.note
        );
    }
    s
}
