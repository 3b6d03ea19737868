//! The schedule without Python: unit tests of its steps, and a model test of the session rules
//! under random sequences of calls, replies, refs, kills, restarts and resets.

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use tokio::sync::oneshot;

use super::*;
use crate::call::{Affinity, ReplyTo};
use crate::event::EventStream;

type Rx = oneshot::Receiver<Result<crate::call::Reply, Error>>;

fn schedule(size: usize, affinity: Affinity, max_queue: usize) -> (Schedule, EventStream) {
    let events = EventBus::default();
    let stream = events.subscribe();
    let s = Schedule::new(
        "p".into(),
        size,
        affinity,
        max_queue,
        Duration::from_secs(3600),
        events,
    );
    (s, stream)
}

fn job(session: Option<&str>) -> (Job, Rx) {
    let (tx, rx) = oneshot::channel();
    let deadline = Instant::now() + Duration::from_secs(3600);
    let job = Job::new(
        1,
        Vec::new(),
        ReplyTo::new(tx),
        deadline,
        session.map(Into::into),
    );
    (job, rx)
}

/// A detached `RELEASE` of `session`, as a dropped or reset handle sends it.
fn release(session: &str) -> Job {
    let mut job = job(Some(session)).0;
    job.detached = true;
    job
}

fn start(s: &mut Schedule, slot: usize) -> Option<Assigned> {
    s.worker_starting(slot);
    let at = s.slots[slot].at(slot);
    let (current, assigned) = s.worker_ready(at, 100 + slot as u32, false, "3.11", None);
    assert!(current);
    assert!(s.slots[slot].is_ready());
    assigned
}

fn start_all(s: &mut Schedule) {
    for slot in 0..s.slots.len() {
        assert!(start(s, slot).is_none());
    }
}

fn labels(events: &mut EventStream) -> Vec<String> {
    std::iter::from_fn(|| events.try_recv())
        .map(|e| match e {
            Event::WorkerExited { worker, .. } => format!("WorkerExited({worker})"),
            Event::WorkerStopped { worker, .. } => format!("WorkerStopped({worker})"),
            Event::SessionWorkerUnavailable { session, .. } => format!("Lost({session})"),
            Event::WorkerStarted { worker, .. } => format!("WorkerStarted({worker})"),
            Event::WorkerRestarted { worker, .. } => format!("WorkerRestarted({worker})"),
            Event::PoolReady { .. } => "PoolReady".into(),
            other => format!("{other:?}"),
        })
        .collect()
}

fn error_of(rx: &mut Rx) -> Option<Error> {
    match rx.try_recv() {
        Ok(Err(e)) => Some(e),
        _ => None,
    }
}

// ----- steps --------------------------------------------------------------------------------------

#[test]
fn a_worker_that_answers_takes_the_next_call_waiting_for_it() {
    let (mut s, _events) = schedule(1, Affinity::StrictQueue, 10);
    start_all(&mut s);
    let (a, _ra) = job(Some("a"));
    let (b, _rb) = job(Some("b"));
    let first = s.submit(a).expect("the idle worker runs it");
    assert!(s.submit(b).is_none(), "the busy worker: it waits");
    assert_eq!(s.stats().queued, 1);
    let next = s.next_call(first.at).expect("the waiting call is next");
    assert_eq!(next.session.as_deref(), Some("b"));
    assert!(s.next_call(first.at).is_none());
    assert!(s.slots[0].is_idle());
}

#[test]
fn a_worker_takes_the_oldest_call_it_may_run_its_own_or_anyones() {
    let (mut s, _events) = schedule(2, Affinity::StrictQueue, 10);
    start_all(&mut s);
    let mut rxs = Vec::new();
    let mut submit = |s: &mut Schedule, session: Option<&str>| {
        let (j, rx) = job(session);
        rxs.push(rx);
        s.submit(j)
    };
    let a0 = submit(&mut s, Some("a")).unwrap(); // a is placed on 0
    let b1 = submit(&mut s, Some("b")).unwrap(); // b on 1
    assert_eq!((a0.at.slot, b1.at.slot), (0, 1));
    assert!(submit(&mut s, None).is_none()); // any worker: #3
    assert!(submit(&mut s, Some("a")).is_none()); // slot 0 only: #4
    assert!(submit(&mut s, Some("b")).is_none()); // slot 1 only: #5
    let on0 = s.next_call(a0.at).unwrap();
    assert_eq!(on0.session, None, "#3 came before #4");
    let on1 = s.next_call(b1.at).unwrap();
    assert_eq!(
        on1.session.as_deref(),
        Some("b"),
        "slot 1 never runs a's call"
    );
    assert_eq!(s.next_call(a0.at).unwrap().session.as_deref(), Some("a"));
}

