//! Issue 5, part 5: bad input from the Rust side. Each gets a clear typed error (or a documented
//! behaviour), and none of them disturbs a worker.
//!
//! "Nothing was sent" is shown with the worker's own request counter: request ids are per worker
//! process and grow by one per request and per ping (`docs/protocol.md`), and these pools ping
//! every 15 minutes, so two calls in a row see ids `a` and `a + 1` exactly when nothing else
//! reached the worker in between.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use pyvisor::{Affinity, Error, PoolConfig, PoolStatus, Ref, Runtime, Session, Value};
use serde::{Serialize, Serializer};
use support::{alive, eventually, pids, pool, runtime, Gate, PATIENCE};

const M: &str = "pyvisor_misbehave";
const F: &str = "pyvisor_fixtures";

/// A pool whose workers are pinged only every 15 minutes (so request ids count our calls only).
fn quiet(name: &str) -> PoolConfig {
    pool(name)
        .heartbeat_interval(Duration::from_secs(3600))
        .heartbeat_timeout(Duration::from_secs(3600))
}

async fn request_id(s: &Session) -> u64 {
    s.call(M, "current_request_id", &(), &()).await.unwrap()
}

/// Asserts that nothing reached the session's worker since `before` was read (one id later).
async fn assert_nothing_sent_since(s: &Session, before: u64) {
    assert_eq!(
        request_id(s).await,
        before + 1,
        "no request reached the worker in between"
    );
}

#[tokio::test]
async fn an_unknown_pool_is_pool_not_found_for_every_entry_point() {
    let rt = runtime(vec![pool("known")]).await;
    let not_found = |e: Error, name: &str| {
        assert!(
            matches!(&e, Error::PoolNotFound { pool } if pool == name),
            "{e:?}"
        )
    };
    not_found(rt.session("nope", "s").unwrap_err(), "nope");
    not_found(rt.session("", "s").unwrap_err(), "");
    not_found(rt.session("Known", "s").unwrap_err(), "Known"); // names are case-sensitive
    not_found(
        rt.call::<u32>("nope", F, "pid", &(), &())
            .await
            .unwrap_err(),
        "nope",
    );
    not_found(rt.wait_pool_ready("nope").await.unwrap_err(), "nope");
    assert_eq!(rt.stats().await.len(), 1);
    rt.shutdown().await;
}

#[tokio::test]
async fn an_empty_pool_name_and_other_invalid_pool_settings_are_refused_at_start() {
    let refused = |cfg: PoolConfig, says: &'static str| async move {
        match Runtime::builder().pool(cfg).start().await {
            Err(Error::Config(msg)) => assert!(msg.contains(says), "{msg}"),
            Err(other) => panic!("expected Config, got {other:?}"),
            Ok(_) => panic!("an invalid pool started"),
        }
    };
    refused(pool(""), "a pool needs a name").await;
    refused(pool("p").size(0), "size 0").await;
    refused(pool("p").max_frame(10), "max_frame").await;
    refused(
        pool("p").allow_modules(Vec::<String>::new()),
        "would allow nothing",
    )
    .await;
    refused(pool("p").call_timeout(Duration::ZERO), "above zero").await;
}

