//! Bounded queue, queue timeout and call deadlines.

mod support;

use std::time::Duration;

use pyvisor::{Affinity, CallOptions, Error, LossReason};
use support::events::{label, until};
use support::{eventually, pool, runtime, Gate};

#[tokio::test]
async fn a_full_queue_refuses_with_pool_saturated() {
    let rt = runtime(vec![pool("sat").size(1).max_queue(1)]).await;
    let mut events = rt.events();
    let gate = Gate::new("sat");
    let busy = {
        let (rt, path) = (rt.clone(), gate.path.clone());
        tokio::spawn(async move {
            rt.call::<u32>("sat", "pyvisor_fixtures", "gate", &(path,), &())
                .await
        })
    };
    gate.wait_started().await;
    let queued = {
        let rt = rt.clone();
        tokio::spawn(async move {
            rt.call::<u32>("sat", "pyvisor_fixtures", "pid", &(), &())
                .await
        })
    };
    eventually("one queued call", || async {
        (rt.stats().await[0].queued == 1).then_some(())
    })
    .await;
    let err = rt
        .call::<u32>("sat", "pyvisor_fixtures", "pid", &(), &())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::PoolSaturated { capacity: 1, .. }),
        "{err:?}"
    );
    let seen = until(&mut events, |e| label(e) == "PoolSaturated(sat)").await;
    assert_eq!(seen.len(), 1);
    gate.open();
    busy.await.unwrap().unwrap();
    queued.await.unwrap().unwrap();
    assert_eq!(rt.stats().await[0].saturated, 1);
    rt.shutdown().await;
}

#[tokio::test]
async fn a_call_waiting_too_long_in_the_queue_is_dropped_with_queue_timeout() {
    let rt = runtime(vec![pool("qt")
        .size(1)
        .affinity(Affinity::StrictQueue)
        .queue_timeout(Duration::from_millis(100))])
    .await;
    let s = rt.session("qt", "s").unwrap();
    let gate = Gate::new("qt");
    let busy = {
        let (s, path) = (s.clone(), gate.path.clone());
        tokio::spawn(async move {
            s.call::<u32>("pyvisor_fixtures", "gate", &(path,), &())
                .await
        })
    };
    gate.wait_started().await;
    let err = s
        .call::<()>("pyvisor_fixtures", "state_set", &("never", 1), &())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::QueueTimeout { .. }), "{err:?}");
    gate.open();
    busy.await.unwrap().unwrap();
    // The dropped call never ran later.
    let got = s
        .call::<i64>("pyvisor_fixtures", "state_get", &("never",), &())
        .await;
    assert!(
        matches!(got, Err(Error::Python(ref py)) if py.type_name == "KeyError"),
        "{got:?}"
    );
    assert_eq!(rt.stats().await[0].queue_timeouts, 1);
    rt.shutdown().await;
}

#[tokio::test]
async fn a_call_past_its_deadline_times_out_and_a_late_reply_reaches_nobody() {
    let rt = runtime(vec![pool("late")
        .size(1)
        .affinity(Affinity::StrictQueue)
        .overrun_grace(Duration::from_secs(30))])
    .await;
    let s = rt.session("late", "s").unwrap();
    let pid: u32 = s.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
    let gate = Gate::new("late");
    let opts = CallOptions::new().timeout(Duration::from_millis(200));
    let err = s
        .call_with::<u32>(opts, "pyvisor_fixtures", "gate", &(gate.path.clone(),), &())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    // The next caller queues behind the overrunning call and gets its own answer, not the old one.
    let next = {
        let s = s.clone();
        tokio::spawn(async move { s.call::<String>("os", "path.join", &("x", "y"), &()).await })
    };
    eventually("the next call to queue", || async {
        (rt.stats().await[0].queued == 1).then_some(())
    })
    .await;
    gate.open();
    assert_eq!(next.await.unwrap().unwrap(), "x/y");
    let same: u32 = s.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
    assert_eq!(
        same, pid,
        "a call that finishes within the grace keeps its worker"
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn a_worker_stuck_past_deadline_and_grace_is_killed_and_replaced() {
    let rt = runtime(vec![pool("stuck")
        .size(1)
        .affinity(Affinity::StrictQueue)
        .overrun_grace(Duration::from_millis(100))])
    .await;
    let s = rt.session("stuck", "s").unwrap();
    // A first call with a far deadline: the worker's one deadline timer must still wake up for
    // the nearer deadline of the next call.
    let far = CallOptions::new().timeout(Duration::from_secs(600));
    let pid: u32 = s
        .call_with(far, "pyvisor_fixtures", "pid", &(), &())
        .await
        .unwrap();
    let mut events = rt.events();
    let gate = Gate::new("stuck");
    let opts = CallOptions::new().timeout(Duration::from_millis(100));
    let err = s
        .call_with::<u32>(opts, "pyvisor_fixtures", "gate", &(gate.path.clone(),), &())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    let seen = until(&mut events, |e| label(e).starts_with("WorkerRestarted")).await;
    let labels: Vec<String> = seen.iter().map(label).collect();
    assert_eq!(
        labels,
        [
            "WorkerExited(stuck/0#0)",
            "SessionWorkerUnavailable(s)",
            "WorkerRestarted(stuck/0#1)",
        ]
    );
    match s.call::<u32>("pyvisor_fixtures", "pid", &(), &()).await {
        Err(Error::SessionWorkerUnavailable { reason, .. }) => {
            assert_eq!(reason, LossReason::DeadlineOverrun)
        }
        other => panic!("expected SessionWorkerUnavailable, got {other:?}"),
    }
    assert!(!support::alive(pid));
    rt.shutdown().await;
}

#[tokio::test]
async fn queued_calls_leave_no_timer_task_behind_once_answered() {
    let rt = runtime(vec![pool("qtimers")
        .size(1)
        .queue_timeout(Duration::from_secs(600))])
    .await;
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let gate = Gate::new("qtimers");
    let busy = {
        let (rt, path) = (rt.clone(), gate.path.clone());
        tokio::spawn(async move {
            rt.call::<u32>("qtimers", "pyvisor_fixtures", "gate", &(path,), &())
                .await
        })
    };
    gate.wait_started().await;
    let before = tasks();
    let callers: Vec<_> = (0..100)
        .map(|_| {
            let rt = rt.clone();
            tokio::spawn(async move {
                rt.call::<u32>("qtimers", "pyvisor_fixtures", "pid", &(), &())
                    .await
            })
        })
        .collect();
    eventually("100 queued calls", || async {
        (rt.stats().await[0].queued == 100).then_some(())
    })
    .await;
    gate.open();
    busy.await.unwrap().unwrap();
    for caller in callers {
        caller.await.unwrap().unwrap();
    }
    let after = tasks();
    assert!(
        after < before + 10,
        "{before} tasks alive before 100 queued calls, {after} after they were answered: \
         a timer task per queued call outlives it"
    );
    rt.shutdown().await;
}
