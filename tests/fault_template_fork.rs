//! Workers forked from a pool's template (`LaunchMode::Template`) pass the fault-injection tests of
//! spawned workers: real processes, real SIGKILLs, exact event sequences.

mod support;

use std::collections::BTreeSet;

use pyvisor::{Affinity, Error, LaunchMode, PoolConfig};
use support::events::{label, until};
use support::{alive, pool, runtime, signal, stats_of, Gate};

/// A template pool preloading numpy (a real extension module with its own RNG).
fn template_pool(name: &str, size: usize) -> PoolConfig {
    pool(name)
        .size(size)
        .affinity(Affinity::StrictQueue)
        .launch(LaunchMode::template(["numpy"]))
}

/// Field `n` (1-based, after the command name) of `/proc/<pid>/stat`.
fn stat_field(pid: u32, n: usize) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process exists");
    let rest = stat.rsplit(')').next().expect("stat format");
    rest.split_whitespace().nth(n - 3).unwrap().parse().unwrap()
}

fn parent_of(pid: u32) -> u32 {
    stat_field(pid, 4)
}

fn group_of(pid: u32) -> u32 {
    stat_field(pid, 5)
}

/// What each open descriptor of `pid` refers to (`pipe:[123]`, `/dev/null`, ...).
fn descriptors(pid: u32) -> BTreeSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn forked_workers_are_children_of_the_host_in_their_own_groups() {
    let rt = runtime(vec![template_pool("tfork", 2)]).await;
    let stats = stats_of(&rt, "tfork").await;
    let template = stats.template_pid.expect("the template is ready");
    for w in &stats.workers {
        let pid = w.pid.expect("started");
        assert!(w.forked, "slot {} was spawned, not forked", w.slot);
        assert_ne!(pid, template);
        assert_eq!(
            parent_of(pid),
            std::process::id(),
            "CLONE_PARENT: the host is the parent"
        );
        assert_eq!(group_of(pid), pid, "a process group of its own");
    }
    let s = rt.session("tfork", "s").unwrap();
    let root: f64 = s.call("math", "sqrt", &(2.0,), &()).await.unwrap();
    assert_eq!(root, 2f64.sqrt());
    let four: f64 = s.call("numpy", "sqrt", &(16.0,), &()).await.unwrap();
    assert_eq!(four, 4.0);
    rt.shutdown().await;
    assert!(!alive(template), "the template outlived shutdown");
}

