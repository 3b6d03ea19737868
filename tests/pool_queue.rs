//! The pool's queue: a call that finds no worker it may run on waits, and callers observe the
//! queue's promises — order (nothing overtakes a call queued before it), queue timeout, capacity,
//! a lost worker, shutdown — whoever writes the call (its caller's task or a worker's reader
//! task).

mod support;

use std::time::Duration;

use pyvisor::{Affinity, CallOptions, Error, Runtime, Session};
use support::events::{label, until};
use support::{eventually, pool, runtime, signal, stats_of, Gate};
use tokio::task::JoinHandle;

/// Sessions already placed on the pool's workers (one call each).
async fn placed(rt: &Runtime, name: &str, sessions: &[&str]) -> (Vec<Session>, u32) {
    let mut placed = Vec::new();
    let mut pid = 0;
    for id in sessions {
        let s = rt.session(name, *id).unwrap();
        pid = s.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
        placed.push(s);
    }
    (placed, pid)
}

fn log_call(s: &Session, tag: &'static str) -> JoinHandle<Result<Vec<String>, Error>> {
    log_with(s, CallOptions::new(), tag)
}

fn log_with(
    s: &Session,
    opts: CallOptions,
    tag: &'static str,
) -> JoinHandle<Result<Vec<String>, Error>> {
    let s = s.clone();
    tokio::spawn(async move {
        s.call_with(opts, "pyvisor_fixtures", "log_append", &(tag,), &())
            .await
    })
}

/// `busy` starts a gated call: in flight until the gate opens.
async fn in_flight(name: &str, busy: &Session) -> (Gate, JoinHandle<Result<u32, Error>>) {
    let gate = Gate::new(name);
    let call = gate.spawn_call(busy);
    gate.wait_started().await;
    (gate, call)
}

type Waiter = JoinHandle<Result<Vec<String>, Error>>;

/// A gated call of `s[0]` in flight and a call of `s[1]` (logging `w`) waiting behind it.
async fn one_waiting(
    rt: &Runtime,
    name: &str,
    s: &[Session],
) -> (Gate, JoinHandle<Result<u32, Error>>, Waiter) {
    let (gate, busy) = in_flight(name, &s[0]).await;
    let waiting = log_call(&s[1], "w");
    until_queued(rt, name, 1).await;
    (gate, busy, waiting)
}

async fn until_queued(rt: &Runtime, name: &str, n: usize) {
    eventually("calls waiting for the worker", || async {
        (stats_of(rt, name).await.queued == n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn calls_waiting_for_a_busy_worker_run_in_the_order_they_came() {
    let rt = runtime(vec![pool("order").size(1).affinity(Affinity::StrictQueue)]).await;
    let (s, _) = placed(&rt, "order", &["busy", "b", "c", "d"]).await;
    let (gate, busy) = in_flight("order", &s[0]).await;
    let mut waiting = Vec::new();
    for (n, (session, tag)) in s[1..].iter().zip(["b", "c", "d"]).enumerate() {
        waiting.push(log_call(session, tag));
        until_queued(&rt, "order", n + 1).await;
    }
    gate.open();
    busy.await.unwrap().unwrap();
    let mut last = Vec::new();
    for call in waiting {
        last = call.await.unwrap().unwrap();
    }
    assert_eq!(last, ["b", "c", "d"], "they ran in the order they waited");
    assert_eq!(stats_of(&rt, "order").await.queued, 0);
    rt.shutdown().await;
}

#[tokio::test]
async fn a_hint_call_waits_for_the_only_worker_and_moves_in_a_larger_pool() {
    let rt = runtime(vec![pool("hint1").size(1), pool("hint2").size(2)]).await;
    // One worker: nowhere else to go, so the call waits for it.
    let (s, _) = placed(&rt, "hint1", &["busy", "b"]).await;
    let (gate, busy) = in_flight("hint1", &s[0]).await;
    let waiting = log_call(&s[1], "b");
    until_queued(&rt, "hint1", 1).await;
    gate.open();
    busy.await.unwrap().unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), ["b"]);
    // Two workers: a stateless hint session whose worker is busy moves to the idle one.
    let a = rt.session("hint2", "a").unwrap();
    let b = rt.session("hint2", "b").unwrap();
    let pid_a: u32 = a.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
    let (gate, busy) = in_flight("hint2", &a).await;
    let moved: u32 = a.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
    assert_ne!(moved, pid_a, "it ran on the idle worker");
    let _: u32 = b.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
    gate.open();
    busy.await.unwrap().unwrap();
    rt.shutdown().await;
}

#[tokio::test]
async fn a_call_waiting_past_the_queue_timeout_is_answered_and_never_runs() {
    let rt = runtime(vec![pool("qt")
        .size(1)
        .affinity(Affinity::StrictQueue)
        .queue_timeout(Duration::from_millis(100))])
    .await;
    let (s, _) = placed(&rt, "qt", &["busy", "late"]).await;
    let (gate, busy) = in_flight("qt", &s[0]).await;
    let err = s[1]
        .call::<Vec<String>>("pyvisor_fixtures", "log_append", &("late",), &())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::QueueTimeout { .. }), "{err:?}");
    let stats = stats_of(&rt, "qt").await;
    assert_eq!((stats.queue_timeouts, stats.queued), (1, 0));
    gate.open();
    busy.await.unwrap().unwrap();
    let log: Vec<String> = s[1]
        .call("pyvisor_fixtures", "log_append", &("next",), &())
        .await
        .unwrap();
    assert_eq!(log, ["next"], "the timed-out call never ran");
    rt.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_refuses_the_next_call_and_says_so() {
    let rt = runtime(vec![pool("cap")
        .size(1)
        .affinity(Affinity::StrictQueue)
        .max_queue(1)])
    .await;
    let mut events = rt.events();
    let (s, _) = placed(&rt, "cap", &["busy", "b", "c"]).await;
    let (gate, busy, waiting) = one_waiting(&rt, "cap", &s).await;
    let refused = s[2]
        .call::<Vec<String>>("pyvisor_fixtures", "log_append", &("c",), &())
        .await;
    assert!(
        matches!(refused, Err(Error::PoolSaturated { capacity: 1, .. })),
        "{refused:?}"
    );
    until(&mut events, |e| label(e) == "PoolSaturated(cap)").await;
    gate.open();
    busy.await.unwrap().unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), ["w"]);
    rt.shutdown().await;
}

