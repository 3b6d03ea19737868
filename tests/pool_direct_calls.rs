//! Direct calls: a session whose worker is idle writes its call to the worker without a message
//! to the pool actor, and that shortcut never changes what callers observe — queued calls keep
//! their turn, shutdown drains direct calls too, and a worker killed under a direct call loses
//! its sessions exactly as under any other call.

mod support;

use pyvisor::{Affinity, Error};
use support::{eventually, pool, runtime, signal, stats_of, Gate};

#[tokio::test]
async fn a_session_on_an_idle_worker_calls_it_directly_after_its_first_call() {
    let rt = runtime(vec![pool("direct")]).await;
    let s = rt.session("direct", "s1").unwrap();
    let first: Vec<String> = s
        .call("pyvisor_fixtures", "log_append", &("a",), &())
        .await
        .unwrap();
    assert_eq!(first, ["a"]);
    assert_eq!(
        stats_of(&rt, "direct").await.direct_calls,
        0,
        "the first call places the session"
    );
    for tag in ["b", "c"] {
        let _: Vec<String> = s
            .call("pyvisor_fixtures", "log_append", &(tag,), &())
            .await
            .unwrap();
    }
    let log: Vec<String> = s
        .call("pyvisor_fixtures", "log_append", &("d",), &())
        .await
        .unwrap();
    assert_eq!(log, ["a", "b", "c", "d"]);
    assert_eq!(stats_of(&rt, "direct").await.direct_calls, 3);
    rt.shutdown().await;
}

// Multi-threaded: the caller's task may run before the pool actor sees the worker idle, which is
// exactly when a direct call could overtake the queued one; several rounds make that likely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_made_while_another_waits_in_the_queue_runs_after_it() {
    let rt = runtime(vec![pool("order").affinity(Affinity::StrictQueue)]).await;
    let a = rt.session("order", "a").unwrap();
    let b = rt.session("order", "b").unwrap();
    let _: Vec<String> = a
        .call("pyvisor_fixtures", "log_append", &("a0",), &())
        .await
        .unwrap();
    for round in 0..10 {
        let gate = Gate::new("order");
        let a1 = {
            let (a, path) = (a.clone(), gate.path.clone());
            tokio::spawn(async move {
                let _: u32 = a
                    .call("pyvisor_fixtures", "gate", &(path,), &())
                    .await
                    .unwrap();
                // Called the moment the gated reply is in: the worker is idle, but b's call was
                // queued first.
                let tag = format!("a{round}");
                a.call::<Vec<String>>("pyvisor_fixtures", "log_append", &(tag,), &())
                    .await
                    .unwrap()
            })
        };
        gate.wait_started().await;
        let b1 = {
            let b = b.clone();
            tokio::spawn(async move {
                let tag = format!("b{round}");
                b.call::<Vec<String>>("pyvisor_fixtures", "log_append", &(tag,), &())
                    .await
                    .unwrap()
            })
        };
        eventually("b's call to be queued", || async {
            (stats_of(&rt, "order").await.queued == 1).then_some(())
        })
        .await;
        gate.open();
        let after_a = a1.await.unwrap();
        let after_b = b1.await.unwrap();
        assert_eq!(after_b.last(), Some(&format!("b{round}")));
        assert_eq!(
            &after_a[after_a.len() - 2..],
            [format!("b{round}"), format!("a{round}")],
            "round {round}: the queued call runs first"
        );
    }
    rt.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_a_direct_call_in_flight_finish() {
    let rt = runtime(vec![pool("drain")]).await;
    let s = rt.session("drain", "s1").unwrap();
    let _: u32 = s.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
    let gate = Gate::new("drain");
    let call = gate.spawn_call(&s);
    gate.wait_started().await;
    assert_eq!(stats_of(&rt, "drain").await.direct_calls, 1);
    let shutdown = {
        let rt = rt.clone();
        tokio::spawn(async move { rt.shutdown().await })
    };
    eventually("the pool to start draining", || async {
        let stats = rt.stats().await;
        let draining = stats
            .iter()
            .all(|p| p.status == pyvisor::PoolStatus::Stopping);
        draining.then_some(())
    })
    .await;
    let refused = s.call::<u32>("pyvisor_fixtures", "pid", &(), &()).await;
    assert!(
        matches!(refused, Err(Error::ShuttingDown { .. })),
        "{refused:?}"
    );
    gate.open();
    assert!(
        call.await.unwrap().is_ok(),
        "the direct call in flight completes"
    );
    shutdown.await.unwrap();
}

