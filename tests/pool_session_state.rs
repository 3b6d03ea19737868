//! A session's state lives on its home worker, and a stateful session never runs anywhere else.
//!
//! Sessions of strict pools are stateful from their first call; a hint session becomes stateful
//! once it pushed a context or received a ref. A per-call affinity override changes only how one
//! call waits for the session's busy worker (`Hint` waits, `StrictFailFast` refuses), never where
//! it runs; only a stateless hint session moves to an idle worker. When a stateful session's
//! worker dies, the session is told at once and every later call fails with
//! `SessionWorkerUnavailable` until `reset()`. Hint sessions created while the pool starts spread
//! over its workers and stay placed there.

mod support;

use std::collections::BTreeMap;
use std::fmt::Debug;

use pyvisor::{Affinity, CallOptions, Error, ExitStatus, LossReason, Ref, Runtime, WorkerId};
use support::events::{label, pool_of, until};
use support::{eventually, pool, runtime, signal, stats_of, Gate, StartHold};
use tokio::task::JoinHandle;

const F: &str = "pyvisor_fixtures";

fn hint() -> CallOptions {
    CallOptions::new().affinity(Affinity::Hint)
}

/// Waits until `call` is waiting for a worker of pool `name` (the pool's stats count it as
/// queued), and gives it back; fails the test with the call's outcome if it finished instead
/// (it ran somewhere while its session's worker was busy).
async fn waits_for_its_worker<T: Debug>(
    rt: &Runtime,
    name: &str,
    call: JoinHandle<Result<T, Error>>,
) -> JoinHandle<Result<T, Error>> {
    let finished = eventually("the call to wait for its session's worker", || async {
        if call.is_finished() {
            return Some(true);
        }
        (stats_of(rt, name).await.queued == 1).then_some(false)
    })
    .await;
    if finished {
        let outcome = call.await.unwrap();
        panic!("the call must wait for its session's busy worker, but it finished: {outcome:?}");
    }
    call
}

/// A session of a `pool` pool stores state; while a call of it runs, a call of it with a `Hint`
/// override waits for its busy worker (another one is idle) and runs there, seeing the state; the
/// session never moves.
async fn a_hint_override_waits_for_the_sessions_busy_worker(name: &str, pool_affinity: Affinity) {
    let rt = runtime(vec![pool(name).size(2).affinity(pool_affinity)]).await;
    let s1 = rt.session(name, "s1").unwrap();
    let pid: u32 = s1.call(F, "state_set", &("k", "v1"), &()).await.unwrap();
    let home = s1
        .placement()
        .await
        .unwrap()
        .expect("placed by its first call");
    assert_eq!(home.pid, Some(pid));

    let gate = Gate::new(name);
    let first = gate.spawn_call(&s1);
    gate.wait_started().await;
    let hinted = {
        let s1 = s1.clone();
        tokio::spawn(async move {
            s1.call_with::<String>(hint(), F, "state_get", &("k",), &())
                .await
        })
    };
    let hinted = waits_for_its_worker(&rt, name, hinted).await;
    assert!(
        stats_of(&rt, name).await.workers.iter().any(|w| !w.busy),
        "another worker is idle all along"
    );

    gate.open();
    assert_eq!(first.await.unwrap().unwrap(), pid);
    assert_eq!(
        hinted.await.unwrap().unwrap(),
        "v1",
        "the override ran at home (neither elsewhere nor WorkerBusy)"
    );
    let later: String = s1.call(F, "state_get", &("k",), &()).await.unwrap();
    assert_eq!(later, "v1", "the session's state is where it was");
    assert_eq!(s1.placement().await.unwrap(), Some(home), "it never moved");
    rt.shutdown().await;
}

#[tokio::test]
async fn a_hint_override_on_a_strict_queue_session_waits_for_its_busy_worker_and_sees_its_state() {
    a_hint_override_waits_for_the_sessions_busy_worker("sq", Affinity::StrictQueue).await;
}