#[tokio::test]
async fn calls_waiting_for_a_killed_worker_never_run_there_and_their_sessions_are_told() {
    let rt = runtime(vec![pool("kill").size(1).affinity(Affinity::StrictQueue)]).await;
    let mut events = rt.events();
    let (s, pid) = placed(&rt, "kill", &["busy", "w"]).await;
    let (_gate, busy, waiting) = one_waiting(&rt, "kill", &s).await;
    signal(pid, libc::SIGKILL);
    assert!(
        matches!(busy.await.unwrap(), Err(Error::WorkerExited { .. })),
        "the call in flight dies with its worker"
    );
    let lost = waiting.await.unwrap();
    assert!(
        matches!(lost, Err(Error::SessionWorkerUnavailable { ref session, .. }) if session == "w"),
        "{lost:?}"
    );
    let seen = until(&mut events, |e| label(e) == "WorkerRestarted(kill/0#1)").await;
    let mut lost_sessions: Vec<String> = seen
        .iter()
        .map(label)
        .filter(|l| l.starts_with("SessionWorkerUnavailable"))
        .collect();
    lost_sessions.sort();
    assert_eq!(
        lost_sessions,
        [
            "SessionWorkerUnavailable(busy)",
            "SessionWorkerUnavailable(w)"
        ]
    );
    assert_eq!(stats_of(&rt, "kill").await.queued, 0);
    rt.shutdown().await;
}

#[tokio::test]
async fn a_hint_call_waiting_for_a_killed_worker_runs_once_on_the_restarted_one() {
    let rt = runtime(vec![pool("rehint").size(1)]).await;
    let (s, pid) = placed(&rt, "rehint", &["busy", "w"]).await;
    let (_gate, busy, waiting) = one_waiting(&rt, "rehint", &s).await;
    signal(pid, libc::SIGKILL);
    assert!(matches!(
        busy.await.unwrap(),
        Err(Error::WorkerExited { .. })
    ));
    assert_eq!(
        waiting.await.unwrap().unwrap(),
        ["w"],
        "it never ran on the killed worker, and runs on the fresh one"
    );
    let now: u32 = s[1]
        .call("pyvisor_fixtures", "pid", &(), &())
        .await
        .unwrap();
    assert_ne!(now, pid);
    rt.shutdown().await;
}

