//! Issue 5, part 3: property tests against real Python workers.
//!
//! * the value codec: arbitrary `pyvisor::Value` trees go Rust → MessagePack → Python
//!   (`pyvisor_fixtures.echo`) → MessagePack → Rust and come back the same (floats bit for bit,
//!   sets as multisets: Python iterates a set in its own order);
//! * the pool's routing state machine: random sequences of session calls, SIGKILLs and resets on a
//!   small strict pool, checked against a model of the affinity rules of docs/architecture.md.
//!
//! Case counts are small for CI (`PYVISOR_PROPTEST_CASES` raises them for a longer run). `cargo
//! fuzz` needs a nightly toolchain, which the CI machine does not have; these are the substitute
//! (see docs/reliability.md).

mod support;

use std::cell::Cell;
use std::collections::HashMap;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use pyvisor::{Affinity, CallOptions, Error, Event, EventStream, Session, Value};
use support::events::{label, until};
use support::{pids, pool, signal};

const F: &str = "pyvisor_fixtures";
const M: &str = "pyvisor_misbehave";

fn cases(default: u32) -> u32 {
    std::env::var("PYVISOR_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ----- the codec ---------------------------------------------------------------------------------

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        // Every bit pattern: NaNs with any payload and sign, signalling ones included.
        any::<u64>().prop_map(f64::from_bits),
        Just(f64::NAN),
        Just(-f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
    ]
}

/// An int beyond 64 bits, as Python writes it: no leading zero, magnitude above `u64::MAX`.
fn bigint() -> impl Strategy<Value = String> {
    (any::<bool>(), "[1-9][0-9]{20,60}").prop_map(|(neg, d)| if neg { format!("-{d}") } else { d })
}

fn int() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::Int),
        (i64::MAX as u64 + 1..=u64::MAX).prop_map(Value::UInt),
        bigint().prop_map(Value::BigInt),
    ]
}

/// Values Python can hash and never confuses with one another (no bools: `True == 1`; no floats:
/// `1.0 == 1`), so that a set or dict of distinct ones keeps all of them.
fn hashable() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        int(),
        ".{0,12}".prop_map(Value::Str),
        vec(any::<u8>(), 0..12).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| vec(inner, 0..3).prop_map(Value::Tuple))
}

/// Python's equality for [`hashable`] values, as a string.
fn py_key(v: &Value) -> String {
    match v {
        Value::Nil => "N".into(),
        Value::Int(i) => format!("I{i}"),
        Value::UInt(u) => format!("I{u}"),
        Value::BigInt(s) => format!("I{s}"),
        Value::Str(s) => format!("S{s:?}"),
        Value::Bytes(b) => format!("B{b:?}"),
        Value::Tuple(items) => format!(
            "T({})",
            items.iter().map(py_key).collect::<Vec<_>>().join(",")
        ),
        other => panic!("not a hashable test value: {other:?}"),
    }
}

fn distinct(items: Vec<Value>) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|v| seen.insert(py_key(v)))
        .collect()
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
        int(),
        float().prop_map(Value::Float),
        ".{0,24}".prop_map(Value::Str),
        vec(any::<u8>(), 0..24).prop_map(Value::Bytes),
        (float(), float()).prop_map(|(re, im)| Value::Complex { re, im }),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        let key = prop_oneof![
            ".{0,8}".prop_map(Value::Str),
            any::<i64>().prop_map(Value::Int),
            vec(
                prop_oneof![
                    any::<i64>().prop_map(Value::Int),
                    ".{0,4}".prop_map(Value::Str)
                ],
                0..3
            )
            .prop_map(Value::Tuple),
        ];
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::List),
            vec(inner.clone(), 0..6).prop_map(Value::Tuple),
            vec(hashable(), 0..6).prop_map(|v| Value::Set(distinct(v))),
            vec(hashable(), 0..6).prop_map(|v| Value::FrozenSet(distinct(v))),
            vec((key, inner), 0..6).prop_map(|entries| {
                let mut seen = std::collections::HashSet::new();
                Value::Map(
                    entries
                        .into_iter()
                        .filter(|(k, _)| seen.insert(py_key(k)))
                        .collect(),
                )
            }),
        ]
    })
}

