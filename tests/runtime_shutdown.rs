//! No Python process outlives its runtime: clean shutdown drains then stops every worker, a
//! dropped runtime kills them, and a SIGKILLed host takes them along (checked by pid).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use pyvisor::{Error, LossReason, PoolStatus};
use support::{alive, eventually, pids, pool, runtime, Gate};

#[tokio::test]
async fn shutdown_lets_the_call_in_flight_finish_then_leaves_no_process() {
    let rt = runtime(vec![pool("a").size(2), pool("b").size(1)]).await;
    let all: Vec<u32> = [pids(&rt, "a").await, pids(&rt, "b").await].concat();
    let gate = Gate::new("drain");
    let in_flight = {
        let (rt, path) = (rt.clone(), gate.path.clone());
        tokio::spawn(async move {
            rt.call::<u32>("a", "pyvisor_fixtures", "gate", &(path,), &())
                .await
        })
    };
    gate.wait_started().await;
    let shutdown = {
        let rt = rt.clone();
        tokio::spawn(async move { rt.shutdown().await })
    };
    eventually("pool a to be stopping", || async {
        let stats = rt.stats().await;
        let a = stats.iter().find(|p| p.name == "a")?;
        (a.status == PoolStatus::Stopping).then_some(())
    })
    .await;
    let refused = rt
        .call::<u32>("a", "pyvisor_fixtures", "pid", &(), &())
        .await;
    assert!(
        matches!(refused, Err(Error::ShuttingDown { .. })),
        "{refused:?}"
    );

    gate.open();
    assert!(
        in_flight.await.unwrap().is_ok(),
        "the in-flight call drained"
    );
    shutdown.await.unwrap();
    for pid in all {
        assert!(!alive(pid), "worker {pid} outlived shutdown");
    }
}

#[tokio::test]
async fn a_call_that_outlasts_the_grace_is_cut_off_and_its_worker_killed() {
    let rt = runtime(vec![pool("grace")
        .size(1)
        .shutdown_grace(Duration::from_millis(100))])
    .await;
    let pid = pids(&rt, "grace").await[0];
    let gate = Gate::new("grace");
    let in_flight = {
        let (rt, path) = (rt.clone(), gate.path.clone());
        tokio::spawn(async move {
            rt.call::<u32>("grace", "pyvisor_fixtures", "gate", &(path,), &())
                .await
        })
    };
    gate.wait_started().await;
    rt.shutdown().await;
    match in_flight.await.unwrap() {
        Err(Error::WorkerExited { reason, .. }) => assert_eq!(reason, LossReason::PoolStopped),
        other => panic!("expected the cut-off call to fail, got {other:?}"),
    }
    assert!(!alive(pid));
}

#[tokio::test]
async fn dropping_the_runtime_kills_its_workers() {
    let rt = runtime(vec![pool("dropped").size(2)]).await;
    let all = pids(&rt, "dropped").await;
    drop(rt);
    for pid in all {
        eventually("the worker to die", || async {
            (!alive(pid)).then_some(())
        })
        .await;
    }
}

/// Run by `a_sigkilled_host_leaves_no_python_process` in a child process: starts workers, keeps
/// one busy, prints their pids and waits to be killed.
#[tokio::test]
#[ignore = "host role of a_sigkilled_host_leaves_no_python_process"]
async fn host_role() {
    if std::env::var_os("PYVISOR_TEST_HOST_ROLE").is_none() {
        return;
    }
    let rt = runtime(vec![pool("host").size(2)]).await;
    let all = pids(&rt, "host").await;
    let gate = Gate::new("host");
    let busy = {
        let (rt, path) = (rt.clone(), gate.path.clone());
        tokio::spawn(async move {
            rt.call::<u32>("host", "pyvisor_fixtures", "gate", &(path,), &())
                .await
        })
    };
    gate.wait_started().await;
    println!("PIDS {} {}", all[0], all[1]);
    let _ = busy.await;
    std::future::pending::<()>().await;
}

#[test]
fn a_sigkilled_host_leaves_no_python_process() {
    let mut host = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "host_role",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PYVISOR_TEST_HOST_ROLE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(host.stdout.take().unwrap());
    let line = stdout
        .lines()
        .map(|l| l.unwrap())
        .find_map(|l| l.split_once("PIDS ").map(|(_, pids)| pids.to_string()))
        .expect("the host printed its worker pids");
    let pids: Vec<u32> = line.split(' ').map(|p| p.parse().unwrap()).collect();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|p| alive(*p)));

    host.kill().unwrap(); // SIGKILL: no destructor, no shutdown runs in the host
    host.wait().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for pid in pids {
            eventually("the orphaned worker to die", || async {
                (!alive(pid)).then_some(())
            })
            .await;
        }
    });
}