#[tokio::test]
async fn shutdown_answers_waiting_calls_and_lets_the_call_in_flight_finish() {
    let rt = runtime(vec![pool("drain").size(1).affinity(Affinity::StrictQueue)]).await;
    let (s, _) = placed(&rt, "drain", &["busy", "w"]).await;
    let (gate, busy, waiting) = one_waiting(&rt, "drain", &s).await;
    let shutdown = {
        let rt = rt.clone();
        tokio::spawn(async move { rt.shutdown().await })
    };
    let refused = waiting.await.unwrap();
    assert!(
        matches!(refused, Err(Error::ShuttingDown { .. })),
        "{refused:?}"
    );
    gate.open();
    assert!(busy.await.unwrap().is_ok(), "the call in flight completes");
    shutdown.await.unwrap();
}

#[tokio::test]
async fn a_session_call_never_overtakes_an_earlier_one_queued_in_the_pool() {
    // Calls made while the only worker restarts queue; once it is back, a later call of the same
    // session must run after them.
    let rt = runtime(vec![pool("behind")
        .size(1)
        .backoff_initial(Duration::from_secs(2))])
    .await;
    let mut events = rt.events();
    let pid = support::pids(&rt, "behind").await[0];
    signal(pid, libc::SIGKILL);
    until(&mut events, |e| label(e) == "WorkerExited(behind/0#0)").await;
    let a = rt.session("behind", "a").unwrap();
    let gate = Gate::new("behind");
    let first = gate.spawn_call(&a);
    until_queued(&rt, "behind", 1).await;
    let second = log_call(&a, "a2");
    until_queued(&rt, "behind", 2).await;
    gate.wait_started().await;
    let third = log_call(&a, "a3");
    until_queued(&rt, "behind", 2).await;
    gate.open();
    first.await.unwrap().unwrap();
    assert_eq!(second.await.unwrap().unwrap(), ["a2"]);
    assert_eq!(third.await.unwrap().unwrap(), ["a2", "a3"]);
    rt.shutdown().await;
}

/// Found in review: a call that waited for a lost worker was routed again behind calls queued
/// after it, so a later call of its own session ran first on the fresh worker.
#[tokio::test]
async fn a_call_waiting_for_a_lost_worker_keeps_its_place_ahead_of_later_calls() {
    let rt = runtime(vec![pool("reorder")
        .size(1)
        .backoff_initial(Duration::from_millis(300))])
    .await;
    let mut events = rt.events();
    // `s` is a stateless hint session (its calls may run on a fresh worker) waiting for the only
    // worker; a call outside any session waits for any worker, between two of them.
    let hint = CallOptions::new().affinity(Affinity::Hint);
    let (sessions, pid) = placed(&rt, "reorder", &["busy", "s"]).await;
    let (busy, s) = (&sessions[0], &sessions[1]);
    let (_gate, gated) = in_flight("reorder", busy).await;
    let s1 = log_with(s, hint, "s1");
    until_queued(&rt, "reorder", 1).await;
    let z = {
        let rt = rt.clone();
        tokio::spawn(async move {
            rt.call::<Vec<String>>("reorder", "pyvisor_fixtures", "log_append", &("z",), &())
                .await
        })
    };
    until_queued(&rt, "reorder", 2).await;
    let s2 = log_with(s, hint, "s2");
    until_queued(&rt, "reorder", 3).await;
    signal(pid, libc::SIGKILL);
    assert!(matches!(
        gated.await.unwrap(),
        Err(Error::WorkerExited { .. })
    ));
    until(&mut events, |e| label(e) == "WorkerRestarted(reorder/0#1)").await;
    let _ = z.await.unwrap();
    let s2 = s2.await.unwrap().unwrap();
    let s1 = s1.await.unwrap().unwrap();
    assert_eq!(
        s1,
        ["s1"],
        "the call that waited first runs first on the fresh worker"
    );
    assert!(
        s2.ends_with(&["s2".to_string()]) && s2.contains(&"s1".to_string()),
        "{s2:?}"
    );
    rt.shutdown().await;
}

/// Found in review: a runtime dropped without `shutdown` left the calls waiting for its workers
/// to their deadlines.
#[tokio::test]
async fn a_call_waiting_when_the_runtime_is_dropped_is_answered_shutting_down() {
    let rt = runtime(vec![pool("dropped")
        .size(1)
        .affinity(Affinity::StrictQueue)
        .call_timeout(Duration::from_secs(5))])
    .await;
    let (s, _) = placed(&rt, "dropped", &["busy", "w"]).await;
    let (_gate, busy, waiting) = one_waiting(&rt, "dropped", &s).await;
    drop(rt);
    let answer = waiting.await.unwrap();
    assert!(
        matches!(answer, Err(Error::ShuttingDown { .. })),
        "not a Timeout at the deadline: {answer:?}"
    );
    let _ = busy.await.unwrap();
}