#[test]
fn a_lost_worker_tells_its_sessions_once_and_routes_what_waited_for_it_again() {
    let (mut s, mut events) = schedule(2, Affinity::Hint, 10);
    start_all(&mut s);
    labels(&mut events);
    // `held` holds a context on slot 0; `free` is a stateless session of slot 0.
    let (mut push, _rp) = job(Some("held"));
    push.keeps_state = true;
    let on0 = s.submit(push).unwrap();
    assert_eq!(on0.at.slot, 0);
    let (f, _rf) = job(Some("free"));
    assert_eq!(
        s.submit(f).unwrap().at.slot,
        1,
        "free moves to the idle worker"
    );
    // Both workers busy; `held` waits for slot 0, a new session waits for slot 0 too.
    let (h, mut rh) = job(Some("held"));
    assert!(s.submit(h).is_none());
    let runnable = s.worker_lost(0, LossReason::HeartbeatTimeout, Vec::new(), Next::Restart);
    assert!(runnable.is_empty());
    assert!(
        matches!(error_of(&mut rh), Some(Error::SessionWorkerUnavailable { ref session, .. }) if session == "held"),
        "the waiting call of the lost session is refused"
    );
    assert_eq!(labels(&mut events), ["WorkerExited(p/0#0)", "Lost(held)"]);
    assert_eq!(s.slots[0].generation, 1);
    assert_eq!(s.sessions.counts()[0], 0);
    // The lost session stays lost, whatever its calls ask for, until it is reset.
    let (mut again, mut ra) = job(Some("held"));
    again.affinity = Some(Affinity::Hint);
    assert!(s.submit(again).is_none());
    assert!(matches!(
        error_of(&mut ra),
        Some(Error::SessionWorkerUnavailable { .. })
    ));
    assert!(
        s.forget("held", 0, || release("held")).is_empty(),
        "nothing to release on a dead worker"
    );
    let (fresh, _rfresh) = job(Some("held"));
    assert!(
        s.submit(fresh).is_none(),
        "placed afresh, waiting for a worker"
    );
}

#[test]
fn hint_sessions_placed_while_the_pool_starts_stay_spread_when_their_calls_borrow_a_worker() {
    let (mut s, _events) = schedule(2, Affinity::Hint, 10);
    let mut rxs = Vec::new();
    for i in 0..6 {
        let (j, rx) = job(Some(&format!("s{i}")));
        rxs.push(rx);
        assert!(s.submit(j).is_none());
    }
    assert_eq!((s.sessions.counts()[0], s.sessions.counts()[1]), (3, 3));
    // The first worker ready runs every call, in order, while slot 1 still starts...
    let first = start(&mut s, 0).expect("the oldest call");
    let mut ran = vec![first.job.seq];
    while let Some(j) = s.next_call(first.at) {
        ran.push(j.seq);
    }
    assert_eq!(ran, [1, 2, 3, 4, 5, 6]);
    // ...and the sessions stay where they were placed.
    assert_eq!((s.sessions.counts()[0], s.sessions.counts()[1]), (3, 3));
    assert_eq!(s.placement("s1").unwrap().worker.slot, 1);
}

#[test]
fn a_hint_session_that_received_a_ref_stays_on_its_worker() {
    let (mut s, _events) = schedule(2, Affinity::Hint, 10);
    start_all(&mut s);
    let (a, _ra) = job(Some("h"));
    let on = s.submit(a).unwrap();
    assert!(s.note_refs(&"h".into(), 0, on.at).is_none());
    let (b, _rb) = job(Some("h"));
    assert!(
        s.submit(b).is_none(),
        "it waits for its busy worker, although 1 is idle"
    );
    assert!(s.slots[1].is_idle());
    let next = s.next_call(on.at).unwrap();
    assert_eq!(next.session.as_deref(), Some("h"));
    assert!(s.placement("h").unwrap().holds_state);
}

