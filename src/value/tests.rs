use std::collections::{BTreeSet, HashMap};

use super::*;
use crate::identity::WorkerId;

fn round_trip(v: &Value) -> Value {
    rmp_serde::from_slice(&rmp_serde::to_vec(v).unwrap()).unwrap()
}

fn sample_ref() -> Ref {
    Ref {
        id: 42,
        session: Some("s1".into()),
        worker: WorkerId::new("p", 1, 3),
        type_name: "Pattern".into(),
        module: "re".into(),
    }
}

#[test]
fn nan_and_infinities_survive_a_round_trip() {
    for f in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let Value::Float(back) = round_trip(&Value::Float(f)) else {
            panic!("not a float");
        };
        assert_eq!(back.to_bits(), f.to_bits());
    }
}

#[test]
fn every_variant_survives_a_round_trip() {
    let all = Value::List(vec![
        Value::Nil,
        Value::Bool(true),
        Value::Int(-3),
        Value::UInt(u64::MAX),
        Value::BigInt("-123456789012345678901234567890".into()),
        Value::Str("é".into()),
        Value::Bytes(vec![0, 255]),
        Value::Tuple(vec![Value::Int(1), Value::Tuple(vec![])]),
        Value::Set(vec![Value::Int(1)]),
        Value::FrozenSet(vec![Value::Str("a".into())]),
        Value::Map(vec![
            (Value::Int(2), Value::Nil),
            (
                Value::Tuple(vec![Value::Int(0), Value::Int(0)]),
                Value::Str("origin".into()),
            ),
            (Value::Str("__type__".into()), Value::Str("tuple".into())),
        ]),
        Value::Complex { re: 1.5, im: -2.0 },
        Value::DateTime("2026-11-25T18:07:36.123456+00:00".into()),
        Value::Date("2026-11-25".into()),
        Value::Time("18:07:36".into()),
        Value::NdArray(NdArray::from_f64(vec![3], &[1.0, f64::NAN, -0.0])),
        Value::Ref(sample_ref()),
        Value::StreamRef(StreamRef(sample_ref())),
    ]);
    let back = round_trip(&all);
    // NaN != NaN: compare the encodings instead.
    assert_eq!(
        rmp_serde::to_vec(&back).unwrap(),
        rmp_serde::to_vec(&all).unwrap()
    );
    assert_eq!(back.items().unwrap()[7], all.items().unwrap()[7]);
}

#[test]
fn a_dict_whose_keys_look_like_tags_stays_a_dict() {
    let v = Value::Map(vec![(
        Value::Str("__type__".into()),
        Value::Str("ref".into()),
    )]);
    assert_eq!(round_trip(&v), v);
}

#[test]
fn tuples_sets_and_ndarrays_read_as_rust_sequences() {
    let (a, b): (i64, String) =
        from_value(Value::Tuple(vec![Value::Int(1), Value::Str("x".into())])).unwrap();
    assert_eq!((a, b.as_str()), (1, "x"));
    let s: BTreeSet<i64> = from_value(Value::Set(vec![Value::Int(2), Value::Int(1)])).unwrap();
    assert_eq!(s.into_iter().collect::<Vec<_>>(), [1, 2]);
    let v: Vec<f64> = from_value(Value::NdArray(NdArray::from_f64(vec![2], &[0.5, 1.5]))).unwrap();
    assert_eq!(v, [0.5, 1.5]);
    let c: (f64, f64) = from_value(Value::Complex { re: 1.0, im: 2.0 }).unwrap();
    assert_eq!(c, (1.0, 2.0));
}

#[test]
fn refs_nested_in_typed_results_keep_their_identity() {
    #[derive(serde::Deserialize)]
    struct Entry {
        model: String,
        response: Ref,
        extra: Value,
    }
    let v = Value::Map(vec![
        (Value::Str("model".into()), Value::Str("m".into())),
        (Value::Str("response".into()), Value::Ref(sample_ref())),
        (
            Value::Str("extra".into()),
            Value::Tuple(vec![Value::Int(1)]),
        ),
    ]);
    let e: Entry = from_value(v).unwrap();
    assert_eq!(
        (
            e.model.as_str(),
            e.response.id(),
            e.response.worker().generation
        ),
        ("m", 42, 3)
    );
    assert_eq!(e.extra, Value::Tuple(vec![Value::Int(1)]));
}

#[test]
fn big_ints_read_as_i128_or_text() {
    let n: i128 = from_value(Value::BigInt(
        "-170141183460469231731687303715884105728".into(),
    ))
    .unwrap();
    assert_eq!(n, i128::MIN);
    let t: String = from_value(Value::BigInt("1".repeat(60))).unwrap();
    assert_eq!(t.len(), 60);
}

#[test]
fn a_mismatch_names_the_requested_type() {
    let err = from_value::<HashMap<String, i64>>(Value::Int(3)).unwrap_err();
    assert!(
        matches!(err, crate::Error::Decode { expected, .. } if expected.contains("HashMap")),
        "{err}"
    );
    let err = from_value::<Ref>(Value::Int(3)).unwrap_err();
    assert!(err.to_string().contains("expected a ref"), "{err}");
}

#[test]
fn serializing_refs_reports_them() {
    let r = sample_ref();
    let (bytes, seen) = collect_refs(|| rmp_serde::to_vec_named(&(1, vec![&r], "x")).unwrap());
    assert_eq!(seen, vec![r]);
    assert!(!bytes.is_empty());
    let (_, none) = collect_refs(|| rmp_serde::to_vec_named(&(1, 2)).unwrap());
    assert!(none.is_empty());
}

#[test]
fn a_value_nested_deeper_than_the_limit_is_a_decode_error_not_a_stack_overflow() {
    let mut v = Value::Int(1);
    for _ in 0..MAX_DEPTH {
        v = Value::Tuple(vec![v]);
    }
    let ok: Value = rmp_serde::from_slice(&rmp_serde::to_vec(&v).unwrap()).unwrap();
    assert_eq!(ok, v);
    let deeper = Value::List(vec![v]);
    let err = rmp_serde::from_slice::<Value>(&rmp_serde::to_vec(&deeper).unwrap()).unwrap_err();
    assert!(err.to_string().contains("nested deeper"), "{err}");
    // A hostile frame far deeper than anything legitimate fails the same way.
    let mut frame = vec![0x91u8; 100_000];
    frame.push(0xc0);
    assert!(rmp_serde::from_slice::<Value>(&frame).is_err());
}
