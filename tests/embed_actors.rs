//! pyvisor inside a host application's own supervision tree, speaking to its actors in messages.

mod support;

use std::time::Duration;

use pyvisor::{Affinity, Delivered, Error, Event, Runtime, Session};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use support::{alive, pids, pool, signal, Gate};
use tokio::sync::mpsc;

/// A host supervisor that reports what it sees of its children.
struct Host;

#[derive(Debug)]
enum Seen {
    Failed(Option<Error>),
    Terminated,
}

impl Actor for Host {
    type Msg = ();
    type State = mpsc::UnboundedSender<Seen>;
    type Arguments = mpsc::UnboundedSender<Seen>;

    async fn pre_start(
        &self,
        _: ActorRef<()>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<()>,
        event: SupervisionEvent,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = match event {
            SupervisionEvent::ActorFailed(_, err) => {
                tx.send(Seen::Failed(err.downcast_ref::<Error>().cloned()))
            }
            SupervisionEvent::ActorTerminated(..) => tx.send(Seen::Terminated),
            _ => Ok(()),
        };
        Ok(())
    }
}

async fn host() -> (ActorRef<()>, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (host, _) = Actor::spawn(None, Host, tx).await.unwrap();
    (host, rx)
}

#[tokio::test]
async fn a_pool_that_gives_up_escalates_to_the_host_supervisor() {
    let (host, mut seen) = host().await;
    let broken = pool("broken")
        .preload("pyvisor_crash_on_import")
        .max_restarts(1)
        .backoff_initial(Duration::from_millis(5));
    let rt = Runtime::builder()
        .pool(broken)
        .pool(pool("healthy"))
        .start_linked(host.get_cell())
        .await
        .unwrap();
    let event = tokio::time::timeout(support::PATIENCE, seen.recv())
        .await
        .unwrap()
        .unwrap();
    match event {
        Seen::Failed(Some(Error::PoolFailed {
            pool, stderr_tail, ..
        })) => {
            assert_eq!(pool, "broken");
            assert!(
                stderr_tail.join("\n").contains("boom at import"),
                "{stderr_tail:?}"
            );
        }
        other => panic!("expected the pool's failure, got {other:?}"),
    }
    let call = rt
        .call::<u32>("broken", "pyvisor_fixtures", "pid", &(), &())
        .await;
    assert!(matches!(call, Err(Error::PoolFailed { .. })), "{call:?}");
    let n: i64 = rt
        .call("healthy", "builtins", "abs", &(-2,), &())
        .await
        .unwrap();
    assert_eq!(n, 2, "the other pool keeps serving");
    rt.shutdown().await;
    host.stop(None);
}

#[tokio::test]
async fn stopping_the_host_tree_drains_calls_and_leaves_no_process() {
    let (host, _seen) = host().await;
    let rt = Runtime::builder()
        .pool(pool("hosted").size(2))
        .start_linked(host.get_cell())
        .await
        .unwrap();
    rt.wait_ready().await.unwrap();
    let all = pids(&rt, "hosted").await;
    let gate = Gate::new("hosted");
    let in_flight = {
        let (rt, path) = (rt.clone(), gate.path.clone());
        tokio::spawn(async move {
            rt.call::<u32>("hosted", "pyvisor_fixtures", "gate", &(path,), &())
                .await
        })
    };
    gate.wait_started().await;
    let stopping = {
        let host = host.clone();
        tokio::spawn(async move { host.stop_children_and_wait(None, None).await })
    };
    gate.open();
    assert!(
        in_flight.await.unwrap().is_ok(),
        "the call in flight drained"
    );
    stopping.await.unwrap();
    for pid in all {
        assert!(!alive(pid), "worker {pid} outlived the host tree");
    }
    host.stop(None);
}

/// An actor that owns a strict session and rebuilds it when its worker dies.
struct Keeper;

enum KeeperMsg {
    Lost(String),
    Read(ractor::RpcReplyPort<Result<String, Error>>),
}

struct KeeperState {
    session: Session,
    rebuilt: mpsc::UnboundedSender<u32>,
}

async fn rebuild(session: &Session) -> Result<u32, Error> {
    session.reset()?;
    session
        .call("pyvisor_fixtures", "state_set", &("k", "rebuilt"), &())
        .await
}

impl Actor for Keeper {
    type Msg = KeeperMsg;
    type State = KeeperState;
    type Arguments = (Runtime, mpsc::UnboundedSender<u32>);

    async fn pre_start(
        &self,
        me: ActorRef<KeeperMsg>,
        (rt, rebuilt): Self::Arguments,
    ) -> Result<KeeperState, ActorProcessingErr> {
        let session = rt.session("keeper", "k1")?;
        session
            .call::<u32>("pyvisor_fixtures", "state_set", &("k", "original"), &())
            .await?;
        rt.forward_events(me, |e| match e {
            Event::SessionWorkerUnavailable { session, .. } => Some(KeeperMsg::Lost(session)),
            _ => None,
        });
        Ok(KeeperState { session, rebuilt })
    }

