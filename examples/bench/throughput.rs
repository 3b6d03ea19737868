//! Throughput with 1, 2, 4 workers: many pyvisor sessions calling in a loop, against floor
//! threads in lock-step, against a tokio floor (tasks sharing one driver task per worker), and,
//! for one worker, against a floor with requests pipelined.

use std::io::Write;
use std::time::Instant;

use pyvisor::Session;

use crate::env::Bench;
use crate::floor::{floor_ready, shared_by_tasks, wire, Floor, TokioFloor};
use crate::report::{fmt_num, Better, Report};
use crate::stats::Reps;
use crate::{PIPELINE_DEPTH, SMALL_ARG, THROUGHPUT_SESSIONS};

pub fn throughput(b: &Bench, reps: usize, rep: &mut Report) {
    let sz = b.sz;
    for &w in &sz.tput_workers {
        eprintln!(
            "[throughput] {w} worker(s), {} calls × {reps} reps",
            sz.tput_calls
        );
        let mut r = Reps::default();
        let mut floors: Vec<Floor> = (0..w).map(|i| floor_ready(b.env, b.place, i)).collect();
        // Separate workers for the tokio floor: it takes their pipes.
        let mut async_floors: Vec<Floor> = (0..w).map(|i| floor_ready(b.env, b.place, i)).collect();
        let mut tokio_floors: Vec<TokioFloor> =
            b.rt.block_on(async { async_floors.iter_mut().map(TokioFloor::from).collect() });
        let prt = b.start_pinned(b.env.pool("tput", w));
        let sessions: Vec<Session> = (0..THROUGHPUT_SESSIONS)
            .map(|i| prt.session("tput", format!("t{i}")).unwrap())
            .collect();
        for _ in 0..reps {
            r.add("floor", floor_lockstep(&mut floors, sz.tput_calls / w));
            let per = sz.tput_calls / THROUGHPUT_SESSIONS;
            r.add("pyvisor", sessions_in_loop(b, &sessions, per));
            let (rate, back) = b.rt.block_on(shared_by_tasks(
                std::mem::take(&mut tokio_floors),
                THROUGHPUT_SESSIONS,
                per,
            ));
            tokio_floors = back;
            r.add("floor_tokio", rate);
            if w == 1 {
                r.add(
                    "floor_pipelined",
                    floor_pipelined(&mut floors[0], sz.tput_calls),
                );
            }
        }
        b.rt.block_on(prt.shutdown());
        drop(sessions);
        drop(floors);
        drop(tokio_floors);
        drop(async_floors);
        let label =
            format!("throughput, {w} worker(s), {THROUGHPUT_SESSIONS} sessions (floor: lock-step)");
        let (p, f) = (r.get("pyvisor"), r.get("floor"));
        rep.row(label, "calls/s", p, f, Better::Higher).note = format!(
            "per worker: pyvisor {} / floor {}",
            fmt_num(p.unwrap_or(f64::NAN) / w as f64),
            fmt_num(f.unwrap_or(f64::NAN) / w as f64)
        );
        rep.row(
            format!("throughput, {w} worker(s), {THROUGHPUT_SESSIONS} sessions vs a tokio floor ({THROUGHPUT_SESSIONS} tasks, a driver task per worker)"),
            "calls/s",
            p,
            r.get("floor_tokio"),
            Better::Higher,
        )
        .note = "the least an async host does with one call in flight per worker".into();
        if w == 1 {
            rep.row(
                format!("throughput, 1 worker, {THROUGHPUT_SESSIONS} sessions vs floor pipelined {PIPELINE_DEPTH} deep"),
                "calls/s",
                p,
                r.get("floor_pipelined"),
                Better::Higher,
            )
            .note = "pyvisor keeps 1 call in flight per worker by design".into();
        }
    }
}

/// Calls per second of one std thread per floor worker, each making `per` calls in lock-step.
pub fn floor_lockstep(floors: &mut [Floor], per: usize) -> f64 {
    let t0 = Instant::now();
    std::thread::scope(|scope| {
        for f in floors.iter_mut() {
            scope.spawn(move || {
                for _ in 0..per {
                    f.sqrt().unwrap();
                }
            });
        }
    });
    (per * floors.len()) as f64 / t0.elapsed().as_secs_f64()
}

/// Calls per second of every session in its own task, each making `per` calls in a loop.
fn sessions_in_loop(b: &Bench, sessions: &[Session], per: usize) -> f64 {
    let ss = sessions.to_vec();
    let secs = b.rt.block_on(async move {
        let t0 = Instant::now();
        let tasks: Vec<_> = ss
            .into_iter()
            .map(|s| {
                tokio::spawn(async move {
                    for _ in 0..per {
                        let _: f64 = s.call("math", "sqrt", &(SMALL_ARG,), &()).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        t0.elapsed().as_secs_f64()
    });
    (per * sessions.len()) as f64 / secs
}

/// Calls per second of one floor worker with `PIPELINE_DEPTH` requests in flight: a writer
/// thread sends while this thread reads the replies, one credit per reply.
fn floor_pipelined(f: &mut Floor, n: usize) -> f64 {
    let mut wr = f.w.take().unwrap();
    let rd = f.r.as_mut().unwrap();
    let (credit_tx, credit_rx) = std::sync::mpsc::sync_channel::<()>(PIPELINE_DEPTH);
    for _ in 0..PIPELINE_DEPTH {
        credit_tx.send(()).unwrap();
    }
    let base = f.next_id;
    let t0 = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut frame = Vec::new();
        for i in 1..=n as u64 {
            credit_rx.recv().unwrap();
            wire::call(
                &mut frame,
                base + i,
                "math",
                "sqrt",
                "s",
                wire::args_f64(SMALL_ARG),
            );
            wr.write_all(&frame).unwrap();
        }
        wr
    });
    for _ in 0..n {
        Floor::read_frame(rd, &mut f.buf).unwrap();
        wire::split(&f.buf).unwrap();
        let _ = credit_tx.try_send(());
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    f.w = Some(writer.join().unwrap());
    f.next_id = base + n as u64;
    rate
}
