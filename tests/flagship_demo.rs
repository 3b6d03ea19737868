//! The whole flagship demo, offline, asserted on its outcome (not its wording).

#[allow(dead_code)]
#[path = "../examples/flagship/demo.rs"]
mod demo;

use pyvisor::{Event, LossReason};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flagship_demo_runs_offline_end_to_end_with_a_real_crash_and_rehydration() {
    let report = demo::run(demo::Options {
        fault: true,
        quiet: true,
    })
    .await
    .expect("the demo runs");

    assert_eq!(report.triage.len(), 5, "five triage results");
    let sessions: std::collections::HashSet<_> =
        report.triage.iter().map(|r| r.session.as_str()).collect();
    assert_eq!(sessions.len(), 2, "both triage sessions served tickets");
    assert_eq!(report.triage_pids.len(), 2);
    assert_ne!(
        report.triage_pids[0], report.triage_pids[1],
        "triage sessions on different workers"
    );
    assert!(
        report.triage_overlapped,
        "the two triage sessions overlapped in time"
    );

    let fault = report.fault.as_ref().expect("the fault was injected");
    assert!(fault.pid > 0);
    match &fault.event {
        Some(Event::SessionWorkerUnavailable {
            session, reason, ..
        }) => {
            assert_eq!(session, "insights");
            assert_eq!(
                *reason,
                LossReason::WorkerExited(pyvisor::ExitStatus::Signal(libc::SIGKILL))
            );
        }
        other => panic!("expected the SessionWorkerUnavailable event, got {other:?}"),
    }
    let error = fault.error.as_deref().expect("the next call failed");
    assert!(error.contains("lost its worker"), "{error}");
    assert_eq!(fault.rebuilt_session, "insights_rehydrated");
    assert!(fault.retry_ok, "the retry in the rebuilt session succeeded");
    assert!(
        report.insights.len() >= 2,
        "insights for the urgent tickets"
    );
    assert!(report
        .insights
        .iter()
        .all(|(_, summary, cause)| !summary.is_empty() && !cause.is_empty()));
    assert!(report.restarts >= 1);

    assert!(report.numpy_version.starts_with('2'));
    assert!((0.0..=1.0).contains(&report.mean));

    assert_eq!(
        report.metric_check.0, 1.0,
        "the metric scores a matching pair"
    );
    assert!(report.metric_check.1.starts_with("Perfect match"));
    assert!(
        !report.gepa_scores.is_empty(),
        "the metric returned scores, not errors"
    );
    assert!(report.reflection_calls >= 1, "GEPA reflected at least once");
    assert_ne!(
        report.instruction_before, report.instruction_after,
        "GEPA changed the instruction"
    );

    assert_eq!(report.history.len(), 4);
    for h in &report.history {
        assert!(h.entries > 0, "{} has history", h.session);
        assert!(
            h.data_fields,
            "{}: messages and usage arrive as data",
            h.session
        );
        assert!(
            !h.response_types.is_empty(),
            "{}: responses arrive as refs",
            h.session
        );
    }
    assert!(report.is_complete(), "{:?}", report.problems());
}
