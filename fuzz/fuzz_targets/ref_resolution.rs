//! The host's pre-send checks of the refs a request carries (`PoolClient::encode` and
//! `Encoded::pin_to` in `src/runtime/client.rs`, `collect_refs` in `src/value/reference.rs`),
//! fed with values decoded from arbitrary bytes — as a caller passes values (and refs) that came
//! back in earlier replies.
//!
//! Input: one byte that picks the pool, the session, the frame limit, the request kind (a `CALL`
//! with refs anywhere in its arguments, or the `RELEASE` of the first ref) and how the rest is
//! read: either as a MessagePack value (`[args, kwargs]`, or any other value as the args), or as
//! choices that build a value around refs of a few workers and sessions (most of them right for
//! the request), which is then encoded and decoded like any reply. Byte mutations alone rarely
//! make a valid ref payload; the built values put several refs in most requests.
//!
//! Checked against an independent walk over the value: the refs the host checks are exactly the
//! refs it sends (in the body the worker will decode); a request passes only if the body fits the
//! frame limit and every ref belongs to the request's session, to this pool and to one worker,
//! and it is then pinned to that worker; otherwise the error names the first offending ref.

#![no_main]

use libfuzzer_sys::arbitrary::{Result as Built, Unstructured};
use libfuzzer_sys::fuzz_target;
use pyvisor::fuzzing::{check_request, decode_value, encode_value, make_ref, make_stream_ref};
use pyvisor::protocol::DEFAULT_MAX_FRAME;
use pyvisor::{Error, Ref, Value};
use pyvisor_fuzz::{on_host_stack, refs_in};

const POOLS: [&str; 2] = ["p", "q"];
const SESSIONS: [Option<&str>; 4] = [None, Some("s"), Some("t"), Some("")];
const LIMITS: [usize; 4] = [DEFAULT_MAX_FRAME, 64, 256, 4096];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let body = body.to_vec();
    on_host_stack(move || check(pick, &body));
});

/// What the checks must conclude about `refs` (in serialization order).
fn expected(
    pool: &str,
    session: Option<&str>,
    refs: &[Ref],
) -> Result<Option<(usize, u64)>, Error> {
    let mut pin = None;
    for r in refs {
        if r.session() != session {
            return Err(Error::RefSessionMismatch {
                ref_session: r.session().map(str::to_string),
                session: session.map(str::to_string),
            });
        }
        if r.worker().pool != pool {
            return Err(Error::InvalidRef(format!("pool of {r}")));
        }
        let here = (r.worker().slot, r.worker().generation);
        match pin {
            None => pin = Some(here),
            Some(p) if p == here => {}
            Some(_) => return Err(Error::InvalidRef("two workers".into())),
        }
    }
    Ok(pin)
}

fn same_outcome(got: &Error, want: &Error) -> bool {
    match (got, want) {
        (
            Error::RefSessionMismatch {
                ref_session: a,
                session: b,
            },
            Error::RefSessionMismatch {
                ref_session: c,
                session: d,
            },
        ) => a == c && b == d,
        (Error::InvalidRef(_), Error::InvalidRef(_)) => true,
        _ => false,
    }
}

