//! Benchmark harness (issue 6): pyvisor against a raw pipe floor and the Python baselines, in one
//! run, on one machine.
//!
//! ```text
//! cargo run --release --example bench -- [--smoke] [--pin same|split|none] [--json out.json]
//!                                         [--reps N] [--only small,throughput,...]
//!                                         [--loop VARIANT N] [--worker-dir DIR]
//! ```
//!
//! * **floor**: a minimal Rust↔Python ping-pong written here, with std threads and blocking pipes
//!   (plus a tokio variant for the small call). It starts `<venv python> -m pyvisor_worker` itself
//!   with the environment of `docs/protocol.md` and speaks the real worker protocol, so floor and
//!   pyvisor measure the same Python worker; the floor has no actors, no routing, no timers.
//! * **pyvisor**: the same calls through `Runtime` / `Session` / pool / worker.
//! * **baselines**: `examples/python/bench/baselines.py` (multiprocessing `Pool.apply`,
//!   `ProcessPoolExecutor`, Ray actors when `import ray` works).
//!
//! `--pin same` (default) puts the host (every thread) and the workers on one CPU, `split` puts the
//! host on one CPU and the workers on another, `none` leaves placement to the scheduler. Pinning
//! uses `sched_setaffinity` on every thread (`/proc/<pid>/task`) of the host and of each worker,
//! floor and pyvisor alike. Start-to-ready and host memory run unpinned (workers inherit the host's
//! mask, and pinning would serialise N imports on one core).
//!
//! Every workload runs `--reps` times (default 3, interleaving floor and pyvisor), and each figure
//! is the median over the repetitions. `--smoke` runs everything tiny (CI keeps it compiling and
//! working); its numbers mean nothing.
//!
//! For profiling, `--loop VARIANT N` runs one small-call loop only (for `perf stat` or
//! `valgrind --tool=callgrind`), and `--worker-dir DIR` puts DIR first on every worker's
//! `PYTHONPATH` to measure a patched `pyvisor_worker`. Results and findings: `docs/benchmarks.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyvisor::{Event, NdArray, PoolConfig, Runtime, Session, Value};

const SMALL_ARG: f64 = 2.0;
const MIB: usize = 1 << 20;
const NDARRAY_LEN: usize = MIB; // 1 Mi float64 = 8 MiB
const PIPELINE_DEPTH: usize = 16;
const THROUGHPUT_SESSIONS: usize = 64;

// ------------------------------------------------------------------------------------------------
// Options

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pin {
    Same,
    Split,
    None,
}

impl Pin {
    fn name(self) -> &'static str {
        match self {
            Pin::Same => "same",
            Pin::Split => "split",
            Pin::None => "none",
        }
    }
}

struct Opts {
    smoke: bool,
    pin: Pin,
    json: Option<PathBuf>,
    reps: usize,
    only: Vec<String>,
    /// `--loop VARIANT N`: run only one small-call loop (for `perf stat` / `perf record`).
    profile: Option<(String, usize)>,
    /// `--worker-dir DIR`: put DIR first on every worker's PYTHONPATH (floor and pyvisor), e.g.
    /// a patched copy of `pyvisor_worker`, to measure a worker change before making it.
    worker_dir: Option<PathBuf>,
}

impl Opts {
    fn parse() -> Opts {
        let mut o = Opts {
            smoke: false,
            pin: Pin::Same,
            json: None,
            reps: 0,
            only: Vec::new(),
            profile: None,
            worker_dir: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--smoke" => o.smoke = true,
                "--pin" => {
                    o.pin = match args.next().as_deref() {
                        Some("same") => Pin::Same,
                        Some("split") => Pin::Split,
                        Some("none") => Pin::None,
                        other => die(&format!("--pin same|split|none, not {other:?}")),
                    }
                }
                "--json" => o.json = Some(args.next().unwrap_or_else(|| die("--json FILE")).into()),
                "--reps" => {
                    o.reps = args
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| die("--reps N"))
                }
                "--only" => {
                    o.only = args
                        .next()
                        .unwrap_or_else(|| die("--only a,b"))
                        .split(',')
                        .map(str::to_string)
                        .collect()
                }
                "--worker-dir" => {
                    o.worker_dir = Some(
                        args.next()
                            .unwrap_or_else(|| die("--worker-dir DIR"))
                            .into(),
                    )
                }
                "--loop" => {
                    let variant = args.next().unwrap_or_else(|| die("--loop VARIANT N"));
                    let n = args
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| die("--loop VARIANT N"));
                    o.profile = Some((variant, n));
                }
                "-h" | "--help" => {
                    println!(
                        "bench [--smoke] [--pin same|split|none] [--json FILE] [--reps N] \
                         [--only start,dspy,small,throughput,bytes,ndarray,restart,routing,baselines] \
                         [--loop floor|floor-tokio|pyvisor|pyvisor-nosession|pyvisor-10-sessions N] [--worker-dir DIR]"
                    );
                    std::process::exit(0);
                }
                other => die(&format!("unknown argument {other}")),
            }
        }
        if o.reps == 0 {
            o.reps = if o.smoke { 1 } else { 3 };
        }
        o
    }

    fn runs(&self, workload: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|w| w == workload)
    }
}

fn die(msg: &str) -> ! {
    eprintln!("bench: {msg}");
    std::process::exit(2)
}

/// Sizes of the workloads.
struct Sizes {
    small_calls: usize,
    tput_calls: usize,
    tput_workers: Vec<usize>,
    mib_calls: usize,
    nd_calls: usize,
    start_ns: Vec<usize>,
    dspy_ns: Vec<usize>,
    start_reps: usize,
    kills: usize,
    routing: Vec<usize>,
    routing_sample: usize,
}