#[test]
fn a_ref_from_a_worker_that_died_meanwhile_loses_the_session_at_once() {
    let (mut s, mut events) = schedule(2, Affinity::Hint, 10);
    start_all(&mut s);
    labels(&mut events);
    let (a, _ra) = job(Some("h"));
    let on0 = s.submit(a).unwrap();
    // A second call of the stateless session moves it to slot 1 while the first runs.
    let (b, _rb) = job(Some("h"));
    assert_eq!(s.submit(b).unwrap().at.slot, 1);
    let _ = s.worker_lost(0, LossReason::HeartbeatTimeout, Vec::new(), Next::Restart);
    assert_eq!(
        labels(&mut events),
        ["WorkerExited(p/0#0)"],
        "h was not bound to 0 any more"
    );
    // The first call's reply, decoded now, carried a ref of slot 0's dead worker.
    assert!(s.note_refs(&"h".into(), 0, on0.at).is_none());
    assert_eq!(labels(&mut events), ["Lost(h)"]);
    let (c, mut rc) = job(Some("h"));
    assert!(s.submit(c).is_none());
    assert!(matches!(
        error_of(&mut rc),
        Some(Error::SessionWorkerUnavailable { .. })
    ));
    assert_eq!(s.sessions.counts()[1], 0);
}

#[test]
fn a_call_that_could_not_be_written_goes_elsewhere_and_its_worker_gets_no_more() {
    let (mut s, _events) = schedule(2, Affinity::Hint, 10);
    start_all(&mut s);
    let (a, _ra) = job(None);
    let on0 = s.submit(a).unwrap();
    let again = s
        .unwritten(on0.at, on0.job)
        .expect("the other worker takes it");
    assert_eq!(again.at.slot, 1);
    let (b, _rb) = job(None);
    assert!(
        s.submit(b).is_none(),
        "slot 0 is closing: nothing is written to it"
    );
}

#[test]
fn a_graceful_shutdown_stops_workers_without_losing_any_session() {
    let (mut s, mut events) = schedule(2, Affinity::StrictQueue, 10);
    start_all(&mut s);
    let (a, _ra) = job(Some("a"));
    let on0 = s.submit(a).unwrap();
    let (b, mut rb) = job(Some("a"));
    assert!(s.submit(b).is_none());
    labels(&mut events);
    assert!(!s.begin_shutdown(), "a call is in flight");
    assert!(matches!(
        error_of(&mut rb),
        Some(Error::ShuttingDown { .. })
    ));
    assert!(s.next_call(on0.at).is_none());
    assert!(s.take_drained());
    s.stopping();
    s.worker_stopped(0);
    s.worker_stopped(1);
    assert_eq!(
        labels(&mut events),
        ["WorkerStopped(p/0#0)", "WorkerStopped(p/1#0)"]
    );
}

#[test]
fn full_strength_waits_for_a_restarted_worker() {
    let (mut s, _events) = schedule(2, Affinity::Hint, 10);
    start_all(&mut s);
    let _ = s.worker_lost(1, LossReason::HeartbeatTimeout, Vec::new(), Next::Restart);
    let (tx, mut rx) = oneshot::channel();
    s.wait_full_strength(tx);
    assert!(rx.try_recv().is_err(), "slot 1 restarts");
    let (ready_tx, mut ready) = oneshot::channel();
    s.wait_ready(ready_tx);
    assert!(
        matches!(ready.try_recv(), Ok(Ok(()))),
        "ready once is not full strength"
    );
    assert!(start(&mut s, 1).is_none());
    assert!(matches!(rx.try_recv(), Ok(Ok(()))));
}

#[test]
fn forgetting_a_session_releases_its_state_only_where_it_lives() {
    let (mut s, _events) = schedule(2, Affinity::Hint, 10);
    start_all(&mut s);
    let (a, _ra) = job(Some("free"));
    let on = s.submit(a).unwrap();
    assert!(s.next_call(on.at).is_none());
    assert!(
        s.forget("free", 0, || release("free")).is_empty(),
        "a stateless session holds nothing"
    );
    let (mut push, _rp) = job(Some("held"));
    push.keeps_state = true;
    let on = s.submit(push).unwrap();
    assert!(
        s.forget("held", 0, || release("held")).is_empty(),
        "its worker is busy: the release waits"
    );
    let released = s.next_call(on.at).expect("then it runs there");
    assert_eq!(released.pin, Some(on.at));
    assert!(s.placement("held").is_none());
}

