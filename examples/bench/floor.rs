//! The floor: a minimal host for the real worker, std threads and blocking pipes.

mod tokio_floor;
pub mod wire;

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use crate::cli::die;
use crate::env::Env;
use crate::placement::Placement;
use crate::{MIB, SMALL_ARG};

pub use tokio_floor::{shared_by_tasks, TokioFloor};

pub struct Floor {
    child: Child,
    pub pid: u32,
    pub w: Option<io::PipeWriter>,
    pub r: Option<io::PipeReader>,
    pub next_id: u64,
    frame: Vec<u8>,
    pub buf: Vec<u8>,
}

/// The policy environment pyvisor gives a default pool's workers (next to
/// `pyvisor::worker::ENV_DEFAULTS`).
const POLICY_ENV: &[(&str, &str)] = &[
    ("PYVISOR_ALLOW_EVAL", "0"),
    ("PYVISOR_MAX_REFS", "10000"),
    ("PYVISOR_REF_TTL", "0"),
];

impl Floor {
    /// Starts `python -m pyvisor_worker` with the two protocol pipes (docs/protocol.md).
    pub fn spawn(env: &Env, slot: usize, preload: &str) -> io::Result<Floor> {
        let (req_r, req_w) = io::pipe()?;
        let (rep_r, rep_w) = io::pipe()?;
        let (child_in, child_out) = (req_r.as_raw_fd(), rep_w.as_raw_fd());
        let mut cmd = Command::new(&env.python);
        cmd.args(["-m", "pyvisor_worker"]);
        for (k, v) in pyvisor::worker::ENV_DEFAULTS.iter().chain(POLICY_ENV) {
            if std::env::var_os(k).is_none() {
                cmd.env(k, v);
            }
        }
        let mut path = std::ffi::OsString::new();
        if let Some(dir) = &env.override_dir {
            path.push(dir.as_os_str());
            path.push(":");
        }
        path.push(env.bench_dir.as_os_str());
        path.push(":");
        path.push(env.worker_dir.as_os_str());
        cmd.env("PYTHONPATH", path)
            .env("PYVISOR_FD_IN", child_in.to_string())
            .env("PYVISOR_FD_OUT", child_out.to_string())
            .env("PYVISOR_PROTOCOL", "1")
            .env("PYVISOR_MAX_FRAME", (64 * MIB).to_string())
            .env("PYVISOR_POOL", "floor")
            .env("PYVISOR_SLOT", slot.to_string())
            .env("PYVISOR_GENERATION", "0")
            .env("PYVISOR_PRELOAD", preload)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                for fd in [child_in, child_out] {
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop((req_r, rep_w));
        Ok(Floor {
            pid: child.id(),
            child,
            w: Some(req_w),
            r: Some(rep_r),
            next_id: 0,
            frame: Vec::new(),
            buf: Vec::new(),
        })
    }

    pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<()> {
        let mut len = [0u8; 4];
        r.read_exact(&mut len)?;
        buf.resize(u32::from_be_bytes(len) as usize, 0);
        r.read_exact(buf)
    }

    pub fn wait_ready(&mut self) -> io::Result<()> {
        Floor::read_frame(self.r.as_mut().unwrap(), &mut self.buf)?;
        match wire::split(&self.buf)? {
            (wire::READY, 0, _) => Ok(()),
            (op, ..) => Err(io::Error::other(format!("expected READY, got op {op}"))),
        }
    }

    /// One CALL of `module.function`, lock-step; returns the reply body.
    fn call_fn(
        &mut self,
        module: &str,
        function: &str,
        args: impl FnOnce(&mut Vec<u8>),
    ) -> io::Result<&[u8]> {
        self.next_id += 1;
        wire::call(&mut self.frame, self.next_id, module, function, "s", args);
        self.w.as_mut().unwrap().write_all(&self.frame)?;
        Floor::read_frame(self.r.as_mut().unwrap(), &mut self.buf)?;
        let (op, id, body) = wire::split(&self.buf)?;
        if op != wire::OK || id != self.next_id {
            return Err(io::Error::other("unexpected reply"));
        }
        Ok(body)
    }

    /// `pyvisor_bench.echo(args)`, lock-step; returns the reply body.
    pub fn call_echo(&mut self, args: impl FnOnce(&mut Vec<u8>)) -> io::Result<&[u8]> {
        self.call_fn("pyvisor_bench", "echo", args)
    }

    pub fn sqrt(&mut self) -> io::Result<f64> {
        let body = self.call_fn("math", "sqrt", wire::args_f64(SMALL_ARG))?;
        wire::f64_of(body)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A floor worker that has answered its handshake and 200 warm-up calls, pinned.
pub fn floor_ready(env: &Env, place: &Placement, slot: usize) -> Floor {
    floor_preloaded(env, place, slot, "")
}

/// [`floor_ready`], the worker importing `preload` (`PYVISOR_PRELOAD`) before its handshake.
pub fn floor_preloaded(env: &Env, place: &Placement, slot: usize, preload: &str) -> Floor {
    let mut f =
        Floor::spawn(env, slot, preload).unwrap_or_else(|e| die(&format!("floor spawn: {e}")));
    place.pin_worker(f.pid);
    f.wait_ready()
        .unwrap_or_else(|e| die(&format!("floor handshake: {e}")));
    for _ in 0..200 {
        f.sqrt().unwrap();
    }
    place.pin_worker(f.pid); // the watch thread exists now
    f
}
