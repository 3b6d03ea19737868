//! Graceful serialization of real Python results: containers are kept, only leaves without a
//! value form become refs (acceptance cases A1–A12).

mod support;

use pyvisor::{Ref, Value};
use support::{pool, runtime};

fn refs_in(v: &Value, out: &mut Vec<Ref>) {
    match v {
        Value::Ref(r) => out.push(r.clone()),
        Value::StreamRef(r) => out.push(r.as_ref().clone()),
        Value::Map(entries) => entries.iter().for_each(|(k, v)| {
            refs_in(k, out);
            refs_in(v, out);
        }),
        other => other
            .items()
            .unwrap_or(&[])
            .iter()
            .for_each(|i| refs_in(i, out)),
    }
}

#[tokio::test]
async fn containers_are_kept_and_only_non_serializable_leaves_become_refs() {
    let rt = runtime(vec![pool("graceful")]).await;
    let s = rt.session("graceful", "s").unwrap();

    // A1
    let v: Value = s
        .call("pyvisor_fixtures", "validators", &(), &())
        .await
        .unwrap();
    let items = v.items().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0].get("name"), Some(&Value::Str("email".into())));
    assert_eq!(items[0].get("required"), Some(&Value::Bool(true)));
    let pattern = items[0].get("pattern").and_then(Value::as_ref).unwrap();
    assert_eq!((pattern.type_name(), pattern.module()), ("Pattern", "re"));
    assert_eq!(pattern.session(), Some("s"));

    // A6: the leaf ref stays usable.
    let source: String = s.get_attr(pattern, "pattern").await.unwrap();
    assert_eq!(source, "[^@]+@[^@]+");
    let m: Value = s
        .call_method(pattern, "match", &("a@b",), &())
        .await
        .unwrap();
    assert_eq!(m.as_ref().map(Ref::type_name), Some("Match"));
    let none: Value = s
        .call_method(pattern, "match", &("nope",), &())
        .await
        .unwrap();
    assert_eq!(none, Value::Nil);

    // A2
    let v: Value = s.call("pyvisor_fixtures", "mixed", &(), &()).await.unwrap();
    let list = v.get("list").and_then(Value::items).unwrap();
    assert_eq!((&list[0], &list[2]), (&Value::Int(1), &Value::Int(3)));
    assert!(list[1].as_ref().is_some());
    let map = v.get("map").unwrap();
    assert_eq!(map.get("c"), Some(&Value::Str("hello".into())));
    assert!(map.get("b").and_then(Value::as_ref).is_some());
    let deep = v
        .get("deep")
        .and_then(|d| d.get("l1"))
        .and_then(|d| d.get("l2"))
        .and_then(|d| d.get("l3"));
    let deep = deep.and_then(Value::items).unwrap();
    assert_eq!(deep[3], Value::Int(4));
    assert!(deep[2].as_ref().is_some());

    // A3
    let v: Value = s
        .call("pyvisor_fixtures", "three_patterns", &(), &())
        .await
        .unwrap();
    let mut found = Vec::new();
    refs_in(&v, &mut found);
    let ids: std::collections::HashSet<u64> = found.iter().map(Ref::id).collect();
    assert_eq!((found.len(), ids.len()), (3, 3));

    // A4
    let v: Value = s
        .call("pyvisor_fixtures", "tuple_with_ref", &(), &())
        .await
        .unwrap();
    let Value::Tuple(t) = &v else { panic!("{v:?}") };
    assert_eq!((&t[0], &t[2]), (&Value::Int(1), &Value::Int(3)));
    assert!(t[1].as_ref().is_some());
    rt.shutdown().await;
}

#[tokio::test]
async fn generators_become_stream_refs_and_async_generators_refs() {
    let rt = runtime(vec![pool("gens")]).await;
    let s = rt.session("gens", "s").unwrap();
    // A5
    let v: Value = s
        .call("pyvisor_fixtures", "with_stream", &(), &())
        .await
        .unwrap();
    assert_eq!(v.get("status"), Some(&Value::Str("ok".into())));
    let Some(Value::StreamRef(stream)) = v.get("stream") else {
        panic!("{v:?}")
    };
    use futures::TryStreamExt;
    let squares: Vec<i64> = s.stream::<i64>(stream).try_collect().await.unwrap();
    assert_eq!(squares, [0, 1, 4, 9, 16]);
    // A10
    let v: Value = s
        .call("pyvisor_fixtures", "async_things", &(), &())
        .await
        .unwrap();
    assert!(matches!(v.get("agen"), Some(Value::Ref(r)) if r.type_name() == "async_generator"));
    assert!(matches!(v.get("gen"), Some(Value::StreamRef(_))));
    rt.shutdown().await;
}