#[tokio::test]
async fn an_empty_session_id_is_an_ordinary_session_distinct_from_no_session() {
    let rt = runtime(vec![quiet("empty_id")
        .size(2)
        .affinity(Affinity::StrictQueue)])
    .await;
    let s = rt.session("empty_id", "").unwrap();
    assert_eq!(s.id(), "");
    let pid: u32 = s.call(F, "state_set", &("k", "v"), &()).await.unwrap();
    let placed = s
        .placement()
        .await
        .unwrap()
        .expect("placed like any session");
    assert_eq!(placed.pid, Some(pid));
    // Its refs carry the session "" and are checked as such on both sides.
    let obj: Ref = s.call(F, "Opaque", &("x",), &()).await.unwrap();
    assert_eq!(obj.session(), Some(""));
    let shout: String = s.call_method(&obj, "shout", &(), &()).await.unwrap();
    assert_eq!(shout, "X!");
    // "" is not "no session": a session-less call may not use the ref.
    let err = rt
        .call::<String>("empty_id", F, "describe", &(&obj,), &())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::RefSessionMismatch { ref_session: Some(r), session: None } if r.is_empty()),
        "{err:?}"
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn empty_or_unknown_module_and_function_names_are_typed_errors_and_the_worker_serves_on() {
    let rt = runtime(vec![quiet("names")]).await;
    let s = rt.session("names", "s").unwrap();
    let pid: u32 = s.call(F, "pid", &(), &()).await.unwrap();

    let bad_request = |e: Error, says: &str| {
        assert!(
            matches!(&e, Error::Protocol(m) if m.contains("bad_request") && m.contains(says)),
            "{e:?}"
        )
    };
    bad_request(
        s.call::<Value>("", "f", &(), &()).await.unwrap_err(),
        "'module' must be a non-empty string",
    );
    bad_request(
        s.call::<Value>(F, "", &(), &()).await.unwrap_err(),
        "'function' must be a non-empty string",
    );
    let python = |e: Error, type_name: &str| match e {
        Error::Python(py) => assert_eq!(py.type_name, type_name, "{py:?}"),
        other => panic!("expected Python({type_name}), got {other:?}"),
    };
    python(
        s.call::<Value>("no_such_module_xyz", "f", &(), &())
            .await
            .unwrap_err(),
        "ModuleNotFoundError",
    );
    python(
        s.call::<Value>(F, "no_such_function", &(), &())
            .await
            .unwrap_err(),
        "AttributeError",
    );
    python(
        s.call::<Value>(F, "..", &(), &()).await.unwrap_err(),
        "AttributeError",
    );
    python(
        s.get::<Value>("no_such_module_xyz", "x").await.unwrap_err(),
        "ModuleNotFoundError",
    );
    let again: u32 = s.call(F, "pid", &(), &()).await.unwrap();
    assert_eq!(again, pid);
    assert_eq!(rt.stats().await[0].restarts, 0);
    rt.shutdown().await;
}

#[tokio::test]
async fn args_and_kwargs_of_the_wrong_shape_are_refused_by_the_worker_as_bad_requests() {
    let rt = runtime(vec![quiet("shapes")]).await;
    let s = rt.session("shapes", "s").unwrap();
    let pid: u32 = s.call(F, "pid", &(), &()).await.unwrap();
    let bad_request = |e: Error, says: &str| {
        assert!(
            matches!(&e, Error::Protocol(m) if m.contains("bad_request") && m.contains(says)),
            "{e:?}"
        )
    };
    bad_request(
        s.call::<Value>(F, "echo", &5, &()).await.unwrap_err(),
        "'args' must be an array or nil",
    );
    bad_request(
        s.call::<Value>(F, "echo", &(1,), &vec![1])
            .await
            .unwrap_err(),
        "'kwargs' must be a map or nil",
    );
    bad_request(
        s.call::<Value>(F, "echo", &(1,), &HashMap::from([(1, 2)]))
            .await
            .unwrap_err(),
        "kwargs keys must be strings",
    );
    // Values Python cannot build: a malformed big int, one beyond Python's 4300-digit limit for
    // int/str conversion, a datetime that is not ISO 8601.
    for (v, says) in [
        (Value::BigInt("12x".into()), "not decimal digits"),
        (Value::BigInt("9".repeat(5000)), "4300 digits"),
        (Value::DateTime("yesterday".into()), "Invalid isoformat"),
    ] {
        bad_request(
            s.call::<Value>(F, "echo", &(v,), &()).await.unwrap_err(),
            says,
        );
    }
    let again: u32 = s.call(F, "pid", &(), &()).await.unwrap();
    assert_eq!(again, pid);
    rt.shutdown().await;
}

/// A type whose `Serialize` fails.
struct Refuses;