fn check(pick: u8, body: &[u8]) {
    let pool = POOLS[usize::from(pick & 1)];
    let session = SESSIONS[usize::from((pick >> 1) & 3)];
    let max_frame = LIMITS[usize::from((pick >> 3) & 3)];
    let release = pick & 0x20 != 0;

    let value = if pick & 0x40 == 0 {
        match decode_value(body) {
            Ok(value) => value,
            Err(_) => return,
        }
    } else {
        let Ok(built) = build(&mut Unstructured::new(body), pool, session, 0) else {
            return;
        };
        let bytes = encode_value(&built).expect("a built value encodes");
        decode_value(&bytes).expect("an encoded value decodes")
    };
    let (args, kwargs) = match value {
        Value::List(mut items) if items.len() == 2 => {
            let kwargs = items.pop().expect("two items");
            (items.pop().expect("two items"), kwargs)
        }
        other => (other, Value::Nil),
    };
    let mut refs = Vec::new();
    refs_in(&args, &mut refs);
    refs_in(&kwargs, &mut refs);
    let target = if release { refs.first().cloned() } else { None };
    let checked = match &target {
        Some(t) => std::slice::from_ref(t),
        None => refs.as_slice(),
    };
    let want = expected(pool, session, checked);

    let unlimited = check_request(pool, session, usize::MAX, &args, &kwargs, target.as_ref());
    let limited = check_request(pool, session, max_frame, &args, &kwargs, target.as_ref());

    match (&unlimited, &want) {
        (Ok(got), Ok(pin)) => {
            assert_eq!(got.pin, *pin, "pinned to the wrong worker");
            // What is sent carries exactly the refs that were checked.
            let sent = decode_value(&got.body).expect("the worker can decode the body");
            let mut in_body = Vec::new();
            refs_in(&sent, &mut in_body);
            let want_in_body: &[Ref] = if target.is_some() { &[] } else { &refs };
            assert_eq!(in_body, want_in_body, "checked refs != sent refs");
        }
        (Err(got), Err(want)) => assert!(same_outcome(got, want), "got {got:?}, want {want:?}"),
        (got, want) => panic!("got {got:?}, want {want:?} for refs {checked:?}"),
    }

    match (&limited, &unlimited) {
        (Err(Error::FrameTooLarge { what, size, limit }), Ok(full)) => {
            assert_eq!(
                (*what, *size, *limit),
                ("request", full.body.len(), max_frame)
            );
            assert!(size + 15 > max_frame);
        }
        (Err(Error::FrameTooLarge { size, limit, .. }), Err(_)) => {
            assert!(size + 15 > *limit && *limit == max_frame);
        }
        (Ok(small), Ok(full)) => {
            assert!(small.body.len() + 15 <= max_frame);
            assert_eq!((small.pin, &small.body), (full.pin, &full.body));
        }
        (Err(a), Err(b)) => assert!(same_outcome(a, b), "{a:?} vs {b:?}"),
        (a, b) => panic!("limit {max_frame}: {a:?}, unlimited: {b:?}"),
    }
}

/// A value built from fuzzer choices: containers of every kind (refs may be map keys) around refs
/// that are right for the request three times in four, and otherwise of any session, pool and
/// worker among a few.
fn build(
    u: &mut Unstructured<'_>,
    pool: &str,
    session: Option<&str>,
    depth: usize,
) -> Built<Value> {
    let leaf_only = depth >= 6;
    let pick = u.int_in_range(0..=if leaf_only { 4 } else { 9 })?;
    let items = |u: &mut Unstructured<'_>| -> Built<Vec<Value>> {
        let n = u.int_in_range(0..=4)?;
        (0..n).map(|_| build(u, pool, session, depth + 1)).collect()
    };
    Ok(match pick {
        0 => Value::Nil,
        1 => Value::Int(u.arbitrary()?),
        2 => Value::Bytes(vec![0x2a; u.int_in_range(0..=300)?]),
        3 | 4 => {
            let right = u.ratio(3, 4)?;
            let r = make_ref(
                u.arbitrary()?,
                if right {
                    session
                } else {
                    *u.choose(&SESSIONS)?
                },
                if right { pool } else { u.choose(&POOLS)? },
                u.int_in_range(0..=1)?,
                u.int_in_range(0..=1)?,
            );
            if pick == 3 {
                Value::Ref(r)
            } else {
                Value::StreamRef(make_stream_ref(r))
            }
        }
        5 => Value::List(items(u)?),
        6 => Value::Tuple(items(u)?),
        7 => Value::Set(items(u)?),
        8 => Value::FrozenSet(items(u)?),
        _ => {
            let n = u.int_in_range(0..=3)?;
            Value::Map(
                (0..n)
                    .map(|_| {
                        Ok((
                            build(u, pool, session, depth + 1)?,
                            build(u, pool, session, depth + 1)?,
                        ))
                    })
                    .collect::<Built<_>>()?,
            )
        }
    })
}