#[test]
fn refs_on_a_second_worker_lose_the_session_and_free_its_place_on_the_first() {
    let (mut s, _events) = schedule(2, Affinity::Hint, 10);
    start_all(&mut s);
    let (a, _ra) = job(Some("h"));
    let on0 = s.submit(a).unwrap();
    let (b, _rb) = job(Some("h"));
    let on1 = s.submit(b).unwrap();
    assert_eq!(on1.at.slot, 1, "h moved to the idle worker");
    assert!(s.note_refs(&"h".into(), 0, on0.at).is_none()); // bound back to 0, stateful
    assert!(s.note_refs(&"h".into(), 0, on1.at).is_none()); // refs on 1 too
    assert_eq!(s.sessions.counts(), [1, 0]);
    let _ = s.worker_lost(1, LossReason::HeartbeatTimeout, Vec::new(), Next::Restart);
    assert!(s.placement("h").unwrap().lost.is_some());
    assert_eq!(s.sessions.counts(), [0, 0], "h is lost: no slot holds it");
}

#[test]
fn a_reply_of_an_earlier_incarnation_never_moves_or_marks_the_new_one() {
    let (mut s, _events) = schedule(2, Affinity::Hint, 10);
    start_all(&mut s);
    let (mut push, _rp) = job(Some("h"));
    push.keeps_state = true;
    let on0 = s.submit(push).unwrap();
    let (a, _ra) = job(Some("h"));
    assert!(s.submit(a).is_none(), "waits for slot 0");
    assert!(s.forget("h", 0, || release("h")).is_empty());
    let (mut b, _rb) = job(Some("h"));
    b.incarnation = 1; // the handle after its reset
    let on1 = s.submit(b).unwrap();
    assert_eq!(on1.at.slot, 1, "the new incarnation is placed afresh");
    let orphan = s.next_call(on0.at).unwrap();
    assert!(orphan.orphan, "a belongs to the old incarnation");
    // Its reply carried a ref (released right after, by the RELEASE behind it).
    assert!(s.note_refs(&"h".into(), 0, on0.at).is_none());
    let p = s.placement("h").unwrap();
    assert_eq!((p.worker.slot, p.holds_state), (1, false));
}

#[test]
fn a_release_waits_in_a_full_queue_and_never_times_out() {
    let (mut s, mut events) = schedule(1, Affinity::Hint, 1);
    start_all(&mut s);
    let (mut push, _rp) = job(Some("h"));
    push.keeps_state = true;
    let _on0 = s.submit(push).unwrap();
    let (other, _ro) = job(Some("x"));
    assert!(s.submit(other).is_none(), "the queue is full now (1)");
    labels(&mut events);
    assert!(s.forget("h", 0, || release("h")).is_empty());
    assert_eq!(s.stats().queued, 2, "the release waits for h's worker");
    assert!(
        labels(&mut events).is_empty(),
        "no PoolSaturated for a release"
    );
    s.expire(Instant::now() + Duration::from_secs(7200));
    assert_eq!(s.stats().queued, 1, "x timed out, the release still waits");
}

#[test]
fn full_strength_comes_when_a_starting_worker_stops_for_good() {
    let (mut s, _events) = schedule(2, Affinity::Hint, 10);
    assert!(start(&mut s, 0).is_none());
    let (tx, mut rx) = oneshot::channel();
    s.wait_full_strength(tx);
    let _ = s.worker_lost(1, LossReason::StartupTimeout, Vec::new(), Next::Stop);
    assert!(matches!(s.phase(), Phase::Running));
    assert!(
        matches!(rx.try_recv(), Ok(Ok(()))),
        "every live slot is ready"
    );
}

#[test]
fn a_pool_is_drained_when_its_last_busy_worker_dies_during_the_drain() {
    let (mut s, _events) = schedule(1, Affinity::Hint, 10);
    start_all(&mut s);
    let (a, _ra) = job(None);
    let _on0 = s.submit(a).unwrap();
    assert!(!s.begin_shutdown());
    let _ = s.worker_lost(0, LossReason::HeartbeatTimeout, Vec::new(), Next::Stop);
    assert!(
        s.take_drained(),
        "nothing runs any more: the pool may stop at once"
    );
}