#[tokio::test]
async fn a_hint_override_on_a_fail_fast_session_waits_for_its_busy_worker_instead_of_failing() {
    a_hint_override_waits_for_the_sessions_busy_worker("ff", Affinity::StrictFailFast).await;
}

#[tokio::test]
async fn a_hint_session_with_a_context_waits_for_its_busy_worker_and_runs_in_its_context() {
    let rt = runtime(vec![pool("ctx").size(2)]).await;
    let s = rt.session("ctx", "s").unwrap();
    s.push_context(F, "tagged", &("mine",), &()).await.unwrap();
    let home = s
        .placement()
        .await
        .unwrap()
        .expect("placed by push_context");
    let tag: Option<String> = s.call(F, "current_tag", &(), &()).await.unwrap();
    assert_eq!(tag.as_deref(), Some("mine"), "the context is entered");

    let gate = Gate::new("ctx");
    let first = gate.spawn_call(&s);
    gate.wait_started().await;
    let second = {
        let s = s.clone();
        tokio::spawn(async move { s.call::<Option<String>>(F, "current_tag", &(), &()).await })
    };
    let second = waits_for_its_worker(&rt, "ctx", second).await;

    gate.open();
    assert_eq!(Some(first.await.unwrap().unwrap()), home.pid);
    assert_eq!(
        second.await.unwrap().unwrap().as_deref(),
        Some("mine"),
        "it ran in the session's context, which only its worker holds"
    );
    assert_eq!(s.placement().await.unwrap(), Some(home), "it never moved");
    rt.shutdown().await;
}

#[tokio::test]
async fn a_hint_session_holding_a_ref_is_lost_with_its_worker_and_told_so_until_reset() {
    let rt = runtime(vec![pool("refs").size(2)]).await;
    let s = rt.session("refs", "s").unwrap();
    // Holding a ref of its worker makes the session stateful.
    let _pattern: Ref = s.call("re", "compile", &(r"\d+",), &()).await.unwrap();
    let home = s
        .placement()
        .await
        .unwrap()
        .expect("placed by its first call");
    let pid = home.pid.expect("its worker started");
    let dead = WorkerId::new("refs", home.worker.slot, 0);
    assert_eq!(home.worker, dead);

    let gate = Gate::new("refs");
    let first = gate.spawn_call(&s);
    gate.wait_started().await;
    let second = {
        let s = s.clone();
        tokio::spawn(async move { s.call::<u32>(F, "pid", &(), &()).await })
    };
    let second = waits_for_its_worker(&rt, "refs", second).await;

    let mut events = rt.events();
    signal(pid, libc::SIGKILL);
    let killed = LossReason::WorkerExited(ExitStatus::Signal(libc::SIGKILL));
    match first.await.unwrap() {
        Err(Error::WorkerExited { worker, reason, .. }) => {
            assert_eq!((worker, reason), (dead.clone(), killed.clone()));
        }
        other => panic!("the call in flight must get WorkerExited, got {other:?}"),
    }
    match second.await.unwrap() {
        Err(Error::SessionWorkerUnavailable {
            session,
            worker,
            reason,
        }) => {
            assert_eq!(
                (session.as_str(), worker, reason),
                ("s", dead.clone(), killed.clone())
            );
        }
        other => panic!("the waiting call must get SessionWorkerUnavailable, got {other:?}"),
    }

    let seen = until(&mut events, |e| label(e).starts_with("WorkerRestarted")).await;
    let labels: Vec<String> = seen
        .iter()
        .filter(|e| pool_of(e) == "refs")
        .map(label)
        .collect();
    let slot = dead.slot;
    assert_eq!(
        labels,
        [
            format!("WorkerExited(refs/{slot}#0)"),
            "SessionWorkerUnavailable(s)".to_string(),
            format!("WorkerRestarted(refs/{slot}#1)"),
        ]
    );

    // Lost, whatever the call's affinity, until the caller resets the session.
    for opts in [CallOptions::new(), hint(), CallOptions::new()] {
        match s.call_with::<u32>(opts, F, "pid", &(), &()).await {
            Err(Error::SessionWorkerUnavailable {
                session,
                worker,
                reason,
            }) => assert_eq!(
                (session.as_str(), worker, reason),
                ("s", dead.clone(), killed.clone())
            ),
            other => panic!("expected SessionWorkerUnavailable ({opts:?}), got {other:?}"),
        }
    }
    let placement = s
        .placement()
        .await
        .unwrap()
        .expect("the loss is remembered");
    assert_eq!(
        (placement.worker, placement.lost),
        (dead.clone(), Some(killed))
    );

    s.reset().unwrap();
    let fresh: u32 = s.call(F, "pid", &(), &()).await.unwrap();
    assert_ne!(fresh, pid);
    rt.shutdown().await;
}