/// Equality as the round trip must keep it: floats bit for bit, sets as multisets, everything
/// else (maps included: Python keeps insertion order) in order.
fn same(a: &Value, b: &Value) -> bool {
    let all =
        |x: &[Value], y: &[Value]| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q));
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::Complex { re: r1, im: i1 }, Value::Complex { re: r2, im: i2 }) => {
            r1.to_bits() == r2.to_bits() && i1.to_bits() == i2.to_bits()
        }
        (Value::List(x), Value::List(y)) | (Value::Tuple(x), Value::Tuple(y)) => all(x, y),
        (Value::Set(x), Value::Set(y)) | (Value::FrozenSet(x), Value::FrozenSet(y)) => {
            let mut unused: Vec<&Value> = y.iter().collect();
            x.len() == y.len()
                && x.iter()
                    .all(|p| match unused.iter().position(|q| same(p, q)) {
                        Some(i) => {
                            unused.swap_remove(i);
                            true
                        }
                        None => false,
                    })
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((k1, v1), (k2, v2))| same(k1, k2) && same(v1, v2))
        }
        _ => a == b,
    }
}

#[test]
fn any_value_tree_round_trips_through_python_unchanged() {
    let tokio = tokio_runtime();
    let (rt, s) = tokio.block_on(async {
        let rt = support::runtime(vec![pool("codec")]).await;
        let s = rt.session("codec", "s").unwrap();
        (rt, s)
    });
    let mut runner = TestRunner::new(Config {
        cases: cases(64),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&value(), |v| {
        let back: Value = tokio
            .block_on(s.call(F, "echo", &(&v,), &()))
            .map_err(|e| TestCaseError::fail(format!("call failed: {e}")))?;
        prop_assert!(same(&v, &back), "sent {v:?}\ngot  {back:?}");
        Ok(())
    });
    // Python's own types, for the record: the worker saw real tuples, sets, complex numbers.
    let kinds: Vec<String> = tokio
        .block_on(s.call(
            F,
            "describe",
            &(Value::Set(vec![Value::Tuple(vec![Value::UInt(u64::MAX)])]),),
            &(),
        ))
        .unwrap();
    assert_eq!(kinds, ["set", "{(18446744073709551615,)}"]);
    tokio.block_on(rt.shutdown());
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ----- routing -----------------------------------------------------------------------------------

const STRICT: usize = 3;
const HINT: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    /// A call of session `i` (strict for `i < STRICT`, hint above).
    Call(usize),
    /// SIGKILL the worker of slot `j`, then wait for its replacement.
    Kill(usize),
    /// `Session::reset` of session `i`.
    Reset(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..STRICT + HINT).prop_map(Op::Call),
        2 => (0..2usize).prop_map(Op::Kill),
        1 => (0..STRICT + HINT).prop_map(Op::Reset),
    ]
}

/// What the model knows of a session.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Seen {
    /// Never placed, or reset: the next call starts it afresh anywhere.
    Fresh,
    /// Its state lives on process `pid`; the last value it stored is `last`.
    Bound { pid: u32, last: u64 },
    /// Strict only: its worker died and it was not reset.
    Lost,
}

struct Model {
    seen: Vec<Seen>,
    /// Bumped at every reset: a reset session stores under a new key, never written before.
    epoch: Vec<u64>,
    next_value: u64,
}

