//! Values both ways through real Python (acceptance cases B13–B18).

mod support;

use std::collections::HashMap;

use pyvisor::{NdArray, Value};
use support::{pool, runtime};

#[tokio::test]
async fn numbers_floats_and_containers_keep_their_python_types() {
    let rt = runtime(vec![pool("values")]).await;
    let s = rt.session("values", "s").unwrap();
    // B13
    assert_eq!(
        s.call::<f64>("math", "sqrt", &(16,), &()).await.unwrap(),
        4.0
    );
    assert_eq!(
        s.call::<i64>("math", "gcd", &(12, 18), &()).await.unwrap(),
        6
    );
    assert_eq!(
        s.get::<f64>("math", "pi").await.unwrap(),
        std::f64::consts::PI
    );
    assert_eq!(s.get::<f64>("math", "inf").await.unwrap(), f64::INFINITY);
    assert!(s
        .call::<f64>("builtins", "float", &("nan",), &())
        .await
        .unwrap()
        .is_nan());
    let t: Value = s
        .call("builtins", "tuple", &(vec![1, 2, 3],), &())
        .await
        .unwrap();
    assert_eq!(
        t,
        Value::Tuple(vec![Value::Int(1), Value::Int(2), Value::Int(3)])
    );
    let set: Value = s.call("builtins", "set", &(vec![1],), &()).await.unwrap();
    assert_eq!(set, Value::Set(vec![Value::Int(1)]));
    let fs: Value = s
        .call("builtins", "frozenset", &(vec!["a"],), &())
        .await
        .unwrap();
    assert_eq!(fs, Value::FrozenSet(vec![Value::Str("a".into())]));
    // Bigints both ways, NaN/inf both ways, bit-exact.
    let big: Value = s.call("builtins", "pow", &(2, 100), &()).await.unwrap();
    assert_eq!(big, Value::BigInt("1267650600228229401496703205376".into()));
    let neg: i128 = s
        .call(
            "operator",
            "neg",
            &(Value::BigInt("1267650600228229401496703205376".into()),),
            &(),
        )
        .await
        .unwrap();
    assert_eq!(neg, -(1i128 << 100));
    for f in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0] {
        let back: f64 = s
            .call("pyvisor_fixtures", "echo", &(f,), &())
            .await
            .unwrap();
        assert_eq!(back.to_bits(), f.to_bits());
    }
    // Python sees a tuple, a set, a complex and datetimes for the Rust values.
    let described: (String, String) = s
        .call(
            "pyvisor_fixtures",
            "describe",
            &(Value::Tuple(vec![Value::Int(1)]),),
            &(),
        )
        .await
        .unwrap();
    assert_eq!(described, ("tuple".into(), "(1,)".into()));
    let c: Value = s
        .call("builtins", "complex", &(1.5, -2.0), &())
        .await
        .unwrap();
    assert_eq!(c, Value::Complex { re: 1.5, im: -2.0 });
    let dt: Value = s
        .call(
            "datetime",
            "datetime.fromisoformat",
            &("2026-11-25T18:07:36.123456+02:00",),
            &(),
        )
        .await
        .unwrap();
    assert_eq!(
        dt,
        Value::DateTime("2026-11-25T18:07:36.123456+02:00".into())
    );
    let back: (String, String) = s
        .call("pyvisor_fixtures", "describe", &(dt,), &())
        .await
        .unwrap();
    assert_eq!(back.0, "datetime");
    rt.shutdown().await;
}

#[tokio::test]
async fn bytes_hash_and_round_trip() {
    let rt = runtime(vec![pool("bytes")]).await;
    let s = rt.session("bytes", "s").unwrap();
    // B14
    let md5: pyvisor::Ref = s
        .call("hashlib", "md5", &(Value::Bytes(b"abc".to_vec()),), &())
        .await
        .unwrap();
    let hex: String = s.call_method(&md5, "hexdigest", &(), &()).await.unwrap();
    assert_eq!(hex, "900150983cd24fb0d6963f7d28e17f72");
    let raw = Value::Bytes(vec![0, 1, 2, 128, 255]);
    let b64: Value = s
        .call("base64", "b64encode", &(raw.clone(),), &())
        .await
        .unwrap();
    let back: Value = s.call("base64", "b64decode", &(b64,), &()).await.unwrap();
    assert_eq!(back, raw);
    rt.shutdown().await;
}

