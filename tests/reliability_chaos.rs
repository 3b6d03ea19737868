//! Chaos under load: three pools (`strict_queue`, `strict_fail_fast` with workers forked from a
//! template, `hint`), 16 clients making
//! calls in sessions (short ones, long ones, ones that raise) with per-call deadlines, while a
//! killer SIGKILLs workers every 100–500 ms — one at a time, two at once, or one that is still
//! starting. Checked on every call and at the end:
//!
//! * every call gets exactly one answer, a result or a typed error, never later than its deadline
//!   plus [`HANG_GUARD`] (the measured overshoot is printed; the guard catches hangs, it is not a
//!   performance claim) — a call without an answer by then is a *lost call*;
//! * no call of a session is answered by an interpreter that does not hold the session's state as
//!   if it did: every session stores a per-incarnation token in Python on its first call
//!   (`chaos_init`) and every later call checks it (`chaos_call` raises `StateLost`); in the hint
//!   pool, half the sessions also push a context first (`holding`), and their calls check it is
//!   around them. A session that holds state — every strict session, and the hint sessions with a
//!   context — must never see `StateLost` (it gets `SessionWorkerUnavailable` instead, then
//!   resets and rebuilds), whatever affinity its calls ask for (strict sessions call with a `Hint`
//!   override now and then, context sessions with `StrictQueue`), and its answers all come from
//!   one pid per incarnation; stateless hint sessions may move and rebuild;
//! * every session with state on a killed worker gets exactly one `SessionWorkerUnavailable`
//!   event: the sessions that `Session::placement` showed holding state on the victim just before
//!   the kill, those whose call died with the worker, those that were told
//!   `SessionWorkerUnavailable`; and never two events for one (session, worker);
//! * after the killer stops, every pool returns to full size and serves again (and surviving
//!   strict sessions still hold their state); each pool's `restarts` equals the kills that hit one
//!   of its live workers and the `WorkerExited` events, which name exactly the killed
//!   (slot, generation)s;
//! * after shutdown, no Python process of the run is left (every pid seen, by pid).
//!
//! Knobs: `PYVISOR_CHAOS_SECS` (default 20; a soak is the same test with a larger value, e.g.
//! `PYVISOR_CHAOS_SECS=600 cargo test --release --test reliability_chaos -- --nocapture`) and
//! `PYVISOR_CHAOS_SEED` (replays the random choices; the seed is printed). The summary line is
//! printed with `--nocapture`.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyvisor::{Affinity, CallOptions, Error, Event, ExitStatus, LossReason, PoolStatus, Runtime};
use pyvisor::{LaunchMode, PoolConfig, Session};
use support::{alive, eventually, pool};
use tokio::time::Instant;

/// How long past its deadline a call may take to be answered before it counts as lost. A hang
/// guard: the measured overshoot is a few milliseconds.
const HANG_GUARD: Duration = Duration::from_secs(2);
/// A strict call whose worker was killed this long before the call's deadline must be answered
/// (`WorkerExited` at once, or `SessionWorkerUnavailable`), not left to time out. The measured
/// time from a kill to the answer of the call it interrupted is printed (`max_told_after_kill`).
const DETECTION_BOUND: Duration = Duration::from_millis(1500);
const CLIENTS: usize = 16;
const SESSIONS_PER_CLIENT: usize = 2;
const FIXTURES: &str = "pyvisor_chaos";

/// The tests of this file run one at a time: each loads the 2-core machine on its own, and the
/// race below only shows with the timing of an otherwise quiet host.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct PoolSpec {
    name: &'static str,
    affinity: Affinity,
    size: usize,
    /// Workers forked from a template (`LaunchMode::Template`) rather than spawned.
    template: bool,
}

const POOLS: [PoolSpec; 3] = [
    PoolSpec {
        name: "chaos_queue",
        affinity: Affinity::StrictQueue,
        size: 3,
        template: false,
    },
    PoolSpec {
        name: "chaos_failfast",
        affinity: Affinity::StrictFailFast,
        size: 2,
        template: true,
    },
    PoolSpec {
        name: "chaos_hint",
        affinity: Affinity::Hint,
        size: 3,
        template: false,
    },
];

fn spec(pool: &str) -> &'static PoolSpec {
    POOLS.iter().find(|p| p.name == pool).expect("a chaos pool")
}

fn pool_config(p: &PoolSpec) -> PoolConfig {
    let launch = if p.template {
        LaunchMode::template([FIXTURES])
    } else {
        LaunchMode::Spawn
    };
    pool(p.name)
        .launch(launch)
        .size(p.size)
        .affinity(p.affinity)
        // The killer is the only source of deaths: never let restart intensity fail a pool.
        .max_restarts(u32::MAX)
        .restart_window(Duration::from_secs(1))
        .backoff_initial(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(200))
        .queue_timeout(Duration::from_secs(1))
        .shutdown_grace(Duration::from_secs(1))
}