#[tokio::test]
async fn identity_cycles_and_failures_are_handled_without_leaking_refs() {
    let rt = runtime(vec![pool("cycles")]).await;
    let s = rt.session("cycles", "s").unwrap();
    // A11: the same object twice → one id.
    let v: Value = s
        .call("pyvisor_fixtures", "same_twice", &(), &())
        .await
        .unwrap();
    let items = v.items().unwrap();
    let (a, b, c) = (
        items[0].as_ref().unwrap(),
        items[1].as_ref().unwrap(),
        items[2].as_ref().unwrap(),
    );
    assert_eq!(a.id(), b.id());
    assert_ne!(a.id(), c.id());

    // A8: cycles become refs at the back-edge.
    let v: Value = s
        .call("pyvisor_fixtures", "cycles", &(), &())
        .await
        .unwrap();
    let selfish = v.get("selfish").and_then(Value::items).unwrap();
    assert_eq!((&selfish[0], &selfish[1]), (&Value::Int(1), &Value::Int(2)));
    assert_eq!(selfish[2].as_ref().map(Ref::type_name), Some("list"));
    let pair = v.get("pair").unwrap();
    assert_eq!(pair.get("name"), Some(&Value::Str("a".into())));
    let peer = pair.get("peer").unwrap();
    assert_eq!(peer.get("name"), Some(&Value::Str("b".into())));
    assert_eq!(
        peer.get("peer").and_then(Value::as_ref).map(Ref::type_name),
        Some("dict")
    );
    let mut node = v.get("chain").unwrap();
    for depth in 0..10 {
        assert_eq!(node.get("depth"), Some(&Value::Int(depth)));
        node = node.get("next").unwrap();
    }
    assert!(
        node.as_ref().is_some(),
        "the 10-deep chain loops back as a ref"
    );

    // A9: beyond the recursion limit → one ref for everything, and exactly one new registry entry.
    let before: i64 = s
        .call("pyvisor_fixtures", "registry_size", &(), &())
        .await
        .unwrap();
    let v: Value = s
        .call("pyvisor_fixtures", "too_deep", &(), &())
        .await
        .unwrap();
    let whole = v.as_ref().expect("the whole value is one ref");
    assert_eq!((whole.type_name(), whole.session()), ("list", Some("s")));
    let after: i64 = s
        .call("pyvisor_fixtures", "registry_size", &(), &())
        .await
        .unwrap();
    assert_eq!(after, before + 1);
    rt.shutdown().await;
}

#[tokio::test]
async fn an_lm_history_like_entry_is_data_except_its_response() {
    #[derive(serde::Deserialize)]
    struct Entry {
        model: String,
        response: Ref,
        cost: f64,
        prompt_tokens: i64,
        messages: Vec<std::collections::HashMap<String, String>>,
    }
    let rt = runtime(vec![pool("history")]).await;
    let s = rt.session("history", "s").unwrap();
    // A7 + A12: typed, with ref metadata.
    let entries: Vec<Entry> = s
        .call("pyvisor_fixtures", "history_like", &(), &())
        .await
        .unwrap();
    let e = &entries[0];
    assert_eq!(
        (e.model.as_str(), e.cost, e.prompt_tokens),
        ("offline/rules", 0.0, 12)
    );
    assert_eq!(e.messages[0]["role"], "user");
    assert_eq!(
        (e.response.type_name(), e.response.module()),
        ("Opaque", "pyvisor_fixtures")
    );
    assert_eq!(
        (e.response.session(), e.response.worker().pool.as_str()),
        (Some("s"), "history")
    );
    let shout: String = s.call_method(&e.response, "shout", &(), &()).await.unwrap();
    assert_eq!(shout, "RESPONSE!");
    // dict subclasses are data
    let v: Value = s
        .call("pyvisor_fixtures", "ordered", &(), &())
        .await
        .unwrap();
    assert_eq!(
        v,
        Value::Map(vec![
            (Value::Str("b".into()), Value::Int(1)),
            (Value::Str("a".into()), Value::Int(2))
        ])
    );
    rt.shutdown().await;
}