#[tokio::test]
async fn a_worker_killed_under_a_direct_call_fails_it_and_never_serves_the_session_again() {
    let rt = runtime(vec![pool("killdirect").affinity(Affinity::StrictQueue)]).await;
    let s = rt.session("killdirect", "s1").unwrap();
    let pid: u32 = s
        .call("pyvisor_fixtures", "state_set", &("k", "v"), &())
        .await
        .unwrap();
    let gate = Gate::new("killdirect");
    let call = gate.spawn_call(&s);
    gate.wait_started().await;
    assert_eq!(stats_of(&rt, "killdirect").await.direct_calls, 1);
    signal(pid, libc::SIGKILL);
    assert!(matches!(
        call.await.unwrap(),
        Err(Error::WorkerExited { .. })
    ));
    for _ in 0..2 {
        let again = s
            .call::<String>("pyvisor_fixtures", "state_get", &("k",), &())
            .await;
        assert!(
            matches!(again, Err(Error::SessionWorkerUnavailable { .. })),
            "{again:?}"
        );
    }
    rt.shutdown().await;
}

/// Found in review: `reset()` while a call of the session waits in the queue. The queued call is
/// dispatched after the reset cleared the route and before the pool forgot the binding; the route
/// must not survive the binding, or the session would run directly on a worker the pool no longer
/// has it bound to, and would not learn of that worker's death.
#[tokio::test]
async fn a_reset_session_never_keeps_running_directly_where_the_pool_has_not_bound_it() {
    let rt = runtime(vec![pool("reroute").affinity(Affinity::StrictQueue)]).await;
    let s = rt.session("reroute", "s").unwrap();
    let t = rt.session("reroute", "t").unwrap();
    let _: u32 = s.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
    let gate = Gate::new("reroute");
    let busy = gate.spawn_call(&t);
    gate.wait_started().await;
    let queued = {
        let s = s.clone();
        tokio::spawn(async move {
            s.call::<u32>("pyvisor_fixtures", "state_set", &("k", "v"), &())
                .await
        })
    };
    eventually("s's call to be queued", || async {
        (stats_of(&rt, "reroute").await.queued == 1).then_some(())
    })
    .await;
    s.reset().unwrap();
    gate.open();
    busy.await.unwrap().unwrap();
    let pid = queued.await.unwrap().unwrap();
    // The reset reached the pool after the queued call ran there: the session is unbound now.
    assert!(
        s.placement().await.unwrap().is_none(),
        "reset forgets the binding"
    );
    let _: u32 = s
        .call("pyvisor_fixtures", "state_set", &("k", "v2"), &())
        .await
        .unwrap();
    let placement = s
        .placement()
        .await
        .unwrap()
        .expect("the call after the reset binds the session");
    assert_eq!(placement.pid, Some(pid));
    signal(pid, libc::SIGKILL);
    eventually("the worker to be replaced", || async {
        let w = &stats_of(&rt, "reroute").await.workers[0];
        (w.generation == 1 && w.ready).then_some(())
    })
    .await;
    let again = s
        .call::<String>("pyvisor_fixtures", "state_get", &("k",), &())
        .await;
    assert!(
        matches!(again, Err(Error::SessionWorkerUnavailable { .. })),
        "the session must learn that its worker died, got {again:?}"
    );
    rt.shutdown().await;
}