#[tokio::test]
async fn a_forked_worker_killed_mid_call_is_replaced_by_a_fork_and_its_session_is_told() {
    let rt = runtime(vec![template_pool("tkill", 1)]).await;
    let s = rt.session("tkill", "s").unwrap();
    let pid: u32 = s.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
    let _: i64 = s
        .call("pyvisor_fixtures", "state_set", &("k", 41), &())
        .await
        .unwrap();
    let mut events = rt.events();
    let gate = Gate::new("tkill");
    let call = {
        let s = s.clone();
        let path = gate.path.clone();
        tokio::spawn(async move {
            s.call::<u32>("pyvisor_fixtures", "gate", &(path,), &())
                .await
        })
    };
    gate.wait_started().await;
    signal(pid, libc::SIGKILL);

    let seen = until(&mut events, |e| label(e).starts_with("WorkerRestarted")).await;
    let labels: Vec<String> = seen.iter().map(label).collect();
    assert_eq!(
        labels,
        [
            "WorkerExited(tkill/0#0)",
            "SessionWorkerUnavailable(s)",
            "WorkerRestarted(tkill/0#1)",
        ]
    );
    assert!(matches!(
        call.await.unwrap(),
        Err(Error::WorkerExited { .. })
    ));
    assert!(matches!(
        s.call::<i64>("pyvisor_fixtures", "state_get", &("k",), &())
            .await,
        Err(Error::SessionWorkerUnavailable { .. })
    ));
    assert!(!alive(pid));

    let stats = stats_of(&rt, "tkill").await;
    let new_pid = stats.workers[0].pid.unwrap();
    assert!(
        stats.workers[0].forked,
        "the replacement was spawned, not forked"
    );
    assert_eq!(parent_of(new_pid), std::process::id());
    s.reset().unwrap();
    let fresh = s
        .call::<i64>("pyvisor_fixtures", "state_get", &("k",), &())
        .await;
    assert!(
        matches!(&fresh, Err(Error::Python(py)) if py.type_name == "KeyError"),
        "the new worker must not carry the old state: {fresh:?}"
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn a_killed_template_comes_back_and_running_workers_keep_their_state() {
    let rt = runtime(vec![template_pool("ttpl", 1)]).await;
    let s = rt.session("ttpl", "s").unwrap();
    let _: i64 = s
        .call("pyvisor_fixtures", "state_set", &("k", 41), &())
        .await
        .unwrap();
    let before = stats_of(&rt, "ttpl").await;
    let (template, worker) = (before.template_pid.unwrap(), before.workers[0].pid.unwrap());
    let mut events = rt.events();
    signal(template, libc::SIGKILL);

    let seen = until(&mut events, |e| label(e).starts_with("TemplateReady")).await;
    let labels: Vec<String> = seen.iter().map(label).collect();
    assert_eq!(labels, ["TemplateExited(ttpl)", "TemplateReady(ttpl)"]);
    let kept: i64 = s
        .call("pyvisor_fixtures", "state_get", &("k",), &())
        .await
        .unwrap();
    assert_eq!(kept, 41, "the worker and its session survive the template");
    let after = stats_of(&rt, "ttpl").await;
    assert_eq!(after.workers[0].pid, Some(worker));
    let new_template = after.template_pid.unwrap();
    assert_ne!(new_template, template);
    assert!(!alive(template));

    // The next restart forks from the new template.
    signal(worker, libc::SIGKILL);
    until(&mut events, |e| label(e).starts_with("WorkerRestarted")).await;
    let restarted = stats_of(&rt, "ttpl").await;
    assert!(restarted.workers[0].forked);
    rt.shutdown().await;
}

#[tokio::test]
async fn forked_siblings_share_no_rng_state_and_no_channel() {
    let rt = runtime(vec![template_pool("tsib", 2)]).await;
    let (a, b) = (
        rt.session("tsib", "a").unwrap(),
        rt.session("tsib", "b").unwrap(),
    );
    let pa: u32 = a.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
    let pb: u32 = b.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
    assert_ne!(
        pa, pb,
        "least-loaded placement puts two sessions on two workers"
    );

    let ra: f64 = a.call("random", "random", &(), &()).await.unwrap();
    let rb: f64 = b.call("random", "random", &(), &()).await.unwrap();
    assert_ne!(ra, rb, "random module state shared by siblings");
    let na: f64 = a.call("numpy.random", "random", &(), &()).await.unwrap();
    let nb: f64 = b.call("numpy.random", "random", &(), &()).await.unwrap();
    assert_ne!(na, nb, "numpy global RNG state shared by siblings");

    let (da, db) = (descriptors(pa), descriptors(pb));
    let shared: Vec<&String> = da.intersection(&db).filter(|d| *d != "/dev/null").collect();
    assert!(shared.is_empty(), "siblings share descriptors: {shared:?}");
    for d in da.iter().chain(&db) {
        assert!(!d.starts_with("socket:"), "a worker holds a socket: {d}");
    }
    rt.shutdown().await;
}

#[tokio::test]
async fn a_template_whose_preload_starts_threads_fails_the_pool_with_the_reason() {
    let threaded = pool("tthreads").launch(LaunchMode::template(["pyvisor_starts_thread"]));
    let rt = support::start(vec![threaded]).await;
    let err = rt.wait_ready().await.unwrap_err();
    let Error::PoolFailed {
        reason,
        stderr_tail,
        ..
    } = &err
    else {
        panic!("expected PoolFailed, got {err:?}")
    };
    assert!(reason.contains("template"), "{reason}");
    assert!(
        stderr_tail.iter().any(|l| l.contains("started threads")),
        "{stderr_tail:#?}"
    );
    rt.shutdown().await;
}