async fn check_call(
    model: &mut Model,
    sessions: &[Session],
    case: u64,
    i: usize,
) -> Result<(), TestCaseError> {
    let key = format!("c{case}-s{i}-e{}", model.epoch[i]);
    model.next_value += 1;
    let value = model.next_value;
    let opts = CallOptions::new().affinity(if i < STRICT {
        Affinity::StrictQueue
    } else {
        Affinity::Hint
    });
    let got = sessions[i]
        .call_with::<(u32, Option<u64>)>(opts, M, "swap", &(&key, value), &())
        .await;
    match (model.seen[i], got) {
        (Seen::Lost, Err(Error::SessionWorkerUnavailable { session, .. })) => {
            prop_assert_eq!(session, sessions[i].id());
        }
        (Seen::Lost, other) => {
            return Err(TestCaseError::fail(format!(
                "strict session {i} lost its worker but got {other:?}"
            )))
        }
        (Seen::Fresh, Ok((pid, old))) => {
            prop_assert_eq!(old, None, "a fresh session saw state");
            model.seen[i] = Seen::Bound { pid, last: value };
        }
        (Seen::Bound { pid, last }, Ok((on, old))) => {
            prop_assert_eq!(on, pid, "session {} moved while its worker lived", i);
            prop_assert_eq!(old, Some(last), "session {} lost or mixed its state", i);
            model.seen[i] = Seen::Bound { pid, last: value };
        }
        (state, Err(e)) => {
            return Err(TestCaseError::fail(format!(
                "session {i} ({state:?}) must be answered, got {e:?}"
            )))
        }
    }
    Ok(())
}

async fn check_kill(
    model: &mut Model,
    rt: &pyvisor::Runtime,
    events: &mut EventStream,
    sessions: &[Session],
    slot: usize,
) -> Result<(), TestCaseError> {
    let pid = pids(rt, "route").await[slot];
    // Who must be told: every session whose state is on that process, in session-id order.
    let mut told: Vec<String> = Vec::new();
    for (i, seen) in model.seen.iter_mut().enumerate() {
        if matches!(*seen, Seen::Bound { pid: p, .. } if p == pid) {
            told.push(sessions[i].id().to_string());
            *seen = if i < STRICT { Seen::Lost } else { Seen::Fresh };
        }
    }
    told.sort();
    signal(pid, libc::SIGKILL);
    let seen = until(events, |e| matches!(e, Event::WorkerRestarted { .. })).await;
    // Sessions of earlier cases are kept alive (see below) and may be bound to this worker too:
    // only this case's sessions are modelled.
    let ours = format!(
        "SessionWorkerUnavailable({}",
        sessions[0].id().split_once('-').unwrap().0
    );
    let labels: Vec<String> = seen
        .iter()
        .map(label)
        .filter(|l| {
            !l.starts_with("SessionWorkerUnavailable(") || l.starts_with(&format!("{ours}-"))
        })
        .collect();
    prop_assert_eq!(labels.len(), told.len() + 2, "events {:?}", labels);
    let exited = format!("WorkerExited(route/{slot}#");
    prop_assert!(labels[0].starts_with(&exited), "{:?}", labels);
    for (l, s) in labels[1..].iter().zip(&told) {
        prop_assert_eq!(l, &format!("SessionWorkerUnavailable({s})"));
    }
    let restarted = format!("WorkerRestarted(route/{slot}#");
    prop_assert!(
        labels[labels.len() - 1].starts_with(&restarted),
        "{:?}",
        labels
    );
    Ok(())
}