impl Serialize for Refuses {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("Refuses does not serialize"))
    }
}

#[tokio::test]
async fn args_that_cannot_be_encoded_are_an_encode_error_and_nothing_is_sent() {
    use std::os::unix::ffi::OsStrExt;

    let rt = runtime(vec![quiet("encode")]).await;
    let s = rt.session("encode", "s").unwrap();
    let before = request_id(&s).await;

    let err = s
        .call::<Value>(F, "echo", &(Refuses,), &())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Encode(m) if m.contains("Refuses does not serialize")),
        "{err:?}"
    );
    // A real-world one: a path that is not UTF-8 has no MessagePack string form.
    let path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/\xff"));
    let err = s.call::<Value>(F, "echo", &(path,), &()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Encode(m) if m.contains("UTF-8")),
        "{err:?}"
    );
    // In kwargs, and deep inside a container, too.
    let kwargs = BTreeMap::from([("x", vec![Some(Refuses)])]);
    let err = s.call::<Value>(F, "echo", &(), &kwargs).await.unwrap_err();
    assert!(matches!(err, Error::Encode(_)), "{err:?}");
    // Documented behaviour, not an error: non-string map keys are encoded as such.
    let keys: Vec<String> = s
        .call(
            F,
            "key_types",
            &(HashMap::from([((1, 2), "tuple key")]),),
            &(),
        )
        .await
        .unwrap();
    assert_eq!(keys, ["tuple"]);

    // The key_types call is the one request in between.
    assert_eq!(
        request_id(&s).await,
        before + 2,
        "the encode failures sent nothing"
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn oversized_arguments_are_frame_too_large_nothing_is_sent_and_the_worker_is_unaffected() {
    const LIMIT: usize = 64 * 1024;
    let rt = runtime(vec![quiet("oversize").max_frame(LIMIT)]).await;
    let s = rt.session("oversize", "s").unwrap();
    let pid: u32 = s.call(F, "state_set", &("k", "kept"), &()).await.unwrap();
    let before = request_id(&s).await;

    let err = s
        .call::<Value>(F, "echo", &(Value::Bytes(vec![1; 100 * 1024]),), &())
        .await
        .unwrap_err();
    match err {
        Error::FrameTooLarge { what, size, limit } => {
            assert_eq!((what, limit), ("request", LIMIT));
            assert!(size > 100 * 1024, "{size}");
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    // Also when the size comes from many small values, and in kwargs.
    let many: Vec<u32> = (0..40_000).collect();
    let err = s
        .call::<Value>(F, "echo", &(), &HashMap::from([("value", many)]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::FrameTooLarge {
                what: "request",
                ..
            }
        ),
        "{err:?}"
    );
    assert_nothing_sent_since(&s, before).await;

    // Just under the limit is fine, on the same worker, with its state.
    let n: usize = s
        .call(
            "builtins",
            "len",
            &(Value::Bytes(vec![1; LIMIT - 1024]),),
            &(),
        )
        .await
        .unwrap();
    assert_eq!(n, LIMIT - 1024);
    let kept: String = s.call(F, "state_get", &("k",), &()).await.unwrap();
    assert_eq!(kept, "kept");
    let again: u32 = s.call(F, "pid", &(), &()).await.unwrap();
    assert_eq!(again, pid);
    assert_eq!(rt.stats().await[0].restarts, 0);
    rt.shutdown().await;
}

#[tokio::test]
async fn every_entry_point_after_shutdown_is_shutting_down() {
    let rt = runtime(vec![pool("after")]).await;
    let s = rt.session("after", "s").unwrap();
    let pid: u32 = s.call(F, "pid", &(), &()).await.unwrap();
    rt.shutdown().await;
    assert!(!alive(pid));

    let shutting_down = |e: Error| {
        assert!(
            matches!(&e, Error::ShuttingDown { pool } if pool == "after"),
            "{e:?}"
        )
    };
    shutting_down(s.call::<u32>(F, "pid", &(), &()).await.unwrap_err());
    shutting_down(
        rt.call::<u32>("after", F, "pid", &(), &())
            .await
            .unwrap_err(),
    );
    // A handle made after shutdown is only a handle: its first call says the same.
    let late = rt.session("after", "late").unwrap();
    shutting_down(late.call::<u32>(F, "pid", &(), &()).await.unwrap_err());
    shutting_down(s.reset().unwrap_err());
    shutting_down(s.placement().await.unwrap_err());
    shutting_down(rt.wait_ready().await.unwrap_err());
    assert!(rt.stats().await.is_empty(), "no pool answers any more");
}

#[tokio::test]
async fn a_call_made_while_the_pool_drains_is_shutting_down_and_the_call_in_flight_finishes() {
    let rt = runtime(vec![
        pool("draining").shutdown_grace(Duration::from_secs(30))
    ])
    .await;
    let s = rt.session("draining", "s").unwrap();
    let gate = Gate::new("draining");
    let in_flight = {
        let (s, path) = (s.clone(), gate.path.clone());
        tokio::spawn(async move { s.call::<u32>(F, "gate", &(path,), &()).await })
    };
    gate.wait_started().await;
    let stopping = {
        let rt = rt.clone();
        tokio::spawn(async move { rt.shutdown().await })
    };
    eventually("the pool to drain", || async {
        let stats = rt.stats().await;
        (stats.first()?.status == PoolStatus::Stopping).then_some(())
    })
    .await;
    let err = s.call::<u32>(F, "pid", &(), &()).await.unwrap_err();
    assert!(matches!(err, Error::ShuttingDown { .. }), "{err:?}");
    gate.open();
    let pid = in_flight
        .await
        .unwrap()
        .expect("the call in flight finishes");
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .unwrap()
        .unwrap();
    assert!(!alive(pid));
}

#[tokio::test]
async fn shutdown_twice_in_a_row_or_at_once_returns_promptly_and_leaves_no_process() {
    let rt = runtime(vec![pool("twice").size(2)]).await;
    let all = pids(&rt, "twice").await;
    // At once: both wait for the same stop.
    let (a, b) = tokio::join!(rt.shutdown(), rt.shutdown());
    let _ = (a, b);
    assert!(all.iter().all(|&p| !alive(p)));
    // Again, afterwards: nothing left to stop, so it returns at once.
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), rt.shutdown())
        .await
        .expect("a second shutdown returns promptly");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A clone shuts down the same runtime: same answer.
    tokio::time::timeout(Duration::from_secs(5), rt.clone().shutdown())
        .await
        .expect("a clone's shutdown returns promptly");
}

#[tokio::test]
async fn fifty_tasks_on_one_strict_queue_session_are_all_answered_one_at_a_time() {
    let rt = runtime(vec![quiet("many").size(2).affinity(Affinity::StrictQueue)]).await;
    let s = rt.session("many", "s").unwrap();
    let other = rt.session("many", "other").unwrap();
    let pid: u32 = s.call(F, "pid", &(), &()).await.unwrap();
    let other_pid: u32 = other.call(F, "state_set", &("k", "o"), &()).await.unwrap();
    assert_ne!(pid, other_pid);

    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.call::<(u64, u32)>(M, "incr", &(), &()).await })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        let (n, on) = tokio::time::timeout(PATIENCE, t)
            .await
            .expect("no deadlock")
            .unwrap()
            .unwrap();
        assert_eq!(on, pid, "a strict session never leaves its worker");
        seen.push(n);
    }
    seen.sort_unstable();
    // The read-modify-write in `incr` would lose updates if two calls ever overlapped.
    assert_eq!(seen, (1..=50).collect::<Vec<u64>>());
    let total: u64 = s.call(M, "counter", &(), &()).await.unwrap();
    assert_eq!(total, 50);
    let kept: String = other.call(F, "state_get", &("k",), &()).await.unwrap();
    assert_eq!(kept, "o");
    let untouched: u64 = other.call(M, "counter", &(), &()).await.unwrap();
    assert_eq!(untouched, 0, "the other worker ran none of them");
    rt.shutdown().await;
}

