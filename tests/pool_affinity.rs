//! Session routing: strict_queue waits for the session's own worker, strict_fail_fast refuses
//! at once, and new sessions spread over the workers.

mod support;

use std::collections::HashSet;

use pyvisor::{Affinity, CallOptions, Error};
use support::{eventually, pool, runtime, Gate};

#[tokio::test]
async fn strict_queue_waits_for_the_sessions_own_worker_while_another_is_idle() {
    let rt = runtime(vec![pool("sq").size(2).affinity(Affinity::StrictQueue)]).await;
    let s1 = rt.session("sq", "s1").unwrap();
    let pid: u32 = s1.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();

    let gate = Gate::new("sq");
    let first = {
        let (s1, path) = (s1.clone(), gate.path.clone());
        tokio::spawn(async move {
            s1.call::<u32>("pyvisor_fixtures", "gate", &(path,), &())
                .await
        })
    };
    gate.wait_started().await;
    let second = {
        let s1 = s1.clone();
        tokio::spawn(async move { s1.call::<u32>("pyvisor_fixtures", "pid", &(), &()).await })
    };
    eventually("the second call to be queued", || async {
        (rt.stats().await[0].queued == 1).then_some(())
    })
    .await;
    let stats = rt.stats().await;
    assert!(
        stats[0].workers.iter().any(|w| !w.busy),
        "the other worker is idle"
    );
    assert!(
        !second.is_finished(),
        "the queued call does not run elsewhere"
    );

    gate.open();
    assert_eq!(first.await.unwrap().unwrap(), pid);
    assert_eq!(
        second.await.unwrap().unwrap(),
        pid,
        "it ran on the session's own worker"
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn strict_fail_fast_returns_worker_busy_at_once() {
    let rt = runtime(vec![pool("ff").size(2).affinity(Affinity::StrictFailFast)]).await;
    let s1 = rt.session("ff", "s1").unwrap();
    let pid: u32 = s1.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
    let gate = Gate::new("ff");
    let first = {
        let (s1, path) = (s1.clone(), gate.path.clone());
        tokio::spawn(async move {
            s1.call::<u32>("pyvisor_fixtures", "gate", &(path,), &())
                .await
        })
    };
    gate.wait_started().await;
    match s1.call::<u32>("pyvisor_fixtures", "pid", &(), &()).await {
        Err(Error::WorkerBusy { session, worker }) => {
            assert_eq!(session, "s1");
            assert_eq!(worker.generation, 0);
        }
        other => panic!("expected WorkerBusy, got {other:?}"),
    }
    // A per-call override: the same session may choose to queue instead.
    let queued = {
        let s1 = s1.clone();
        let opts = CallOptions::new().affinity(Affinity::StrictQueue);
        tokio::spawn(async move {
            s1.call_with::<u32>(opts, "pyvisor_fixtures", "pid", &(), &())
                .await
        })
    };
    eventually("the override call to queue", || async {
        (rt.stats().await[0].queued == 1).then_some(())
    })
    .await;
    gate.open();
    assert_eq!(first.await.unwrap().unwrap(), pid);
    assert_eq!(queued.await.unwrap().unwrap(), pid);
    rt.shutdown().await;
}

#[tokio::test]
async fn sessions_created_back_to_back_spread_over_workers() {
    let rt = runtime(vec![pool("spread").size(3).affinity(Affinity::StrictQueue)]).await;
    let mut pids = HashSet::new();
    let mut sessions = Vec::new(); // a session lives as long as a handle on it
    for i in 0..3 {
        let s = rt.session("spread", format!("s{i}")).unwrap();
        pids.insert(
            s.call::<u32>("pyvisor_fixtures", "pid", &(), &())
                .await
                .unwrap(),
        );
        sessions.push(s);
    }
    assert_eq!(pids.len(), 3, "three sessions, three workers");
    let stats = rt.stats().await;
    assert!(
        stats[0].workers.iter().all(|w| w.sessions == 1),
        "{stats:?}"
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn sessions_created_before_the_workers_are_ready_also_spread_and_wait() {
    let rt = support::start(vec![pool("early").size(2).affinity(Affinity::StrictQueue)]).await;
    let calls: Vec<_> = (0..2)
        .map(|i| {
            let s = rt.session("early", format!("s{i}")).unwrap();
            tokio::spawn(async move { s.call::<u32>("pyvisor_fixtures", "pid", &(), &()).await })
        })
        .collect();
    let mut pids = HashSet::new();
    for c in calls {
        pids.insert(
            c.await
                .unwrap()
                .expect("calls made while starting wait for readiness"),
        );
    }
    assert_eq!(pids.len(), 2);
    rt.shutdown().await;
}

#[tokio::test]
async fn hint_runs_elsewhere_when_the_preferred_worker_is_busy() {
    let rt = runtime(vec![pool("hint").size(2)]).await;
    let s1 = rt.session("hint", "s1").unwrap();
    let pid: u32 = s1.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
    let gate = Gate::new("hint");
    let first = {
        let (s1, path) = (s1.clone(), gate.path.clone());
        tokio::spawn(async move {
            s1.call::<u32>("pyvisor_fixtures", "gate", &(path,), &())
                .await
        })
    };
    gate.wait_started().await;
    let other: u32 = s1.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
    assert_ne!(other, pid, "hint moved to the free worker");
    gate.open();
    first.await.unwrap().unwrap();
    rt.shutdown().await;
}
