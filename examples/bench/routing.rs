//! Routing: keep 10 / 1 000 / 100 000 sessions alive (each placed by a first call), then time
//! calls on pseudo-random sessions of the set. One worker, so the floor column is comparable.

use std::sync::Arc;
use std::time::Instant;

use pyvisor::Session;

use crate::env::Bench;
use crate::floor::floor_ready;
use crate::proc::vm_rss_kib;
use crate::report::{fmt_num, Better, Report};
use crate::stats::{Lat, Samples};
use crate::{SMALL_ARG, THROUGHPUT_SESSIONS};

pub fn routing(b: &Bench, rep: &mut Report) {
    let sz = b.sz;
    let mut p50s = Vec::new();
    // The floor has no routing: its small-call p50, measured right before each case (same
    // conditions), is the reference.
    let mut floor = floor_ready(b.env, b.place, 0);
    for &n in &sz.routing {
        eprintln!(
            "[routing] {n} live sessions, {} sampled calls",
            sz.routing_sample
        );
        let mut ns = Samples::with_capacity(sz.routing_sample);
        for _ in 0..sz.routing_sample {
            ns.time(|| floor.sqrt().unwrap());
        }
        let floor_p50 = Some(ns.lat().p50);
        let (bind_rate, lat, per_session) = b.rt.block_on(sessions_case(b, n));
        p50s.push(lat.p50);
        rep.row(
            format!("routing: call on a random one of {n} live sessions, p50"),
            "µs",
            Some(lat.p50),
            floor_p50,
            Better::Lower,
        )
        .note = format!(
            "p99 {} µs; first calls (placing the sessions) {} calls/s; host {} B per session",
            fmt_num(lat.p99),
            fmt_num(bind_rate),
            fmt_num(per_session)
        );
    }
    if p50s.len() >= 2 {
        let flat = p50s[p50s.len() - 1] / p50s[0];
        rep.extra.insert("routing_flatness".into(), flat);
        rep.notes.push(format!(
            "routing flatness: p50 with {} sessions / p50 with {} sessions = {:.2}",
            sz.routing[sz.routing.len() - 1],
            sz.routing[0],
            flat
        ));
    }
}

/// One case with `n` live sessions: (calls/s of the placing first calls, latency of the sampled
/// calls, host bytes per session).
async fn sessions_case(b: &Bench<'_>, n: usize) -> (f64, Lat, f64) {
    let sample = b.sz.routing_sample;
    let prt = b.pinned_runtime(b.env.pool("route", 1)).await;
    let rss0 = vm_rss_kib();
    let sessions: Vec<Session> = (0..n)
        .map(|i| prt.session("route", format!("session-{i}")).unwrap())
        .collect();
    // Place every session on a worker (first call), 64 at a time.
    let t0 = Instant::now();
    let chunk = n.div_ceil(THROUGHPUT_SESSIONS);
    let tasks: Vec<_> = sessions
        .chunks(chunk)
        .map(|c| {
            let c = c.to_vec();
            tokio::spawn(async move {
                for s in c {
                    let _: f64 = s.call("math", "sqrt", &(SMALL_ARG,), &()).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let bind_rate = n as f64 / t0.elapsed().as_secs_f64();
    let stats = prt.stats().await;
    assert_eq!(stats[0].sessions, n, "every session is bound");
    let per_session = (vm_rss_kib() - rss0) * 1024.0 / n as f64;
    // Time calls on a pseudo-random sample of the live sessions, one in flight.
    let ss = Arc::new(sessions);
    let ss2 = ss.clone();
    let lat = tokio::spawn(async move {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut ns = Samples::with_capacity(sample);
        for _ in 0..sample {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let s = &ss2[(x % n as u64) as usize];
            let call = s.call::<f64>("math", "sqrt", &(SMALL_ARG,), &());
            ns.time_async(call).await.unwrap();
        }
        ns.lat()
    })
    .await
    .unwrap();
    prt.shutdown().await;
    drop(ss);
    (bind_rate, lat, per_session)
}
