//! A runtime's end is not a worker loss, and its callers can tell what happened to their calls.
//!
//! A graceful shutdown stops every worker with `WorkerStopped` (no `WorkerExited`, no
//! `SessionWorkerUnavailable`); dropping the last runtime answers the calls in flight with
//! `WorkerExited { reason: PoolStopped }`. `Error::never_ran` says whether pyvisor guarantees
//! that a failed call never ran in Python. `Runtime::wait_pool_full_strength` waits until every
//! slot of a pool has a ready worker again (after a restart), where `wait_pool_ready` only means
//! "ready once".

mod support;

use std::time::Duration;

use pyvisor::{Affinity, Error, LossReason, PoolStatus, WorkerId};
use support::events::{label, until};
use support::{alive, eventually, pids, pool, runtime, signal, stats_of, Gate, StartHold};

const F: &str = "pyvisor_fixtures";

#[tokio::test]
async fn dropping_the_last_runtime_answers_the_call_in_flight_with_pool_stopped() {
    let rt = runtime(vec![pool("dropped").size(1)]).await;
    let pid = pids(&rt, "dropped").await[0];
    let s = rt.session("dropped", "s").unwrap();
    let gate = Gate::new("dropped");
    let in_flight = gate.spawn_call(&s);
    gate.wait_started().await;
    // A session handle (`s`, and its clone in the task running the call) holds its pool's
    // client, not the runtime: this is the last handle of the runtime.
    drop(rt);
    match in_flight.await.unwrap() {
        Err(Error::WorkerExited { worker, reason, .. }) => {
            assert_eq!(worker, WorkerId::new("dropped", 0, 0));
            assert_eq!(
                reason,
                LossReason::PoolStopped,
                "the runtime's end, not a pyvisor bug"
            );
        }
        other => panic!("expected WorkerExited {{ reason: PoolStopped }}, got {other:?}"),
    }
    eventually("the worker to die", || async {
        (!alive(pid)).then_some(())
    })
    .await;
    drop(s);
}

#[tokio::test]
async fn a_graceful_shutdown_stops_every_worker_and_loses_no_session() {
    let rt = runtime(vec![pool("stop").size(2).affinity(Affinity::StrictQueue)]).await;
    // One strict session with state on each worker; their handles live through the shutdown.
    let a = rt.session("stop", "a").unwrap();
    let b = rt.session("stop", "b").unwrap();
    let pid_a: u32 = a.call(F, "state_set", &("k", 1), &()).await.unwrap();
    let pid_b: u32 = b.call(F, "state_set", &("k", 2), &()).await.unwrap();
    assert_ne!(pid_a, pid_b, "one session per worker");

    let mut events = rt.events();
    rt.shutdown().await;
    let seen = until(&mut events, |e| label(e) == "PoolStopped(stop)").await;
    let labels: Vec<String> = seen.iter().map(label).collect();
    // The workers are stopped concurrently, so their `WorkerStopped` events come in whatever
    // order their processes end: compared sorted. `PoolStopped` is last: the pool emits it once
    // no worker is left. Nothing else is expected: no `WorkerExited` (no worker had to be
    // killed), no `SessionWorkerUnavailable` (a shutdown is not a loss).
    let (last, stopped) = labels.split_last().expect("PoolStopped came");
    let mut stopped = stopped.to_vec();
    stopped.sort();
    assert_eq!(
        (stopped, last.as_str()),
        (
            vec![
                "WorkerStopped(stop/0#0)".to_string(),
                "WorkerStopped(stop/1#0)".to_string()
            ],
            "PoolStopped(stop)"
        ),
        "events of the shutdown: {labels:?}"
    );
    assert!(!alive(pid_a) && !alive(pid_b));
    drop((a, b));
}

#[tokio::test]
async fn calls_refused_or_dropped_before_running_report_that_they_never_ran() {
    let rt = runtime(vec![pool("never")
        .size(1)
        .affinity(Affinity::StrictQueue)
        .queue_timeout(Duration::from_millis(100))])
    .await;
    let s = rt.session("never", "s").unwrap();
    let gate = Gate::new("never");
    let in_flight = gate.spawn_call(&s);
    gate.wait_started().await;

    // Dropped from the queue by the queue timeout while the worker is busy.
    let err = s
        .call::<u32>(F, "state_set", &("never", 1), &())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::QueueTimeout { .. }), "{err:?}");
    assert!(err.never_ran(), "{err:?}");

    // Refused while the pool drains for shutdown.
    let shutdown = {
        let rt = rt.clone();
        tokio::spawn(async move { rt.shutdown().await })
    };
    eventually("the pool to be stopping", || async {
        (stats_of(&rt, "never").await.status == PoolStatus::Stopping).then_some(())
    })
    .await;
    let err = rt
        .call::<u32>("never", F, "pid", &(), &())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ShuttingDown { .. }), "{err:?}");
    assert!(err.never_ran(), "{err:?}");

    gate.open();
    in_flight.await.unwrap().unwrap();
    shutdown.await.unwrap();
}

