//! Refs: operations on live objects, their lifecycle, and every way of misusing one
//! (acceptance cases C19–C23 and the ref rules of docs/values.md).

mod support;

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt};
use pyvisor::{Affinity, Error, Ref, StreamRef, Value};
use support::{eventually, pool, runtime, signal, Gate};

#[tokio::test]
async fn a_ref_supports_method_calls_and_attribute_get_and_set() {
    let rt = runtime(vec![pool("ops")]).await;
    let s = rt.session("ops", "s").unwrap();
    let obj: Ref = s
        .call("pyvisor_fixtures", "Opaque", &("hello",), &())
        .await
        .unwrap();
    assert_eq!(
        (obj.type_name(), obj.module()),
        ("Opaque", "pyvisor_fixtures")
    );
    let shout: String = s
        .call_method(&obj, "shout", &(), &HashMap::from([("suffix", "?")]))
        .await
        .unwrap();
    assert_eq!(shout, "HELLO?");
    s.set_attr(&obj, "label", &"bye").await.unwrap();
    let label: String = s.get_attr(&obj, "label").await.unwrap();
    assert_eq!(label, "bye");
    // A ref nested inside later arguments is the live object.
    let described: (String, String) = s
        .call("pyvisor_fixtures", "describe", &(vec![&obj],), &())
        .await
        .unwrap();
    assert_eq!(described.0, "list");
    assert!(described.1.contains("Opaque object"), "{}", described.1);
    rt.shutdown().await;
}

#[tokio::test]
async fn eval_resolves_refs_in_globals_and_needs_the_pool_to_allow_it() {
    let rt = runtime(vec![pool("evals").allow_eval(true), pool("no_evals")]).await;
    let s = rt.session("evals", "s").unwrap();
    let obj: Ref = s
        .call("pyvisor_fixtures", "Opaque", &("x",), &())
        .await
        .unwrap();
    let out: String = s
        .eval("o.shout('!!')", &HashMap::from([("o", &obj)]))
        .await
        .unwrap();
    assert_eq!(out, "X!!");
    s.exec("o.label = 'changed'", &HashMap::from([("o", &obj)]))
        .await
        .unwrap();
    let label: String = s.get_attr(&obj, "label").await.unwrap();
    assert_eq!(label, "changed");

    let denied = rt.session("no_evals", "s").unwrap();
    let err = denied
        .eval::<i64>("1 + 1", &HashMap::<String, i64>::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotAllowed(msg) if msg.contains("eval")),
        "{err:?}"
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn a_module_allowlist_refuses_everything_else() {
    let rt = runtime(vec![
        pool("allow").allow_modules(["math", "pyvisor_fixtures"])
    ])
    .await;
    let s = rt.session("allow", "s").unwrap();
    assert_eq!(
        s.call::<f64>("math", "sqrt", &(9,), &()).await.unwrap(),
        3.0
    );
    let err = s
        .call::<String>("os", "getcwd", &(), &())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotAllowed(msg) if msg.contains("os")),
        "{err:?}"
    );
    let err = s.get::<Value>("subprocess", "run").await.unwrap_err();
    assert!(matches!(err, Error::NotAllowed(_)), "{err:?}");
    rt.shutdown().await;
}

#[tokio::test]
async fn released_and_evicted_refs_are_not_found() {
    let rt = runtime(vec![pool("release").max_refs(2)]).await;
    let s = rt.session("release", "s").unwrap();
    let a: Ref = s
        .call("pyvisor_fixtures", "Opaque", &("a",), &())
        .await
        .unwrap();
    assert!(s.release(&a).await.unwrap());
    assert!(
        !s.release(&a).await.unwrap(),
        "a second release finds nothing"
    );
    let err = s.get_attr::<String>(&a, "label").await.unwrap_err();
    assert!(
        matches!(&err, Error::RefNotFound(msg) if msg.contains(&a.id().to_string())),
        "{err:?}"
    );

    // max_refs = 2: the least recently used ref is evicted by the third.
    let b: Ref = s
        .call("pyvisor_fixtures", "Opaque", &("b",), &())
        .await
        .unwrap();
    let c: Ref = s
        .call("pyvisor_fixtures", "Opaque", &("c",), &())
        .await
        .unwrap();
    let _: String = s.get_attr(&b, "label").await.unwrap(); // b is now more recent than c
    let d: Ref = s
        .call("pyvisor_fixtures", "Opaque", &("d",), &())
        .await
        .unwrap();
    assert!(matches!(
        s.get_attr::<String>(&c, "label").await,
        Err(Error::RefNotFound(_))
    ));
    assert_eq!(s.get_attr::<String>(&b, "label").await.unwrap(), "b");
    assert_eq!(s.get_attr::<String>(&d, "label").await.unwrap(), "d");

    assert_eq!(s.release_all().await.unwrap(), 2);
    assert!(matches!(
        s.get_attr::<String>(&d, "label").await,
        Err(Error::RefNotFound(_))
    ));
    rt.shutdown().await;
}

#[tokio::test]
async fn a_ref_of_another_session_is_refused_before_anything_is_sent() {
    let rt = runtime(vec![pool("mismatch").size(1), pool("other").size(1)]).await;
    let s1 = rt.session("mismatch", "s1").unwrap();
    let s2 = rt.session("mismatch", "s2").unwrap();
    let obj: Ref = s1
        .call("pyvisor_fixtures", "Opaque", &(), &())
        .await
        .unwrap();
    let err = s2.get_attr::<String>(&obj, "label").await.unwrap_err();
    assert!(
        matches!(&err, Error::RefSessionMismatch { ref_session: Some(r), session: Some(s) } if r == "s1" && s == "s2"),
        "{err:?}"
    );
    let err = s2
        .call::<Value>("pyvisor_fixtures", "echo", &(vec![&obj],), &())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RefSessionMismatch { .. }), "{err:?}");
    let elsewhere = rt.session("other", "s1").unwrap();
    let err = elsewhere
        .get_attr::<String>(&obj, "label")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRef(_)), "{err:?}");
    rt.shutdown().await;
}