    async fn handle(
        &self,
        _: ActorRef<KeeperMsg>,
        msg: KeeperMsg,
        st: &mut KeeperState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            KeeperMsg::Lost(session) if session == st.session.id() => {
                let pid = rebuild(&st.session).await?;
                let _ = st.rebuilt.send(pid);
            }
            KeeperMsg::Lost(_) => {}
            KeeperMsg::Read(reply) => {
                let _ = reply.send(
                    st.session
                        .call("pyvisor_fixtures", "state_get", &("k",), &())
                        .await,
                );
            }
        }
        Ok(())
    }
}

#[tokio::test]
async fn an_actor_gets_session_worker_unavailable_as_a_message_and_rebuilds_its_session() {
    let rt = support::runtime(vec![pool("keeper").size(2).affinity(Affinity::StrictQueue)]).await;
    let (tx, mut rebuilt) = mpsc::unbounded_channel();
    let (keeper, _) = Actor::spawn(None, Keeper, (rt.clone(), tx)).await.unwrap();
    let before = ractor::call!(keeper, KeeperMsg::Read).unwrap().unwrap();
    assert_eq!(before, "original");
    let session = rt.session("keeper", "k1").unwrap();
    let pid = session.placement().await.unwrap().unwrap().pid.unwrap();
    signal(pid, libc::SIGKILL);
    let new_pid = tokio::time::timeout(support::PATIENCE, rebuilt.recv())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(new_pid, pid);
    let after = ractor::call!(keeper, KeeperMsg::Read).unwrap().unwrap();
    assert_eq!(
        after, "rebuilt",
        "the actor's session serves again, with its rebuilt state"
    );
    keeper.stop(None);
    rt.shutdown().await;
}

#[tokio::test]
async fn two_runtimes_in_one_process_do_not_interfere() {
    let a = support::runtime(vec![pool("same").size(1)]).await;
    let b = support::runtime(vec![pool("same").size(1)]).await;
    let (sa, sb) = (
        a.session("same", "s").unwrap(),
        b.session("same", "s").unwrap(),
    );
    let pa: u32 = sa
        .call("pyvisor_fixtures", "state_set", &("k", "a"), &())
        .await
        .unwrap();
    let pb: u32 = sb
        .call("pyvisor_fixtures", "state_set", &("k", "b"), &())
        .await
        .unwrap();
    assert_ne!(pa, pb);
    let (mut ea, mut eb) = (a.events(), b.events());
    signal(pa, libc::SIGKILL);
    support::events::until(&mut ea, |e| {
        support::events::label(e).starts_with("WorkerRestarted")
    })
    .await;
    assert!(eb.try_recv().is_none(), "the other runtime saw nothing");
    let vb: String = sb
        .call("pyvisor_fixtures", "state_get", &("k",), &())
        .await
        .unwrap();
    assert_eq!(vb, "b");
    assert!(alive(pb));
    a.shutdown().await;
    b.shutdown().await;
}

struct Collector;

impl Actor for Collector {
    type Msg = Delivered<u32>;
    type State = mpsc::UnboundedSender<Delivered<u32>>;
    type Arguments = mpsc::UnboundedSender<Delivered<u32>>;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = tx.send(msg);
        Ok(())
    }
}

#[tokio::test]
async fn a_call_delivered_to_an_actor_carries_its_session_and_request_id() {
    let rt = support::runtime(vec![pool("deliver").size(2)]).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (collector, _) = Actor::spawn(None, Collector, tx).await.unwrap();
    let s1 = rt.session("deliver", "one").unwrap();
    let s2 = rt.session("deliver", "two").unwrap();
    let r1 = s1
        .call_to(&collector, "pyvisor_fixtures", "pid", &(), &(), |d| d)
        .unwrap();
    let r2 = s2
        .call_to(&collector, "pyvisor_fixtures", "pid", &(), &(), |d| d)
        .unwrap();
    assert_ne!(r1, r2);
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(
            tokio::time::timeout(support::PATIENCE, rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    got.sort_by_key(|d| d.request);
    let expected = [(r1, "one", &s1), (r2, "two", &s2)];
    for (d, (request, session, s)) in got.iter().zip(expected) {
        assert_eq!((d.request, d.session.as_str()), (request, session));
        let pid = s.placement().await.unwrap().unwrap().pid.unwrap();
        assert_eq!(
            *d.result.as_ref().unwrap(),
            pid,
            "the result is the call's own"
        );
    }
    collector.stop(None);
    rt.shutdown().await;
}