#[test]
fn a_ref_reported_for_an_unplaced_session_places_it_where_the_ref_lives() {
    let (mut s, mut events) = schedule(3, Affinity::Hint, 10);
    start_all(&mut s);
    let (a, _ra) = job(Some("h"));
    let on0 = s.submit(a).unwrap();
    let (b, _rb) = job(Some("h"));
    let on1 = s.submit(b).unwrap();
    assert_eq!((on0.at.slot, on1.at.slot), (0, 1), "h moved to 1 with b");
    labels(&mut events);
    let _ = s.worker_lost(1, LossReason::HeartbeatTimeout, Vec::new(), Next::Restart);
    assert_eq!(labels(&mut events), ["WorkerExited(p/1#0)", "Lost(h)"]);
    assert!(
        s.placement("h").is_none(),
        "stateless: placed afresh by its next call"
    );
    // a's reply carried a ref of h issued by slot 0.
    assert!(s.next_call(on0.at).is_none());
    assert!(s.note_refs(&"h".into(), 0, on0.at).is_none());
    let p = s.placement("h").expect("placed where its state is");
    assert_eq!((p.worker.slot, p.holds_state), (0, true));
    // A context push carrying that ref, then a call: both on slot 0.
    let (mut push, _rp) = job(Some("h"));
    push.keeps_state = true;
    push.pin = Some(on0.at);
    let p = s.submit(push).unwrap();
    assert_eq!(p.at.slot, 0);
    assert!(s.next_call(p.at).is_none());
    let (c, _rc) = job(Some("h"));
    assert_eq!(
        s.submit(c).unwrap().at.slot,
        0,
        "it runs inside its context"
    );
}

#[test]
fn a_shutdown_reports_no_loss_for_refs_that_arrive_late() {
    let (mut s, mut events) = schedule(2, Affinity::Hint, 10);
    start_all(&mut s);
    let (a, _ra) = job(Some("h"));
    let on0 = s.submit(a).unwrap();
    let (b, _rb) = job(Some("h"));
    let _on1 = s.submit(b).unwrap();
    assert!(!s.begin_shutdown());
    s.stopping();
    s.worker_stopped(0);
    labels(&mut events);
    assert!(s.note_refs(&"h".into(), 0, on0.at).is_none());
    assert!(
        labels(&mut events).is_empty(),
        "no SessionWorkerUnavailable"
    );
}

// ----- the model ----------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// A call of session `s` (`None`: outside any session).
    Submit {
        s: Option<usize>,
        affinity: Option<Affinity>,
        push: bool,
        with_ref: bool,
    },
    /// The worker of `slot` answers its call; its reply carries a ref of the call's session.
    Answer {
        slot: usize,
        issue_ref: bool,
    },
    Kill {
        slot: usize,
    },
    Start {
        slot: usize,
    },
    Reset {
        s: usize,
    },
}

const SLOTS: usize = 3;
const SESSIONS: usize = 5;

fn affinity() -> impl Strategy<Value = Affinity> {
    prop_oneof![
        Just(Affinity::Hint),
        Just(Affinity::StrictQueue),
        Just(Affinity::StrictFailFast)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (proptest::option::weighted(0.9, 0..SESSIONS), proptest::option::weighted(0.2, affinity()), proptest::bool::weighted(0.1), proptest::bool::weighted(0.3))
            .prop_map(|(s, affinity, push, with_ref)| Op::Submit { s, affinity, push, with_ref }),
        5 => (0..SLOTS, proptest::bool::weighted(0.2)).prop_map(|(slot, issue_ref)| Op::Answer { slot, issue_ref }),
        1 => (0..SLOTS).prop_map(|slot| Op::Kill { slot }),
        2 => (0..SLOTS).prop_map(|slot| Op::Start { slot }),
        1 => (0..SESSIONS).prop_map(|s| Op::Reset { s }),
    ]
}

/// What the model knows of a session, from the rules (not from the schedule's insides).
#[derive(Debug, Default, Clone)]
struct ModelSession {
    /// Where its state lives (a stateful session), or its last worker (a stateless one).
    home: Option<SlotGen>,
    stateful: bool,
    /// Workers other than `home` holding refs of it.
    also: BTreeSet<(usize, u64)>,
    lost: bool,
    /// Workers that issued it refs (for calls that carry one).
    refs: Vec<SlotGen>,
    /// Calls numbered up to this were made before its last reset: they belong to its previous
    /// incarnation and still run where they were going.
    reset_at: u64,
    /// Its current incarnation (its handle draws a new one at every reset).
    incarnation: u64,
}

struct Model {
    pool: Affinity,
    schedule: Schedule,
    events: EventStream,
    sessions: Vec<ModelSession>,
    /// The call each worker runs.
    running: Vec<Option<Running>>,
    /// Incarnations handed out so far.
    incarnations: u64,
    /// Highest seq of a stateful session's call that ran on each slot.
    last_on: HashMap<(usize, usize), u64>,
    /// Calls still waiting for a worker, by seq: their session, refs' worker, affinity.
    waiting: HashMap<u64, Waiting>,
}

