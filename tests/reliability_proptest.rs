//! Property tests against real Python workers.
//!
//! * the value codec: arbitrary `pyvisor::Value` trees go Rust → MessagePack → Python
//!   (`pyvisor_fixtures.echo`) → MessagePack → Rust and come back the same (floats bit for bit,
//!   sets as multisets: Python iterates a set in its own order);
//! * the pool's routing: random sequences of session calls (with per-call affinity overrides),
//!   context pushes, refs, calls made while a session's worker is busy, SIGKILLs and resets, on a
//!   strict and a hint pool, checked against a model of the session rules of
//!   docs/architecture.md ("Sessions"). The schedule alone is model-tested far harder, without
//!   Python, in `src/pool/schedule/tests.rs`.
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
use pyvisor::{Affinity, CallOptions, Error, Event, EventStream, Ref, Session, Value};
use support::events::{label, until};
use support::{pids, pool, signal, Gate};

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

/// Sessions of each case: two of a strict pool, three of a hint pool.
const STRICT: usize = 2;
const SESSIONS: usize = 5;

#[derive(Debug, Clone)]
enum Op {
    /// A call of session `i` storing a value in its worker, with an optional per-call affinity.
    Call(usize, Option<Affinity>),
    /// Session `i` pushes a context (a tag its later calls see).
    Push(usize),
    /// Session `i` gets a ref, then uses its newest ref.
    Ref(usize),
    /// Session `j`'s worker is busy with a gated call while session `i` calls (affinity override).
    WhileBusy(usize, usize, Option<Affinity>),
    /// SIGKILL worker `slot` of the strict (`false`) or hint (`true`) pool, and wait for its
    /// replacement.
    Kill(bool, usize),
    /// `Session::reset` of session `i`.
    Reset(usize),
}

fn override_() -> impl Strategy<Value = Option<Affinity>> {
    proptest::option::weighted(
        0.4,
        prop_oneof![
            Just(Affinity::Hint),
            Just(Affinity::StrictQueue),
            Just(Affinity::StrictFailFast)
        ],
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..SESSIONS, override_()).prop_map(|(i, a)| Op::Call(i, a)),
        1 => (STRICT..SESSIONS).prop_map(Op::Push),
        1 => (0..SESSIONS).prop_map(Op::Ref),
        2 => (0..SESSIONS, 0..SESSIONS, override_()).prop_map(|(i, j, a)| Op::WhileBusy(i, j, a)),
        2 => (any::<bool>(), 0..2usize).prop_map(|(h, slot)| Op::Kill(h, slot)),
        1 => (0..SESSIONS).prop_map(Op::Reset),
    ]
}

/// What the model knows of a session.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// Never placed, or reset: the next call starts it afresh.
    Fresh,
    /// Placed on process `pid`; `last` is the value it stored last (on that process).
    Bound {
        pid: u32,
        last: u64,
        /// Its state lives there: a strict session, or a hint one with a context or a ref.
        stateful: bool,
        tag: Option<String>,
        refs: Vec<(Ref, String)>,
    },
    /// Its state lived on a worker that died, and it was not reset.
    Lost,
}

struct Model {
    seen: Vec<Seen>,
    /// What each session stored last on each process (under its current key).
    stored: HashMap<(usize, u32), u64>,
    /// Bumped at every reset: a reset session stores under a new key, never written before.
    epoch: Vec<u64>,
    next: u64,
}

struct Case<'a> {
    rt: &'a pyvisor::Runtime,
    sessions: &'a [Session],
    events: &'a mut EventStream,
    m: Model,
    case: u64,
}

fn pool_of_session(i: usize) -> &'static str {
    if i < STRICT {
        "route_s"
    } else {
        "route_h"
    }
}

