//! Entry points for the `cargo fuzz` targets in `fuzz/` (cargo feature `fuzzing`, off by default).
//!
//! Not part of the API and not covered by semver: each function is a thin wrapper that runs the
//! host's own decoding or checking code on input from a fuzzer, so that the targets reach
//! `pub(crate)` internals without making them public. See `docs/reliability.md`, "Fuzzing".

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use crate::error::Error;
use crate::pool::RequestEncoder;
use crate::protocol::{self, op, CallBody, ErrorBody, FrameReader, ReadyInfo, StreamPage};
use crate::value::{from_value, NdArray, Ref, StreamRef, Value};

pub use crate::protocol::ProtocolError;

/// One frame as the host's frame reader returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The operation code.
    pub op: u8,
    /// The request id.
    pub id: u64,
    /// The undecoded body.
    pub body: Vec<u8>,
}

/// Reads `stream` with the host's frame reader (`FrameReader`, payload limit `limit`) the way the
/// worker actor's reader task does: frame after frame until a clean end of stream (`None`) or the
/// first error (`Some`), after which the host stops reading.
pub fn read_frames(stream: &[u8], limit: usize) -> (Vec<Frame>, Option<ProtocolError>) {
    let mut reader = FrameReader::new(stream, limit);
    let mut frames = Vec::new();
    loop {
        match futures::executor::block_on(reader.next()) {
            Ok(Some(f)) => frames.push(Frame {
                op: f.op,
                id: f.id,
                body: f.body().to_vec(),
            }),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

/// A request frame as the host builds it (`encode_request`): length, then `[op, id, body]`.
pub fn encode_frame(op: u8, id: u64, body: &[u8]) -> Vec<u8> {
    protocol::encode_request(op, id, body)
}

/// Decodes the body of a frame from a worker the way the host does for its op: `READY` as the
/// handshake, `OK` as a value, `ERROR` as an error map. Other ops are not decoded by the host (a
/// `PONG` body is ignored, anything else kills the worker). `Err` carries the decoder's message.
pub fn decode_reply_body(op: u8, body: &[u8]) -> Result<(), String> {
    let e = |e: rmp_serde::decode::Error| e.to_string();
    match op {
        op::READY => rmp_serde::from_slice::<ReadyInfo>(body)
            .map(drop)
            .map_err(e),
        op::OK => decode_value(body).map(drop).map_err(|e| e.to_string()),
        op::ERROR => rmp_serde::from_slice::<ErrorBody>(body)
            .map(drop)
            .map_err(e),
        _ => Ok(()),
    }
}

/// Decodes a reply body into a [`Value`] as a caller does with an `OK` reply
/// (`Pending::finish`): an undecodable body is [`Error::Decode`].
pub fn decode_value(body: &[u8]) -> Result<Value, Error> {
    rmp_serde::from_slice(body).map_err(|e| Error::Decode {
        expected: "a Python value",
        message: e.to_string(),
    })
}

/// Encodes a value as the host encodes request bodies (`rmp_serde::to_vec_named`).
pub fn encode_value(value: &Value) -> Result<Vec<u8>, Error> {
    rmp_serde::to_vec_named(value).map_err(|e| Error::Encode(e.to_string()))
}

/// A unit enum, to reach `from_value`'s enum path.
#[derive(Debug, Deserialize)]
enum Choice {
    A,
    B,
}

/// A struct with optional and defaulted fields, to reach `from_value`'s struct path.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Record {
    name: String,
    #[serde(default)]
    tags: Vec<String>,
    score: Option<f64>,
}

/// Runs `from_value` (typed results) on `value` for a set of result types a caller may ask for,
/// including the bodies the host decodes from values (`StreamPage`). Returns how many fit; the
/// others must be [`Error::Decode`], which this checks.
///
/// # Panics
///
/// When a type that does not fit gives another error than [`Error::Decode`].
pub fn typed_views(value: &Value) -> usize {
    fn fits<T: serde::de::DeserializeOwned + 'static>(v: &Value) -> usize {
        match from_value::<T>(v.clone()) {
            Ok(_) => 1,
            Err(Error::Decode { .. }) => 0,
            Err(other) => panic!("from_value gave a non-decode error: {other:?}"),
        }
    }
    fits::<bool>(value)
        + fits::<i64>(value)
        + fits::<u64>(value)
        + fits::<i128>(value)
        + fits::<u128>(value)
        + fits::<u8>(value)
        + fits::<f64>(value)
        + fits::<f32>(value)
        + fits::<char>(value)
        + fits::<String>(value)
        + fits::<()>(value)
        + fits::<Option<i64>>(value)
        + fits::<Vec<u8>>(value)
        + fits::<Vec<f64>>(value)
        + fits::<Vec<i64>>(value)
        + fits::<Vec<bool>>(value)
        + fits::<(f64, f64)>(value)
        + fits::<(i64, String)>(value)
        + fits::<Vec<(String, i64)>>(value)
        + fits::<Vec<Value>>(value)
        + fits::<Vec<Option<Value>>>(value)
        + fits::<HashMap<String, Value>>(value)
        + fits::<BTreeMap<i64, String>>(value)
        + fits::<NdArray>(value)
        + fits::<Ref>(value)
        + fits::<StreamRef>(value)
        + fits::<Vec<Ref>>(value)
        + fits::<Choice>(value)
        + fits::<Record>(value)
        + fits::<ReadyInfo>(value)
        + fits::<StreamPage>(value)
}

/// A ref as a worker `(pool, slot, generation)` hands it out for `session` (`Ref` has no public
/// constructor: refs only come from replies).
pub fn make_ref(id: u64, session: Option<&str>, pool: &str, slot: usize, generation: u64) -> Ref {
    Ref {
        id,
        session: session.map(str::to_string),
        worker: crate::WorkerId::new(pool, slot, generation),
        type_name: "object".into(),
        module: "builtins".into(),
    }
}

/// The stream ref on the same object as `r`.
pub fn make_stream_ref(r: Ref) -> StreamRef {
    StreamRef(r)
}

/// What the host would hand to the pool after checking a request.
#[derive(Debug)]
pub struct CheckedRequest {
    /// The `(slot, generation)` the request is pinned to (`None`: it carries no ref).
    pub pin: Option<(usize, u64)>,
    /// The encoded body, as the worker will receive it.
    pub body: Vec<u8>,
}

/// Runs the host's pre-send checks on a request of session `session` to pool `pool`, exactly as a
/// [`Session`](crate::Session) does (`PoolClient::encode`, with the pool's `max_frame`): the
/// body is encoded while every ref it serializes is noted (`collect_refs`), refused when it
/// exceeds the frame limit, and its refs must belong to `session`, to `pool`, and to one worker.
///
/// Without `release`, the request is a `CALL` with `args` and `kwargs` (refs anywhere inside).
/// With `release`, it is the `RELEASE` of that ref (the body names it by id only, and the request
/// is pinned to its worker explicitly, as [`Session::release`](crate::Session::release) does);
/// `args` and `kwargs` are then unused.
pub fn check_request(
    pool: &str,
    session: Option<&str>,
    max_frame: usize,
    args: &Value,
    kwargs: &Value,
    release: Option<&Ref>,
) -> Result<CheckedRequest, Error> {
    let encoder = RequestEncoder {
        pool: pool.into(),
        max_frame,
    };
    let request = match release {
        None => encoder.encode(
            session,
            op::CALL,
            &CallBody {
                module: "m",
                function: "f",
                args,
                kwargs,
                session,
            },
        )?,
        Some(target) => {
            let mut request = encoder.encode(
                session,
                op::RELEASE,
                &protocol::ReleaseBody {
                    session,
                    refs: Some(vec![target.id]),
                },
            )?;
            request.pin = encoder.pin(session, std::slice::from_ref(target))?;
            request
        }
    };
    Ok(CheckedRequest {
        pin: request.pin.map(|at| (at.slot, at.generation)),
        body: request.body,
    })
}
