//! The flagship demo's steps, shared by the example binary and `tests/flagship_demo.rs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pyvisor::dspy::{Dspy, Example, Lm, Module};
use pyvisor::{Affinity, Error, Event, LaunchMode, PoolConfig, Ref, Runtime, Session, Value};

pub struct Options {
    /// Kill the insights worker mid-way and rehydrate.
    pub fault: bool,
    /// Print nothing (tests).
    pub quiet: bool,
}

const TRIAGE: &str = "ticket -> category, urgency, action";
const INSIGHTS: &str = "ticket -> summary, root_cause";

pub struct Ticket {
    pub id: &'static str,
    pub text: &'static str,
    pub category: &'static str,
    pub urgency: &'static str,
}

pub const TICKETS: [Ticket; 5] = [
    Ticket {
        id: "INC-001",
        text: "Checkout fails with a 500 error for EU users after last deploy.",
        category: "outage",
        urgency: "high",
    },
    Ticket {
        id: "INC-002",
        text: "Refund still not received after 10 business days.",
        category: "billing",
        urgency: "medium",
    },
    Ticket {
        id: "INC-003",
        text: "Requesting a bulk export feature for analytics dashboards.",
        category: "feature",
        urgency: "low",
    },
    Ticket {
        id: "INC-004",
        text: "Admin login locked after SSO update; multiple users blocked.",
        category: "account",
        urgency: "high",
    },
    Ticket {
        id: "INC-005",
        text: "CSV export shows incorrect timezone offsets in reports.",
        category: "bug",
        urgency: "medium",
    },
];

pub const HOLDOUT: Ticket = Ticket {
    id: "HOLDOUT-01",
    text: "Customer cannot update billing address in the portal.",
    category: "billing",
    urgency: "medium",
};

/// GEPA's metric, defined from Rust through `exec`. It imports what it uses itself (the
/// original's exec'd namespace lacked `np` and `dspy`, so every call raised NameError).
const METRIC: &str = r#"
import dspy
import numpy as np

def _norm(value):
    return str(value or "").strip().lower()

def metric(gold, pred, trace=None, pred_name=None, pred_trace=None):
    gc, pc = _norm(getattr(gold, "category", "")), _norm(getattr(pred, "category", ""))
    gu, pu = _norm(getattr(gold, "urgency", "")), _norm(getattr(pred, "urgency", ""))
    score = float(np.mean([1.0 if gc == pc else 0.0, 1.0 if gu == pu else 0.0]))
    feedback = []
    if gc != pc:
        feedback.append(f"Category mismatch: expected '{gc}' got '{pc}'.")
    if gu != pu:
        feedback.append(f"Urgency mismatch: expected '{gu}' got '{pu}'.")
    return dspy.Prediction(score=score, feedback=" ".join(feedback) or "Perfect match. Keep the intent and be concise.")
"#;

#[derive(Debug, Clone)]
pub struct Triaged {
    pub id: &'static str,
    pub session: String,
    pub category: String,
    pub urgency: String,
    pub action: String,
    pub score: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Fault {
    pub pid: u32,
    pub event: Option<Event>,
    pub error: Option<String>,
    pub rebuilt_session: String,
    pub retry_ok: bool,
}

#[derive(Debug, Clone, Default)]
pub struct HistoryShown {
    pub pool: String,
    pub session: String,
    pub entries: usize,
    pub response_types: Vec<String>,
    pub data_fields: bool,
}

#[derive(Debug, Default)]
pub struct Report {
    pub triage: Vec<Triaged>,
    pub triage_pids: Vec<u32>,
    pub triage_overlapped: bool,
    pub fault: Option<Fault>,
    pub insights: Vec<(String, String, String)>,
    pub numpy_version: String,
    pub mean: f64,
    pub std: f64,
    pub p80: f64,
    pub metric_check: (f64, String),
    pub instruction_before: String,
    pub instruction_after: String,
    pub reflection_calls: usize,
    pub gepa_scores: Vec<f64>,
    pub baseline: (String, String),
    pub optimized: (String, String),
    pub history: Vec<HistoryShown>,
    pub restarts: u64,
    pub timings: Vec<(&'static str, Duration)>,
    pub fault_wanted: bool,
}

impl Report {
    /// What did not happen as it should.
    pub fn problems(&self) -> Vec<&'static str> {
        let mut p = Vec::new();
        if self.triage.len() != TICKETS.len() {
            p.push("not every ticket was triaged");
        }
        if self.fault_wanted
            && !self
                .fault
                .as_ref()
                .is_some_and(|f| f.retry_ok && f.event.is_some())
        {
            p.push("the fault was not followed by an event, a rebuild and a successful retry");
        }
        if self.metric_check.0 != 1.0 {
            p.push("the metric did not score a perfect pair 1.0");
        }
        if self.reflection_calls == 0 {
            p.push("GEPA made no reflection call");
        }
        if self
            .history
            .iter()
            .any(|h| h.entries == 0 || !h.data_fields)
        {
            p.push("an LM history was empty or not data");
        }
        p
    }