impl Sizes {
    fn new(smoke: bool) -> Sizes {
        if smoke {
            Sizes {
                small_calls: 300,
                tput_calls: 600,
                tput_workers: vec![1, 2],
                mib_calls: 20,
                nd_calls: 5,
                start_ns: vec![2],
                dspy_ns: vec![],
                start_reps: 1,
                kills: 2,
                routing: vec![10, 1000],
                routing_sample: 200,
            }
        } else {
            Sizes {
                small_calls: 30_000,
                tput_calls: 60_000,
                tput_workers: vec![1, 2, 4],
                mib_calls: 1_000,
                nd_calls: 150,
                start_ns: vec![2, 8, 32],
                dspy_ns: vec![2, 8],
                start_reps: 3,
                kills: 10,
                routing: vec![10, 1_000, 100_000],
                routing_sample: 10_000,
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Environment and placement

struct Env {
    python: PathBuf,
    bench_dir: PathBuf,
    worker_dir: PathBuf,
    /// Put first on every worker's PYTHONPATH (`--worker-dir`).
    override_dir: Option<PathBuf>,
}

impl Env {
    fn detect(override_dir: Option<PathBuf>) -> Env {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var_os("PYVISOR_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".venv/bin/python"));
        if !python.exists() {
            die(&format!(
                "no interpreter at {} (run scripts/setup-python.sh or set PYVISOR_PYTHON)",
                python.display()
            ));
        }
        Env {
            python,
            bench_dir: root.join("examples/python/bench"),
            worker_dir: root.join("python"),
            override_dir,
        }
    }

    fn pool(&self, name: &str, size: usize) -> PoolConfig {
        let mut cfg = PoolConfig::new(name).size(size);
        if let Some(dir) = &self.override_dir {
            cfg = cfg.python_path(dir.clone());
        }
        cfg.python_path(self.bench_dir.clone())
    }

    async fn runtime(&self, pool: PoolConfig) -> Runtime {
        let rt = Runtime::builder()
            .python(self.python.clone())
            .pool(pool)
            .start()
            .await
            .unwrap_or_else(|e| die(&format!("pyvisor start: {e}")));
        rt.wait_ready()
            .await
            .unwrap_or_else(|e| die(&format!("pyvisor wait_ready: {e}")));
        rt
    }
}

#[derive(Clone)]
struct Placement {
    mode: Pin,
    all: Vec<usize>,
    host: Vec<usize>,
    worker: Vec<usize>,
    note: String,
}

impl Placement {
    fn new(mode: Pin) -> Placement {
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

    fn pin_host(&self) {
        if self.mode != Pin::None {
            pin_process(std::process::id(), &self.host);
        }
    }

    fn unpin_host(&self) {
        if self.mode != Pin::None {
            pin_process(std::process::id(), &self.all);
        }
    }

    fn pin_worker(&self, pid: u32) {
        if self.mode != Pin::None {
            pin_process(pid, &self.worker);
        }
    }

    async fn pin_pool(&self, rt: &Runtime) {
        if self.mode == Pin::None {
            return;
        }
        // The worker starts its I/O thread right after the handshake: give it a moment, so that
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

fn set_affinity(tid: i32, cpus: &[usize]) -> io::Result<()> {
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

fn cpus_allowed(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Cpus_allowed_list"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default()
}

fn vm_rss_kib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0.0)
}

// ------------------------------------------------------------------------------------------------
// The floor: a minimal host for the real worker, std threads and blocking pipes.

mod wire {
    //! The framing of docs/protocol.md, written with `rmp` by hand.

    use std::io;

    pub const CALL: u64 = 1;
    pub const READY: u8 = 0;
    pub const OK: u8 = 2;
    pub const ERROR: u8 = 3;
    pub const NDARRAY: i8 = 9;

    /// `[4-byte length][CALL, id, {module, function, args, kwargs: nil, session}]` in `frame`,
    /// with the args array written by `args` (same bytes as pyvisor's `CallBody`).
    pub fn call(
        frame: &mut Vec<u8>,
        id: u64,
        module: &str,
        function: &str,
        session: &str,
        args: impl FnOnce(&mut Vec<u8>),
    ) {
        use rmp::encode::*;
        frame.clear();
        frame.extend_from_slice(&[0; 4]);
        write_array_len(frame, 3).unwrap();
        write_uint(frame, CALL).unwrap();
        write_uint(frame, id).unwrap();
        write_map_len(frame, 5).unwrap();
        write_str(frame, "module").unwrap();
        write_str(frame, module).unwrap();
        write_str(frame, "function").unwrap();
        write_str(frame, function).unwrap();
        write_str(frame, "args").unwrap();
        args(frame);
        write_str(frame, "kwargs").unwrap();
        write_nil(frame).unwrap();
        write_str(frame, "session").unwrap();
        write_str(frame, session).unwrap();
        let len = (frame.len() - 4) as u32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
    }

    pub fn args_f64(x: f64) -> impl FnOnce(&mut Vec<u8>) {
        move |f| {
            rmp::encode::write_array_len(f, 1).unwrap();
            rmp::encode::write_f64(f, x).unwrap();
        }
    }

    pub fn args_bin(data: &[u8]) -> impl FnOnce(&mut Vec<u8>) + '_ {
        move |f| {
            rmp::encode::write_array_len(f, 1).unwrap();
            rmp::encode::write_bin_len(f, data.len() as u32).unwrap();
            f.extend_from_slice(data);
        }
    }

    /// One float64 ndarray argument: ext 9 `[dtype, shape, bin]` (docs/values.md).
    pub fn args_ndarray(data: &[u8], len: usize) -> impl FnOnce(&mut Vec<u8>) + '_ {
        move |f| {
            use rmp::encode::*;
            let mut head = Vec::with_capacity(32);
            write_array_len(&mut head, 3).unwrap();
            write_str(&mut head, "<f8").unwrap();
            write_array_len(&mut head, 1).unwrap();
            write_uint(&mut head, len as u64).unwrap();
            write_bin_len(&mut head, data.len() as u32).unwrap();
            write_array_len(f, 1).unwrap();
            write_ext_meta(f, (head.len() + data.len()) as u32, NDARRAY).unwrap();
            f.extend_from_slice(&head);
            f.extend_from_slice(data);
        }
    }

    fn bad(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, what.to_string())
    }

    /// `(op, id, body)` of a reply payload.
    pub fn split(payload: &[u8]) -> io::Result<(u8, u64, &[u8])> {
        let mut rd = payload;
        if rmp::decode::read_array_len(&mut rd).map_err(|_| bad("envelope"))? != 3 {
            return Err(bad("envelope"));
        }
        let op: u8 = rmp::decode::read_int(&mut rd).map_err(|_| bad("op"))?;
        let id: u64 = rmp::decode::read_int(&mut rd).map_err(|_| bad("id"))?;
        if op == ERROR {
            return Err(io::Error::other(format!(
                "worker error reply: {}",
                String::from_utf8_lossy(rd)
            )));
        }
        Ok((op, id, rd))
    }

    pub fn f64_of(mut body: &[u8]) -> io::Result<f64> {
        rmp::decode::read_f64(&mut body).map_err(|_| bad("f64"))
    }

    /// The bytes of a `bin` body, copied out (what a caller that keeps the result must do).
    pub fn bin_of(mut body: &[u8]) -> io::Result<Vec<u8>> {
        let n = rmp::decode::read_bin_len(&mut body).map_err(|_| bad("bin"))? as usize;
        body.get(..n).map(<[u8]>::to_vec).ok_or_else(|| bad("bin"))
    }

    /// The data buffer of an ext-9 ndarray body, copied out.
    pub fn ndarray_of(mut body: &[u8]) -> io::Result<Vec<u8>> {
        let meta = rmp::decode::read_ext_meta(&mut body).map_err(|_| bad("ext"))?;
        if meta.typeid != NDARRAY
            || rmp::decode::read_array_len(&mut body).map_err(|_| bad("nd"))? != 3
        {
            return Err(bad("ndarray"));
        }
        let n = rmp::decode::read_str_len(&mut body).map_err(|_| bad("dtype"))? as usize;
        body = &body[n..];
        let dims = rmp::decode::read_array_len(&mut body).map_err(|_| bad("shape"))?;
        for _ in 0..dims {
            let _: u64 = rmp::decode::read_int(&mut body).map_err(|_| bad("shape"))?;
        }
        bin_of(body)
    }
}

struct Floor {
    child: Child,
    pid: u32,
    w: Option<io::PipeWriter>,
    r: Option<io::PipeReader>,
    next_id: u64,
    frame: Vec<u8>,
    buf: Vec<u8>,
}

/// Environment of every worker (mirrors what pyvisor sets: src/worker/process.rs, policy env).
const FLOOR_ENV: &[(&str, &str)] = &[
    ("OPENBLAS_NUM_THREADS", "1"),
    ("OMP_NUM_THREADS", "1"),
    ("MKL_NUM_THREADS", "1"),
    ("NUMEXPR_NUM_THREADS", "1"),
    ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
    ("PYTHONUNBUFFERED", "1"),
    ("PYTHONFAULTHANDLER", "1"),
    ("PYVISOR_ALLOW_EVAL", "0"),
    ("PYVISOR_MAX_REFS", "10000"),
    ("PYVISOR_REF_TTL", "0"),
];

impl Floor {
    /// Starts `python -m pyvisor_worker` with the two protocol pipes (docs/protocol.md).
    fn spawn(env: &Env, slot: usize, preload: &str) -> io::Result<Floor> {
        let (req_r, req_w) = io::pipe()?;
        let (rep_r, rep_w) = io::pipe()?;
        let (child_in, child_out) = (req_r.as_raw_fd(), rep_w.as_raw_fd());
        let mut cmd = Command::new(&env.python);
        cmd.args(["-m", "pyvisor_worker"]);
        for (k, v) in FLOOR_ENV {
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

    fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<()> {
        let mut len = [0u8; 4];
        r.read_exact(&mut len)?;
        buf.resize(u32::from_be_bytes(len) as usize, 0);
        r.read_exact(buf)
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        Floor::read_frame(self.r.as_mut().unwrap(), &mut self.buf)?;
        match wire::split(&self.buf)? {
            (wire::READY, 0, _) => Ok(()),
            (op, ..) => Err(io::Error::other(format!("expected READY, got op {op}"))),
        }
    }

    /// One CALL, lock-step; returns the reply body.
    fn call(&mut self, args: impl FnOnce(&mut Vec<u8>)) -> io::Result<&[u8]> {
        self.next_id += 1;
        wire::call(&mut self.frame, self.next_id, "math", "sqrt", "s", args);
        self.w.as_mut().unwrap().write_all(&self.frame)?;
        Floor::read_frame(self.r.as_mut().unwrap(), &mut self.buf)?;
        let (op, id, body) = wire::split(&self.buf)?;
        if op != wire::OK || id != self.next_id {
            return Err(io::Error::other("unexpected reply"));
        }
        Ok(body)
    }

    fn call_echo(&mut self, args: impl FnOnce(&mut Vec<u8>)) -> io::Result<&[u8]> {
        self.next_id += 1;
        wire::call(
            &mut self.frame,
            self.next_id,
            "pyvisor_bench",
            "echo",
            "s",
            args,
        );
        self.w.as_mut().unwrap().write_all(&self.frame)?;
        Floor::read_frame(self.r.as_mut().unwrap(), &mut self.buf)?;
        let (op, id, body) = wire::split(&self.buf)?;
        if op != wire::OK || id != self.next_id {
            return Err(io::Error::other("unexpected reply"));
        }
        Ok(body)
    }

    fn sqrt(&mut self) -> io::Result<f64> {
        let body = self.call(wire::args_f64(SMALL_ARG))?;
        wire::f64_of(body)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.kill();
    }
}

fn floor_ready(env: &Env, place: &Placement, slot: usize) -> Floor {
    let mut f = Floor::spawn(env, slot, "").unwrap_or_else(|e| die(&format!("floor spawn: {e}")));
    place.pin_worker(f.pid);
    f.wait_ready()
        .unwrap_or_else(|e| die(&format!("floor handshake: {e}")));
    for _ in 0..200 {
        f.sqrt().unwrap();
    }
    place.pin_worker(f.pid); // the I/O thread exists now
    f
}

/// The tokio variant of the floor (non-blocking pipes, one task), small call only.
struct TokioFloor {
    w: tokio::net::unix::pipe::Sender,
    r: tokio::net::unix::pipe::Receiver,
    next_id: u64,
    frame: Vec<u8>,
    buf: Vec<u8>,
}

impl TokioFloor {
    /// Takes over the pipes of a started floor worker (must run inside the tokio runtime).
    fn from(f: &mut Floor) -> TokioFloor {
        let w = OwnedFd::from(f.w.take().unwrap());
        let r = OwnedFd::from(f.r.take().unwrap());
        TokioFloor {
            w: tokio::net::unix::pipe::Sender::from_owned_fd(w).unwrap(),
            r: tokio::net::unix::pipe::Receiver::from_owned_fd(r).unwrap(),
            next_id: 1_000_000,
            frame: Vec::new(),
            buf: Vec::new(),
        }
    }

    async fn sqrt(&mut self) -> io::Result<f64> {
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

// ------------------------------------------------------------------------------------------------
// Statistics and results

#[derive(Clone, Copy, Debug, Default)]
struct Lat {
    p50: f64,
    p99: f64,
    p999: f64,
    mean: f64,
}

impl Lat {
    /// Percentiles in µs of samples in ns.
    fn of(mut ns: Vec<u64>) -> Lat {
        ns.sort_unstable();
        let n = ns.len().max(1);
        let pick = |q: f64| ns[((q * n as f64) as usize).min(n - 1)] as f64 / 1000.0;
        Lat {
            p50: pick(0.50),
            p99: pick(0.99),
            p999: pick(0.999),
            mean: ns.iter().sum::<u64>() as f64 / n as f64 / 1000.0,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Named figures collected over repetitions; each reported figure is the median.
#[derive(Default)]
struct Reps(BTreeMap<String, Vec<f64>>);

impl Reps {
    fn add(&mut self, key: &str, v: f64) {
        self.0.entry(key.to_string()).or_default().push(v);
    }

    fn lat(&mut self, key: &str, l: Lat) {
        self.add(&format!("{key}.p50"), l.p50);
        self.add(&format!("{key}.p99"), l.p99);
        self.add(&format!("{key}.p999"), l.p999);
        self.add(&format!("{key}.mean"), l.mean);
    }

    fn get(&self, key: &str) -> Option<f64> {
        self.0.get(key).map(|v| median(v.clone()))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Better {
    Lower,
    Higher,
}

struct Row {
    workload: String,
    unit: &'static str,
    pyvisor: Option<f64>,
    floor: Option<f64>,
    better: Better,
    baselines: Vec<(String, f64)>,
    note: String,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    extra: BTreeMap<String, f64>,
}

impl Report {
    fn row(
        &mut self,
        workload: impl Into<String>,
        unit: &'static str,
        pyvisor: Option<f64>,
        floor: Option<f64>,
        better: Better,
    ) -> &mut Row {
        self.rows.push(Row {
            workload: workload.into(),
            unit,
            pyvisor,
            floor,
            better,
            baselines: Vec::new(),
            note: String::new(),
        });
        self.rows.last_mut().unwrap()
    }

    fn find(&self, workload: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.workload == workload)
    }

    fn find_mut(&mut self, workload: &str) -> Option<&mut Row> {
        self.rows.iter_mut().find(|r| r.workload == workload)
    }
}

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else if v.abs() >= 10_000.0 {
        let s = format!("{:.0}", v);
        // thousands separators
        let (sign, digits) = s.split_at(if s.starts_with('-') { 1 } else { 0 });
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_opt(v: Option<f64>, unit: &str) -> String {
    match v {
        Some(v) if !v.is_nan() => format!("{} {unit}", fmt_num(v)),
        _ => "—".into(),
    }
}

// ------------------------------------------------------------------------------------------------
// Workloads

fn small(
    env: &Env,
    place: &Placement,
    rt: &tokio::runtime::Runtime,
    sz: &Sizes,
    reps: usize,
    rep: &mut Report,
) {
    eprintln!("[small] {} calls × {reps} reps", sz.small_calls);
    let mut r = Reps::default();
    let n = sz.small_calls;
    let mut floor = floor_ready(env, place, 0);
    let mut tfloor_worker = floor_ready(env, place, 1);
    let tfloor = rt.block_on(async { TokioFloor::from(&mut tfloor_worker) });
    let tfloor = Arc::new(tokio::sync::Mutex::new(tfloor));
    let prt = rt.block_on(async {
        let prt = env.runtime(env.pool("small", 1)).await;
        let s = prt.session("small", "s").unwrap();
        for _ in 0..200 {
            let _: f64 = s.call("math", "sqrt", &(SMALL_ARG,), &()).await.unwrap();
        }
        place.pin_pool(&prt).await;
        prt
    });
    let mut rss_growth = Vec::new();
    for _ in 0..reps {
        // floor (std, blocking), on the main thread
        let mut ns = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let v = floor.sqrt().unwrap();
            ns.push(t.elapsed().as_nanos() as u64);
            debug_assert!((v - SMALL_ARG.sqrt()).abs() < 1e-12);
        }
        r.lat("floor", Lat::of(ns));

        // pyvisor session call, from a spawned task (as an actor program would call it)
        let rss0 = vm_rss_kib();
        let s = prt.session("small", "s").unwrap();
        let ns = rt.block_on(async move {
            tokio::spawn(async move {
                let mut ns = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = Instant::now();
                    let v: f64 = s.call("math", "sqrt", &(SMALL_ARG,), &()).await.unwrap();
                    ns.push(t.elapsed().as_nanos() as u64);
                    debug_assert!((v - SMALL_ARG.sqrt()).abs() < 1e-12);
                }
                ns
            })
            .await
            .unwrap()
        });
        rss_growth.push((vm_rss_kib() - rss0) * 1024.0 / n as f64);
        r.lat("pyvisor", Lat::of(ns));

        // pyvisor rt.call (no session)
        let prt2 = prt.clone();
        let ns = rt.block_on(async move {
            tokio::spawn(async move {
                let mut ns = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = Instant::now();
                    let _: f64 = prt2
                        .call("small", "math", "sqrt", &(SMALL_ARG,), &())
                        .await
                        .unwrap();
                    ns.push(t.elapsed().as_nanos() as u64);
                }
                ns
            })
            .await
            .unwrap()
        });
        r.lat("pyvisor_nosession", Lat::of(ns));

        // floor, tokio variant
        let tf = tfloor.clone();
        let ns = rt.block_on(async move {
            tokio::spawn(async move {
                let mut tf = tf.lock().await;
                let mut ns = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = Instant::now();
                    tf.sqrt().await.unwrap();
                    ns.push(t.elapsed().as_nanos() as u64);
                }
                ns
            })
            .await
            .unwrap()
        });
        r.lat("floor_tokio", Lat::of(ns));
    }
    rt.block_on(prt.shutdown());
    drop(tfloor);
    drop(tfloor_worker);
    drop(floor);

    for (q, label) in [("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")] {
        rep.row(
            format!("small call math.sqrt(2.0), 1 in flight, {label}"),
            "µs",
            r.get(&format!("pyvisor.{q}")),
            r.get(&format!("floor.{q}")),
            Better::Lower,
        );
    }
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

fn throughput(
    env: &Env,
    place: &Placement,
    rt: &tokio::runtime::Runtime,
    sz: &Sizes,
    reps: usize,
    rep: &mut Report,
) {
    for &w in &sz.tput_workers {
        eprintln!(
            "[throughput] {w} worker(s), {} calls × {reps} reps",
            sz.tput_calls
        );
        let mut r = Reps::default();
        let mut floors: Vec<Floor> = (0..w).map(|i| floor_ready(env, place, i)).collect();
        let prt = rt.block_on(async {
            let prt = env.runtime(env.pool("tput", w)).await;
            place.pin_pool(&prt).await;
            prt
        });
        let sessions: Vec<Session> = (0..THROUGHPUT_SESSIONS)
            .map(|i| prt.session("tput", format!("t{i}")).unwrap())
            .collect();
        for _ in 0..reps {
            // floor: one std thread per worker, lock-step
            let per = sz.tput_calls / w;
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
            r.add("floor", (per * w) as f64 / t0.elapsed().as_secs_f64());

            // pyvisor: many sessions, each a task calling in a loop
            let per = sz.tput_calls / THROUGHPUT_SESSIONS;
            let ss = sessions.clone();
            let secs = rt.block_on(async move {
                let t0 = Instant::now();
                let tasks: Vec<_> = ss
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
                t0.elapsed().as_secs_f64()
            });
            r.add("pyvisor", (per * THROUGHPUT_SESSIONS) as f64 / secs);

            if w == 1 {
                // floor, pipelined: PIPELINE_DEPTH requests in flight on one worker
                let f = &mut floors[0];
                let n = sz.tput_calls;
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
                r.add("floor_pipelined", n as f64 / t0.elapsed().as_secs_f64());
                f.w = Some(writer.join().unwrap());
                f.next_id = base + n as u64;
            }
        }
        rt.block_on(prt.shutdown());
        drop(sessions);
        drop(floors);
        let label =
            format!("throughput, {w} worker(s), {THROUGHPUT_SESSIONS} sessions (floor: lock-step)");
        let (p, f) = (r.get("pyvisor"), r.get("floor"));
        rep.row(label, "calls/s", p, f, Better::Higher).note = format!(
            "per worker: pyvisor {} / floor {}",
            fmt_num(p.unwrap_or(f64::NAN) / w as f64),
            fmt_num(f.unwrap_or(f64::NAN) / w as f64)
        );
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

fn bytes_echo(
    env: &Env,
    place: &Placement,
    rt: &tokio::runtime::Runtime,
    sz: &Sizes,
    reps: usize,
    rep: &mut Report,
) {
    eprintln!("[bytes] 1 MiB echo, {} calls × {reps} reps", sz.mib_calls);
    let mut r = Reps::default();
    let data: Vec<u8> = (0..MIB).map(|i| (i * 31 % 251) as u8).collect();
    let mut floor = floor_ready(env, place, 0);
    let prt = rt.block_on(async {
        let prt = env.runtime(env.pool("bytes", 1)).await;
        place.pin_pool(&prt).await;
        prt
    });
    let value = Arc::new(Value::Bytes(data.clone()));
    for _ in 0..reps {
        let mut ns = Vec::new();
        for i in 0..sz.mib_calls + 5 {
            let t = Instant::now();
            let out = wire::bin_of(floor.call_echo(wire::args_bin(&data)).unwrap()).unwrap();
            if i >= 5 {
                ns.push(t.elapsed().as_nanos() as u64);
            }
            assert_eq!(out.len(), MIB);
        }
        r.lat("floor", Lat::of(ns));
        let s = prt.session("bytes", "b").unwrap();
        let v = value.clone();
        let calls = sz.mib_calls;
        let ns = rt.block_on(async move {
            tokio::spawn(async move {
                let mut ns = Vec::new();
                for i in 0..calls + 5 {
                    let t = Instant::now();
                    let out: Value = s.call("pyvisor_bench", "echo", &(&*v,), &()).await.unwrap();
                    if i >= 5 {
                        ns.push(t.elapsed().as_nanos() as u64);
                    }
                    match out {
                        Value::Bytes(b) => assert_eq!(b.len(), MIB),
                        other => panic!("echo returned {other:?}"),
                    }
                }
                ns
            })
            .await
            .unwrap()
        });
        r.lat("pyvisor", Lat::of(ns));
    }
    rt.block_on(prt.shutdown());
    for (q, label) in [("p50", "p50"), ("p99", "p99")] {
        rep.row(
            format!("1 MiB bytes echo, {label}"),
            "µs",
            r.get(&format!("pyvisor.{q}")),
            r.get(&format!("floor.{q}")),
            Better::Lower,
        );
    }
}

fn ndarray(
    env: &Env,
    place: &Placement,
    rt: &tokio::runtime::Runtime,
    sz: &Sizes,
    reps: usize,
    rep: &mut Report,
) {
    eprintln!(
        "[ndarray] 8 MiB float64 round trip, {} calls × {reps} reps",
        sz.nd_calls
    );
    let mut r = Reps::default();
    let values: Vec<f64> = (0..NDARRAY_LEN).map(|i| i as f64 * 0.5).collect();
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut floor = floor_ready(env, place, 0);
    let prt = rt.block_on(async {
        let prt = env.runtime(env.pool("nd", 1).preload("numpy")).await;
        place.pin_pool(&prt).await;
        prt
    });
    let arr = Arc::new(NdArray::from_f64(vec![NDARRAY_LEN], &values));
    // The floor worker imports numpy on the first call; warm it up.
    for _ in 0..3 {
        floor
            .call_echo(wire::args_ndarray(&raw, NDARRAY_LEN))
            .unwrap();
    }
    for _ in 0..reps {
        let mut ns = Vec::new();
        for _ in 0..sz.nd_calls {
            let t = Instant::now();
            let out = wire::ndarray_of(
                floor
                    .call_echo(wire::args_ndarray(&raw, NDARRAY_LEN))
                    .unwrap(),
            )
            .unwrap();
            ns.push(t.elapsed().as_nanos() as u64);
            assert_eq!(out.len(), raw.len());
        }
        r.lat("floor", Lat::of(ns));
        let s = prt.session("nd", "n").unwrap();
        let a = arr.clone();
        let calls = sz.nd_calls;
        let ns = rt.block_on(async move {
            tokio::spawn(async move {
                let mut ns = Vec::new();
                for i in 0..calls + 3 {
                    let t = Instant::now();
                    let out: NdArray = s.call("pyvisor_bench", "echo", &(&*a,), &()).await.unwrap();
                    if i >= 3 {
                        ns.push(t.elapsed().as_nanos() as u64);
                    }
                    assert_eq!((out.dtype.as_str(), out.data.len()), ("<f8", a.data.len()));
                }
                ns
            })
            .await
            .unwrap()
        });
        r.lat("pyvisor", Lat::of(ns));
    }
    rt.block_on(prt.shutdown());
    for (q, label) in [("p50", "p50"), ("p99", "p99")] {
        rep.row(
            format!("8 MiB float64 ndarray round trip, {label}"),
            "µs",
            r.get(&format!("pyvisor.{q}")),
            r.get(&format!("floor.{q}")),
            Better::Lower,
        );
    }
}

/// N workers from spawn to every handshake, light and (optionally) preloading dspy; host memory.
fn start(
    env: &Env,
    place: &Placement,
    rt: &tokio::runtime::Runtime,
    ns: &[usize],
    preload: &str,
    reps: usize,
    rep: &mut Report,
) {
    place.unpin_host();
    let label = if preload.is_empty() { "light" } else { "dspy" };
    for &n in ns {
        eprintln!("[start] {n} {label} workers × {reps} reps");
        let mut r = Reps::default();
        for _ in 0..reps {
            let rss0 = vm_rss_kib();
            let t0 = Instant::now();
            let mut floors: Vec<Floor> = (0..n)
                .map(|i| Floor::spawn(env, i, preload).unwrap())
                .collect();
            for f in floors.iter_mut() {
                f.wait_ready().unwrap();
            }
            r.add("floor", t0.elapsed().as_secs_f64() * 1000.0);
            r.add("floor_rss", (vm_rss_kib() - rss0) / n as f64);
            drop(floors);

            let mut cfg = env
                .pool("start", n)
                .startup_timeout(Duration::from_secs(120));
            if !preload.is_empty() {
                cfg = cfg.preload(preload);
            }
            let (ms, kib) = rt.block_on(async move {
                let rss0 = vm_rss_kib();
                let t0 = Instant::now();
                let prt = env.runtime(cfg).await;
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                let kib = (vm_rss_kib() - rss0) / n as f64;
                prt.shutdown().await;
                (ms, kib)
            });
            r.add("pyvisor", ms);
            r.add("pyvisor_rss", kib);
        }
        rep.row(
            format!("start → all ready, N={n}, {label} worker"),
            "ms",
            r.get("pyvisor"),
            r.get("floor"),
            Better::Lower,
        )
        .note =
            "includes pyvisor's preflight (`python -c 'import msgpack, pyvisor_worker'`)".into();
        if preload.is_empty() && n == *ns.iter().max().unwrap() {
            rep.row(
                format!("host memory per worker (VmRSS delta / N, N={n})"),
                "KiB",
                r.get("pyvisor_rss"),
                r.get("floor_rss"),
                Better::Lower,
            )
            .note = "host process only; the Python processes are not counted".into();
        }
    }
    place.pin_host();
}

#[derive(Clone, Copy, Debug)]
enum Seen {
    Exited,
    Restarted,
}

fn restart(
    env: &Env,
    place: &Placement,
    rt: &tokio::runtime::Runtime,
    sz: &Sizes,
    rep: &mut Report,
) {
    eprintln!("[restart] {} SIGKILLs", sz.kills);
    // floor: kill, reap, spawn, handshake, first call
    let mut floor_ms = Vec::new();
    let mut f = floor_ready(env, place, 0);
    for _ in 0..sz.kills {
        let t0 = Instant::now();
        f.kill();
        let mut nf = Floor::spawn(env, 0, "").unwrap();
        place.pin_worker(nf.pid);
        nf.wait_ready().unwrap();
        nf.sqrt().unwrap();
        floor_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        f = nf;
    }
    drop(f);

    for (backoff, label) in [
        (None, "default backoff (50 ms)"),
        (Some(Duration::from_millis(1)), "backoff_initial 1 ms"),
    ] {
        let mut cfg = env
            .pool("restart", 1)
            .max_restarts(100_000)
            .restart_window(Duration::from_secs(1));
        if let Some(b) = backoff {
            cfg = cfg.backoff_initial(b);
        }
        let kills = sz.kills;
        let (total, exited, restarted) = rt.block_on(async move {
            let prt = env.runtime(cfg).await;
            let seen: Arc<Mutex<Vec<(Instant, Seen)>>> = Arc::default();
            let mut events = prt.events();
            let log = seen.clone();
            let watcher = tokio::spawn(async move {
                while let Some(e) = events.recv().await {
                    let kind = match e {
                        Event::WorkerExited { .. } => Seen::Exited,
                        Event::WorkerRestarted { .. } => Seen::Restarted,
                        _ => continue,
                    };
                    log.lock().unwrap().push((Instant::now(), kind));
                }
            });
            let (mut total, mut exited, mut restarted) = (Vec::new(), Vec::new(), Vec::new());
            for k in 0..kills {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let pid = prt.stats().await[0].workers[0].pid.expect("worker pid");
                place.pin_worker(pid);
                let warm = prt.session("restart", format!("w{k}")).unwrap();
                let _: f64 = warm.call("math", "sqrt", &(SMALL_ARG,), &()).await.unwrap();
                seen.lock().unwrap().clear();
                let t0 = Instant::now();
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                let mut i = 0;
                loop {
                    i += 1;
                    let s = prt.session("restart", format!("k{k}-{i}")).unwrap();
                    if s.call::<f64>("math", "sqrt", &(SMALL_ARG,), &())
                        .await
                        .is_ok()
                    {
                        break;
                    }
                }
                total.push(t0.elapsed().as_secs_f64() * 1000.0);
                for (at, kind) in seen.lock().unwrap().iter() {
                    let ms = at.duration_since(t0).as_secs_f64() * 1000.0;
                    match kind {
                        Seen::Exited => exited.push(ms),
                        Seen::Restarted => restarted.push(ms),
                    }
                }
            }
            prt.shutdown().await;
            watcher.abort();
            (median(total), median(exited), median(restarted))
        });
        rep.row(
            format!("restart after SIGKILL → next call OK (fresh session), {label}"),
            "ms",
            Some(total),
            Some(median(floor_ms.clone())),
            Better::Lower,
        )
        .note = format!(
            "kill → WorkerExited event {} ms, → WorkerRestarted {} ms; floor = kill, reap, spawn, handshake, call",
            fmt_num(exited),
            fmt_num(restarted)
        );
    }
}

fn routing(
    env: &Env,
    place: &Placement,
    rt: &tokio::runtime::Runtime,
    sz: &Sizes,
    rep: &mut Report,
) {
    let mut p50s = Vec::new();
    // The floor has no routing: its small-call p50, measured right before each case (same
    // conditions), is the reference.
    let mut floor = floor_ready(env, place, 0);
    for &n in &sz.routing {
        eprintln!(
            "[routing] {n} live sessions, {} sampled calls",
            sz.routing_sample
        );
        let mut ns = Vec::with_capacity(sz.routing_sample);
        for _ in 0..sz.routing_sample {
            let t = Instant::now();
            floor.sqrt().unwrap();
            ns.push(t.elapsed().as_nanos() as u64);
        }
        let floor_p50 = Some(Lat::of(ns).p50);
        let sample = sz.routing_sample;
        let (bind_rate, lat, per_session) = rt.block_on(async move {
            // One worker, as in the small-call rows: the floor column is comparable.
            let prt = env.runtime(env.pool("route", 1)).await;
            place.pin_pool(&prt).await;
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
                let mut ns = Vec::with_capacity(sample);
                for _ in 0..sample {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let s = &ss2[(x % n as u64) as usize];
                    let t = Instant::now();
                    let _: f64 = s.call("math", "sqrt", &(SMALL_ARG,), &()).await.unwrap();
                    ns.push(t.elapsed().as_nanos() as u64);
                }
                Lat::of(ns)
            })
            .await
            .unwrap();
            prt.shutdown().await;
            drop(ss);
            (bind_rate, lat, per_session)
        });
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

/// Runs examples/python/bench/baselines.py and attaches its figures to the rows.
fn baselines(env: &Env, opts: &Opts, place: &Placement, rep: &mut Report) {
    eprintln!("[baselines] multiprocessing, ProcessPoolExecutor, Ray");
    let mut cmd = Command::new(&env.python);
    cmd.arg(env.bench_dir.join("baselines.py"))
        .args(["--pin", opts.pin.name(), "--reps", &opts.reps.to_string()])
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("PYTHONPATH", &env.bench_dir)
        .stderr(Stdio::inherit());
    if opts.smoke {
        cmd.arg("--smoke");
    }
    let mut only = Vec::new();
    for w in ["start", "dspy", "restart"] {
        if opts.runs(w) || opts.runs("baselines") {
            only.push(w);
        }
    }
    if opts.runs("small") || opts.runs("throughput") || opts.runs("bytes") || opts.runs("baselines")
    {
        only.extend(["pool", "ppe", "ray"]);
    }
    cmd.args(["--only", &only.join(",")]);
    // The script pins itself (after its start-to-ready part): let it start unpinned.
    let all = place.all.clone();
    // SAFETY: sched_setaffinity is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let _ = set_affinity(0, &all);
            Ok(())
        });
    }
    let out = match cmd.output() {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            rep.notes.push(format!("baselines.py failed: {}", o.status));
            return;
        }
        Err(e) => {
            rep.notes.push(format!("baselines.py could not run: {e}"));
            return;
        }
    };
    let mut got: BTreeMap<(String, String), f64> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let parts: Vec<&str> = line.splitn(3, '\t').collect();
        match parts.as_slice() {
            ["note", text] => rep.notes.push(text.to_string()),
            [name, metric, v] => {
                if let Ok(v) = v.parse() {
                    got.insert((name.to_string(), metric.to_string()), v);
                }
            }
            _ => {}
        }
    }
    let names = [
        ("mp_pool_apply", "Pool.apply"),
        ("ppe", "ProcessPoolExecutor"),
        ("ray_actor", "Ray actor"),
    ];
    let attach = |rep: &mut Report, row: &str, metric: &str| {
        if let Some(r) = rep.find_mut(row) {
            for (key, label) in names {
                if let Some(v) = got.get(&(key.to_string(), metric.to_string())) {
                    r.baselines.push((label.to_string(), *v));
                }
            }
        }
    };
    attach(
        rep,
        "small call math.sqrt(2.0), 1 in flight, p50",
        "small_p50_us",
    );
    attach(
        rep,
        "small call math.sqrt(2.0), 1 in flight, p99",
        "small_p99_us",
    );
    attach(
        rep,
        "small call math.sqrt(2.0), 1 in flight, p99.9",
        "small_p999_us",
    );
    attach(
        rep,
        "small call, sequential throughput (1/mean)",
        "small_seq_calls_s",
    );
    attach(rep, "1 MiB bytes echo, p50", "mib_p50_us");
    attach(rep, "1 MiB bytes echo, p99", "mib_p99_us");
    let tput =
        format!("throughput, 2 worker(s), {THROUGHPUT_SESSIONS} sessions (floor: lock-step)");
    attach(rep, &tput, "burst_calls_s");
    attach(
        rep,
        "restart after SIGKILL → next call OK (fresh session), default backoff (50 ms)",
        "restart_ms",
    );
    for n in [2, 8, 32] {
        if let Some(v) = got.get(&("mp_pool_spawn".into(), format!("start_light_{n}_ms"))) {
            if let Some(r) = rep.find_mut(&format!("start → all ready, N={n}, light worker")) {
                r.baselines.push(("Pool(spawn)".into(), *v));
            }
        }
        if let Some(v) = got.get(&("mp_pool_spawn".into(), format!("start_dspy_{n}_ms"))) {
            if let Some(r) = rep.find_mut(&format!("start → all ready, N={n}, dspy worker")) {
                r.baselines.push(("Pool(spawn)+import dspy".into(), *v));
            }
        }
    }
    if let Some(r) = rep.find_mut(&tput) {
        r.note
            .push_str("; baselines: 2 workers, burst of async submits");
    }
}

// ------------------------------------------------------------------------------------------------
// Output

fn markdown(rep: &Report) -> String {
    let mut s = String::new();
    s.push_str("| workload | pyvisor | floor | pyvisor/floor | baselines (value, baseline÷pyvisor for times, pyvisor÷baseline for rates) | notes |\n");
    s.push_str("|---|---|---|---|---|---|\n");
    for r in &rep.rows {
        let ratio = match (r.pyvisor, r.floor) {
            (Some(p), Some(f)) if f > 0.0 && !p.is_nan() && !f.is_nan() => format!("{:.2}×", p / f),
            _ => "—".into(),
        };
        let base = r
            .baselines
            .iter()
            .map(|(name, v)| {
                let adv = match (r.pyvisor, r.better) {
                    (Some(p), Better::Lower) if p > 0.0 => format!(" ({:.1}×)", v / p),
                    (Some(p), Better::Higher) if *v > 0.0 => format!(" ({:.1}×)", p / v),
                    _ => String::new(),
                };
                format!("{name} {}{adv}", fmt_opt(Some(*v), r.unit))
            })
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            r.workload,
            fmt_opt(r.pyvisor, r.unit),
            fmt_opt(r.floor, r.unit),
            ratio,
            if base.is_empty() { "—".into() } else { base },
            r.note
        );
    }
    s
}

fn goals(rep: &Report) -> Vec<(String, Option<bool>, String)> {
    let mut g = Vec::new();
    let ratio = |row: &str| rep.find(row).and_then(|r| Some(r.pyvisor? / r.floor?));
    let base = |row: &str, name: &str| {
        rep.find(row).and_then(|r| {
            let b = r.baselines.iter().find(|(n, _)| n == name)?.1;
            Some(match r.better {
                Better::Lower => b / r.pyvisor?,
                Better::Higher => r.pyvisor? / b,
            })
        })
    };
    let p50 = "small call math.sqrt(2.0), 1 in flight, p50";
    let mut push = |goal: &str, v: Option<f64>, ok: &dyn Fn(f64) -> bool| {
        g.push((
            goal.to_string(),
            v.map(ok),
            v.map_or("not measured".into(), |v| format!("{v:.2}")),
        ));
    };
    push("small call p50 ≤ 1.5× floor", ratio(p50), &|v| v <= 1.5);
    for w in [1, 2, 4] {
        let row =
            format!("throughput, {w} worker(s), {THROUGHPUT_SESSIONS} sessions (floor: lock-step)");
        push(
            &format!("throughput per worker ≥ 0.7× floor ({w} worker(s), lock-step floor)"),
            ratio(&row),
            &|v| v >= 0.7,
        );
    }
    push(
        "throughput ≥ 0.7× floor (1 worker, floor pipelined 16 deep)",
        ratio(&format!("throughput, 1 worker, {THROUGHPUT_SESSIONS} sessions vs floor pipelined {PIPELINE_DEPTH} deep")),
        &|v| v >= 0.7,
    );
    push(
        "small call p50 ≥ 3× faster than Pool.apply",
        base(p50, "Pool.apply"),
        &|v| v >= 3.0,
    );
    push(
        "small call p50 ≥ 10× faster than ProcessPoolExecutor",
        base(p50, "ProcessPoolExecutor"),
        &|v| v >= 10.0,
    );
    push(
        "small call p50 ≥ 50× faster than Ray actor",
        base(p50, "Ray actor"),
        &|v| v >= 50.0,
    );
    push(
        "1 MiB echo p50 ≤ 1.2× floor",
        ratio("1 MiB bytes echo, p50"),
        &|v| v <= 1.2,
    );
    push(
        "8 MiB ndarray p50 vs floor (no per-element encoding: ≈ 1.2× floor is the bar used here)",
        ratio("8 MiB float64 ndarray round trip, p50"),
        &|v| v <= 1.2,
    );
    push(
        "routing flat 10 → 100k sessions (p50 ratio ≤ 1.2)",
        rep.extra.get("routing_flatness").copied(),
        &|v| v <= 1.2,
    );
    g
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v}"),
        _ => "null".into(),
    }
}

fn json(
    rep: &Report,
    meta: &BTreeMap<String, String>,
    goals: &[(String, Option<bool>, String)],
) -> String {
    let mut s = String::from("{\n  \"meta\": {");
    let m: Vec<String> = meta
        .iter()
        .map(|(k, v)| format!("\n    {}: {}", json_str(k), json_str(v)))
        .collect();
    s.push_str(&m.join(","));
    s.push_str("\n  },\n  \"rows\": [");
    let rows: Vec<String> = rep
        .rows
        .iter()
        .map(|r| {
            let b: Vec<String> = r
                .baselines
                .iter()
                .map(|(n, v)| format!("{}: {}", json_str(n), json_num(Some(*v))))
                .collect();
            format!(
                "\n    {{\"workload\": {}, \"unit\": {}, \"pyvisor\": {}, \"floor\": {}, \"ratio\": {}, \"better\": {}, \"baselines\": {{{}}}, \"note\": {}}}",
                json_str(&r.workload),
                json_str(r.unit),
                json_num(r.pyvisor),
                json_num(r.floor),
                json_num(r.pyvisor.zip(r.floor).map(|(p, f)| p / f)),
                json_str(if r.better == Better::Lower { "lower" } else { "higher" }),
                b.join(", "),
                json_str(&r.note)
            )
        })
        .collect();
    s.push_str(&rows.join(","));
    s.push_str("\n  ],\n  \"goals\": [");
    let gs: Vec<String> = goals
        .iter()
        .map(|(goal, ok, v)| {
            format!(
                "\n    {{\"goal\": {}, \"met\": {}, \"value\": {}}}",
                json_str(goal),
                ok.map_or("null".into(), |b| b.to_string()),
                json_str(v)
            )
        })
        .collect();
    s.push_str(&gs.join(","));
    s.push_str("\n  ],\n  \"extra\": {");
    let ex: Vec<String> = rep
        .extra
        .iter()
        .map(|(k, v)| format!("\n    {}: {}", json_str(k), json_num(Some(*v))))
        .collect();
    s.push_str(&ex.join(","));
    s.push_str("\n  },\n  \"notes\": [");
    let ns: Vec<String> = rep
        .notes
        .iter()
        .map(|n| format!("\n    {}", json_str(n)))
        .collect();
    s.push_str(&ns.join(","));
    s.push_str("\n  ]\n}\n");
    s
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn meta(env: &Env, opts: &Opts, place: &Placement) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    let hyp = if cpuinfo.contains(" hypervisor") {
        ", hypervisor"
    } else {
        ""
    };
    m.insert(
        "machine".into(),
        format!("{} × {model}{hyp}", place.all.len()),
    );
    m.insert(
        "kernel".into(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .into(),
    );
    m.insert("date".into(), sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]));
    m.insert("rustc".into(), sh("rustc", &["--version"]));
    let root = env!("CARGO_MANIFEST_DIR");
    let head = sh("git", &["-C", root, "rev-parse", "--short", "HEAD"]);
    let dirty = !sh(
        "git",
        &["-C", root, "status", "--porcelain", "--untracked-files=no"],
    )
    .is_empty();
    m.insert(
        "pyvisor commit".into(),
        format!(
            "{head}{}",
            if dirty { " + uncommitted changes" } else { "" }
        ),
    );
    let malloc: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("MALLOC_") || k.starts_with("GLIBC_TUNABLES"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    m.insert(
        "malloc environment (host and workers)".into(),
        if malloc.is_empty() {
            "glibc defaults".into()
        } else {
            malloc.join(" ")
        },
    );
    if let Some(dir) = &env.override_dir {
        m.insert(
            "worker override (--worker-dir)".into(),
            dir.display().to_string(),
        );
    }
    m.insert(
        "python".into(),
        sh(
            env.python.to_str().unwrap_or("python"),
            &[
                "-c",
                "import sys, importlib.metadata as m\n\
                 def v(p):\n    try: return m.version(p)\n    except Exception: return 'absent'\n\
                 print(sys.version.split()[0], 'msgpack', v('msgpack'), 'numpy', v('numpy'), 'dspy', v('dspy'), 'ray', v('ray'))",
            ],
        ),
    );
    m.insert(
        "placement".into(),
        format!("{} ({})", place.mode.name(), place.note),
    );
    m.insert("host cpus allowed".into(), cpus_allowed(std::process::id()));
    m.insert("reps".into(), opts.reps.to_string());
    m.insert("smoke".into(), opts.smoke.to_string());
    m.insert(
        "load average at start".into(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .into(),
    );
    m.insert(
        "command".into(),
        format!(
            "cargo run --release --example bench -- {}",
            std::env::args().skip(1).collect::<Vec<_>>().join(" ")
        ),
    );
    m
}

/// `--loop`: one small-call loop only, so that `perf stat` / `perf record` see one variant.
fn profile_loop(
    env: &Env,
    place: &Placement,
    rt: &tokio::runtime::Runtime,
    variant: &str,
    n: usize,
) {
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
            rt.block_on(async move {
                tokio::spawn(async move {
                    for _ in 0..n {
                        f.sqrt().await.unwrap();
                    }
                })
                .await
                .unwrap()
            });
        }
        "pyvisor" | "pyvisor-nosession" | "pyvisor-10-sessions" => {
            let prt = rt.block_on(async {
                let prt = env.runtime(env.pool("p", 1)).await;
                place.pin_pool(&prt).await;
                prt
            });
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
            rt.block_on(async move {
                tokio::spawn(async move {
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
                })
                .await
                .unwrap()
            });
        }
        other => die(&format!(
            "--loop floor|floor-tokio|pyvisor|pyvisor-nosession|pyvisor-10-sessions, not {other}"
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

/// (CPU seconds, voluntary, involuntary context switches) of this process, all threads.
fn usage() -> (f64, f64, f64) {
    // SAFETY: getrusage fills the struct.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    (
        tv(ru.ru_utime) + tv(ru.ru_stime),
        ru.ru_nvcsw as f64,
        ru.ru_nivcsw as f64,
    )
}

fn main() {
    let opts = Opts::parse();
    let env = Env::detect(opts.worker_dir.clone());
    let place = Placement::new(opts.pin);
    let sz = Sizes::new(opts.smoke);
    let mut meta = meta(&env, &opts, &place);
    eprintln!("bench: placement {} ({})", place.mode.name(), place.note);
    // Pin before the tokio runtime exists: its threads inherit the mask.
    place.pin_host();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Some((variant, n)) = &opts.profile {
        profile_loop(&env, &place, &rt, variant, *n);
        return;
    }
    let t_all = Instant::now();
    let mut rep = Report::default();

    if opts.runs("start") {
        rep.extra
            .insert("host_rss_kib_before_start".into(), vm_rss_kib());
        start(&env, &place, &rt, &sz.start_ns, "", sz.start_reps, &mut rep);
    }
    if opts.runs("dspy") && !sz.dspy_ns.is_empty() {
        start(
            &env,
            &place,
            &rt,
            &sz.dspy_ns,
            "dspy",
            sz.start_reps.min(2),
            &mut rep,
        );
    }
    if opts.runs("small") {
        rep.extra
            .insert("host_rss_kib_before_small".into(), vm_rss_kib());
        small(&env, &place, &rt, &sz, opts.reps, &mut rep);
    }
    if opts.runs("throughput") {
        rep.extra
            .insert("host_rss_kib_before_throughput".into(), vm_rss_kib());
        throughput(&env, &place, &rt, &sz, opts.reps, &mut rep);
    }
    if opts.runs("bytes") {
        rep.extra
            .insert("host_rss_kib_before_bytes".into(), vm_rss_kib());
        bytes_echo(&env, &place, &rt, &sz, opts.reps, &mut rep);
    }
    if opts.runs("ndarray") {
        rep.extra
            .insert("host_rss_kib_before_ndarray".into(), vm_rss_kib());
        ndarray(&env, &place, &rt, &sz, opts.reps, &mut rep);
    }
    if opts.runs("restart") {
        rep.extra
            .insert("host_rss_kib_before_restart".into(), vm_rss_kib());
        restart(&env, &place, &rt, &sz, &mut rep);
    }
    if opts.runs("routing") {
        rep.extra
            .insert("host_rss_kib_before_routing".into(), vm_rss_kib());
        routing(&env, &place, &rt, &sz, &mut rep);
    }
    if opts.runs("baselines") {
        baselines(&env, &opts, &place, &mut rep);
    }
    let goals = goals(&rep);
    meta.insert(
        "load average at end".into(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .into(),
    );

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## pyvisor benchmark{}\n",
        if opts.smoke {
            " (smoke: numbers mean nothing)"
        } else {
            ""
        }
    );
    for (k, v) in &meta {
        let _ = writeln!(out, "- {k}: {v}");
    }
    let _ = writeln!(out, "- wall time: {:.1} s", t_all.elapsed().as_secs_f64());
    let _ = writeln!(
        out,
        "- every figure is the median of {} repetitions (start: {} / dspy: {})\n",
        opts.reps,
        sz.start_reps,
        sz.start_reps.min(2)
    );
    out.push_str(&markdown(&rep));
    out.push_str("\n### Goals\n\n| goal | value | met |\n|---|---|---|\n");
    for (goal, ok, v) in &goals {
        let _ = writeln!(
            out,
            "| {goal} | {v} | {} |",
            match ok {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            }
        );
    }
    if !rep.extra.is_empty() {
        out.push_str("\n### Extra\n\n");
        for (k, v) in &rep.extra {
            let _ = writeln!(out, "- {k}: {}", fmt_num(*v));
        }
    }
    if !rep.notes.is_empty() {
        out.push_str("\n### Notes\n\n");
        for n in &rep.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    println!("{out}");
    if let Some(path) = &opts.json {
        std::fs::write(path, json(&rep, &meta, &goals))
            .unwrap_or_else(|e| die(&format!("writing {}: {e}", path.display())));
        eprintln!("bench: JSON written to {}", path.display());
    }
    drop(rt);
}