/// A call a worker runs: (session, seq, detached, incarnation).
type Running = (Option<usize>, u64, bool, u64);

struct Waiting {
    s: Option<usize>,
    pin: Option<SlotGen>,
    affinity: Affinity,
    /// A release sent for a forgotten session: refused if its worker is gone, and nobody minds.
    release: bool,
    rx: Rx,
}

impl Model {
    fn new(pool: Affinity) -> Self {
        let (schedule, events) = schedule(SLOTS, pool, 6);
        Model {
            pool,
            schedule,
            events,
            sessions: vec![ModelSession::default(); SESSIONS],
            running: vec![None; SLOTS],
            incarnations: 0,
            last_on: HashMap::new(),
            waiting: HashMap::new(),
        }
    }

    fn session_of(job: &Job) -> Option<usize> {
        job.session.as_deref().map(|s| s[1..].parse().unwrap())
    }

    /// A call starts on a worker: check the rules and record it.
    fn ran(&mut self, a: Assigned) -> Result<(), TestCaseError> {
        let slot = a.at.slot;
        prop_assert!(self.running[slot].is_none(), "two calls on slot {slot}");
        prop_assert!(self.schedule.slots[slot].status == SlotStatus::Ready);
        prop_assert_eq!(a.at.generation, self.schedule.slots[slot].generation);
        let s = Self::session_of(&a.job);
        self.waiting.remove(&a.job.seq);
        self.running[slot] = Some((s, a.job.seq, a.job.detached, a.job.incarnation));
        if let Some(pin) = a.job.pin {
            prop_assert_eq!(pin, a.at, "a call with refs runs where they live");
        }
        let (Some(s), false) = (s, a.job.detached) else {
            return Ok(());
        };
        let m = &mut self.sessions[s];
        if a.job.seq <= m.reset_at {
            return Ok(()); // a call of its previous incarnation
        }
        prop_assert!(!m.lost, "a call of lost session {} ran on {:?}", s, a.at);
        if m.stateful && a.job.pin.is_none() {
            prop_assert_eq!(m.home, Some(a.at), "session {} ran away from its state", s);
        }
        // A session that holds state runs its calls on a worker in the order they were submitted.
        if m.stateful {
            let last = self.last_on.entry((s, slot)).or_default();
            prop_assert!(
                *last < a.job.seq,
                "session {} overtaken on slot {}",
                s,
                slot
            );
            *last = a.job.seq;
        }
        Ok(())
    }

    fn submit(
        &mut self,
        s: Option<usize>,
        affinity: Option<Affinity>,
        push: bool,
        with_ref: bool,
    ) -> Result<(), TestCaseError> {
        let id = s.map(|s| format!("s{s}"));
        let (mut j, mut rx) = job(id.as_deref());
        j.incarnation = s.map_or(0, |s| self.sessions[s].incarnation);
        j.affinity = affinity;
        j.keeps_state = push && s.is_some();
        let pin = s
            .filter(|_| with_ref)
            .and_then(|s| self.sessions[s].refs.last().copied());
        j.pin = pin;
        let seq = self.schedule.next_seq + 1;
        let was = s.map(|s| self.sessions[s].clone());
        let assigned = self.schedule.submit(j);
        if assigned.is_none() {
            if let Some(e) = error_of(&mut rx) {
                return self.refused(s, affinity, pin, was.is_some_and(|m| m.lost), e);
            }
        }
        if let (Some(s), Some(was)) = (s, was) {
            prop_assert!(!was.lost, "a call of lost session {} was admitted", s);
            let placed = self
                .schedule
                .placement(&format!("s{s}"))
                .map(|p| p.worker.at());
            let m = &mut self.sessions[s];
            if was.stateful {
                prop_assert_eq!(placed, was.home, "session {} moved away from its state", s);
            } else if placed.is_some() {
                m.home = placed;
                m.stateful = self.pool.is_strict() || push;
            }
        }
        match assigned {
            Some(a) if a.job.seq == seq => self.ran(a),
            // An earlier call of the session went first (a context push waits behind it).
            other => {
                if let Some(a) = other {
                    self.ran(a)?;
                }
                let affinity = affinity.unwrap_or(self.pool);
                let w = Waiting {
                    s,
                    pin,
                    affinity,
                    release: false,
                    rx,
                };
                self.waiting.insert(seq, w);
                Ok(())
            }
        }
    }

