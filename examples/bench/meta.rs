//! What a run was measured on: machine, versions, placement, load, the command.

use std::collections::BTreeMap;
use std::process::Command;

use crate::cli::Opts;
use crate::env::Env;
use crate::placement::Placement;
use crate::proc::cpus_allowed;

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The metadata of the report (a sorted map: the markdown lists it in this order).
pub fn meta(env: &Env, opts: &Opts, place: &Placement) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    let hyp = if cpuinfo.contains(" hypervisor") {
        ", hypervisor"
    } else {
        ""
    };
    m.insert(
        "machine".into(),
        format!("{} × {model}{hyp}", place.all.len()),
    );
    m.insert(
        "kernel".into(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .into(),
    );
    m.insert("date".into(), sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]));
    m.insert("rustc".into(), sh("rustc", &["--version"]));
    let root = env!("CARGO_MANIFEST_DIR");
    let head = sh("git", &["-C", root, "rev-parse", "--short", "HEAD"]);
    let dirty = !sh(
        "git",
        &["-C", root, "status", "--porcelain", "--untracked-files=no"],
    )
    .is_empty();
    m.insert(
        "pyvisor commit".into(),
        format!(
            "{head}{}",
            if dirty { " + uncommitted changes" } else { "" }
        ),
    );
    let malloc: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("MALLOC_") || k.starts_with("GLIBC_TUNABLES"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let host = if malloc.is_empty() {
        "glibc defaults".to_string()
    } else {
        malloc.join(" ")
    };
    // Workers (floor and pyvisor alike) get pyvisor's defaults unless the host sets the variable.
    let workers = if std::env::var_os("GLIBC_TUNABLES").is_some() {
        host.clone()
    } else {
        pyvisor::worker::ENV_DEFAULTS
            .iter()
            .filter(|(k, _)| *k == "GLIBC_TUNABLES")
            .map(|(k, v)| format!("{k}={v} (pyvisor::worker::ENV_DEFAULTS)"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    m.insert(
        "malloc environment".into(),
        format!("host: {host}; workers: {workers}"),
    );
    if let Some(dir) = &env.override_dir {
        m.insert(
            "worker override (--worker-dir)".into(),
            dir.display().to_string(),
        );
    }
    m.insert(
        "python".into(),
        sh(
            env.python.to_str().unwrap_or("python"),
            &[
                "-c",
                "import sys, importlib.metadata as m\n\
                 def v(p):\n    try: return m.version(p)\n    except Exception: return 'absent'\n\
                 print(sys.version.split()[0], 'msgpack', v('msgpack'), 'numpy', v('numpy'), 'dspy', v('dspy'), 'ray', v('ray'))",
            ],
        ),
    );
    if let Some(ray) = std::env::var_os(crate::baselines::RAY_PYTHON) {
        let ray = std::path::PathBuf::from(ray);
        let version = sh(
            ray.to_str().unwrap_or("python"),
            &[
                "-c",
                "import sys, ray; print(sys.version.split()[0], 'ray', ray.__version__)",
            ],
        );
        m.insert(
            "ray interpreter".into(),
            format!("{} ({version})", ray.display()),
        );
    }
    m.insert(
        "placement".into(),
        format!("{} ({})", place.mode.name(), place.note),
    );
    m.insert("host cpus allowed".into(), cpus_allowed(std::process::id()));
    m.insert("reps".into(), opts.reps.to_string());
    m.insert("smoke".into(), opts.smoke.to_string());
    m.insert("load average at start".into(), loadavg());
    m.insert(
        "command".into(),
        format!(
            "cargo run --release --example bench -- {}",
            std::env::args().skip(1).collect::<Vec<_>>().join(" ")
        ),
    );
    m
}

/// `/proc/loadavg`, trimmed.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .into()
}
