//! The JSON report (`--json FILE`): metadata, rows, goals, extras, notes. Written by hand: the
//! harness has no serde_json.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Better, Report, Row};

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v}"),
        _ => "null".into(),
    }
}

/// `items`, each on its own line, separated by commas (the body of an array or object).
fn lines(items: impl Iterator<Item = String>) -> String {
    items
        .map(|item| format!("\n    {item}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn row(r: &Row) -> String {
    let b: Vec<String> = r
        .baselines
        .iter()
        .map(|(n, v)| format!("{}: {}", json_str(n), json_num(Some(*v))))
        .collect();
    format!(
        "{{\"workload\": {}, \"unit\": {}, \"pyvisor\": {}, \"floor\": {}, \"ratio\": {}, \"better\": {}, \"baselines\": {{{}}}, \"note\": {}}}",
        json_str(&r.workload),
        json_str(r.unit),
        json_num(r.pyvisor),
        json_num(r.floor),
        json_num(r.pyvisor.zip(r.floor).map(|(p, f)| p / f)),
        json_str(if r.better == Better::Lower { "lower" } else { "higher" }),
        b.join(", "),
        json_str(&r.note)
    )
}

/// The whole JSON document.
pub fn document(
    rep: &Report,
    meta: &BTreeMap<String, String>,
    goals: &[(String, Option<bool>, String)],
) -> String {
    let meta = lines(
        meta.iter()
            .map(|(k, v)| format!("{}: {}", json_str(k), json_str(v))),
    );
    let rows = lines(rep.rows.iter().map(row));
    let goals = lines(goals.iter().map(|(goal, ok, v)| {
        format!(
            "{{\"goal\": {}, \"met\": {}, \"value\": {}}}",
            json_str(goal),
            ok.map_or("null".into(), |b| b.to_string()),
            json_str(v)
        )
    }));
    let extra = lines(
        rep.extra
            .iter()
            .map(|(k, v)| format!("{}: {}", json_str(k), json_num(Some(*v)))),
    );
    let notes = lines(rep.notes.iter().map(|n| json_str(n)));
    format!(
        "{{\n  \"meta\": {{{meta}\n  }},\n  \"rows\": [{rows}\n  ],\n  \"goals\": [{goals}\n  ],\n  \"extra\": {{{extra}\n  }},\n  \"notes\": [{notes}\n  ]\n}}\n"
    )
}
