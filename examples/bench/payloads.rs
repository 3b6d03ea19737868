//! Large payloads, echoed by `pyvisor_bench.echo`: 1 MiB of bytes, and an 8 MiB float64 ndarray
//! (ext 9: one raw buffer, no per-element work).

use std::sync::Arc;

use pyvisor::{NdArray, Session, Value};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::env::Bench;
use crate::floor::{floor_ready, wire, Floor};
use crate::report::Report;
use crate::stats::{Lat, Reps, Samples};
use crate::{MIB, NDARRAY_LEN};

const P50_P99: &[(&str, &str)] = &[("p50", "p50"), ("p99", "p99")];

pub fn bytes_echo(b: &Bench, reps: usize, rep: &mut Report) {
    let calls = b.sz.mib_calls;
    eprintln!("[bytes] 1 MiB echo, {calls} calls × {reps} reps");
    let mut r = Reps::default();
    let data: Vec<u8> = (0..MIB).map(|i| (i * 31 % 251) as u8).collect();
    let mut floor = floor_ready(b.env, b.place, 0);
    let prt = b.start_pinned(b.env.pool("bytes", 1));
    let value = Arc::new(Value::Bytes(data.clone()));
    for _ in 0..reps {
        let lat = floor_echo(&mut floor, calls, 5, MIB, |f| {
            wire::bin_of(f.call_echo(wire::args_bin(&data))?)
        });
        r.lat("floor", lat);
        let s = prt.session("bytes", "b").unwrap();
        let lat = pyvisor_echo(b, s, value.clone(), calls, 5, |_, out: Value| match out {
            Value::Bytes(bytes) => assert_eq!(bytes.len(), MIB),
            other => panic!("echo returned {other:?}"),
        });
        r.lat("pyvisor", lat);
    }
    b.rt.block_on(prt.shutdown());
    rep.latency_rows("1 MiB bytes echo", &r, P50_P99);
}

pub fn ndarray(b: &Bench, reps: usize, rep: &mut Report) {
    let calls = b.sz.nd_calls;
    eprintln!("[ndarray] 8 MiB float64 round trip, {calls} calls × {reps} reps");
    let mut r = Reps::default();
    let values: Vec<f64> = (0..NDARRAY_LEN).map(|i| i as f64 * 0.5).collect();
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut floor = floor_ready(b.env, b.place, 0);
    let prt = b.start_pinned(b.env.pool("nd", 1).preload("numpy"));
    let arr = Arc::new(NdArray::from_f64(vec![NDARRAY_LEN], &values));
    // The floor worker imports numpy on the first call; warm it up.
    for _ in 0..3 {
        floor
            .call_echo(wire::args_ndarray(&raw, NDARRAY_LEN))
            .unwrap();
    }
    for _ in 0..reps {
        let lat = floor_echo(&mut floor, calls, 0, raw.len(), |f| {
            wire::ndarray_of(f.call_echo(wire::args_ndarray(&raw, NDARRAY_LEN))?)
        });
        r.lat("floor", lat);
        let s = prt.session("nd", "n").unwrap();
        let lat = pyvisor_echo(b, s, arr.clone(), calls, 3, |a, out: NdArray| {
            assert_eq!((out.dtype.as_str(), out.data.len()), ("<f8", a.data.len()))
        });
        r.lat("pyvisor", lat);
    }
    b.rt.block_on(prt.shutdown());
    rep.latency_rows("8 MiB float64 ndarray round trip", &r, P50_P99);
}

/// `warmup + calls` echoes on the floor, each timed with copying the result out (`once`), which
/// must be `len` bytes; the percentiles of the last `calls`.
fn floor_echo(
    floor: &mut Floor,
    calls: usize,
    warmup: usize,
    len: usize,
    mut once: impl FnMut(&mut Floor) -> std::io::Result<Vec<u8>>,
) -> Lat {
    let mut ns = Samples::with_capacity(warmup + calls);
    for _ in 0..warmup + calls {
        let out = ns.time(|| once(floor).unwrap());
        assert_eq!(out.len(), len);
    }
    ns.lat_after(warmup)
}

/// `warmup + calls` calls of `pyvisor_bench.echo(arg)` in session `s`, from a spawned task, each
/// reply checked by `check`; the percentiles of the last `calls`.
fn pyvisor_echo<A, R>(
    b: &Bench,
    s: Session,
    arg: Arc<A>,
    calls: usize,
    warmup: usize,
    check: fn(&A, R),
) -> Lat
where
    A: Serialize + Send + Sync + 'static,
    R: DeserializeOwned + Send + 'static,
{
    b.on_task(async move {
        let mut ns = Samples::with_capacity(warmup + calls);
        for _ in 0..warmup + calls {
            let out: R = ns
                .time_async(s.call("pyvisor_bench", "echo", &(&*arg,), &()))
                .await
                .unwrap();
            check(&arg, out);
        }
        ns.lat_after(warmup)
    })
}