#[tokio::test]
async fn fifty_tasks_on_one_strict_fail_fast_session_are_each_answered_or_refused_as_busy() {
    let rt = runtime(vec![quiet("ff").size(2).affinity(Affinity::StrictFailFast)]).await;
    let s = rt.session("ff", "s").unwrap();
    let pid: u32 = s.call(F, "pid", &(), &()).await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.call::<(u64, u32)>(M, "incr", &(), &()).await })
        })
        .collect();
    let (mut ok, mut busy) = (Vec::new(), 0);
    for t in tasks {
        match tokio::time::timeout(PATIENCE, t).await.unwrap().unwrap() {
            Ok((n, on)) => {
                assert_eq!(on, pid);
                ok.push(n);
            }
            Err(Error::WorkerBusy { session, worker }) => {
                assert_eq!(session, "s");
                assert_eq!(worker.generation, 0);
                busy += 1;
            }
            Err(other) => panic!("expected a result or WorkerBusy, got {other:?}"),
        }
    }
    assert!(!ok.is_empty() && busy > 0, "{} ok, {busy} busy", ok.len());
    assert_eq!(ok.len() + busy, 50);
    ok.sort_unstable();
    assert_eq!(ok, (1..=ok.len() as u64).collect::<Vec<_>>());
    let total: u64 = s.call(M, "counter", &(), &()).await.unwrap();
    assert_eq!(total, ok.len() as u64, "a refused call never ran");
    rt.shutdown().await;
}

