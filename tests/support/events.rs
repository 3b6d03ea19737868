//! Expectations on event streams: "WorkerExited, then SessionWorkerUnavailable(s1), nothing else".

use pyvisor::{Event, EventStream};

use super::PATIENCE;

/// The pool an event belongs to.
pub fn pool_of(e: &Event) -> &str {
    match e {
        Event::WorkerStarted { worker, .. }
        | Event::WorkerExited { worker, .. }
        | Event::WorkerStopped { worker, .. }
        | Event::WorkerRestarted { worker, .. } => &worker.pool,
        Event::SessionWorkerUnavailable { pool, .. }
        | Event::PoolReady { pool }
        | Event::PoolSaturated { pool, .. }
        | Event::PoolFailed { pool, .. }
        | Event::PoolStopped { pool }
        | Event::TemplateReady { pool, .. }
        | Event::TemplateExited { pool, .. } => pool,
        _ => "",
    }
}

/// Receives events until `done` matches one, returning all of them (the last one included).
pub async fn until(stream: &mut EventStream, done: impl Fn(&Event) -> bool) -> Vec<Event> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, stream.recv()).await {
            Ok(Some(e)) => {
                let stop = done(&e);
                seen.push(e);
                if stop {
                    return seen;
                }
            }
            Ok(None) => panic!("event stream closed; saw {seen:#?}"),
            Err(_) => panic!("expected event never came; saw {seen:#?}"),
        }
    }
}

/// A short name for an event, for sequence assertions: `WorkerExited(p/0#0)`,
/// `SessionWorkerUnavailable(s1)`, ...
pub fn label(e: &Event) -> String {
    match e {
        Event::WorkerStarted { worker, .. } => format!("WorkerStarted({worker})"),
        Event::WorkerExited { worker, .. } => format!("WorkerExited({worker})"),
        Event::WorkerStopped { worker, .. } => format!("WorkerStopped({worker})"),
        Event::WorkerRestarted { worker, .. } => format!("WorkerRestarted({worker})"),
        Event::SessionWorkerUnavailable { session, .. } => {
            format!("SessionWorkerUnavailable({session})")
        }
        Event::PoolReady { pool } => format!("PoolReady({pool})"),
        Event::PoolSaturated { pool, .. } => format!("PoolSaturated({pool})"),
        Event::PoolFailed { pool, .. } => format!("PoolFailed({pool})"),
        Event::PoolStopped { pool } => format!("PoolStopped({pool})"),
        Event::TemplateReady { pool, .. } => format!("TemplateReady({pool})"),
        Event::TemplateExited { pool, .. } => format!("TemplateExited({pool})"),
        other => format!("{other:?}"),
    }
}
