//! `--loop VARIANT N`: one small-call loop only, so that `perf stat` / `perf record` /
//! `valgrind --tool=callgrind` see one variant; prints µs/call, host CPU/call and context
//! switches/call.

use std::time::Instant;

use pyvisor::Session;

use crate::cli::die;
use crate::env::Bench;
use crate::floor::{floor_ready, shared_by_tasks, TokioFloor};
use crate::proc::{usage, vm_rss_kib};
use crate::throughput::floor_lockstep;
use crate::{SMALL_ARG, THROUGHPUT_SESSIONS};
pub fn profile_loop(b: &Bench, variant: &str, n: usize) {
    let (env, place, rt) = (b.env, b.place, b.rt);
    // `VARIANT@W`: the throughput loops with W workers (default 1).
    let (variant, workers) = match variant.split_once('@') {
        Some((v, w)) => (
            v,
            w.parse()
                .unwrap_or_else(|_| die("--loop VARIANT@W: W a number")),
        ),
        None => (variant, 1usize),
    };
    let t0;
    let u0;
    match variant {
        "floor" => {
            let mut f = floor_ready(env, place, 0);
            u0 = usage();
            t0 = Instant::now();
            for _ in 0..n {
                f.sqrt().unwrap();
            }
        }
        "floor-tokio" => {
            let mut w = floor_ready(env, place, 0);
            let mut f = rt.block_on(async { TokioFloor::from(&mut w) });
            u0 = usage();
            t0 = Instant::now();
            b.on_task(async move {
                for _ in 0..n {
                    f.sqrt().await.unwrap();
                }
            });
        }
        "pyvisor" | "pyvisor-nosession" | "pyvisor-10-sessions" => {
            let prt = b.start_pinned(env.pool("p", 1));
            // `pyvisor-10-sessions` rotates over 10 sessions (one session: `pyvisor`).
            let rotate = if variant == "pyvisor-10-sessions" {
                10
            } else {
                1
            };
            let sessions: Vec<Session> = (0..rotate)
                .map(|i| prt.session("p", format!("s{i}")).unwrap())
                .collect();
            let session = variant != "pyvisor-nosession";
            let prt2 = prt.clone();
            u0 = usage();
            t0 = Instant::now();
            b.on_task(async move {
                for i in 0..n {
                    let _: f64 = if session {
                        sessions[i % rotate]
                            .call("math", "sqrt", &(SMALL_ARG,), &())
                            .await
                            .unwrap()
                    } else {
                        prt2.call("p", "math", "sqrt", &(SMALL_ARG,), &())
                            .await
                            .unwrap()
                    };
                }
            });
        }
        "floor-lockstep" => {
            // The throughput workload's floor: one std thread per worker, in lock-step.
            let mut floors: Vec<_> = (0..workers).map(|i| floor_ready(env, place, i)).collect();
            u0 = usage();
            t0 = Instant::now();
            floor_lockstep(&mut floors, n / workers);
        }
        "floor-tokio-64-tasks" => {
            // The throughput workload on the least async host (one driver task per worker).
            let mut floors: Vec<_> = (0..workers).map(|i| floor_ready(env, place, i)).collect();
            let tf: Vec<_> =
                rt.block_on(async { floors.iter_mut().map(TokioFloor::from).collect() });
            u0 = usage();
            t0 = Instant::now();
            b.on_task(shared_by_tasks(
                tf,
                THROUGHPUT_SESSIONS,
                n / THROUGHPUT_SESSIONS,
            ));
        }
        "pyvisor-64-sessions" => {
            // The throughput workload's path: 64 sessions calling at once on `workers` workers,
            // so nearly every call queues and is written by a worker's reader task.
            let prt = b.start_pinned(env.pool("p", workers));
            let sessions: Vec<Session> = (0..THROUGHPUT_SESSIONS)
                .map(|i| prt.session("p", format!("s{i}")).unwrap())
                .collect();
            u0 = usage();
            t0 = Instant::now();
            let per = n / THROUGHPUT_SESSIONS;
            b.on_task(async move {
                let tasks: Vec<_> = sessions
                    .into_iter()
                    .map(|s| {
                        tokio::spawn(async move {
                            for _ in 0..per {
                                let _: f64 =
                                    s.call("math", "sqrt", &(SMALL_ARG,), &()).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            });
        }
        other => die(&format!(
            "--loop floor|floor-tokio|pyvisor|pyvisor-nosession|pyvisor-10-sessions|\
             pyvisor-64-sessions[@W]|floor-lockstep[@W]|floor-tokio-64-tasks[@W], not {other}"
        )),
    }
    let secs = t0.elapsed().as_secs_f64();
    let u1 = usage();
    println!(
        "{variant}: {n} calls in {secs:.3} s = {:.2} µs/call; host CPU {:.2} µs/call (all threads), \
         host context switches {:.2}/call (voluntary {:.2}); host VmRSS {} KiB",
        secs * 1e6 / n as f64,
        (u1.0 - u0.0) * 1e6 / n as f64,
        (u1.1 + u1.2 - u0.1 - u0.2) / n as f64,
        (u1.1 - u0.1) / n as f64,
        vm_rss_kib()
    );
}
