//! CPU placement of the host and the workers (`--pin`): `sched_setaffinity` on every thread.

use std::io;
use std::time::Duration;

use pyvisor::Runtime;

use crate::cli::Pin;

#[derive(Clone)]
pub struct Placement {
    pub mode: Pin,
    pub all: Vec<usize>,
    pub host: Vec<usize>,
    pub worker: Vec<usize>,
    pub note: String,
}

impl Placement {
    pub fn new(mode: Pin) -> Placement {
        let all = affinity_of(0);
        let (host, worker, note) = match mode {
            Pin::None => (
                all.clone(),
                all.clone(),
                "unpinned: the scheduler decides".into(),
            ),
            Pin::Same => (
                vec![all[0]],
                vec![all[0]],
                format!(
                    "host (all threads) and every worker pinned to CPU {}",
                    all[0]
                ),
            ),
            Pin::Split if all.len() >= 2 => (
                vec![all[0]],
                vec![all[1]],
                format!(
                    "host (all threads) pinned to CPU {}, every worker to CPU {}",
                    all[0], all[1]
                ),
            ),
            Pin::Split => (
                vec![all[0]],
                vec![all[0]],
                "split asked but only one CPU is allowed: same".into(),
            ),
        };
        Placement {
            mode,
            all,
            host,
            worker,
            note,
        }
    }

    pub fn pin_host(&self) {
        if self.mode != Pin::None {
            pin_process(std::process::id(), &self.host);
        }
    }

    pub fn unpin_host(&self) {
        if self.mode != Pin::None {
            pin_process(std::process::id(), &self.all);
        }
    }

    pub fn pin_worker(&self, pid: u32) {
        if self.mode != Pin::None {
            pin_process(pid, &self.worker);
        }
    }

    pub async fn pin_pool(&self, rt: &Runtime) {
        if self.mode == Pin::None {
            return;
        }
        // The worker starts its watch thread right after the handshake: give it a moment, so that
        // every thread of the worker is in /proc/<pid>/task when we pin.
        tokio::time::sleep(Duration::from_millis(30)).await;
        for pool in rt.stats().await {
            for w in pool.workers {
                if let Some(pid) = w.pid {
                    self.pin_worker(pid);
                }
            }
        }
    }
}

pub fn set_affinity(tid: i32, cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads `size` bytes of it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn affinity_of(tid: i32) -> Vec<usize> {
    // SAFETY: as above; sched_getaffinity writes at most `size` bytes.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins every thread of process `pid` (threads created later inherit from their creator).
fn pin_process(pid: u32, cpus: &[usize]) {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for entry in dir.flatten() {
        if let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) {
            let _ = set_affinity(tid, cpus);
        }
    }
}