    pub fn is_complete(&self) -> bool {
        self.problems().is_empty()
    }
}

struct Out {
    quiet: bool,
}

impl Out {
    fn say(&self, line: impl AsRef<str>) {
        if !self.quiet {
            println!("{}", line.as_ref());
        }
    }
    fn step(&self, title: &str) {
        self.say(format!("\n==> {title}"));
    }
}

fn demo_python_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/python")
}

/// Whether the LM is the simulated one (no provider selected): then LiteLLM is kept offline too.
fn offline() -> bool {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match var("DEMO_LM").as_deref() {
        Some("offline") => true,
        None | Some("auto") => [
            "DEMO_MODEL",
            "GEMINI_API_KEY",
            "GOOGLE_API_KEY",
            "OPENAI_API_KEY",
        ]
        .iter()
        .all(|k| var(k).is_none()),
        Some(_) => false,
    }
}

fn dspy_pool(name: &str, cache: &str) -> PoolConfig {
    let pool = PoolConfig::new(name)
        .size(2)
        .affinity(Affinity::StrictQueue)
        .python_path(demo_python_dir())
        // One template per pool imports dspy once; workers (and their restarts after a crash)
        // are forked from it in milliseconds instead of importing dspy for seconds each.
        .launch(LaunchMode::template(["dspy", "pyvisor_demo"]))
        .allow_modules(["dspy", "pyvisor_demo", "builtins"])
        .allow_eval(true)
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("DSPY_CACHEDIR", cache)
        .call_timeout(Duration::from_secs(600))
        .startup_timeout(Duration::from_secs(120));
    if offline() {
        pool.env("LITELLM_OFFLINE_MODE", "true")
    } else {
        pool
    }
}

fn label(v: &Value) -> String {
    match v {
        Value::Str(s) => s.trim().to_lowercase(),
        other => format!("{other:?}"),
    }
}

struct Built {
    session: Session,
    lm: Lm,
    module: Module,
}

async fn build(
    rt: &Runtime,
    pool: &str,
    id: &str,
    temperature: f64,
    cot: bool,
) -> Result<Built, Error> {
    let session = rt.session(pool, id)?;
    let dspy = Dspy::new(&session);
    let lm = dspy
        .lm_from(
            "pyvisor_demo",
            "make_lm",
            &HashMap::from([("temperature", temperature)]),
        )
        .await?;
    dspy.use_lm(&lm).await?;
    let module = if cot {
        dspy.chain_of_thought(INSIGHTS).await?
    } else {
        dspy.predict(TRIAGE).await?
    };
    Ok(Built {
        session,
        lm,
        module,
    })
}

async fn route(out: &Out, s: &Session) -> Result<Option<u32>, Error> {
    let p = s.placement().await?;
    match &p {
        Some(p) => out.say(format!(
            "  {:<12} -> {:<15} slot {} gen {} pid {}",
            s.id(),
            s.pool(),
            p.worker.slot,
            p.worker.generation,
            p.pid.map_or("-".into(), |x| x.to_string())
        )),
        None => out.say(format!(
            "  {:<12} -> {:<15} (no call yet)",
            s.id(),
            s.pool()
        )),
    }
    Ok(p.and_then(|p| p.pid))
}