#[tokio::test]
async fn calls_that_reached_python_do_not_report_that_they_never_ran() {
    let rt = runtime(vec![pool("ran").size(1)]).await;
    let s = rt.session("ran", "s").unwrap();

    let err = s
        .call::<()>(F, "fail", &("raised",), &())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Python(_)), "{err:?}");
    assert!(!err.never_ran(), "{err:?}");

    // Killed mid-call: it may have done anything before it died.
    let pid = pids(&rt, "ran").await[0];
    let gate = Gate::new("ran");
    let in_flight = gate.spawn_call(&s);
    gate.wait_started().await;
    signal(pid, libc::SIGKILL);
    let err = in_flight.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::WorkerExited { .. }), "{err:?}");
    assert!(!err.never_ran(), "{err:?}");
    rt.shutdown().await;
}

#[tokio::test]
async fn waiting_for_full_strength_returns_once_a_restarted_worker_is_ready_again() {
    // Slot 0's replacement is held before its handshake until the test releases it.
    let hold = StartHold::new("strength");
    let rt = runtime(vec![hold.pool(pool("strength").size(2), None)]).await;
    let pid0 = pids(&rt, "strength").await[0];
    let mut events = rt.events();
    hold.hold();
    signal(pid0, libc::SIGKILL);
    until(&mut events, |e| label(e) == "WorkerExited(strength/0#0)").await;
    let replacement = hold.wait_held().await;

    // "Ready once" is long true: it is no way to wait for the replacement.
    rt.wait_pool_ready("strength").await.unwrap();
    let slot0 = stats_of(&rt, "strength").await.workers[0].clone();
    assert!(
        !slot0.ready,
        "the replacement is held before its handshake: {slot0:?}"
    );

    let full = {
        let rt = rt.clone();
        tokio::spawn(async move { rt.wait_pool_full_strength("strength").await })
    };
    hold.release();
    full.await.unwrap().unwrap();
    // Right after it returns, with no polling: every slot has a ready worker again.
    let stats = stats_of(&rt, "strength").await;
    let slot0 = &stats.workers[0];
    assert!(slot0.ready, "{slot0:?}");
    assert_eq!((slot0.generation, slot0.pid), (1, Some(replacement)));
    assert!(stats.workers.iter().all(|w| w.ready), "{stats:?}");
    rt.wait_full_strength().await.unwrap();

    rt.shutdown().await;
    let err = rt.wait_pool_full_strength("strength").await.unwrap_err();
    assert!(matches!(err, Error::ShuttingDown { .. }), "{err:?}");
}

#[tokio::test]
async fn waiting_for_full_strength_on_a_pool_that_gave_up_returns_pool_failed() {
    // The first worker is held before it imports the crashing module, so that the first wait
    // begins while the pool is still trying.
    let hold = StartHold::new("broken");
    hold.hold();
    let broken = hold
        .pool(pool("broken").size(1), None)
        .preload("pyvisor_crash_on_import")
        .max_restarts(2)
        .restart_window(Duration::from_secs(60))
        .backoff_initial(Duration::from_millis(10));
    let rt = support::start(vec![broken]).await;
    hold.wait_held().await;
    let (while_trying, ()) = tokio::join!(rt.wait_pool_full_strength("broken"), async {
        hold.release()
    });
    let after = rt.wait_pool_full_strength("broken").await;
    for outcome in [while_trying, after] {
        match outcome {
            Err(Error::PoolFailed { pool, .. }) => assert_eq!(pool, "broken"),
            other => panic!("expected PoolFailed, got {other:?}"),
        }
    }
    let all = rt.wait_full_strength().await;
    assert!(matches!(all, Err(Error::PoolFailed { .. })), "{all:?}");
    rt.shutdown().await;
}