#[test]
fn routing_keeps_the_affinity_invariants_under_kills_and_resets() {
    let tokio = tokio_runtime();
    let cfg = pool("route")
        .size(2)
        .affinity(Affinity::StrictQueue)
        .max_restarts(1_000_000)
        .restart_window(Duration::from_secs(1))
        .backoff_initial(Duration::from_millis(1))
        .backoff_max(Duration::from_millis(1));
    let rt = tokio.block_on(support::runtime(vec![cfg]));
    let case = Cell::new(0u64);
    // Sessions stay alive for the whole run: dropping one queues a RELEASE on its worker, which
    // would make that worker busy at the start of the next case.
    let keep: std::cell::RefCell<Vec<Session>> = Default::default();
    let tally = Cell::new((0u64, 0u64, 0u64)); // calls, kills, resets
    let mut runner = TestRunner::new(Config {
        cases: cases(32),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&vec(op(), 1..16), |ops| {
        case.set(case.get() + 1);
        let case = case.get();
        tokio.block_on(async {
            let sessions: Vec<Session> = (0..STRICT + HINT)
                .map(|i| rt.session("route", format!("c{case}-s{i}")).unwrap())
                .collect();
            keep.borrow_mut().extend(sessions.iter().cloned());
            let mut model = Model {
                seen: vec![Seen::Fresh; STRICT + HINT],
                epoch: vec![0; STRICT + HINT],
                next_value: 0,
            };
            let mut events = rt.events();
            for op in &ops {
                let (c, k, r) = tally.get();
                tally.set(match op {
                    Op::Call(_) => (c + 1, k, r),
                    Op::Kill(_) => (c, k + 1, r),
                    Op::Reset(_) => (c, k, r + 1),
                });
                match *op {
                    Op::Call(i) => check_call(&mut model, &sessions, case, i).await?,
                    Op::Kill(slot) => {
                        check_kill(&mut model, &rt, &mut events, &sessions, slot).await?
                    }
                    Op::Reset(i) => {
                        sessions[i].reset().unwrap();
                        model.seen[i] = Seen::Fresh;
                        model.epoch[i] += 1;
                    }
                }
            }
            // Every session still answers once reset (lost ones included), and no event is
            // pending that the model did not predict.
            for (i, s) in sessions.iter().enumerate() {
                s.reset().unwrap();
                model.seen[i] = Seen::Fresh;
                model.epoch[i] += 1;
                check_call(&mut model, &sessions, case, i).await?;
            }
            let extra = events.try_recv();
            prop_assert!(extra.is_none(), "unexpected event {:?}", extra);
            Ok(())
        })
    });
    let (calls, kills, resets) = tally.get();
    eprintln!(
        "routing: {} cases, {calls} calls, {kills} kills, {resets} resets",
        case.get()
    );
    tokio.block_on(rt.shutdown());
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn the_value_strategy_covers_what_it_claims() {
    // A guard on the generator itself: over a few hundred samples every variant appears, so a
    // green round trip means something.
    let mut runner = TestRunner::deterministic();
    let mut kinds: HashMap<&'static str, usize> = HashMap::new();
    fn walk(v: &Value, kinds: &mut HashMap<&'static str, usize>) {
        let k = match v {
            Value::Float(f) if f.is_nan() => "nan",
            Value::Float(f) if f.is_infinite() => "inf",
            Value::UInt(_) => "uint",
            Value::BigInt(_) => "bigint",
            other => other.kind(),
        };
        *kinds.entry(k).or_default() += 1;
        match v {
            Value::List(x) | Value::Tuple(x) | Value::Set(x) | Value::FrozenSet(x) => {
                x.iter().for_each(|i| walk(i, kinds))
            }
            Value::Map(e) => e.iter().for_each(|(k, v)| {
                walk(k, kinds);
                walk(v, kinds)
            }),
            _ => {}
        }
    }
    let strategy = value();
    for _ in 0..500 {
        let v = strategy.new_tree(&mut runner).unwrap().current();
        walk(&v, &mut kinds);
    }
    for k in [
        "None",
        "bool",
        "int",
        "uint",
        "bigint",
        "float",
        "nan",
        "inf",
        "str",
        "bytes",
        "list",
        "tuple",
        "set",
        "frozenset",
        "dict",
        "complex",
    ] {
        assert!(
            kinds.get(k).copied().unwrap_or(0) > 0,
            "{k} never generated: {kinds:?}"
        );
    }
}
