//! A small ractor application with pyvisor inside its supervision tree: a ticket-router actor owns
//! a session in a strict pool, calls Python without blocking its mailbox, learns by message that
//! its worker died, rebuilds its session state, and keeps serving. See `docs/embedding.md`.
//!
//! ```sh
//! cargo run --example embedded_actor_app
//! ```

use std::collections::HashMap;
use std::time::Duration;

use pyvisor::{Affinity, Delivered, Error, Event, PoolConfig, Ref, Runtime, Session, Value};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

const URGENT: &str = r"outage|down|500|locked|blocked";

enum RouterMsg {
    /// A ticket to classify.
    Ticket(u64, String),
    /// Python's answer for a ticket (delivered by `Session::call_to`).
    Classified(u64, Delivered<Value>),
    /// The runtime says a session lost its worker.
    SessionLost(String),
    /// How many tickets are done, and how many rebuilds happened.
    Progress(RpcReplyPort<(usize, usize)>),
}

struct Router;

struct RouterState {
    session: Session,
    /// The session's Python state: a compiled regex living in its worker.
    pattern: Ref,
    /// Tickets sent to Python and not answered yet, by ticket id.
    pending: HashMap<u64, String>,
    done: usize,
    rebuilds: usize,
}

async fn compile(session: &Session) -> Result<Ref, Error> {
    session.call("re", "compile", &(URGENT,), &()).await
}

impl Router {
    fn classify(
        me: &ActorRef<RouterMsg>,
        st: &mut RouterState,
        id: u64,
        text: String,
    ) -> Result<(), Error> {
        st.session
            .call_to(me, "re", "search", &(&st.pattern, &text), &(), move |d| {
                RouterMsg::Classified(id, d)
            })?;
        st.pending.insert(id, text);
        Ok(())
    }
}

impl Actor for Router {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = Runtime;

    async fn pre_start(
        &self,
        me: ActorRef<RouterMsg>,
        rt: Runtime,
    ) -> Result<RouterState, ActorProcessingErr> {
        let session = rt.session("router_pool", "router")?;
        let pattern = compile(&session).await?;
        rt.forward_events(me, |e| match e {
            Event::SessionWorkerUnavailable { session, .. } => {
                Some(RouterMsg::SessionLost(session))
            }
            _ => None,
        });
        Ok(RouterState {
            session,
            pattern,
            pending: HashMap::new(),
            done: 0,
            rebuilds: 0,
        })
    }

    async fn handle(
        &self,
        me: ActorRef<RouterMsg>,
        msg: RouterMsg,
        st: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RouterMsg::Ticket(id, text) => Router::classify(&me, st, id, text)?,
            RouterMsg::Classified(id, delivered) => match delivered.result {
                Ok(found) => {
                    let text = st.pending.remove(&id).unwrap_or_default();
                    let verdict = if matches!(found, Value::Ref(_)) {
                        "URGENT"
                    } else {
                        "normal"
                    };
                    println!(
                        "  ticket {id} (request {}): {verdict:<6} {text}",
                        delivered.request
                    );
                    st.done += 1;
                }
                // The worker died with the call in flight, or the session is known lost: the
                // ticket stays pending and is resent after the rebuild.
                Err(Error::SessionWorkerUnavailable { .. } | Error::WorkerExited { .. }) => {}
                Err(e) => return Err(e.into()),
            },
            RouterMsg::SessionLost(session) if session == st.session.id() => {
                println!("  router: session {session} lost its worker; rebuilding its state");
                st.session.reset()?;
                st.pattern = compile(&st.session).await?; // rare: awaiting here is acceptable
                st.rebuilds += 1;
                let pending: Vec<(u64, String)> = st.pending.drain().collect();
                for (id, text) in pending {
                    Router::classify(&me, st, id, text)?;
                }
            }
            RouterMsg::SessionLost(_) => {}
            RouterMsg::Progress(reply) => {
                let _ = reply.send((st.done, st.rebuilds));
            }
        }
        Ok(())
    }
}

/// The application's root: supervises the Python pools and the router.
struct App;

impl Actor for App {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<()>,
        event: SupervisionEvent,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(_, err) = event {
            println!("  app: a child failed: {err}");
        }
        Ok(())
    }
}

const TICKETS: [&str; 6] = [
    "Checkout is down with a 500 for EU users",
    "Refund not received after 10 days",
    "Please add a bulk export feature",
    "Admin login locked after the SSO update",
    "CSV export shows the wrong timezone",
    "Search results load slowly",
];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (app, app_done) = Actor::spawn(None, App, ()).await?;
    let rt = Runtime::builder()
        .pool(
            PoolConfig::new("router_pool")
                .size(2)
                .affinity(Affinity::StrictQueue)
                .allow_modules(["re"]),
        )
        .start_linked(app.get_cell())
        .await?;
    rt.wait_ready().await?;
    let (router, _) = Actor::spawn_linked(None, Router, rt.clone(), app.get_cell()).await?;
    let session = rt.session("router_pool", "router")?;

    println!("classifying tickets; a worker will be killed half-way:");
    for (id, text) in TICKETS.iter().enumerate().take(3) {
        router.cast(RouterMsg::Ticket(id as u64, text.to_string()))?;
    }
    while ractor::call!(router, RouterMsg::Progress)?.0 < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = session.placement().await?.and_then(|p| p.pid).unwrap_or(0);
    println!("  killing pid {pid}, the worker that holds the router's session");
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    for (id, text) in TICKETS.iter().enumerate().skip(3) {
        router.cast(RouterMsg::Ticket(id as u64, text.to_string()))?;
    }
    let (done, rebuilds) = loop {
        let (done, rebuilds) = ractor::call!(router, RouterMsg::Progress)?;
        if done == TICKETS.len() {
            break (done, rebuilds);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!("done: {done} tickets classified, {rebuilds} session rebuild(s)");
    drop(session);
    // Stopping the application's tree drains and stops the pools: no Python process is left.
    app.stop_children_and_wait(None, None).await;
    app.stop(None);
    app_done.await?;
    Ok(())
}
