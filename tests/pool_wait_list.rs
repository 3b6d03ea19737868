//! Wait lists: a session call that finds its worker busy waits at that worker (no message to the
//! pool actor) where the pool would only have queued it for that same worker, and callers observe
//! exactly what a pool-queued call gives them — order, queue timeout, capacity, a lost worker,
//! shutdown.

mod support;

use std::time::Duration;

use pyvisor::{Affinity, CallOptions, Error, Runtime, Session};
use support::events::{label, until};
use support::{eventually, pool, runtime, signal, stats_of, Gate};
use tokio::task::JoinHandle;

/// A one-worker pool and sessions already placed on its worker (their next calls go direct).
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
async fn calls_waiting_at_a_busy_worker_run_in_order_without_the_pool() {
    let rt = runtime(vec![pool("order").size(1).affinity(Affinity::StrictQueue)]).await;
    let (s, _) = placed(&rt, "order", &["busy", "b", "c", "d"]).await;
    let (gate, busy) = in_flight("order", &s[0]).await;
    let before = stats_of(&rt, "order").await.direct_calls;
    let mut waiting = Vec::new();
    for (n, (session, tag)) in s[1..].iter().zip(["b", "c", "d"]).enumerate() {
        waiting.push(log_call(session, tag));
        until_queued(&rt, "order", n + 1).await;
    }
    assert_eq!(
        stats_of(&rt, "order").await.direct_calls,
        before + 3,
        "the three calls wait at the worker, not in the pool's queue"
    );
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
async fn hint_calls_wait_at_the_worker_only_in_a_one_worker_pool() {
    let rt = runtime(vec![pool("hint1").size(1), pool("hint2").size(2)]).await;
    // One worker: nowhere else to go, so the call waits at the worker.
    let (s, _) = placed(&rt, "hint1", &["busy", "b"]).await;
    let (gate, busy) = in_flight("hint1", &s[0]).await;
    let before = stats_of(&rt, "hint1").await.direct_calls;
    let waiting = log_call(&s[1], "b");
    until_queued(&rt, "hint1", 1).await;
    assert_eq!(stats_of(&rt, "hint1").await.direct_calls, before + 1);
    gate.open();
    busy.await.unwrap().unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), ["b"]);
    // Two workers: a hint call on a busy worker goes through the pool, which moves it.
    let a = rt.session("hint2", "a").unwrap();
    let b = rt.session("hint2", "b").unwrap();
    let pid_a: u32 = a.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
    let (gate, busy) = in_flight("hint2", &a).await;
    let before = stats_of(&rt, "hint2").await.direct_calls;
    let moved: u32 = a.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
    assert_ne!(moved, pid_a, "the pool ran it on the idle worker");
    assert_eq!(stats_of(&rt, "hint2").await.direct_calls, before);
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
    let before = stats_of(&rt, "qt").await.direct_calls;
    let err = s[1]
        .call::<Vec<String>>("pyvisor_fixtures", "log_append", &("late",), &())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::QueueTimeout { .. }), "{err:?}");
    let stats = stats_of(&rt, "qt").await;
    assert_eq!(stats.direct_calls, before + 1, "it waited at the worker");
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
async fn the_pool_queue_and_the_wait_lists_share_one_capacity() {
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
async fn calls_waiting_at_a_killed_worker_never_run_there_and_their_sessions_are_told() {
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
async fn a_hint_call_waiting_at_a_killed_worker_runs_once_on_the_restarted_one() {
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
    // Calls made while the only worker restarts queue in the pool; once it is back, a later call
    // of the same session must run after them, not from the worker's wait list before them.
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

/// Found in review: a call that waited at a lost worker was routed again behind calls queued in
/// the pool after it, so a later call of its own session ran first on the fresh worker.
#[tokio::test]
async fn a_call_waiting_at_a_lost_worker_keeps_its_place_ahead_of_later_calls() {
    let rt = runtime(vec![pool("reorder")
        .size(1)
        .affinity(Affinity::StrictQueue)
        .backoff_initial(Duration::from_millis(300))])
    .await;
    let mut events = rt.events();
    // `s` makes hint calls (in a one-worker pool they wait at the worker); a session-less
    // strict call cannot, so it goes to the pool's queue and shuts the direct way behind it.
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

/// Found in review: a runtime dropped without `shutdown` left the calls waiting at its workers
/// to their deadlines (the session's route kept them alive).
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

/// Found in review: calls whose callers gave up at one worker kept counting against
/// `max_queue` for a call that waits at another worker.
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
    // Two calls of `c` wait at slot 0 until their callers give up.
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
    // Nobody waits any more: `d`'s call waits at slot 1 instead of being refused.
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