fn chaos_secs() -> u64 {
    std::env::var("PYVISOR_CHAOS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// splitmix64: small, seedable, good enough for choosing what to do next.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn fork(&mut self) -> Rng {
        Rng(self.next())
    }
}

/// `(pool, session, slot, generation)`: one session on one worker incarnation.
type SessionOnWorker = (String, String, usize, u64);

/// The name of an outcome, for the summary: `ok`, `Timeout`, `Python(ValueError)`, ...
fn outcome_kind<T>(r: &Result<T, Error>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(Error::Python(p)) => format!("Python({})", p.type_name),
        Err(e) => {
            let debug = format!("{e:?}");
            debug
                .split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or("?")
                .to_string()
        }
    }
}

/// Runs one call with the hang guard; returns its outcome and how long it took, or `None` when it
/// was not answered by its deadline plus [`HANG_GUARD`] (a lost call).
async fn timed<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, Error>>,
) -> Option<(Result<T, Error>, Duration)> {
    let start = Instant::now();
    let outcome = tokio::time::timeout(timeout + HANG_GUARD, call)
        .await
        .ok()?;
    Some((outcome, start.elapsed()))
}

// ----- clients ----------------------------------------------------------------------------

#[derive(Default)]
struct ClientReport {
    calls: u64,
    outcomes: BTreeMap<String, u64>,
    lost: Vec<String>,
    violations: Vec<String>,
    max_overshoot: Duration,
    /// Sessions whose call died with its worker (`WorkerExited`), on which worker, when the
    /// answer came, and whether the session held state there.
    exited_on: Vec<(SessionOnWorker, Instant, bool)>,
    /// Strict calls that timed out: what, the pid holding the session's state, the deadline.
    strict_timeouts: Vec<(String, u32, Instant)>,
    /// Sessions told `SessionWorkerUnavailable`, and which worker they lost.
    unavailable: Vec<SessionOnWorker>,
    /// Strict sessions reset and rebuilt after `SessionWorkerUnavailable`.
    rebuilt: u64,
    /// Hint sessions that found a fresh interpreter (re-placed or moved) and rebuilt.
    hint_fresh: u64,
    pids: BTreeSet<u32>,
    /// The sessions as the client left them.
    sessions: Vec<Tracked>,
}

/// One session as its client sees it.
struct Tracked {
    session: Session,
    /// It holds state on its worker: a strict session, or a hint session with a context.
    holds_state: bool,
    incarnation: u32,
    /// The token is stored on the session's worker (its `chaos_init` returned).
    established: bool,
    /// The pid that answered `chaos_init` of this incarnation.
    pid: Option<u32>,
}

impl Tracked {
    fn token(&self) -> String {
        format!("{}#{}", self.session.id(), self.incarnation)
    }

    fn rebuild(&mut self) {
        self.incarnation += 1;
        self.established = false;
        self.pid = None;
    }
}

impl ClientReport {
    fn record<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        answer: &Option<(Result<T, Error>, Duration)>,
    ) {
        self.calls += 1;
        match answer {
            None => self.lost.push(format!(
                "{what}: no answer within {timeout:?} + {HANG_GUARD:?}"
            )),
            Some((outcome, took)) => {
                *self.outcomes.entry(outcome_kind(outcome)).or_default() += 1;
                self.max_overshoot = self.max_overshoot.max(took.saturating_sub(timeout));
                if matches!(outcome, Err(Error::Timeout { .. })) && *took < timeout {
                    self.violations.push(format!(
                        "{what}: Timeout after {took:?}, before its {timeout:?} deadline"
                    ));
                }
            }
        }
    }

    /// The handling every error gets, whatever the call: returns `true` when it was one of the
    /// typed errors this pool may answer under chaos.
    fn common_error(&mut self, what: &str, t: &mut Tracked, pool: &PoolSpec, e: &Error) -> bool {
        let session = t.session.id().to_string();
        match e {
            Error::SessionWorkerUnavailable { worker, .. } => {
                if !t.holds_state {
                    self.violations.push(format!(
                        "{what}: a stateless hint session must be re-placed, not refused: {e}"
                    ));
                }
                self.unavailable.push((
                    pool.name.to_string(),
                    session,
                    worker.slot,
                    worker.generation,
                ));
                // Acknowledge the loss and rebuild the session's state on its next call.
                t.session.reset().expect("reset");
                t.rebuild();
                self.rebuilt += 1;
                true
            }
            Error::WorkerExited { worker, reason, .. } => {
                let expected = matches!(
                    reason,
                    LossReason::WorkerExited(ExitStatus::Signal(libc::SIGKILL))
                        | LossReason::ActorFailed(_)
                );
                if !expected {
                    self.violations.push(format!(
                        "{what}: only SIGKILLs happen in this test, got {e}"
                    ));
                }
                self.exited_on.push((
                    (
                        pool.name.to_string(),
                        session,
                        worker.slot,
                        worker.generation,
                    ),
                    Instant::now(),
                    t.holds_state,
                ));
                // A session that held state there is now lost (its calls get
                // SessionWorkerUnavailable next); a stateless hint session is re-placed on a
                // fresh interpreter (and finds no token there).
                true
            }
            Error::WorkerBusy { .. } => pool.affinity == Affinity::StrictFailFast,
            Error::Timeout { .. } | Error::QueueTimeout { .. } | Error::PoolSaturated { .. } => {
                true
            }
            _ => false,
        }
    }
}