async fn triage(s: &Session, predictor: &Module, ticket: &Ticket) -> Result<Triaged, Error> {
    let dspy = Dspy::new(s);
    let p = dspy
        .forward(predictor, &HashMap::from([("ticket", ticket.text)]))
        .await?;
    let category = label(&dspy.field::<Value>(&p, "category").await?);
    let urgency = label(&dspy.field::<Value>(&p, "urgency").await?);
    let action: Value = dspy.field(&p, "action").await?;
    let score = 0.5 * f64::from(u8::from(category == ticket.category))
        + 0.5 * f64::from(u8::from(urgency == ticket.urgency));
    Ok(Triaged {
        id: ticket.id,
        session: s.id().to_string(),
        category,
        urgency,
        action: action.as_str().unwrap_or_default().to_string(),
        score,
    })
}

/// Runs every step and reports what happened.
///
/// # Errors
///
/// Any pyvisor error that the demo does not handle itself.
pub async fn run(opts: Options) -> Result<Report, Error> {
    let out = Out { quiet: opts.quiet };
    let started = Instant::now();
    let mut report = Report {
        fault_wanted: opts.fault,
        ..Report::default()
    };
    let cache =
        std::env::temp_dir().join(format!("pyvisor-demo-dspy-cache-{}", std::process::id()));
    let cache = cache.to_string_lossy().into_owned();

    out.say("pyvisor flagship demo: multi-pool DSPy + GEPA + numpy analytics");
    out.say("================================================================");
    out.say("Strict affinity for stateful DSPy sessions, a hint pool for stateless numpy.");
    let rt = Runtime::builder()
        .pool(dspy_pool("triage_pool", &cache))
        .pool(dspy_pool("optimizer_pool", &cache))
        .pool(
            PoolConfig::new("analytics_pool")
                .size(2)
                .affinity(Affinity::Hint)
                .preload("numpy")
                .allow_modules(["numpy"]),
        )
        .start()
        .await?;
    let mut events = rt.events();
    rt.wait_ready().await?;
    out.say("\nPools:");
    for p in rt.stats().await {
        let pids: Vec<String> = p
            .workers
            .iter()
            .map(|w| w.pid.map_or("-".into(), |x| x.to_string()))
            .collect();
        out.say(format!(
            "  {:<15} size={} pids=[{}]",
            p.name,
            p.workers.len(),
            pids.join(", ")
        ));
    }
    out.say("  triage_pool/optimizer_pool: strict_queue, analytics_pool: hint");
    report.timings.push(("start pools", started.elapsed()));

    // Step 1
    let t = Instant::now();
    out.step("Step 1: build DSPy modules across pools");
    let t1 = build(&rt, "triage_pool", "triage_1", 0.2, false).await?;
    let t2 = build(&rt, "triage_pool", "triage_2", 0.2, false).await?;
    let mut insights = build(&rt, "optimizer_pool", "insights", 0.6, true).await?;
    let gepa = build(&rt, "optimizer_pool", "gepa", 0.2, false).await?;
    let analytics = rt.session("analytics_pool", "analytics")?;
    let lm_name: String = t1
        .session
        .call("pyvisor_demo", "describe_lm", &(&t1.lm.0,), &())
        .await?;
    out.say(format!("  LM: {lm_name}"));
    out.say(format!("  predictor ref: {}", t1.module.0));
    out.say("Routing (session -> pool, worker slot, generation, pid):");
    for s in [
        &t1.session,
        &t2.session,
        &insights.session,
        &gepa.session,
        &analytics,
    ] {
        if let Some(pid) = route(&out, s).await? {
            if s.pool() == "triage_pool" {
                report.triage_pids.push(pid);
            }
        }
    }
    report.timings.push(("build modules", t.elapsed()));

    // Step 2
    let t = Instant::now();
    out.step("Step 2: triage predictions in parallel across two sessions");
    let run_session = |b: &Built, picks: Vec<&'static Ticket>| {
        let (s, m) = (b.session.clone(), b.module.clone());
        let quiet = opts.quiet;
        async move {
            let begin = Instant::now();
            let mut done = Vec::new();
            for ticket in picks {
                let r = triage(&s, &m, ticket).await?;
                if !quiet {
                    println!("  {} -> {}/{} ({})", r.id, r.category, r.urgency, r.session);
                }
                done.push(r);
            }
            Ok::<_, Error>((begin, Instant::now(), done))
        }
    };
    let picks = |parity: usize| {
        TICKETS
            .iter()
            .enumerate()
            .filter(move |(i, _)| i % 2 == parity)
            .map(|(_, t)| t)
            .collect()
    };
    let (a, b) = tokio::join!(run_session(&t1, picks(0)), run_session(&t2, picks(1)));
    let ((a0, a1, ra), (b0, b1, rb)) = (a?, b?);
    report.triage_overlapped = a0 < b1 && b0 < a1;
    let mut all: Vec<Triaged> = ra.into_iter().chain(rb).collect();
    all.sort_by_key(|r| r.id);
    out.say(format!(
        "  the two sessions overlapped in time: {}",
        report.triage_overlapped
    ));
    report.triage = all;
    report.timings.push(("triage", t.elapsed()));

    // Step 3
    let t = Instant::now();
    out.step("Step 3: insights with ChainOfThought in the optimizer pool");
    let mut urgent: Vec<&Ticket> = TICKETS
        .iter()
        .filter(|tk| {
            report
                .triage
                .iter()
                .any(|r| r.id == tk.id && r.urgency == "high")
        })
        .collect();
    if urgent.len() < 2 {
        urgent = TICKETS.iter().take(2).collect();
    }
    for (i, ticket) in urgent.iter().enumerate() {
        if i == 1 && opts.fault {
            let pid = insights
                .session
                .placement()
                .await?
                .and_then(|p| p.pid)
                .unwrap_or(0);
            out.say(format!("  !! injecting a real fault: SIGKILL of pid {pid}, the worker holding session insights"));
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let mut fault = Fault {
                pid,
                ..Fault::default()
            };
            loop {
                match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
                    Ok(Some(e @ Event::SessionWorkerUnavailable { .. })) => {
                        if let Event::SessionWorkerUnavailable { session, .. } = &e {
                            if session == "insights" {
                                out.say(format!("  event: {e:?}"));
                                fault.event = Some(e);
                                break;
                            }
                        }
                    }
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
            report.fault = Some(fault);
        }
        let dspy = Dspy::new(&insights.session);
        let prediction = match dspy
            .forward(&insights.module, &HashMap::from([("ticket", ticket.text)]))
            .await
        {
            Err(e @ Error::SessionWorkerUnavailable { .. }) => {
                out.say(format!("  call failed as it must: {e}"));
                out.say("  rehydrating: rebuilding the ChainOfThought in a fresh session");
                let fresh = build(&rt, "optimizer_pool", "insights_rehydrated", 0.6, true).await?;
                route(&out, &fresh.session).await?;
                if let Some(f) = report.fault.as_mut() {
                    f.error = Some(e.to_string());
                    f.rebuilt_session = fresh.session.id().to_string();
                }
                insights = fresh;
                let retry = Dspy::new(&insights.session)
                    .forward(&insights.module, &HashMap::from([("ticket", ticket.text)]))
                    .await?;
                if let Some(f) = report.fault.as_mut() {
                    f.retry_ok = true;
                }
                out.say("  retry succeeded");
                retry
            }
            other => other?,
        };
        let dspy = Dspy::new(&insights.session);
        let summary: String = dspy.field(&prediction, "summary").await?;
        let root_cause: String = dspy.field(&prediction, "root_cause").await?;
        out.say(format!("  {} summary: {summary}", ticket.id));
        out.say(format!("  {} root_cause: {root_cause}", ticket.id));
        report
            .insights
            .push((ticket.id.to_string(), summary, root_cause));
    }
    report.timings.push(("insights", t.elapsed()));

    // Step 4
    let t = Instant::now();
    out.step("Step 4: numpy analytics in the hint pool");
    let scores: Vec<f64> = report.triage.iter().map(|r| r.score).collect();
    report.numpy_version = analytics.get("numpy", "__version__").await?;
    report.mean = analytics.call("numpy", "mean", &(&scores,), &()).await?;
    report.std = analytics.call("numpy", "std", &(&scores,), &()).await?;
    report.p80 = analytics
        .call("numpy", "percentile", &(&scores, 80), &())
        .await?;
    out.say(format!("  scores: {scores:?}"));
    out.say(format!("  numpy version: {}", report.numpy_version));
    out.say(format!("  mean score: {:.3}", report.mean));
    out.say(format!("  std dev: {:.3}", report.std));
    out.say(format!("  80th percentile: {:.3}", report.p80));
    report.timings.push(("analytics", t.elapsed()));

    // Step 5
    let t = Instant::now();
    out.step("Step 5: GEPA optimization (max_metric_calls=3)");
    let s = &gepa.session;
    let dspy = Dspy::new(s);
    let metric: Ref = s
        .eval(
            "(lambda ns: (exec(code, ns), ns['metric'])[1])({'__name__': 'pyvisor_metric'})",
            &HashMap::from([("code", METRIC)]),
        )
        .await?;
    let gold = dspy
        .example(
            &HashMap::from([
                ("ticket", "x"),
                ("category", "billing"),
                ("urgency", "medium"),
            ]),
            &["ticket"],
        )
        .await?;
    let check: Ref = s
        .call_method(&metric, "__call__", &(&gold.0, &gold.0), &())
        .await?;
    let score: f64 = s.get_attr(&check, "score").await?;
    let feedback: String = s.get_attr(&check, "feedback").await?;
    out.say(format!(
        "  metric on a matching pair: score={score} feedback={feedback:?}"
    ));
    report.metric_check = (score, feedback);
    let mut examples: Vec<Example> = Vec::new();
    for ticket in &TICKETS {
        let fields = HashMap::from([
            ("ticket", ticket.text),
            ("category", ticket.category),
            ("urgency", ticket.urgency),
        ]);
        examples.push(dspy.example(&fields, &["ticket"]).await?);
    }
    let reflection = dspy
        .lm_from(
            "pyvisor_demo",
            "make_lm",
            &HashMap::from([("temperature", 0.9)]),
        )
        .await?;
    let options = HashMap::from([
        ("max_metric_calls", Value::Int(3)),
        ("reflection_minibatch_size", Value::Int(1)),
        ("track_stats", Value::Bool(true)),
        ("num_threads", Value::Int(1)),
    ]);
    let optimizer = dspy.gepa(&metric, &reflection, &options).await?;
    report.instruction_before = dspy.instructions(&gepa.module).await?.join(" | ");
    out.say(format!(
        "  instruction before: {:?}",
        report.instruction_before
    ));
    // The seed is imperfect on every example GEPA samples first (seed 0 picks the third training
    // example first): INC-005 and INC-002 are answered wrong by the baseline, so a reflection
    // really happens within the budget.
    let by_id = |id: &str| {
        examples[TICKETS
            .iter()
            .position(|t| t.id == id)
            .expect("known ticket")]
        .clone()
    };
    let trainset = vec![by_id("INC-005"), by_id("INC-001"), by_id("INC-002")];
    let valset = vec![by_id("INC-002"), by_id("INC-005")];
    let compiling = dspy.compile(&optimizer, &gepa.module, &trainset, &valset);
    tokio::pin!(compiling);
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let gepa_started = Instant::now();
    let optimized = loop {
        tokio::select! {
            done = &mut compiling => break done?,
            _ = ticker.tick() => out.say(format!("  ... GEPA running ({:.1}s)", gepa_started.elapsed().as_secs_f64())),
        }
    };
    report.instruction_after = dspy.instructions(&optimized).await?.join(" | ");
    report.reflection_calls = s
        .eval("len(lm.history)", &HashMap::from([("lm", &reflection.0)]))
        .await?;
    report.gepa_scores = s
        .eval(
            "list(o.detailed_results.val_aggregate_scores)",
            &HashMap::from([("o", &optimized.0)]),
        )
        .await?;
    out.say(format!(
        "  instruction after:  {:?}",
        report.instruction_after
    ));
    out.say(format!(
        "  reflection LM calls: {}",
        report.reflection_calls
    ));
    out.say(format!(
        "  candidate scores on the valset: {:?}",
        report.gepa_scores
    ));
    report.timings.push(("gepa", t.elapsed()));

    // Step 6
    let t = Instant::now();
    out.step("Step 6: baseline vs optimized on a holdout ticket");
    let base = triage(&t1.session, &t1.module, &HOLDOUT).await?;
    let best = triage(&gepa.session, &optimized, &HOLDOUT).await?;
    report.baseline = (base.category.clone(), base.urgency.clone());
    report.optimized = (best.category.clone(), best.urgency.clone());
    out.say(format!(
        "  gold      -> {}/{}",
        HOLDOUT.category, HOLDOUT.urgency
    ));
    out.say(format!("  baseline  -> {}/{}", base.category, base.urgency));
    out.say(format!("  optimized -> {}/{}", best.category, best.urgency));
    report.timings.push(("holdout", t.elapsed()));

    // Step 7
    let t = Instant::now();
    out.step("Step 7: prompt inspection (LM history via graceful serialization)");
    out.say("  (responses stay refs in their worker; every other field arrives as data)");
    for b in [&t1, &t2, &insights, &gepa] {
        let entries = Dspy::new(&b.session).history(&b.lm, 6).await?;
        out.say(format!(
            "  {} / {}: {} entries",
            b.session.pool(),
            b.session.id(),
            entries.len()
        ));
        let mut shown = HistoryShown {
            pool: b.session.pool().to_string(),
            session: b.session.id().to_string(),
            entries: entries.len(),
            data_fields: true,
            ..HistoryShown::default()
        };
        for (i, e) in entries.iter().enumerate().take(2) {
            let preview: String = e
                .last_message()
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let preview: String = preview.chars().take(60).collect();
            out.say(format!(
                "    [{i}] model={} tokens={}",
                if lm_name.starts_with("simulated") {
                    lm_name.as_str()
                } else {
                    e.model.as_deref().unwrap_or("?")
                },
                e.total_tokens().map_or("?".into(), |n| n.to_string())
            ));
            out.say(format!("        last message: {preview}..."));
            match &e.response {
                Value::Ref(r) => {
                    out.say(format!(
                        "        response: <{}.{}> (ref, lives in {})",
                        r.module(),
                        r.type_name(),
                        r.worker()
                    ));
                    shown.response_types.push(r.type_name().to_string());
                }
                other => {
                    out.say(format!("        response: {} (data)", other.kind()));
                    shown.data_fields = false;
                }
            }
            shown.data_fields &= !e.messages.is_empty() && matches!(e.usage, Value::Map(_));
        }
        report.history.push(shown);
    }
    report.timings.push(("history", t.elapsed()));

    // Step 8
    out.step("Summary");
    report.restarts = rt.stats().await.iter().map(|p| p.restarts).sum();
    out.say(format!("  triage results: {}", report.triage.len()));
    out.say(format!("  insights generated: {}", report.insights.len()));
    out.say(format!(
        "  mean score: {:.3} (std {:.3})",
        report.mean, report.std
    ));
    out.say(format!(
        "  GEPA: {} reflection call(s), valset scores {:?}",
        report.reflection_calls, report.gepa_scores
    ));
    out.say(format!("  worker restarts seen: {}", report.restarts));
    for (step, took) in &report.timings {
        out.say(format!("  {step:<14} {:>8.3}s", took.as_secs_f64()));
    }
    out.say(format!(
        "  total          {:>8.3}s",
        started.elapsed().as_secs_f64()
    ));
    let problems = report.problems();
    out.say(if problems.is_empty() {
        "  result: every step did what it must".to_string()
    } else {
        format!("  result: FAILED: {problems:?}")
    });
    rt.shutdown().await;
    let _ = std::fs::remove_dir_all(&cache);
    Ok(report)
}
