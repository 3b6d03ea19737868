//! Speaking to a host application's actors in messages (`docs/embedding.md`).

use ractor::{ActorRef, Message};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Runtime, Session};
use crate::call::CallOptions;
use crate::error::Error;
use crate::event::Event;
use crate::protocol::{op, CallBody};

/// The outcome of a call made with [`Session::call_to`], delivered to an actor.
#[derive(Debug)]
#[non_exhaustive]
pub struct Delivered<R> {
    /// The session the call ran in.
    pub session: String,
    /// The id [`Session::call_to`] returned for this call.
    pub request: u64,
    /// The result, or why there is none.
    pub result: Result<R, Error>,
}

impl Session {
    /// Calls `module.function(*args, **kwargs)` without waiting: the outcome is delivered to
    /// `actor` as the message `wrap(Delivered { session, request, result })`. Returns the request
    /// id at once, so an actor can call from inside its `handle` without blocking while Python
    /// works, and match replies to requests.
    ///
    /// Arguments are encoded before this returns; the call runs on a tokio task, under the same
    /// deadline and routing rules as [`Session::call`]. If the actor is gone when the outcome
    /// arrives, the outcome is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::FrameTooLarge`], [`Error::RefSessionMismatch`],
    /// [`Error::InvalidRef`] — everything that is known before sending. Every other error
    /// ([`Error::ShuttingDown`] included) arrives in [`Delivered::result`]. Calls reach the pool in the order
    /// `call_to` is called.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// enum Msg {
    ///     Root(pyvisor::Delivered<f64>),
    /// }
    ///
    /// # fn f(s: pyvisor::Session, me: ractor::ActorRef<Msg>) -> Result<(), pyvisor::Error> {
    /// let request = s.call_to(&me, "math", "sqrt", &(2.0,), &(), Msg::Root)?;
    /// # Ok(()) }
    /// ```
    pub fn call_to<R, M>(
        &self,
        actor: &ActorRef<M>,
        module: &str,
        function: &str,
        args: &(impl Serialize + ?Sized),
        kwargs: &(impl Serialize + ?Sized),
        wrap: impl FnOnce(Delivered<R>) -> M + Send + 'static,
    ) -> Result<u64, Error>
    where
        R: DeserializeOwned + Send + 'static,
        M: Message,
    {
        let pool = self.inner.pool.clone();
        let session = self.inner.call_session();
        let body = CallBody {
            module,
            function,
            args,
            kwargs,
            session: Some(&session.id),
        };
        let encoded = pool.encode(Some(&session.id), op::CALL, &body)?;
        // Submitted now: calls reach the pool in the order `call_to` is called.
        let pending = pool.start(Some(&session), CallOptions::default(), encoded, false);
        let request = pool.next_request();
        let actor = actor.clone();
        let keep = self.clone(); // the session stays alive until the outcome is delivered
        tokio::spawn(async move {
            let result = pending.finish(&pool).await;
            let _ = actor.cast(wrap(Delivered {
                session: session.id.to_string(),
                request,
                result,
            }));
            drop(keep);
        });
        Ok(request)
    }
}

impl Runtime {
    /// Delivers the runtime's events to `actor` as its own messages: every event for which
    /// `map` returns `Some(message)` is cast to the actor, in order. Forwarding stops when the
    /// actor is gone or the runtime is dropped. No event is lost (see [`Runtime::events`]).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use pyvisor::Event;
    ///
    /// enum Msg {
    ///     Lost(String),
    /// }
    ///
    /// # fn f(rt: pyvisor::Runtime, me: ractor::ActorRef<Msg>) {
    /// rt.forward_events(me, |e| match e {
    ///     Event::SessionWorkerUnavailable { session, .. } => Some(Msg::Lost(session)),
    ///     _ => None,
    /// });
    /// # }
    /// ```
    pub fn forward_events<M: Message>(
        &self,
        actor: ActorRef<M>,
        map: impl Fn(Event) -> Option<M> + Send + 'static,
    ) {
        let mut events = self.events();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let Some(msg) = map(event) {
                    if actor.cast(msg).is_err() {
                        break;
                    }
                }
            }
        });
    }
}