#[tokio::test]
async fn a_ref_whose_worker_died_is_unavailable_even_in_hint_mode() {
    let rt = runtime(vec![pool("dead").size(2)]).await; // hint
    let s = rt.session("dead", "s").unwrap();
    let obj: Ref = s
        .call("pyvisor_fixtures", "Opaque", &(), &())
        .await
        .unwrap();
    let pid: u32 = s.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
    let mut events = rt.events();
    signal(pid, libc::SIGKILL);
    support::events::until(&mut events, |e| {
        support::events::label(e).starts_with("WorkerRestarted")
    })
    .await;
    match s.get_attr::<String>(&obj, "label").await {
        Err(Error::SessionWorkerUnavailable { worker, reason, .. }) => {
            assert_eq!(worker, *obj.worker());
            assert_eq!(
                reason,
                pyvisor::LossReason::WorkerExited(pyvisor::ExitStatus::Signal(libc::SIGKILL))
            );
        }
        other => panic!("expected SessionWorkerUnavailable, got {other:?}"),
    }
    // The hint session held state there (a ref): it is lost, not silently re-placed, until the
    // caller resets it; then it carries on, without its old objects.
    let again = s.call::<u32>("pyvisor_fixtures", "pid", &(), &()).await;
    assert!(
        matches!(again, Err(Error::SessionWorkerUnavailable { .. })),
        "{again:?}"
    );
    s.reset().unwrap();
    let _: u32 = s.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
    rt.shutdown().await;
}

#[tokio::test]
async fn a_call_with_refs_waits_for_their_worker_even_in_hint_mode() {
    let rt = runtime(vec![pool("pinned").size(2).affinity(Affinity::Hint)]).await;
    let s = rt.session("pinned", "s").unwrap();
    let obj: Ref = s
        .call("pyvisor_fixtures", "Opaque", &("pinned",), &())
        .await
        .unwrap();
    let gate = Gate::new("pinned");
    let busy = {
        let (s, path) = (s.clone(), gate.path.clone());
        tokio::spawn(async move {
            s.call::<u32>("pyvisor_fixtures", "gate", &(path,), &())
                .await
        })
    };
    gate.wait_started().await;
    let with_ref = {
        let (s, obj) = (s.clone(), obj.clone());
        tokio::spawn(async move { s.call_method::<String>(&obj, "shout", &(), &()).await })
    };
    eventually("the ref call to queue for its worker", || async {
        (rt.stats().await[0].queued == 1).then_some(())
    })
    .await;
    gate.open();
    busy.await.unwrap().unwrap();
    assert_eq!(with_ref.await.unwrap().unwrap(), "PINNED!");
    rt.shutdown().await;
}

#[tokio::test]
async fn dropping_the_last_session_handle_releases_its_refs() {
    let rt = runtime(vec![pool("drop").size(1)]).await;
    let probe = rt.session("drop", "probe").unwrap();
    let before: i64 = probe
        .call("pyvisor_fixtures", "registry_size", &(), &())
        .await
        .unwrap();
    {
        let s = rt.session("drop", "short-lived").unwrap();
        let again = rt.session("drop", "short-lived").unwrap();
        let _a: Ref = s
            .call("pyvisor_fixtures", "Opaque", &(), &())
            .await
            .unwrap();
        let _b: Ref = again
            .call("pyvisor_fixtures", "Opaque", &(), &())
            .await
            .unwrap();
        drop(s); // another handle is still alive: nothing is released
        let now: i64 = probe
            .call("pyvisor_fixtures", "registry_size", &(), &())
            .await
            .unwrap();
        assert_eq!(now, before + 2);
    }
    eventually("the dropped session's refs to be released", || async {
        let now: i64 = probe
            .call("pyvisor_fixtures", "registry_size", &(), &())
            .await
            .ok()?;
        (now == before).then_some(())
    })
    .await;
    rt.shutdown().await;
}

#[tokio::test]
async fn generators_stream_to_the_end_and_errors_end_the_stream() {
    let rt = runtime(vec![pool("streams")]).await;
    let s = rt.session("streams", "s").unwrap();
    let gen: StreamRef = s
        .call("pyvisor_fixtures", "count_to", &(200,), &())
        .await
        .unwrap();
    let all: Vec<i64> = s.stream::<i64>(&gen).try_collect().await.unwrap();
    assert_eq!(all, (0..200).collect::<Vec<_>>());
    // Exhausted streams are released.
    let err = s
        .stream::<i64>(&gen)
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RefNotFound(_)), "{err:?}");

    let broken: StreamRef = s
        .call("pyvisor_fixtures", "fail_after", &(3,), &())
        .await
        .unwrap();
    let items: Vec<Result<i64, Error>> = s.stream::<i64>(&broken).collect().await;
    assert_eq!(items.len(), 4);
    assert!(items[..3].iter().all(Result::is_ok));
    assert!(
        matches!(&items[3], Err(Error::Python(py)) if py.message.contains("stream broke after 3"))
    );
    rt.shutdown().await;
}
