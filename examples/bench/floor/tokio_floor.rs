//! The tokio variant of the floor (non-blocking pipes, one task), small call only.

use std::io;
use std::os::fd::OwnedFd;

use tokio::net::unix::pipe::{Receiver, Sender};

use super::{wire, Floor};
use crate::SMALL_ARG;

pub struct TokioFloor {
    w: Sender,
    r: Receiver,
    next_id: u64,
    frame: Vec<u8>,
    buf: Vec<u8>,
}

impl TokioFloor {
    /// Takes over the pipes of a started floor worker (must run inside the tokio runtime).
    pub fn from(f: &mut Floor) -> TokioFloor {
        let w = OwnedFd::from(f.w.take().unwrap());
        let r = OwnedFd::from(f.r.take().unwrap());
        TokioFloor {
            w: Sender::from_owned_fd(w).unwrap(),
            r: Receiver::from_owned_fd(r).unwrap(),
            next_id: 1_000_000,
            frame: Vec::new(),
            buf: Vec::new(),
        }
    }

    pub async fn sqrt(&mut self) -> io::Result<f64> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.next_id += 1;
        wire::call(
            &mut self.frame,
            self.next_id,
            "math",
            "sqrt",
            "s",
            wire::args_f64(SMALL_ARG),
        );
        self.w.write_all(&self.frame).await?;
        let mut len = [0u8; 4];
        self.r.read_exact(&mut len).await?;
        self.buf.resize(u32::from_be_bytes(len) as usize, 0);
        self.r.read_exact(&mut self.buf).await?;
        let (_, id, body) = wire::split(&self.buf)?;
        assert_eq!(id, self.next_id);
        wire::f64_of(body)
    }
}

/// The least an async host does for the throughput workload: `tasks` tokio tasks, task `i`
/// bound to floor `i % floors.len()`, each making `per` small calls; one driver task per floor
/// writes a request, reads its reply and answers the calling task over a oneshot (one call in
/// flight per worker, as pyvisor). Returns calls per second and the floors, for the next run.
pub async fn shared_by_tasks(
    floors: Vec<TokioFloor>,
    tasks: usize,
    per: usize,
) -> (f64, Vec<TokioFloor>) {
    type Ask = tokio::sync::oneshot::Sender<f64>;
    let t0 = std::time::Instant::now();
    let mut queues = Vec::new();
    let mut drivers = Vec::new();
    for mut f in floors {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Ask>();
        queues.push(tx);
        drivers.push(tokio::spawn(async move {
            while let Some(ask) = rx.recv().await {
                let _ = ask.send(f.sqrt().await.unwrap());
            }
            f
        }));
    }
    let callers: Vec<_> = (0..tasks)
        .map(|i| {
            let q = queues[i % queues.len()].clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    q.send(tx).unwrap();
                    let _: f64 = rx.await.unwrap();
                }
            })
        })
        .collect();
    for c in callers {
        c.await.unwrap();
    }
    let rate = (tasks * per) as f64 / t0.elapsed().as_secs_f64();
    drop(queues);
    let mut back = Vec::new();
    for d in drivers {
        back.push(d.await.unwrap());
    }
    (rate, back)
}
