//! A worker that crashes at import is restarted at most N times in T; then its pool fails with
//! the Python error in it, and the other pools keep serving.

mod support;

use std::time::Duration;

use pyvisor::{Error, Event, PoolStatus};
use support::events::{label, until};
use support::{pool, start};

#[tokio::test]
async fn an_import_crash_loop_fails_its_pool_with_the_python_error_and_spares_the_others() {
    let broken = pool("broken")
        .size(1)
        .preload("pyvisor_crash_on_import")
        .max_restarts(2)
        .restart_window(Duration::from_secs(60))
        .backoff_initial(Duration::from_millis(10));
    let rt = start(vec![broken, pool("healthy")]).await;
    let mut events = rt.events();

    let err = rt.wait_pool_ready("broken").await.unwrap_err();
    let Error::PoolFailed {
        pool,
        reason,
        stderr_tail,
    } = &err
    else {
        panic!("expected PoolFailed, got {err:?}")
    };
    assert_eq!(pool, "broken");
    assert!(reason.contains("3 restarts"), "{reason}");
    let tail = stderr_tail.join("\n");
    assert!(
        tail.contains("RuntimeError: boom at import: model weights missing"),
        "the Python error is in the failure: {tail}"
    );
    assert!(err.to_string().contains("boom at import"), "{err}");

    let seen = until(&mut events, |e| matches!(e, Event::PoolFailed { .. })).await;
    let broken_exits = seen
        .iter()
        .filter(|e| label(e).starts_with("WorkerExited(broken/"))
        .count();
    // The subscription may start after the first exit; at most 1 + 2 restarts are ever tried.
    assert!((1..=3).contains(&broken_exits), "{seen:#?}");

    let stats = rt.stats().await;
    let b = stats.iter().find(|p| p.name == "broken").unwrap();
    assert!(matches!(b.status, PoolStatus::Failed { .. }), "{b:?}");
    assert_eq!(b.restarts, 2);

    // Calls to the failed pool fail fast with the same error; the healthy pool serves on.
    let call = rt
        .call::<u32>("broken", "pyvisor_fixtures", "pid", &(), &())
        .await;
    assert!(matches!(call, Err(Error::PoolFailed { .. })), "{call:?}");
    let n: i64 = rt
        .call("healthy", "builtins", "abs", &(-5,), &())
        .await
        .unwrap();
    assert_eq!(n, 5);
    rt.shutdown().await;
}

#[tokio::test]
async fn a_temporary_worker_is_not_restarted() {
    let cfg = pool("temp")
        .size(2)
        .restart(pyvisor::supervisor::RestartPolicy::Temporary);
    let rt = support::runtime(vec![cfg]).await;
    let pids = support::pids(&rt, "temp").await;
    let mut events = rt.events();
    support::signal(pids[0], libc::SIGKILL);
    until(&mut events, |e| label(e) == "WorkerExited(temp/0#0)").await;
    let stats = rt.stats().await;
    assert_eq!(stats[0].restarts, 0);
    assert!(!stats[0].workers[0].ready);
    // The pool still serves on its remaining worker.
    let pid: u32 = rt
        .call("temp", "pyvisor_fixtures", "pid", &(), &())
        .await
        .unwrap();
    assert_eq!(pid, pids[1]);
    rt.shutdown().await;
}
