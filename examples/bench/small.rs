//! The small call, `math.sqrt(2.0)` with one call in flight: floor (std and tokio) against a
//! pyvisor session and `rt.call` without a session.

use std::sync::Arc;

use crate::env::Bench;
use crate::floor::{floor_ready, TokioFloor};
use crate::proc::vm_rss_kib;
use crate::report::{fmt_num, Better, Report};
use crate::stats::{median, Reps, Samples};
use crate::SMALL_ARG;

pub fn small(b: &Bench, reps: usize, rep: &mut Report) {
    let n = b.sz.small_calls;
    eprintln!("[small] {n} calls × {reps} reps");
    let mut r = Reps::default();
    let mut floor = floor_ready(b.env, b.place, 0);
    let mut tfloor_worker = floor_ready(b.env, b.place, 1);
    let tfloor =
        b.rt.block_on(async { TokioFloor::from(&mut tfloor_worker) });
    let tfloor = Arc::new(tokio::sync::Mutex::new(tfloor));
    let prt = b.rt.block_on(async {
        let prt = b.env.runtime(b.env.pool("small", 1)).await;
        let s = prt.session("small", "s").unwrap();
        for _ in 0..200 {
            let _: f64 = s.call("math", "sqrt", &(SMALL_ARG,), &()).await.unwrap();
        }
        b.place.pin_pool(&prt).await;
        prt
    });
    let mut rss_growth = Vec::new();
    for _ in 0..reps {
        // floor (std, blocking), on the main thread
        let mut ns = Samples::with_capacity(n);
        for _ in 0..n {
            let v = ns.time(|| floor.sqrt().unwrap());
            debug_assert!((v - SMALL_ARG.sqrt()).abs() < 1e-12);
        }
        r.lat("floor", ns.lat());

        // pyvisor session call, from a spawned task (as an actor program would call it)
        let rss0 = vm_rss_kib();
        let s = prt.session("small", "s").unwrap();
        let lat = b.on_task(async move {
            let mut ns = Samples::with_capacity(n);
            for _ in 0..n {
                let v: f64 = ns
                    .time_async(s.call("math", "sqrt", &(SMALL_ARG,), &()))
                    .await
                    .unwrap();
                debug_assert!((v - SMALL_ARG.sqrt()).abs() < 1e-12);
            }
            ns.lat()
        });
        rss_growth.push((vm_rss_kib() - rss0) * 1024.0 / n as f64);
        r.lat("pyvisor", lat);

        // pyvisor rt.call (no session)
        let prt2 = prt.clone();
        let lat = b.on_task(async move {
            let mut ns = Samples::with_capacity(n);
            for _ in 0..n {
                let call = prt2.call::<f64>("small", "math", "sqrt", &(SMALL_ARG,), &());
                ns.time_async(call).await.unwrap();
            }
            ns.lat()
        });
        r.lat("pyvisor_nosession", lat);

        // floor, tokio variant
        let tf = tfloor.clone();
        let lat = b.on_task(async move {
            let mut tf = tf.lock().await;
            let mut ns = Samples::with_capacity(n);
            for _ in 0..n {
                ns.time_async(tf.sqrt()).await.unwrap();
            }
            ns.lat()
        });
        r.lat("floor_tokio", lat);
    }
    b.rt.block_on(prt.shutdown());
    drop(tfloor);
    drop(tfloor_worker);
    drop(floor);

    rep.latency_rows(
        "small call math.sqrt(2.0), 1 in flight",
        &r,
        &[("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")],
    );
    rep.row(
        "small call, sequential throughput (1/mean)",
        "calls/s",
        r.get("pyvisor.mean").map(|m| 1e6 / m),
        r.get("floor.mean").map(|m| 1e6 / m),
        Better::Higher,
    );
    rep.row(
        "small call p50, `rt.call` (no session)",
        "µs",
        r.get("pyvisor_nosession.p50"),
        r.get("floor.p50"),
        Better::Lower,
    );
    rep.row(
        "small call p50 vs a tokio floor (floor column: tokio pipes, one task)",
        "µs",
        r.get("pyvisor.p50"),
        r.get("floor_tokio.p50"),
        Better::Lower,
    )
    .note = format!(
        "tokio floor p99 {} µs",
        fmt_num(r.get("floor_tokio.p99").unwrap_or(f64::NAN))
    );
    rep.extra
        .insert("host_rss_growth_bytes_per_call".into(), median(rss_growth));
}