#[tokio::test]
async fn large_payloads_reuse_worker_memory_instead_of_faulting_in_fresh_pages() {
    // A 1 MiB payload is 256 pages. With glibc's defaults the worker returned every large
    // buffer to the kernel and faulted ~750 pages back in per echo; `ENV_DEFAULTS` keeps them.
    let mut config = pool("big");
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        // The host's own setting would win over the default: give the pool the default itself.
        let (key, value) = pyvisor::worker::ENV_DEFAULTS
            .iter()
            .find(|(k, _)| *k == "GLIBC_TUNABLES")
            .expect("a GLIBC_TUNABLES default");
        config = config.env(*key, *value);
    }
    let rt = runtime(vec![config]).await;
    let s = rt.session("big", "s").unwrap();
    let payload = (Value::Bytes(
        (0..1 << 20).map(|i| (i % 251) as u8).collect(),
    ),);
    let calls = 16;
    let mut before = 0;
    for i in 0..4 + calls {
        if i == 4 {
            // Warm now: the heap has grown to what an echo needs.
            before = s
                .call::<u64>("pyvisor_fixtures", "minor_faults", &(), &())
                .await
                .unwrap();
        }
        let back: Value = s
            .call("pyvisor_fixtures", "echo", &payload, &())
            .await
            .unwrap();
        assert_eq!(back, payload.0);
    }
    let after: u64 = s
        .call("pyvisor_fixtures", "minor_faults", &(), &())
        .await
        .unwrap();
    let per_call = (after - before) / calls;
    assert!(per_call < 64, "{per_call} page faults per 1 MiB echo");
    rt.shutdown().await;
}

#[tokio::test]
async fn int_and_tuple_keyed_dicts_reach_python_as_such() {
    let rt = runtime(vec![pool("keys")]).await;
    let s = rt.session("keys", "s").unwrap();
    // B15
    let by_int: HashMap<i64, &str> = HashMap::from([(1, "one")]);
    let one: String = s
        .call_method(&dict_ref(&s, &by_int).await, "get", &(1,), &())
        .await
        .unwrap();
    assert_eq!(one, "one");
    let kinds: Vec<String> = s
        .call("pyvisor_fixtures", "key_types", &(&by_int,), &())
        .await
        .unwrap();
    assert_eq!(kinds, ["int"]);
    let origin = Value::Tuple(vec![Value::Int(0), Value::Int(0)]);
    let by_tuple = Value::Map(vec![(origin.clone(), Value::Str("origin".into()))]);
    let kinds: Vec<String> = s
        .call("pyvisor_fixtures", "key_types", &(&by_tuple,), &())
        .await
        .unwrap();
    assert_eq!(kinds, ["tuple"]);
    // A dict with tag-looking keys is plain data both ways.
    let tagged = Value::Map(vec![(
        Value::Str("__type__".into()),
        Value::Str("ref".into()),
    )]);
    let back: Value = s
        .call("pyvisor_fixtures", "echo", &(&tagged,), &())
        .await
        .unwrap();
    assert_eq!(back, tagged);
    rt.shutdown().await;
}

async fn dict_ref(s: &pyvisor::Session, d: &HashMap<i64, &str>) -> pyvisor::Ref {
    // A dict comes back as data; wrap it in a ref-producing call to use its methods.
    let v: pyvisor::Ref = s
        .call("types", "MappingProxyType", &(d,), &())
        .await
        .unwrap();
    v
}