    /// A call was answered with `e` at once: only for the reasons the rules give.
    fn refused(
        &mut self,
        s: Option<usize>,
        affinity: Option<Affinity>,
        pin: Option<SlotGen>,
        lost: bool,
        e: Error,
    ) -> Result<(), TestCaseError> {
        match e {
            Error::SessionWorkerUnavailable { .. } => {
                prop_assert!(lost || self.dead(pin), "refused as lost: session {:?}", s);
            }
            Error::WorkerBusy { worker, .. } => {
                prop_assert_eq!(affinity.unwrap_or(self.pool), Affinity::StrictFailFast);
                prop_assert!(self.running[worker.slot].is_some(), "WorkerBusy, but idle");
            }
            Error::PoolSaturated { .. } => prop_assert!(self.schedule.queue.is_full()),
            other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
        }
        Ok(())
    }

    /// Whether the worker holding a call's refs is gone.
    fn dead(&self, pin: Option<SlotGen>) -> bool {
        pin.is_some_and(|p| {
            let slot = &self.schedule.slots[p.slot];
            slot.generation != p.generation || !slot.is_live()
        })
    }

    fn answer(&mut self, slot: usize, issue_ref: bool) -> Result<(), TestCaseError> {
        let Some((s, _, detached, incarnation)) = self.running[slot].take() else {
            return Ok(());
        };
        let at = self.schedule.slots[slot].at(slot);
        if let Some(next) = self.schedule.next_call(at) {
            self.ran(Assigned { at, job: next })?;
        }
        let (Some(s), true, false) = (s, issue_ref, detached) else {
            return Ok(());
        };
        let id: Arc<str> = format!("s{s}").into();
        // A stateless session's worker is the schedule's choice: the model follows it.
        if !self.sessions[s].stateful && !self.sessions[s].lost {
            self.sessions[s].home = self.schedule.placement(&id).map(|p| p.worker.at());
        }
        let woken = self.schedule.note_refs(&id, incarnation, at);
        let m = &mut self.sessions[s];
        if m.lost || incarnation != m.incarnation {
            // Lost or reset meanwhile: that state is not the session's any more.
            prop_assert!(woken.is_none());
            return Ok(());
        }
        m.refs.push(at);
        if m.home == Some(at) {
            m.stateful = true;
        } else if !m.stateful {
            m.home = Some(at);
            m.stateful = true;
        } else {
            m.also.insert((at.slot, at.generation));
        }
        match woken {
            Some(a) => self.ran(a),
            None => Ok(()),
        }
    }

    fn kill(&mut self, slot: usize) -> Result<(), TestCaseError> {
        if !matches!(
            self.schedule.slots[slot].status,
            SlotStatus::Ready | SlotStatus::Starting
        ) {
            return Ok(());
        }
        let at = self.schedule.slots[slot].at(slot);
        self.running[slot] = None;
        let mut told: Vec<usize> = Vec::new();
        for (i, m) in self.sessions.iter_mut().enumerate() {
            if m.lost {
                continue;
            }
            let was_home = m.home == Some(at);
            if was_home || m.also.contains(&(at.slot, at.generation)) {
                told.push(i);
                if m.stateful || !was_home {
                    m.lost = true;
                } else {
                    m.home = None;
                }
            }
        }
        labels(&mut self.events);
        let runnable = self.schedule.worker_lost(
            slot,
            LossReason::HeartbeatTimeout,
            Vec::new(),
            Next::Restart,
        );
        let mut expected = vec![format!("WorkerExited(p/{slot}#{})", at.generation)];
        expected.extend(told.iter().map(|i| format!("Lost(s{i})")));
        prop_assert_eq!(labels(&mut self.events), expected);
        for a in runnable {
            self.ran(a)?;
        }
        Ok(())
    }

    fn start(&mut self, slot: usize) -> Result<(), TestCaseError> {
        if !matches!(
            self.schedule.slots[slot].status,
            SlotStatus::Restarting | SlotStatus::Starting
        ) {
            return Ok(());
        }
        if let Some(a) = start(&mut self.schedule, slot) {
            self.ran(a)?;
        }
        labels(&mut self.events);
        Ok(())
    }