#[tokio::test]
async fn fifty_tasks_on_one_hint_session_are_all_answered_across_the_pool() {
    let rt = runtime(vec![quiet("hintmany").size(2)]).await;
    let all = pids(&rt, "hintmany").await;
    let s = rt.session("hintmany", "s").unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.call::<(u64, u32)>(M, "incr", &(), &()).await })
        })
        .collect();
    let mut per_pid: HashMap<u32, Vec<u64>> = HashMap::new();
    for t in tasks {
        let (n, on) = tokio::time::timeout(PATIENCE, t)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(all.contains(&on));
        per_pid.entry(on).or_default().push(n);
    }
    // Each worker ran its share one call at a time: its counters are exactly 1..=share.
    let mut total = 0;
    for (_, mut ns) in per_pid {
        ns.sort_unstable();
        assert_eq!(ns, (1..=ns.len() as u64).collect::<Vec<_>>());
        total += ns.len();
    }
    assert_eq!(total, 50);
    rt.shutdown().await;
}

/// Regression (found by `reliability_proptest.rs`): the worker used to answer the caller before
/// telling the pool it was idle, so on a multi-threaded runtime a caller's next call often reached
/// the pool first and found its own worker "busy": about half of the back-to-back calls of a
/// single caller failed with `WorkerBusy` on a strict_fail_fast session, and a hint session
/// bounced between workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_calls_of_one_caller_never_find_their_own_worker_busy() {
    let rt = runtime(vec![quiet("b2b")
        .size(2)
        .affinity(Affinity::StrictFailFast)])
    .await;
    let s = rt.session("b2b", "s").unwrap();
    let pid: u32 = s.call(F, "pid", &(), &()).await.unwrap();
    for i in 0..200 {
        match s.call::<u32>(F, "pid", &(), &()).await {
            Ok(p) => assert_eq!(p, pid),
            Err(e) => panic!("call {i} of a single sequential caller failed: {e:?}"),
        }
    }
    let hint = pyvisor::CallOptions::new().affinity(Affinity::Hint);
    let h = rt.session("b2b", "h").unwrap();
    let first: u32 = h.call_with(hint, F, "pid", &(), &()).await.unwrap();
    for _ in 0..200 {
        let p: u32 = h.call_with(hint, F, "pid", &(), &()).await.unwrap();
        assert_eq!(p, first, "an idle hint session stays on its worker");
    }
    rt.shutdown().await;
}