#[tokio::test]
async fn a_10_mb_float64_ndarray_round_trips_bit_exactly() {
    let rt = runtime(vec![pool("numpy").preload("numpy")]).await;
    let s = rt.session("numpy", "s").unwrap();
    let n = 10 * 1024 * 1024 / 8;
    let values: Vec<f64> = (0..n).map(|i| (i as f64).sin() * 1e6).collect();
    let array = NdArray::from_f64(vec![n / 1024, 1024], &values);
    let info: (String, Vec<usize>, f64, bool) = s
        .call("pyvisor_fixtures", "ndarray_info", &(&array,), &())
        .await
        .unwrap();
    assert_eq!(
        (info.0.as_str(), info.1.clone()),
        ("<f8", vec![n / 1024, 1024])
    );
    assert!(
        info.3,
        "numpy views the received buffer (frombuffer, read-only)"
    );
    let back: NdArray = s
        .call("pyvisor_fixtures", "echo", &(&array,), &())
        .await
        .unwrap();
    assert_eq!(back, array, "bit-exact");
    let made: Vec<f64> = s
        .call("pyvisor_fixtures", "make_array", &(4,), &())
        .await
        .unwrap();
    assert_eq!(made, [0.0, 0.5, 1.0, 1.5]);
    let mean: f64 = s
        .call("numpy", "mean", &(vec![1.0, 2.0, 4.0],), &())
        .await
        .unwrap();
    assert!((mean - 7.0 / 3.0).abs() < 1e-12);
    let version: String = s.get("numpy", "__version__").await.unwrap();
    assert!(version.starts_with('2'), "{version}");
    rt.shutdown().await;
}

#[tokio::test]
async fn deep_nesting_round_trips() {
    let rt = runtime(vec![pool("deep")]).await;
    let s = rt.session("deep", "s").unwrap();
    let mut v = Value::Int(7);
    for _ in 0..100 {
        v = Value::List(vec![v]);
    }
    let back: Value = s
        .call("pyvisor_fixtures", "echo", &(&v,), &())
        .await
        .unwrap();
    assert_eq!(back, v);
    rt.shutdown().await;
}

#[tokio::test]
async fn a_python_error_keeps_its_type_and_says_what_was_missing() {
    let rt = runtime(vec![pool("errs")]).await;
    let s = rt.session("errs", "s").unwrap();
    // B18
    match s.call::<f64>("math", "sqrt", &("x",), &()).await {
        Err(pyvisor::Error::Python(py)) => {
            assert_eq!(py.type_name, "TypeError");
            assert!(!py.traceback.is_empty());
        }
        other => panic!("{other:?}"),
    }
    match s.get::<Value>("math", "no_such_constant").await {
        Err(pyvisor::Error::Python(py)) => {
            assert_eq!(py.type_name, "AttributeError");
            assert!(py.message.contains("no_such_constant"), "{}", py.message);
        }
        other => panic!("{other:?}"),
    }
    rt.shutdown().await;
}

#[tokio::test]
async fn pathlib_objects_are_refs_with_usable_methods() {
    let rt = runtime(vec![pool("paths")]).await;
    let s = rt.session("paths", "s").unwrap();
    // B17
    let p: pyvisor::Ref = s.call("pathlib", "Path", &("/tmp",), &()).await.unwrap();
    assert_eq!(p.module(), "pathlib");
    let name: String = s.get_attr(&p, "name").await.unwrap();
    assert_eq!(name, "tmp");
    let is_dir: bool = s.call_method(&p, "is_dir", &(), &()).await.unwrap();
    assert!(is_dir);
    let resolved: pyvisor::Ref = s.call_method(&p, "resolve", &(), &()).await.unwrap();
    assert_eq!(resolved.module(), "pathlib");
    rt.shutdown().await;
}

#[tokio::test]
async fn float_keys_nan_included_round_trip_as_python_dict_keys() {
    let rt = runtime(vec![pool("nankeys")]).await;
    let s = rt.session("nankeys", "s").unwrap();
    let sent = Value::Map(vec![
        (Value::Float(f64::NAN), Value::Str("nan".into())),
        (Value::Float(1.5), Value::Str("x".into())),
    ]);
    let kinds: Vec<String> = s
        .call("pyvisor_fixtures", "key_types", &(&sent,), &())
        .await
        .unwrap();
    assert_eq!(
        kinds,
        ["float", "float"],
        "both keys reach Python as floats"
    );
    let back: Value = s
        .call("pyvisor_fixtures", "echo", &(&sent,), &())
        .await
        .unwrap();
    let Value::Map(entries) = back else {
        panic!("a dict comes back as a map: {back:?}");
    };
    assert_eq!(entries.len(), 2);
    assert!(matches!(entries[0].0, Value::Float(f) if f.is_nan()));
    assert_eq!(entries[0].1, Value::Str("nan".into()));
    assert_eq!(entries[1], (Value::Float(1.5), Value::Str("x".into())));
    rt.shutdown().await;
}