    fn reset(&mut self, s: usize) -> Result<(), TestCaseError> {
        let id = format!("s{s}");
        let made = std::cell::RefCell::new(Vec::new());
        let first = self.schedule.next_seq + 1;
        let release = || {
            let (job, rx) = job(Some(&id));
            made.borrow_mut().push(rx);
            Job {
                detached: true,
                ..job
            }
        };
        let runnable = self
            .schedule
            .forget(&id, self.sessions[s].incarnation, release);
        let ran: BTreeSet<u64> = runnable.iter().map(|a| a.job.seq).collect();
        for a in runnable {
            self.ran(a)?;
        }
        for (k, mut rx) in made.into_inner().into_iter().enumerate() {
            let seq = first + k as u64;
            if ran.contains(&seq) {
                continue;
            }
            match error_of(&mut rx) {
                Some(Error::SessionWorkerUnavailable { .. }) => {}
                Some(e) => return Err(TestCaseError::fail(format!("release refused: {e:?}"))),
                None => {
                    let w = Waiting {
                        s: None,
                        pin: None,
                        affinity: Affinity::StrictQueue,
                        release: true,
                        rx,
                    };
                    self.waiting.insert(seq, w);
                }
            }
        }
        self.incarnations += 1;
        self.sessions[s] = ModelSession {
            reset_at: self.schedule.next_seq,
            incarnation: self.incarnations,
            ..ModelSession::default()
        };
        Ok(())
    }

    /// After every step: work is conserved, every refused or answered call is accounted for, and
    /// the schedule's bindings agree with the model (a stateless session's worker is the
    /// schedule's choice, so the model follows it).
    fn check(&mut self) -> Result<(), TestCaseError> {
        for (i, m) in self.sessions.iter_mut().enumerate() {
            let p = self.schedule.placement(&format!("s{i}"));
            prop_assert_eq!(
                m.lost,
                p.as_ref().is_some_and(|p| p.lost.is_some()),
                "s{} lost",
                i
            );
            if m.stateful && !m.lost {
                let p = p.expect("a stateful session is bound");
                prop_assert_eq!(Some(p.worker.at()), m.home, "s{} left its state", i);
                prop_assert!(p.holds_state);
            } else if !m.lost {
                m.home = p.map(|p| p.worker.at());
            }
        }
        let sessions = &self.schedule.sessions;
        prop_assert_eq!(
            sessions.counts(),
            &sessions.recount()[..],
            "sessions per slot"
        );
        for (slot, st) in self.schedule.slots.iter().enumerate() {
            if st.is_idle() {
                prop_assert!(
                    !self.schedule.queue.has_work_for(slot),
                    "slot {} idle while a call it may run waits",
                    slot
                );
            }
            prop_assert_eq!(
                st.busy,
                self.running[slot].is_some(),
                "slot {} busy flag",
                slot
            );
        }
        let mut answered = Vec::new();
        for (seq, w) in self.waiting.iter_mut() {
            if let Some(e) = error_of(&mut w.rx) {
                answered.push((*seq, e));
            }
        }
        for (seq, e) in answered {
            let w = self.waiting.remove(&seq).expect("listed above");
            // A call of a session's previous incarnation is routed as that incarnation was, and a
            // release finds the worker it was for gone.
            let lost_then =
                w.s.is_some_and(|s| self.sessions[s].lost || seq <= self.sessions[s].reset_at);
            match e {
                Error::SessionWorkerUnavailable { .. } => {
                    prop_assert!(
                        lost_then || w.release || self.dead(w.pin),
                        "a waiting call of {:?} refused",
                        w.s
                    );
                }
                // Routed again after its worker was lost, it found its new worker busy.
                Error::WorkerBusy { .. } => prop_assert_eq!(w.affinity, Affinity::StrictFailFast),
                other => return Err(TestCaseError::fail(format!("waiting call got {other:?}"))),
            }
        }
        prop_assert_eq!(
            self.schedule.queue.len(),
            self.waiting.len(),
            "queued calls"
        );
        Ok(())
    }
}

/// Cases per run: 512, or `PYVISOR_PROPTEST_CASES` for a longer run.
fn cases() -> u32 {
    std::env::var("PYVISOR_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_schedule_keeps_the_session_rules_under_any_sequence(
        pool in affinity(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let mut m = Model::new(pool);
        for op in ops {
            match op {
                Op::Submit { s, affinity, push, with_ref } => m.submit(s, affinity, push, with_ref)?,
                Op::Answer { slot, issue_ref } => m.answer(slot, issue_ref)?,
                Op::Kill { slot } => m.kill(slot)?,
                Op::Start { slot } => m.start(slot)?,
                Op::Reset { s } => m.reset(s)?,
            }
            m.check()?;
        }
    }
}