impl Case<'_> {
    fn key(&self, i: usize) -> String {
        format!("c{}-s{i}-e{}", self.case, self.m.epoch[i])
    }

    /// The outcome every call of a lost session gets.
    fn lost(i: usize, got: &Result<impl std::fmt::Debug, Error>) -> Result<(), TestCaseError> {
        match got {
            Err(Error::SessionWorkerUnavailable { .. }) => Ok(()),
            other => Err(TestCaseError::fail(format!(
                "session {i} lost its state but got {other:?}"
            ))),
        }
    }

    /// Checks a `swap` answer against the model and records it (`value` is now what the session
    /// stored on the process that answered).
    fn stored(
        &mut self,
        i: usize,
        value: u64,
        got: Result<(u32, Option<u64>), Error>,
        home_only: bool,
    ) -> Result<(), TestCaseError> {
        let on = got.as_ref().ok().map(|(pid, _)| *pid);
        let checked = self.check_stored(i, value, got, home_only);
        if let Some(on) = on {
            self.m.stored.insert((i, on), value);
        }
        checked
    }

    fn check_stored(
        &mut self,
        i: usize,
        value: u64,
        got: Result<(u32, Option<u64>), Error>,
        home_only: bool,
    ) -> Result<(), TestCaseError> {
        match (self.m.seen[i].clone(), got) {
            (Seen::Lost, got) => Self::lost(i, &got)?,
            (Seen::Fresh, Ok((pid, old))) => {
                let before = self.m.stored.get(&(i, pid)).copied();
                prop_assert_eq!(old, before, "a fresh session {} saw state", i);
                self.m.seen[i] = Seen::Bound {
                    pid,
                    last: value,
                    stateful: i < STRICT,
                    tag: None,
                    refs: Vec::new(),
                };
            }
            (
                Seen::Bound {
                    pid,
                    last,
                    stateful,
                    tag,
                    refs,
                },
                Ok((on, old)),
            ) => {
                if stateful || home_only {
                    prop_assert_eq!(on, pid, "session {} ran away from its worker", i);
                }
                if on == pid {
                    prop_assert_eq!(old, Some(last), "session {} lost or mixed its state", i);
                } else {
                    // A stateless hint session moved with its call (maybe back where it was).
                    prop_assert!(!stateful);
                    prop_assert_eq!(old, self.m.stored.get(&(i, on)).copied());
                }
                self.m.seen[i] = Seen::Bound {
                    pid: on,
                    last: value,
                    stateful,
                    tag,
                    refs,
                };
            }
            (state, Err(e)) => {
                return Err(TestCaseError::fail(format!(
                    "session {i} ({state:?}) must be answered, got {e:?}"
                )))
            }
        }
        Ok(())
    }

    async fn call(&mut self, i: usize, affinity: Option<Affinity>) -> Result<(), TestCaseError> {
        self.m.next += 1;
        let value = self.m.next;
        let mut opts = CallOptions::new();
        if let Some(a) = affinity {
            opts = opts.affinity(a);
        }
        let got = self.sessions[i]
            .call_with::<(u32, Option<u64>)>(opts, M, "swap", &(self.key(i), value), &())
            .await;
        // Nothing else runs: the session's worker is idle, so every call runs at home.
        self.stored(i, value, got, true)?;
        // Its context is around every call of it, wherever it runs.
        if let Seen::Bound { tag, .. } = &self.m.seen[i] {
            let seen: Option<String> = self.sessions[i]
                .call(F, "current_tag", &(), &())
                .await
                .map_err(|e| TestCaseError::fail(format!("current_tag: {e:?}")))?;
            prop_assert_eq!(&seen, tag, "session {} without its context", i);
        }
        Ok(())
    }

    async fn push(&mut self, i: usize) -> Result<(), TestCaseError> {
        if self.m.seen[i] == Seen::Fresh {
            self.call(i, None).await?;
        }
        let tag = format!("tag-{}", self.key(i));
        let got = self.sessions[i]
            .push_context(F, "tagged", &(&tag,), &())
            .await;
        match &mut self.m.seen[i] {
            Seen::Lost => Self::lost(i, &got)?,
            Seen::Bound {
                stateful, tag: t, ..
            } => {
                got.map_err(|e| TestCaseError::fail(format!("push: {e:?}")))?;
                *stateful = true;
                *t = Some(tag);
            }
            Seen::Fresh => unreachable!("placed above"),
        }
        Ok(())
    }

    async fn with_ref(&mut self, i: usize) -> Result<(), TestCaseError> {
        if self.m.seen[i] == Seen::Fresh {
            self.call(i, None).await?;
        }
        let label = format!("r{}", self.m.next);
        let got = self.sessions[i]
            .call::<Ref>(F, "Opaque", &(&label,), &())
            .await;
        match &mut self.m.seen[i] {
            Seen::Lost => return Self::lost(i, &got),
            Seen::Bound {
                pid,
                stateful,
                refs,
                ..
            } => {
                let r = got.map_err(|e| TestCaseError::fail(format!("Opaque: {e:?}")))?;
                let on: u32 = self.sessions[i]
                    .call(F, "pid", &(), &())
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                prop_assert_eq!(on, *pid, "a session with a ref stays with it");
                *stateful = true;
                refs.push((r, label));
            }
            Seen::Fresh => unreachable!("placed above"),
        }
        let Seen::Bound { refs, .. } = &self.m.seen[i] else {
            return Ok(());
        };
        let (r, label) = refs.last().expect("pushed above").clone();
        let shout: String = self.sessions[i]
            .call_method(&r, "shout", &(), &())
            .await
            .map_err(|e| TestCaseError::fail(format!("shout: {e:?}")))?;
        prop_assert_eq!(shout, format!("{}!", label.to_uppercase()));
        Ok(())
    }

    /// `j`'s worker runs a gated call while `i` calls: `i` runs at once elsewhere only if it is a
    /// stateless hint session whose call may move; otherwise it waits (or is refused busy).
    async fn while_busy(
        &mut self,
        i: usize,
        j: usize,
        affinity: Option<Affinity>,
    ) -> Result<(), TestCaseError> {
        if pool_of_session(i) != pool_of_session(j) {
            return Ok(());
        }
        for k in [j, i] {
            if self.m.seen[k] == Seen::Fresh {
                self.call(k, None).await?;
            }
        }
        let (Seen::Bound { pid: busy_pid, .. }, state_i) =
            (self.m.seen[j].clone(), self.m.seen[i].clone())
        else {
            return Ok(()); // j is lost
        };
        let gate = Gate::new("route");
        let busy = gate.spawn_call(&self.sessions[j]);
        gate.wait_started().await;
        self.m.next += 1;
        let value = self.m.next;
        let mut opts = CallOptions::new();
        if let Some(a) = affinity {
            opts = opts.affinity(a);
        }
        let call = {
            let (s, key) = (self.sessions[i].clone(), self.key(i));
            tokio::spawn(async move {
                s.call_with::<(u32, Option<u64>)>(opts, M, "swap", &(key, value), &())
                    .await
            })
        };
        let pool = pool_of_session(i);
        let effective = affinity.unwrap_or(if i < STRICT {
            Affinity::StrictQueue
        } else {
            Affinity::Hint
        });
        let at_busy = matches!(state_i, Seen::Bound { pid, .. } if pid == busy_pid);
        let stateful = i < STRICT || matches!(state_i, Seen::Bound { stateful: true, .. });
        // Wait until the call finished or is queued: exactly one happens.
        let queued = support::eventually("the call to finish or wait", || async {
            if call.is_finished() {
                return Some(false);
            }
            (support::stats_of(self.rt, pool).await.queued == 1).then_some(true)
        })
        .await;
        let waits = at_busy && (stateful || effective != Affinity::Hint);
        match state_i {
            Seen::Lost => prop_assert!(!queued, "a lost session's call is refused at once"),
            _ if at_busy && effective == Affinity::StrictFailFast => prop_assert!(!queued),
            _ => prop_assert_eq!(
                queued,
                waits,
                "session {} waited? (stateful {}, {:?})",
                i,
                stateful,
                effective
            ),
        }
        gate.open();
        let busy_result = busy.await.unwrap();
        prop_assert!(
            busy_result.is_ok() || matches!(self.m.seen[j], Seen::Lost),
            "{:?}",
            busy_result
        );
        let got = call.await.unwrap();
        if at_busy && effective == Affinity::StrictFailFast && !matches!(state_i, Seen::Lost) {
            prop_assert!(matches!(got, Err(Error::WorkerBusy { .. })), "{:?}", got);
            return Ok(());
        }
        self.stored(i, value, got, waits)
    }

    /// `Session::reset`: the session starts afresh, under a new key. Its state is released on
    /// its worker: wait until that is done, so that the next calls find every worker idle.
    async fn reset(&mut self, i: usize) {
        self.sessions[i].reset().unwrap();
        self.m.seen[i] = Seen::Fresh;
        self.m.epoch[i] += 1;
        self.m.stored.retain(|(s, _), _| *s != i);
        let pool = pool_of_session(i);
        support::eventually("the release to be done", || async {
            let stats = support::stats_of(self.rt, pool).await;
            (stats.queued == 0 && stats.workers.iter().all(|w| !w.busy)).then_some(())
        })
        .await;
    }

    async fn kill(&mut self, hint: bool, slot: usize) -> Result<(), TestCaseError> {
        let pool = if hint { "route_h" } else { "route_s" };
        let pid = pids(self.rt, pool).await[slot];
        // Who must be told: every session placed on that process, in session-id order.
        let mut told: Vec<String> = Vec::new();
        for (i, seen) in self.m.seen.iter_mut().enumerate() {
            if let Seen::Bound {
                pid: p, stateful, ..
            } = seen
            {
                if *p == pid && pool_of_session(i) == pool {
                    told.push(self.sessions[i].id().to_string());
                    *seen = if *stateful { Seen::Lost } else { Seen::Fresh };
                }
            }
        }
        told.sort();
        self.m.stored.retain(|(_, p), _| *p != pid);
        signal(pid, libc::SIGKILL);
        let seen = until(
            self.events,
            |e| matches!(e, Event::WorkerRestarted { worker, .. } if worker.pool == pool),
        )
        .await;
        // Sessions of earlier cases are kept alive and may be placed on this worker too: only
        // this case's sessions are modelled.
        let ours = format!("SessionWorkerUnavailable(c{}-", self.case);
        let labels: Vec<String> = seen
            .iter()
            .filter(|e| support::events::pool_of(e) == pool)
            .map(label)
            .filter(|l| !l.starts_with("SessionWorkerUnavailable(") || l.starts_with(&ours))
            .collect();
        let mut expected = vec![format!("WorkerExited({pool}/{slot}#")];
        expected.extend(
            told.iter()
                .map(|s| format!("SessionWorkerUnavailable({s})")),
        );
        expected.push(format!("WorkerRestarted({pool}/{slot}#"));
        prop_assert_eq!(labels.len(), expected.len(), "events {:?}", labels);
        for (l, e) in labels.iter().zip(&expected) {
            prop_assert!(
                l.starts_with(e.as_str()),
                "events {:?}, expected {:?}",
                labels,
                expected
            );
        }
        Ok(())
    }
}