async fn client(
    idx: usize,
    pool: &'static PoolSpec,
    sessions: Vec<Session>,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
) -> ClientReport {
    let mut report = ClientReport::default();
    let mut tracked: Vec<Tracked> = sessions
        .into_iter()
        .enumerate()
        .map(|(k, session)| Tracked {
            session,
            holds_state: pool.affinity != Affinity::Hint || k % 2 == 1,
            incarnation: 0,
            established: false,
            pid: None,
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        let busy_before = report.outcomes.get("WorkerBusy").copied().unwrap_or(0);
        let t = &mut tracked[rng.below(SESSIONS_PER_CLIENT as u64) as usize];
        let key = t.session.id().to_string();
        let token = t.token();
        let in_context = pool.affinity == Affinity::Hint && t.holds_state;
        if !t.established {
            let timeout = rng.ms(300, 1500);
            let opts = CallOptions::new().timeout(timeout);
            if in_context {
                // The context first: the session holds state from then on.
                let what = format!("client {idx} {key} push_context");
                let args = (&token,);
                let push = t.session.push_context(FIXTURES, "holding", &args, &());
                let answer = timed(Duration::from_secs(60), push).await;
                report.record(&what, Duration::from_secs(60), &answer);
                match answer {
                    Some((Ok(()), _)) => {}
                    Some((Err(e), _)) => {
                        if !report.common_error(&what, t, pool, &e) {
                            report.violations.push(format!("{what}: unexpected {e}"));
                        }
                        continue;
                    }
                    None => continue,
                }
            }
            let what = format!("client {idx} {key} chaos_init");
            let answer = timed(
                timeout,
                t.session
                    .call_with::<u32>(opts, FIXTURES, "chaos_init", &(&key, &token), &()),
            )
            .await;
            report.record(&what, timeout, &answer);
            match answer {
                None => {}
                Some((Ok(pid), _)) => {
                    report.pids.insert(pid);
                    t.established = true;
                    t.pid = Some(pid);
                }
                // A timed-out init may still have run: the next attempt stores the same token.
                Some((Err(e), _)) if !report.common_error(&what, t, pool, &e) => {
                    report.violations.push(format!("{what}: unexpected {e}"));
                }
                Some((Err(_), _)) => {}
            }
        } else {
            let roll = rng.below(100);
            let (action, ms, timeout) = if roll < 70 {
                ("short", 0, rng.ms(300, 3000))
            } else if roll < 85 {
                // Long: sometimes with a deadline shorter than the work (a Timeout, then the
                // worker finishes the call within its overrun grace and serves on).
                let ms = rng.range(50, 200);
                let timeout = Duration::from_millis(ms) + rng.ms(0, 800);
                let timeout = if rng.chance(20) {
                    Duration::from_millis(ms * 2 / 3)
                } else {
                    timeout
                };
                ("long", ms, timeout)
            } else {
                ("raise", 0, rng.ms(300, 1500))
            };
            let mut opts = CallOptions::new().timeout(timeout);
            // Per-call overrides never move a session's state: a strict session's `Hint` call
            // still runs on its worker, a context session's `StrictQueue` call too.
            if t.holds_state && rng.chance(20) {
                opts = opts.affinity(if pool.affinity == Affinity::Hint {
                    Affinity::StrictQueue
                } else {
                    Affinity::Hint
                });
            }
            let what = format!("client {idx} {key} chaos_call({action})");
            let started = Instant::now();
            let answer = timed(
                timeout,
                t.session.call_with::<(u32, String)>(
                    opts,
                    FIXTURES,
                    "chaos_call",
                    &(&key, &token, action, ms, in_context),
                    &(),
                ),
            )
            .await;
            report.record(&what, timeout, &answer);
            match answer {
                None => {}
                Some((Ok((pid, found)), _)) => {
                    report.pids.insert(pid);
                    if action == "raise" {
                        report
                            .violations
                            .push(format!("{what}: returned instead of raising"));
                    }
                    if found != token {
                        report.violations.push(format!(
                            "{what}: answered with token {found}, expected {token}"
                        ));
                    }
                    if t.holds_state && t.pid != Some(pid) {
                        report.violations.push(format!(
                            "{what}: a session with state answered by pid {pid}, its state is \
                             on {:?}",
                            t.pid
                        ));
                    }
                }
                Some((Err(Error::Python(py)), _)) => match py.type_name.as_str() {
                    "ValueError" if action == "raise" => {}
                    "StateLost" if !t.holds_state => {
                        // Stateless hint sessions may move or be re-placed: they rebuild.
                        report.hint_fresh += 1;
                        t.rebuild();
                    }
                    "StateLost" => report.violations.push(format!(
                        "{what}: a session with state was answered by an interpreter without \
                         it, and was never told: {}",
                        py.message
                    )),
                    _ => report
                        .violations
                        .push(format!("{what}: unexpected Python error {py}")),
                },
                Some((Err(e), _)) => {
                    if let (Error::Timeout { .. }, Some(pid)) = (&e, t.pid) {
                        if t.holds_state {
                            report
                                .strict_timeouts
                                .push((what.clone(), pid, started + timeout));
                        }
                    }
                    if !report.common_error(&what, t, pool, &e) {
                        report.violations.push(format!("{what}: unexpected {e}"));
                    }
                }
            }
        }
        // A little think time, so that the run is chaos under load rather than a CPU benchmark;
        // a little more after WorkerBusy, as a fail-fast caller would back off.
        let busy = report.outcomes.get("WorkerBusy").copied().unwrap_or(0);
        let think = if busy > busy_before {
            rng.ms(5, 20)
        } else {
            rng.ms(0, 5)
        };
        tokio::time::sleep(think).await;
    }
    report.sessions = tracked;
    report
}

// ----- the killer -------------------------------------------------------------------------

/// One SIGKILL that hit a live worker process of ours.
#[derive(Debug, Clone)]
struct Kill {
    pool: String,
    slot: usize,
    generation: u64,
    pid: u32,
    /// The victim had not finished its handshake when it was chosen (found in `/proc`).
    starting: bool,
    /// When the signal was sent.
    at: Instant,
}

#[derive(Default)]
struct KillerReport {
    kills: Vec<Kill>,
    doubles: u64,
    /// Strict sessions that `placement` showed on a victim just before its kill.
    expected_unavailable: BTreeSet<SessionOnWorker>,
    /// Every worker pid seen in `/proc`.
    pids: BTreeSet<u32>,
    hunts: u64,
    hunts_missed: u64,
}

/// A worker process of this test found in `/proc`: pid, pool, slot, generation.
struct Proc {
    pid: u32,
    pool: String,
    slot: usize,
    generation: u64,
}

/// The pyvisor workers that are children of this process (from `/proc/<pid>/environ`).
fn worker_processes() -> Vec<Proc> {
    let me = std::process::id();
    let mut out = Vec::new();
    for pid in support::all_pids() {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(me) {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let mut vars = HashMap::new();
        for entry in environ.split(|b| *b == 0) {
            let entry = String::from_utf8_lossy(entry);
            if let Some((k, v)) = entry.split_once('=') {
                if k.starts_with("PYVISOR_") {
                    vars.insert(k.to_string(), v.to_string());
                }
            }
        }
        let (Some(pool), Some(slot), Some(generation)) = (
            vars.get("PYVISOR_POOL"),
            vars.get("PYVISOR_SLOT").and_then(|s| s.parse().ok()),
            vars.get("PYVISOR_GENERATION").and_then(|g| g.parse().ok()),
        ) else {
            continue; // forked but not exec'd yet, or not a worker
        };
        if POOLS.iter().any(|p| p.name == pool) {
            out.push(Proc {
                pid,
                pool: pool.clone(),
                slot,
                generation,
            });
        }
    }
    out
}

/// A worker to kill: (pool, slot, generation, pid).
type Victim = (String, usize, u64, u32);

struct Killer {
    rt: Runtime,
    sessions: HashMap<&'static str, Vec<Session>>,
    signalled: BTreeSet<u32>,
    report: KillerReport,
}

impl Killer {
    /// Ready workers not signalled yet.
    async fn ready_victims(&self) -> Vec<Victim> {
        let mut out = Vec::new();
        for p in self.rt.stats().await {
            for w in &p.workers {
                if let (true, Some(pid)) = (w.ready, w.pid) {
                    if !self.signalled.contains(&pid) {
                        out.push((p.name.clone(), w.slot, w.generation, pid));
                    }
                }
            }
        }
        out
    }

    /// The sessions that `placement` shows holding state on `(pool, slot, generation)`: they
    /// must each get one `SessionWorkerUnavailable` event when that worker is killed (a session
    /// that holds state on a live worker stays bound to it until that worker dies; stateless hint
    /// sessions move: nothing to predict).
    async fn sessions_on(&self, pool: &str, slot: usize, generation: u64) -> Vec<String> {
        let mut on = Vec::new();
        for s in &self.sessions[pool] {
            if let Ok(Some(p)) = s.placement().await {
                let here = (p.worker.slot, p.worker.generation) == (slot, generation);
                if p.lost.is_none() && p.holds_state && here {
                    on.push(s.id().to_string());
                }
            }
        }
        on
    }

    /// SIGKILLs `victim` (pool, slot, generation, pid) and records the kill if it hit a live
    /// process, with the sessions expected to be told.
    fn fire(&mut self, victim: &Victim, on_victim: Vec<String>, starting: bool) {
        let (pool, slot, generation, pid) = victim.clone();
        if !self.signalled.insert(pid) {
            return;
        }
        // SAFETY: kill has no memory-safety preconditions; `pid` is a child of this process that
        // has not been signalled before (so it cannot have been reaped and reused).
        let rc = unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let at = Instant::now();
        if rc != 0 {
            return; // already gone: not a kill that hit a live worker
        }
        for session in on_victim {
            self.report
                .expected_unavailable
                .insert((pool.clone(), session, slot, generation));
        }
        self.report.kills.push(Kill {
            pool,
            slot,
            generation,
            pid,
            starting,
            at,
        });
    }

    async fn kill(&mut self, victim: &Victim, starting: bool) {
        let on = self.sessions_on(&victim.0, victim.1, victim.2).await;
        self.fire(victim, on, starting);
    }

    /// Waits (bounded) for the replacement `(pool, slot, generation)` to be forked and exec'd,
    /// and kills it before or just after its handshake.
    async fn hunt(&mut self, pool: &str, slot: usize, generation: u64) {
        self.report.hunts += 1;
        let end = Instant::now() + Duration::from_secs(1);
        while Instant::now() < end {
            let procs = worker_processes();
            for p in &procs {
                self.report.pids.insert(p.pid);
            }
            if let Some(p) = procs
                .iter()
                .find(|p| p.pool == pool && p.slot == slot && p.generation == generation)
            {
                let victim = (pool.to_string(), slot, generation, p.pid);
                self.kill(&victim, true).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.report.hunts_missed += 1;
    }

    async fn run(mut self, stop: Arc<AtomicBool>, mut rng: Rng) -> KillerReport {
        while !stop.load(Ordering::Relaxed) {
            // Fault injection timing, not synchronisation.
            tokio::time::sleep(rng.ms(100, 500)).await;
            if stop.load(Ordering::Relaxed) {
                break;
            }
            for p in worker_processes() {
                self.report.pids.insert(p.pid);
            }
            let mut victims = self.ready_victims().await;
            if victims.is_empty() {
                continue;
            }
            let roll = rng.below(100);
            let first = victims.swap_remove(rng.below(victims.len() as u64) as usize);
            if roll < 15 && !victims.is_empty() {
                // Two at once: both signals back to back, after both snapshots.
                let second = victims.swap_remove(rng.below(victims.len() as u64) as usize);
                let on_first = self.sessions_on(&first.0, first.1, first.2).await;
                let on_second = self.sessions_on(&second.0, second.1, second.2).await;
                self.fire(&first, on_first, false);
                self.fire(&second, on_second, false);
                self.report.doubles += 1;
            } else {
                self.kill(&first, false).await;
                if roll < 40 {
                    // And its replacement while it is starting.
                    self.hunt(&first.0, first.1, first.2 + 1).await;
                }
            }
        }
        self.report
    }
}

// ----- the test ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_under_load_keeps_every_guarantee() {
    let _serial = SERIAL.lock().await;
    let secs = chaos_secs();
    let seed = std::env::var("PYVISOR_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("chaos: {secs} s, seed {seed} (PYVISOR_CHAOS_SEED={seed} replays the choices)");
    let mut rng = Rng(seed);

    let rt = support::runtime(POOLS.iter().map(pool_config).collect()).await;
    let mut events = rt.events();
    let mut all_pids: BTreeSet<u32> = BTreeSet::new();
    for p in rt.stats().await {
        all_pids.extend(p.workers.iter().filter_map(|w| w.pid));
    }

    // 16 clients over the three pools, two sessions each.
    let mut by_pool: HashMap<&'static str, Vec<Session>> = HashMap::new();
    let mut assignments = Vec::new();
    for c in 0..CLIENTS {
        let p = &POOLS[c % POOLS.len()];
        let sessions: Vec<Session> = (0..SESSIONS_PER_CLIENT)
            .map(|k| rt.session(p.name, format!("c{c}s{k}")).unwrap())
            .collect();
        by_pool
            .entry(p.name)
            .or_default()
            .extend(sessions.iter().cloned());
        assignments.push((c, p, sessions));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = assignments
        .into_iter()
        .map(|(c, p, sessions)| tokio::spawn(client(c, p, sessions, stop.clone(), rng.fork())))
        .collect();
    let killer = Killer {
        rt: rt.clone(),
        sessions: by_pool.clone(),
        signalled: BTreeSet::new(),
        report: KillerReport::default(),
    };
    let killer = tokio::spawn(killer.run(stop.clone(), rng.fork()));

    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let killed = killer.await.expect("the killer task");
    let mut reports = Vec::new();
    for c in clients {
        reports.push(c.await.expect("a client task (no panic)"));
    }

    // Every pool returns to full size: each killed worker's slot has moved past it, and every
    // slot is ready.
    let stats = eventually("every pool back to full size", || async {
        let stats = rt.stats().await;
        let moved_on = killed.kills.iter().all(|k| {
            stats
                .iter()
                .any(|p| p.name == k.pool && p.workers[k.slot].generation > k.generation)
        });
        let full = stats.iter().all(|p| {
            p.status == PoolStatus::Running
                && p.workers.len() == spec(&p.name).size
                && p.workers.iter().all(|w| w.ready && w.pid.is_some())
        });
        (moved_on && full).then_some(stats)
    })
    .await;
    for p in &stats {
        all_pids.extend(p.workers.iter().filter_map(|w| w.pid));
    }

    // Every event up to here (they are sent as the pool acts, before the stats above).
    let mut seen = Vec::new();
    while let Some(e) = events.try_recv() {
        seen.push(e);
    }

    let mut violations: Vec<String> = Vec::new();
    let mut lost_calls: Vec<String> = Vec::new();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let (mut calls, mut rebuilt, mut hint_fresh) = (0, 0, 0);
    let mut max_overshoot = Duration::ZERO;
    let mut exited_on = Vec::new();
    let mut strict_timeouts = Vec::new();
    let mut unavailable = BTreeSet::new();
    let mut final_sessions = Vec::new();
    for r in reports {
        calls += r.calls;
        rebuilt += r.rebuilt;
        hint_fresh += r.hint_fresh;
        max_overshoot = max_overshoot.max(r.max_overshoot);
        for (k, n) in r.outcomes {
            *outcomes.entry(k).or_default() += n;
        }
        violations.extend(r.violations);
        lost_calls.extend(r.lost);
        exited_on.extend(r.exited_on);
        strict_timeouts.extend(r.strict_timeouts);
        unavailable.extend(r.unavailable);
        all_pids.extend(r.pids);
        final_sessions.extend(r.sessions);
    }
    all_pids.extend(killed.pids.iter().copied());
    all_pids.extend(killed.kills.iter().map(|k| k.pid));

    // WorkerExited events name exactly the workers we killed, by (pool, slot, generation), with
    // the pid when it had finished its handshake, and SIGKILL as the reason.
    let kills: BTreeMap<(String, usize, u64), &Kill> = killed
        .kills
        .iter()
        .map(|k| ((k.pool.clone(), k.slot, k.generation), k))
        .collect();
    let mut exited: BTreeMap<(String, usize, u64), usize> = BTreeMap::new();
    let mut exited_before_handshake = 0;
    let mut unavailable_events: BTreeMap<SessionOnWorker, usize> = BTreeMap::new();
    for (i, e) in seen.iter().enumerate() {
        match e {
            Event::WorkerExited {
                worker,
                pid,
                reason,
                ..
            } => {
                let key = (worker.pool.clone(), worker.slot, worker.generation);
                *exited.entry(key.clone()).or_default() += 1;
                match kills.get(&key) {
                    None => violations.push(format!("{worker} exited but was never killed: {e:?}")),
                    Some(k) => {
                        if pid.is_some_and(|p| p != k.pid) {
                            violations.push(format!(
                                "{worker}: killed pid {}, event says {pid:?}",
                                k.pid
                            ));
                        }
                    }
                }
                if pid.is_none() {
                    exited_before_handshake += 1;
                }
                if *reason != LossReason::WorkerExited(ExitStatus::Signal(libc::SIGKILL)) {
                    violations.push(format!(
                        "{worker} exited for another reason than our SIGKILL: {reason}"
                    ));
                }
            }
            Event::WorkerStarted { pid, .. } | Event::WorkerRestarted { pid, .. } => {
                all_pids.insert(*pid);
            }
            Event::SessionWorkerUnavailable {
                pool,
                session,
                slot,
                generation,
                ..
            } => {
                let key = (pool.clone(), session.clone(), *slot, *generation);
                *unavailable_events.entry(key).or_default() += 1;
                // It follows the WorkerExited of its worker.
                let preceded = seen[..i].iter().any(|x| {
                    matches!(x, Event::WorkerExited { worker, .. }
                        if worker.pool == *pool && worker.slot == *slot && worker.generation == *generation)
                });
                if !preceded {
                    violations.push(format!("{e:?} came before its worker's WorkerExited"));
                }
            }
            Event::PoolFailed { .. } | Event::PoolSaturated { .. } => {
                violations.push(format!("unexpected event {e:?}"));
            }
            _ => {}
        }
    }
    for (key, n) in &exited {
        if *n != 1 {
            violations.push(format!("{key:?}: {n} WorkerExited events"));
        }
    }
    for key in kills.keys() {
        if !exited.contains_key(key) {
            violations.push(format!("killed {key:?} but no WorkerExited event"));
        }
    }
    // Exactly one SessionWorkerUnavailable per (session, worker) ...
    for (key, n) in &unavailable_events {
        if *n != 1 {
            violations.push(format!("{key:?}: {n} SessionWorkerUnavailable events"));
        }
    }
    // ... for every session that was on a killed worker.
    let expected: BTreeSet<&SessionOnWorker> = killed
        .expected_unavailable
        .iter()
        .chain(
            exited_on
                .iter()
                .filter(|(_, _, held)| *held)
                .map(|(k, _, _)| k),
        )
        .chain(unavailable.iter())
        .collect();
    for key in &expected {
        if !unavailable_events.contains_key(*key) {
            violations.push(format!("no SessionWorkerUnavailable event for {key:?}"));
        }
    }

    // A call interrupted by a kill is told at once; a strict call is never left to time out when
    // its worker died well before its deadline.
    let mut max_told_after_kill = Duration::ZERO;
    for ((pool, _, slot, generation), answered, _) in &exited_on {
        if let Some(k) = kills.get(&(pool.clone(), *slot, *generation)) {
            max_told_after_kill = max_told_after_kill.max(answered.saturating_duration_since(k.at));
        }
    }
    let kill_of_pid: HashMap<u32, &Kill> = killed.kills.iter().map(|k| (k.pid, k)).collect();
    for (what, pid, deadline) in &strict_timeouts {
        if let Some(k) = kill_of_pid.get(pid) {
            if k.at + DETECTION_BOUND < *deadline {
                violations.push(format!(
                    "{what}: timed out although its worker (pid {pid}) was killed {:?} before \
                     the deadline",
                    deadline.duration_since(k.at)
                ));
            }
        }
    }

    // Restarts agree with the kills and the events, pool by pool.
    for p in &stats {
        let kills_here = killed.kills.iter().filter(|k| k.pool == p.name).count() as u64;
        let exits_here = exited.keys().filter(|k| k.0 == p.name).count() as u64;
        if p.restarts != kills_here || exits_here != kills_here {
            violations.push(format!(
                "pool {}: {} restarts, {kills_here} kills, {exits_here} WorkerExited events",
                p.name, p.restarts
            ));
        }
    }

    // Every pool serves again; strict sessions either kept their state or are told it is gone.
    // (Queue rather than fail fast: a dropped session's release may briefly occupy a worker.)
    let generous = CallOptions::new()
        .timeout(Duration::from_secs(20))
        .affinity(Affinity::StrictQueue);
    let (mut kept_state, mut told_lost) = (0, 0);
    for p in &POOLS {
        let fresh = rt.session(p.name, format!("after-{}", p.name)).unwrap();
        let token = format!("{}#0", fresh.id());
        let init = fresh
            .call_with::<u32>(generous, FIXTURES, "chaos_init", &(fresh.id(), &token), &())
            .await;
        let call = fresh
            .call_with::<(u32, String)>(
                generous,
                FIXTURES,
                "chaos_call",
                &(fresh.id(), &token, "short", 0),
                &(),
            )
            .await;
        if init.is_err() || call.is_err() {
            violations.push(format!(
                "pool {} does not serve after the chaos: {init:?} {call:?}",
                p.name
            ));
        }
    }
    for t in final_sessions
        .iter()
        .filter(|t| t.established && t.holds_state)
    {
        let in_context = spec(t.session.pool()).affinity == Affinity::Hint;
        let placement = t.session.placement().await.expect("placement");
        let lost = placement.as_ref().is_some_and(|pl| pl.lost.is_some());
        let answer = t
            .session
            .call_with::<(u32, String)>(
                generous,
                FIXTURES,
                "chaos_call",
                &(t.session.id(), t.token(), "short", 0, in_context),
                &(),
            )
            .await;
        match answer {
            Ok((pid, _)) if !lost && Some(pid) == t.pid => kept_state += 1,
            Err(Error::SessionWorkerUnavailable { .. }) if lost => told_lost += 1,
            other => violations.push(format!(
                "session with state {} (placement {placement:?}) after the chaos: {other:?}",
                t.session.id()
            )),
        }
    }

    rt.shutdown().await;
    let left: Vec<u32> = all_pids.iter().copied().filter(|p| alive(*p)).collect();
    if !left.is_empty() {
        violations.push(format!("Python processes left after shutdown: {left:?}"));
    }
    let stray = worker_processes();
    if !stray.is_empty() {
        violations.push(format!(
            "worker processes still children of the host after shutdown: {:?}",
            stray.iter().map(|p| p.pid).collect::<Vec<_>>()
        ));
    }

    let errors: BTreeMap<&String, &u64> = outcomes.iter().filter(|(k, _)| *k != "ok").collect();
    let starting = killed.kills.iter().filter(|k| k.starting).count();
    println!(
        "chaos summary: secs={secs} seed={seed} calls={calls} ok={} errors={errors:?} \
         kills={} (double={}, hunted-while-starting={starting}, exited-before-handshake={exited_before_handshake}, \
         hunts-missed={}) restarts={} swu_events={} rebuilt_strict_sessions={rebuilt} \
         hint_fresh={hint_fresh} stateful_sessions_kept_state={kept_state} stateful_sessions_told_lost={told_lost} lost_calls={} \
         max_overshoot={max_overshoot:?} max_told_after_kill={max_told_after_kill:?} pids={} violations={}",
        outcomes.get("ok").copied().unwrap_or(0),
        killed.kills.len(),
        killed.doubles,
        killed.hunts_missed,
        stats.iter().map(|p| p.restarts).sum::<u64>(),
        unavailable_events.len(),
        lost_calls.len(),
        all_pids.len(),
        violations.len(),
    );

    assert!(
        lost_calls.is_empty(),
        "lost calls:\n{}",
        lost_calls.join("\n")
    );
    assert!(
        violations.is_empty(),
        "violations:\n{}",
        violations.join("\n")
    );
    assert!(
        max_overshoot < HANG_GUARD,
        "an answer came {max_overshoot:?} after its deadline"
    );
    assert!(!killed.kills.is_empty(), "the killer never hit a worker");
}

/// A call the pool dispatches to a worker whose process has just died must be told
/// `WorkerExited` (as in docs/architecture.md), not `ShuttingDown`: the pool is not shutting down.
/// Found by the chaos test (1 call in ~14 000, ~100 kills); this narrows it to one worker hammered
/// by sessionless calls while it is SIGKILLed over and over. The race is narrow (a few wrong
/// answers per 100 kills on a quiet machine), so the test stops at the first wrong answer and
/// otherwise makes `PYVISOR_RACE_KILLS` kills (default 200).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_sent_to_a_dying_worker_is_told_worker_exited_not_shutting_down() {
    let _serial = SERIAL.lock().await;
    let rounds: usize = std::env::var("PYVISOR_RACE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rt = support::runtime(vec![pool("race")
        .size(1)
        .max_restarts(u32::MAX)
        .backoff_initial(Duration::from_millis(5))
        .backoff_max(Duration::from_millis(20))])
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let wrong = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let callers: Vec<_> = (0..3)
        .map(|_| {
            let (rt, stop, wrong) = (rt.clone(), stop.clone(), wrong.clone());
            tokio::spawn(async move {
                let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let r = rt.call::<u32>("race", "os", "getpid", &(), &()).await;
                    *outcomes.entry(outcome_kind(&r)).or_default() += 1;
                    if let Err(e @ (Error::ShuttingDown { .. } | Error::Internal(_))) = r {
                        wrong.lock().unwrap().push(e.to_string());
                    }
                }
                outcomes
            })
        })
        .collect();
    let mut killed = BTreeSet::new();
    while killed.len() < rounds && wrong.lock().unwrap().is_empty() {
        let pid = eventually("the worker to be ready", || async {
            let stats = rt.stats().await;
            let w = &stats[0].workers[0];
            w.pid.filter(|p| w.ready && !killed.contains(p))
        })
        .await;
        killed.insert(pid);
        support::signal(pid, libc::SIGKILL);
    }
    stop.store(true, Ordering::Relaxed);
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for c in callers {
        for (k, n) in c.await.unwrap() {
            *outcomes.entry(k).or_default() += n;
        }
    }
    println!("race: {} kills, outcomes {outcomes:?}", killed.len());
    rt.shutdown().await;
    let wrong = wrong.lock().unwrap();
    assert!(
        wrong.is_empty(),
        "{} call(s) sent to a dying worker got a wrong error (the pool was running): {:?}",
        wrong.len(),
        *wrong
    );
}