/// Found in review: calls whose callers gave up waiting for one worker kept counting against
/// `max_queue` for a call that waits for another worker.
#[tokio::test]
async fn abandoned_calls_at_one_worker_do_not_saturate_the_pool_for_another() {
    let rt = runtime(vec![pool("abandon")
        .size(2)
        .affinity(Affinity::StrictQueue)
        .max_queue(2)])
    .await;
    let (s, _) = placed(&rt, "abandon", &["a", "b", "c", "d"]).await;
    let mut slots = Vec::new();
    for session in &s {
        slots.push(session.placement().await.unwrap().unwrap().worker.slot);
    }
    assert_eq!(slots, [0, 1, 0, 1]);
    let (g0, g1) = (Gate::new("abandon0"), Gate::new("abandon1"));
    let (busy0, busy1) = (g0.spawn_call(&s[0]), g1.spawn_call(&s[1]));
    g0.wait_started().await;
    g1.wait_started().await;
    // Two calls of `c` wait for slot 0 until their callers give up.
    let short = CallOptions::new().timeout(Duration::from_millis(100));
    for tag in ["c1", "c2"] {
        let e = log_with(&s[2], short, tag).await.unwrap().unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    }
    assert_eq!(
        stats_of(&rt, "abandon").await.queued,
        2,
        "both still counted"
    );
    // Nobody waits for them any more: `d`'s call waits for slot 1 instead of being refused.
    let d = log_call(&s[3], "d");
    until_queued(&rt, "abandon", 1).await;
    g1.open();
    busy1.await.unwrap().unwrap();
    assert_eq!(d.await.unwrap().unwrap(), ["d"]);
    assert_eq!(stats_of(&rt, "abandon").await.saturated, 0);
    g0.open();
    busy0.await.unwrap().unwrap();
    rt.shutdown().await;
}

#[tokio::test]
async fn a_sessions_calls_run_in_order_on_its_worker_and_are_counted() {
    let rt = runtime(vec![pool("insession")]).await;
    let s = rt.session("insession", "s1").unwrap();
    let first: Vec<String> = s
        .call("pyvisor_fixtures", "log_append", &("a",), &())
        .await
        .unwrap();
    assert_eq!(first, ["a"]);
    let before = stats_of(&rt, "insession").await.calls;
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
    assert_eq!(stats_of(&rt, "insession").await.calls, before + 3);
    rt.shutdown().await;
}

// Multi-threaded: the caller's task may submit its next call the moment its reply is in, racing
// the reader task that hands the worker to the queued call; several rounds make that likely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_made_while_another_waits_in_the_queue_runs_after_it() {
    let rt = runtime(vec![pool("overtake").affinity(Affinity::StrictQueue)]).await;
    let a = rt.session("overtake", "a").unwrap();
    let b = rt.session("overtake", "b").unwrap();
    let _: Vec<String> = a
        .call("pyvisor_fixtures", "log_append", &("a0",), &())
        .await
        .unwrap();
    for round in 0..10 {
        let gate = Gate::new("overtake");
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
            (stats_of(&rt, "overtake").await.queued == 1).then_some(())
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
async fn shutdown_lets_a_session_call_in_flight_finish_and_refuses_new_ones() {
    let rt = runtime(vec![pool("drainsession")]).await;
    let s = rt.session("drainsession", "s1").unwrap();
    let _: u32 = s.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
    let gate = Gate::new("drainsession");
    let call = gate.spawn_call(&s);
    gate.wait_started().await;
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
    assert!(call.await.unwrap().is_ok(), "the call in flight completes");
    shutdown.await.unwrap();
}

#[tokio::test]
async fn a_worker_killed_under_a_call_fails_it_and_never_serves_the_session_again() {
    let rt = runtime(vec![pool("killdirect").affinity(Affinity::StrictQueue)]).await;
    let s = rt.session("killdirect", "s1").unwrap();
    let pid: u32 = s
        .call("pyvisor_fixtures", "state_set", &("k", "v"), &())
        .await
        .unwrap();
    let gate = Gate::new("killdirect");
    let call = gate.spawn_call(&s);
    gate.wait_started().await;
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

/// Found in review: `reset()` while a call of the session waits in the queue. The queued call
/// still runs (it was made before the reset), the session stays unbound, and its next call binds
/// it afresh, so that it learns of that worker's death.
#[tokio::test]
async fn a_reset_while_a_call_waits_leaves_the_session_unbound_until_its_next_call() {
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
    // The queued call ran after the reset: the session is unbound now.
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
