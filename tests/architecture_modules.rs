//! The modules of `src/` form layers, and every import goes down: no cycle between modules
//! (docs/architecture.md, "Modules"). Read from the source itself, so a new upward import fails
//! here, naming the edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, bottom first; a module may import only modules of earlier layers.
const LAYERS: &[&[&str]] = &[
    &["identity", "alarm", "supervisor"],
    &["error", "event"],
    &["value"],
    &["protocol"],
    &["call", "process"],
    &["template"],
    &["worker"],
    &["pool"],
    &["runtime"],
    &["dspy", "fuzzing"],
];

/// Root re-exports (`crate::Error`, ...) and the module that defines each.
const ROOT: &[(&str, &str)] = &[
    ("Affinity", "call"),
    ("CallOptions", "call"),
    ("Error", "error"),
    ("PythonError", "error"),
    ("Result", "error"),
    ("Event", "event"),
    ("EventStream", "event"),
    ("ExitStatus", "identity"),
    ("LossReason", "identity"),
    ("WorkerId", "identity"),
    ("LaunchMode", "pool"),
    ("Placement", "pool"),
    ("PoolConfig", "pool"),
    ("PoolStats", "pool"),
    ("PoolStatus", "pool"),
    ("WorkerStats", "pool"),
    ("Delivered", "runtime"),
    ("Runtime", "runtime"),
    ("RuntimeBuilder", "runtime"),
    ("RuntimeConfig", "runtime"),
    ("Session", "runtime"),
    ("RestartPolicy", "supervisor"),
    ("from_value", "value"),
    ("NdArray", "value"),
    ("Ref", "value"),
    ("StreamRef", "value"),
    ("Value", "value"),
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` is in no layer: add it to LAYERS"))
}

/// Every `crate::name` outside comments, mapped to the module it names.
fn imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let module = ROOT
                .iter()
                .find(|(item, _)| *item == name)
                .map_or(name.clone(), |(_, m)| m.to_string());
            found.insert(module);
        }
    }
    found
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// module → the modules it imports (`src/x.rs` and `src/x/**` are module `x`).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let entry = edges.entry(module.clone()).or_default();
        entry.extend(imports(&text).into_iter().filter(|m| *m != module));
    }
    edges
}

#[test]
fn every_module_imports_only_modules_below_it() {
    let graph = graph();
    let mut upward = Vec::new();
    for (from, tos) in &graph {
        for to in tos {
            if layer_of(to) >= layer_of(from) {
                upward.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(upward.is_empty(), "imports that do not go down: {upward:?}");
}

#[test]
fn the_layer_list_knows_every_module() {
    let graph = graph();
    for module in graph.keys() {
        layer_of(module);
    }
    assert!(graph.contains_key("pool") && graph["pool"].contains("worker"));
}