#[tokio::test]
async fn a_hint_session_without_refs_or_contexts_moves_to_an_idle_worker_when_its_own_is_busy() {
    let rt = runtime(vec![pool("free").size(2)]).await;
    let s = rt.session("free", "s").unwrap();
    let pid: u32 = s.call(F, "pid", &(), &()).await.unwrap();
    let gate = Gate::new("free");
    let first = gate.spawn_call(&s);
    gate.wait_started().await;
    let other: u32 = s.call(F, "pid", &(), &()).await.unwrap();
    assert_ne!(
        other, pid,
        "a stateless hint session moves to the idle worker"
    );
    let moved = s.placement().await.unwrap().expect("placed");
    assert_eq!(moved.pid, Some(other), "and is bound there now");
    gate.open();
    assert_eq!(first.await.unwrap().unwrap(), pid);
    rt.shutdown().await;
}

#[tokio::test]
async fn hint_sessions_created_while_the_pool_starts_stay_spread_over_its_workers() {
    // Slot 1's worker is held before its handshake while the sessions are created and their
    // calls are sent: the pool is still starting, and slot 0's worker is ready and idle, the
    // strongest pull for the sessions to pile onto it (the defect: 6/0, 5/1, 1/5 splits).
    let hold = StartHold::new("spread");
    hold.hold();
    let rt = support::start(vec![hold.pool(pool("early").size(2), Some(1))]).await;
    let held = hold.wait_held().await;
    eventually("slot 0's worker to be ready", || async {
        stats_of(&rt, "early").await.workers[0].ready.then_some(())
    })
    .await;
    let sessions: Vec<_> = (0..6)
        .map(|i| rt.session("early", format!("s{i}")).unwrap())
        .collect(); // kept alive: a session lives as long as a handle on it
    let calls: Vec<_> = sessions
        .iter()
        .map(|s| {
            let s = s.clone();
            tokio::spawn(async move { s.call::<u32>(F, "pid", &(), &()).await })
        })
        .collect();
    // Stateless calls do not wait for a worker that is still starting: they borrow the ready
    // one, and their sessions stay placed where they are.
    for call in calls {
        call.await.unwrap().expect("every call is served");
    }
    let stats = stats_of(&rt, "early").await;
    assert!(!stats.workers[1].ready, "slot 1 is still starting");
    let bound: Vec<usize> = stats.workers.iter().map(|w| w.sessions).collect();
    assert_eq!(bound, [3, 3], "sessions per worker (slot order)");
    hold.release();
    rt.wait_pool_full_strength("early").await.unwrap();

    // Once both are up, each session runs on the worker it was placed on: three on each.
    let slot_pids = [stats.workers[0].pid.expect("slot 0 started"), held];
    let mut per_pid = BTreeMap::<u32, usize>::new();
    for s in &sessions {
        let placed = s.placement().await.unwrap().expect("placed");
        let pid: u32 = s.call(F, "pid", &(), &()).await.unwrap();
        assert_eq!(
            Some(pid),
            slot_pids.get(placed.worker.slot).copied(),
            "{}",
            s.id()
        );
        *per_pid.entry(pid).or_default() += 1;
    }
    let split = slot_pids.map(|pid| per_pid.get(&pid).copied().unwrap_or(0));
    assert_eq!(split, [3, 3], "calls per worker (slot order {slot_pids:?})");
    rt.shutdown().await;
}
