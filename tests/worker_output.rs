//! Python's stdout and stderr are free for user code: a flood of prints neither corrupts the
//! protocol channel nor gets lost; every line reaches `tracing` with the worker's identity.

mod support;

use std::sync::{Arc, Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

#[derive(Debug, Clone, Default)]
struct Line {
    stream: String,
    pool: String,
    slot: u64,
    generation: u64,
    pid: u64,
    message: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "stream" {
            self.stream = value.to_string();
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "slot" => self.slot = value,
            "generation" => self.generation = value,
            "pid" => self.pid = value,
            _ => {}
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "pool" => self.pool = format!("{value:?}"),
            _ => {}
        }
    }
}

struct Collect(Arc<Mutex<Vec<Line>>>);

impl<S: Subscriber> Layer<S> for Collect {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() == "pyvisor::python" {
            let mut line = Line::default();
            event.record(&mut line);
            self.0.lock().unwrap().push(line);
        }
    }
}

fn captured() -> Arc<Mutex<Vec<Line>>> {
    static LINES: OnceLock<Arc<Mutex<Vec<Line>>>> = OnceLock::new();
    LINES
        .get_or_init(|| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let subscriber = tracing_subscriber::registry().with(Collect(lines.clone()));
            tracing::subscriber::set_global_default(subscriber).unwrap();
            lines
        })
        .clone()
}

#[tokio::test]
async fn print_floods_on_stdout_and_stderr_reach_tracing_and_leave_the_channel_intact() {
    let lines = captured();
    let rt = support::runtime(vec![support::pool("chatty").size(1)]).await;
    let s = rt.session("chatty", "s").unwrap();
    let pid: u32 = s.call("pyvisor_fixtures", "pid", &(), &()).await.unwrap();
    for round in 0..3 {
        let marker = format!("round{round}");
        let n: u32 = s
            .call("pyvisor_fixtures", "spam", &(500, &marker), &())
            .await
            .unwrap();
        assert_eq!(n, 500, "the reply is intact after 1000 lines of output");
    }
    let want = |stream: &str, text: String| {
        let lines = lines.clone();
        let stream = stream.to_string();
        move || {
            let lines = lines.clone();
            let (stream, text) = (stream.clone(), text.clone());
            async move {
                lines
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|l| l.stream == stream && l.message == text)
                    .cloned()
            }
        }
    };
    let last_out = support::eventually(
        "the last stdout line",
        want("stdout", "round2 out 499".into()),
    )
    .await;
    let last_err = support::eventually(
        "the last stderr line",
        want("stderr", "round2 err 499".into()),
    )
    .await;
    for line in [&last_out, &last_err] {
        assert_eq!(
            (line.pool.as_str(), line.slot, line.generation),
            ("chatty", 0, 0)
        );
        assert_eq!(line.pid, u64::from(pid));
    }
    let all = lines.lock().unwrap().clone();
    for stream in ["stdout", "stderr"] {
        let kind = if stream == "stdout" { "out" } else { "err" };
        for round in 0..3 {
            let count = all
                .iter()
                .filter(|l| {
                    l.stream == stream && l.message.starts_with(&format!("round{round} {kind} "))
                })
                .count();
            assert_eq!(count, 500, "every {stream} line of round {round} arrived");
        }
    }
    assert!(
        all.iter().any(|l| l.message == "round0 partial"),
        "a line written in pieces is whole"
    );
    rt.shutdown().await;
}
