//! SIGKILL of a real worker: the caller is told at once, the slot restarts with a new
//! generation, and no session silently continues on the fresh interpreter.

mod support;

use pyvisor::{Affinity, CallOptions, Error, ExitStatus, LossReason};
use support::events::{label, pool_of, until};
use support::{alive, pool, runtime, signal, Gate};

#[tokio::test]
async fn sigkill_mid_call_fails_the_caller_and_strict_sessions_stay_lost_after_the_restart() {
    let rt = runtime(vec![pool("kill").size(2).affinity(Affinity::StrictQueue)]).await;
    let s1 = rt.session("kill", "s1").unwrap();
    let s2 = rt.session("kill", "s2").unwrap();
    let h1 = rt.session("kill", "h1").unwrap();
    let hint = CallOptions::new().affinity(Affinity::Hint);

    let pid0: u32 = s1
        .call("pyvisor_fixtures", "state_set", &("k", "v1"), &())
        .await
        .unwrap();
    let pid1: u32 = s2
        .call("pyvisor_fixtures", "state_set", &("k", "v2"), &())
        .await
        .unwrap();
    assert_ne!(
        pid0, pid1,
        "back-to-back sessions land on different workers"
    );
    let h_pid: u32 = h1
        .call_with(hint, "pyvisor_fixtures", "state_set", &("k", "h"), &())
        .await
        .unwrap();
    assert_eq!(
        h_pid, pid0,
        "the third session goes to the idle, equally loaded slot 0"
    );

    let mut events = rt.events();
    let gate = Gate::new("kill");
    let in_flight = {
        let s1 = s1.clone();
        let path = gate.path.clone();
        tokio::spawn(async move {
            s1.call::<u32>("pyvisor_fixtures", "gate", &(path,), &())
                .await
        })
    };
    gate.wait_started().await;
    signal(pid0, libc::SIGKILL);

    match in_flight.await.unwrap() {
        Err(Error::WorkerExited { worker, reason, .. }) => {
            assert_eq!((worker.slot, worker.generation), (0, 0));
            assert_eq!(
                reason,
                LossReason::WorkerExited(ExitStatus::Signal(libc::SIGKILL))
            );
        }
        other => panic!("the caller must get WorkerExited, got {other:?}"),
    }

    let seen = until(&mut events, |e| label(e).starts_with("WorkerRestarted")).await;
    let labels: Vec<String> = seen
        .iter()
        .filter(|e| pool_of(e) == "kill")
        .map(label)
        .collect();
    assert_eq!(
        labels,
        [
            "WorkerExited(kill/0#0)",
            "SessionWorkerUnavailable(h1)",
            "SessionWorkerUnavailable(s1)",
            "WorkerRestarted(kill/0#1)",
        ]
    );
    assert!(!alive(pid0));

    // After the restart, the strict session still learns its state is gone, every time.
    for _ in 0..2 {
        match s1
            .call::<String>("pyvisor_fixtures", "state_get", &("k",), &())
            .await
        {
            Err(Error::SessionWorkerUnavailable {
                session,
                worker,
                reason,
            }) => {
                assert_eq!(session, "s1");
                assert_eq!((worker.slot, worker.generation), (0, 0));
                assert_eq!(
                    reason,
                    LossReason::WorkerExited(ExitStatus::Signal(libc::SIGKILL))
                );
            }
            other => panic!("expected SessionWorkerUnavailable, got {other:?}"),
        }
    }

    // The untouched session keeps its state. `h1` is a session of a strict pool too: a per-call
    // hint override cannot bring back the state it lost; once reset, it starts on a fresh worker.
    let v2: String = s2
        .call("pyvisor_fixtures", "state_get", &("k",), &())
        .await
        .unwrap();
    assert_eq!(v2, "v2");
    let overridden = h1
        .call_with::<u32>(hint, "pyvisor_fixtures", "pid", &(), &())
        .await;
    assert!(
        matches!(overridden, Err(Error::SessionWorkerUnavailable { ref session, .. }) if session == "h1"),
        "{overridden:?}"
    );
    h1.reset().unwrap();
    let h_new: u32 = h1
        .call_with(hint, "pyvisor_fixtures", "pid", &(), &())
        .await
        .unwrap();
    assert_ne!(h_new, pid0);

    let stats = rt.stats().await;
    let w0 = &stats[0].workers[0];
    assert_eq!((w0.generation, stats[0].restarts), (1, 1));
    assert_ne!(w0.pid, Some(pid0));

    // Once the caller resets the session, it starts afresh: its old state is visibly absent.
    s1.reset().unwrap();
    match s1
        .call::<String>("pyvisor_fixtures", "state_get", &("k",), &())
        .await
    {
        Err(Error::Python(py)) => assert_eq!(py.type_name, "KeyError"),
        other => panic!("a reset session must start empty, got {other:?}"),
    }
    rt.shutdown().await;
}

#[tokio::test]
async fn a_hint_session_on_a_killed_worker_is_told_and_replaced() {
    let rt = runtime(vec![pool("hintkill").size(1)]).await;
    let s = rt.session("hintkill", "h").unwrap();
    let pid: u32 = s
        .call("pyvisor_fixtures", "state_set", &("k", 1), &())
        .await
        .unwrap();
    let mut events = rt.events();
    signal(pid, libc::SIGKILL);
    let seen = until(&mut events, |e| label(e).starts_with("WorkerRestarted")).await;
    let labels: Vec<String> = seen.iter().map(label).collect();
    assert_eq!(
        labels,
        [
            "WorkerExited(hintkill/0#0)",
            "SessionWorkerUnavailable(h)",
            "WorkerRestarted(hintkill/0#1)",
        ]
    );
    // Re-placed, and visibly fresh: the old state is not there.
    match s
        .call::<i64>("pyvisor_fixtures", "state_get", &("k",), &())
        .await
    {
        Err(Error::Python(py)) => assert_eq!(py.type_name, "KeyError"),
        other => panic!("expected a fresh interpreter, got {other:?}"),
    }
    rt.shutdown().await;
}
