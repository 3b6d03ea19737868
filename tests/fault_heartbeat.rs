//! A worker that stops answering heartbeats is killed and replaced.

mod support;

use std::time::Duration;

use pyvisor::{Affinity, Error, Event, LossReason};
use support::events::{label, until};
use support::{alive, pool, runtime, signal};

#[tokio::test]
async fn a_stopped_worker_misses_its_heartbeats_and_is_replaced() {
    let cfg = pool("hb")
        .size(1)
        .affinity(Affinity::StrictQueue)
        .heartbeat_interval(Duration::from_millis(50))
        .heartbeat_timeout(Duration::from_millis(300));
    let rt = runtime(vec![cfg]).await;
    let s = rt.session("hb", "s").unwrap();
    let pid: u32 = s.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
    let mut events = rt.events();

    signal(pid, libc::SIGSTOP); // frozen: alive, but silent

    let seen = until(&mut events, |e| label(e).starts_with("WorkerRestarted")).await;
    match &seen[0] {
        Event::WorkerExited { reason, pid: p, .. } => {
            assert_eq!(*reason, LossReason::HeartbeatTimeout);
            assert_eq!(*p, Some(pid));
        }
        other => panic!("expected WorkerExited first, got {other:?}"),
    }
    assert_eq!(label(&seen[1]), "SessionWorkerUnavailable(s)");
    assert!(!alive(pid), "the frozen process was killed");
    match s.call::<u32>("pyvisor_fixtures", "pid", &(), &()).await {
        Err(Error::SessionWorkerUnavailable { reason, .. }) => {
            assert_eq!(reason, LossReason::HeartbeatTimeout)
        }
        other => panic!("expected SessionWorkerUnavailable, got {other:?}"),
    }
    rt.shutdown().await;
}

#[tokio::test]
async fn a_long_call_does_not_miss_heartbeats() {
    let cfg = pool("hb_long")
        .size(1)
        .heartbeat_interval(Duration::from_millis(20))
        .heartbeat_timeout(Duration::from_millis(200));
    let rt = runtime(vec![cfg]).await;
    // One second of sleeping on the interpreter thread spans many heartbeat timeouts; the I/O
    // thread answers them all.
    let pid: u32 = rt
        .call("hb_long", "pyvisor_fixtures", "sleep", &(1.0,), &())
        .await
        .unwrap();
    let stats = rt.stats().await;
    assert_eq!((stats[0].restarts, stats[0].workers[0].pid), (0, Some(pid)));
    rt.shutdown().await;
}