fn routing_pool(name: &str, affinity: Affinity) -> pyvisor::PoolConfig {
    pool(name)
        .size(2)
        .affinity(affinity)
        .max_restarts(1_000_000)
        .restart_window(Duration::from_secs(1))
        .backoff_initial(Duration::from_millis(1))
        .backoff_max(Duration::from_millis(1))
}

#[test]
fn routing_keeps_the_session_rules_under_kills_resets_contexts_refs_and_overrides() {
    let tokio = tokio_runtime();
    let pools = vec![
        routing_pool("route_s", Affinity::StrictQueue),
        routing_pool("route_h", Affinity::Hint),
    ];
    let rt = tokio.block_on(support::runtime(pools));
    let case = Cell::new(0u64);
    // Sessions stay alive for the whole run: dropping one queues a RELEASE on its worker, which
    // would make that worker busy at the start of the next case.
    let keep: std::cell::RefCell<Vec<Session>> = Default::default();
    let tally: std::cell::RefCell<HashMap<&'static str, u64>> = Default::default();
    let mut runner = TestRunner::new(Config {
        cases: cases(24),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&vec(op(), 1..14), |ops| {
        case.set(case.get() + 1);
        let case = case.get();
        tokio.block_on(async {
            let sessions: Vec<Session> = (0..SESSIONS)
                .map(|i| {
                    rt.session(pool_of_session(i), format!("c{case}-s{i}"))
                        .unwrap()
                })
                .collect();
            keep.borrow_mut().extend(sessions.iter().cloned());
            let mut events = rt.events();
            let mut c = Case {
                rt: &rt,
                sessions: &sessions,
                events: &mut events,
                m: Model {
                    seen: vec![Seen::Fresh; SESSIONS],
                    stored: HashMap::new(),
                    epoch: vec![0; SESSIONS],
                    next: 0,
                },
                case,
            };
            for op in &ops {
                let name = match op {
                    Op::Call(..) => "calls",
                    Op::Push(_) => "contexts",
                    Op::Ref(_) => "refs",
                    Op::WhileBusy(..) => "busy",
                    Op::Kill(..) => "kills",
                    Op::Reset(_) => "resets",
                };
                *tally.borrow_mut().entry(name).or_default() += 1;
                match *op {
                    Op::Call(i, a) => c.call(i, a).await?,
                    Op::Push(i) => c.push(i).await?,
                    Op::Ref(i) => c.with_ref(i).await?,
                    Op::WhileBusy(i, j, a) => c.while_busy(i, j, a).await?,
                    Op::Kill(hint, slot) => c.kill(hint, slot).await?,
                    Op::Reset(i) => c.reset(i).await,
                }
            }
            // Every session still answers once reset (lost ones included), and no event is
            // pending that the model did not predict.
            for i in 0..SESSIONS {
                c.reset(i).await;
                c.call(i, None).await?;
            }
            let extra = c.events.try_recv();
            prop_assert!(extra.is_none(), "unexpected event {:?}", extra);
            Ok(())
        })
    });
    eprintln!("routing: {} cases, {:?}", case.get(), tally.borrow());
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
