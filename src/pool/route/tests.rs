//! The routing table, row by row (`docs/architecture.md`, "Sessions").

use super::*;
use crate::call::Affinity::{Hint, StrictFailFast, StrictQueue};
use crate::pool::slots::SlotStatus::{self, Ready, Restarting, Starting, Stopped};

/// A slot in a given state, with `sessions` bound to it.
fn slot(status: SlotStatus, busy: bool, sessions: usize) -> (Slot, usize) {
    (crate::pool::slots::slot(status, busy), sessions)
}

fn at(slot: usize, generation: u64) -> SlotGen {
    SlotGen::new(slot, generation)
}

fn call(affinity: Affinity) -> Call {
    Call {
        in_session: true,
        pin: None,
        affinity,
        keeps_state: false,
    }
}

fn bound(slot: usize, stateful: bool) -> Binding {
    Binding::Bound {
        home: at(slot, 0),
        stateful,
        also: Vec::new(),
    }
}

/// Slot 0 busy, slot 1 idle.
fn busy_and_idle() -> Vec<(Slot, usize)> {
    vec![slot(Ready, true, 1), slot(Ready, false, 1)]
}

fn decide(
    pool_slots: &[(Slot, usize)],
    pool: Affinity,
    binding: Option<Binding>,
    call: Call,
) -> Decision {
    let slots: Vec<Slot> = pool_slots.iter().map(|(s, _)| s.clone()).collect();
    let bound: Vec<usize> = pool_slots.iter().map(|(_, n)| *n).collect();
    route(&slots, &bound, pool, binding.as_ref(), &call)
}

#[test]
fn a_session_runs_on_its_idle_worker_whatever_the_affinity() {
    let slots = vec![slot(Ready, false, 1), slot(Ready, false, 0)];
    for affinity in [Hint, StrictQueue, StrictFailFast] {
        for stateful in [false, true] {
            let d = decide(&slots, affinity, Some(bound(0, stateful)), call(affinity));
            assert_eq!(d.route, Route::Run(0), "{affinity:?} stateful={stateful}");
            assert_eq!(d.bind, Bind::Keep);
        }
    }
}

#[test]
fn a_stateless_hint_session_moves_to_an_idle_worker_when_its_own_is_busy() {
    let d = decide(&busy_and_idle(), Hint, Some(bound(0, false)), call(Hint));
    assert_eq!(d.route, Route::Run(1));
    assert_eq!(d.bind, Bind::To(1), "the session moves with its call");
}

#[test]
fn a_hint_session_with_state_waits_for_its_busy_worker() {
    let d = decide(&busy_and_idle(), Hint, Some(bound(0, true)), call(Hint));
    assert_eq!(d.route, Route::Wait(0));
    assert_eq!(d.bind, Bind::Keep);
}

#[test]
fn a_context_push_never_moves_a_session() {
    let push = Call {
        keeps_state: true,
        ..call(Hint)
    };
    let d = decide(&busy_and_idle(), Hint, Some(bound(0, false)), push);
    assert_eq!(d.route, Route::Wait(0));
}

#[test]
fn a_hint_override_waits_for_the_worker_of_a_strict_session() {
    for pool in [StrictQueue, StrictFailFast] {
        let d = decide(&busy_and_idle(), pool, Some(bound(0, true)), call(Hint));
        assert_eq!(
            d.route,
            Route::Wait(0),
            "{pool:?}: never elsewhere, never WorkerBusy"
        );
        assert_eq!(d.bind, Bind::Keep, "{pool:?}: the binding never moves");
    }
}

#[test]
fn strict_fail_fast_refuses_when_the_ready_worker_is_busy_and_waits_while_it_starts() {
    let d = decide(
        &busy_and_idle(),
        StrictFailFast,
        Some(bound(0, true)),
        call(StrictFailFast),
    );
    assert_eq!(d.route, Route::Refuse(Refusal::Busy(at(0, 0))));
    let starting = vec![slot(Starting, false, 1), slot(Ready, false, 0)];
    let d = decide(
        &starting,
        StrictFailFast,
        Some(bound(0, true)),
        call(StrictFailFast),
    );
    assert_eq!(d.route, Route::Wait(0));
}

#[test]
fn a_strict_override_keeps_a_stateless_hint_session_at_home() {
    let d = decide(
        &busy_and_idle(),
        Hint,
        Some(bound(0, false)),
        call(StrictQueue),
    );
    assert_eq!(d.route, Route::Wait(0));
    let d = decide(
        &busy_and_idle(),
        Hint,
        Some(bound(0, false)),
        call(StrictFailFast),
    );
    assert_eq!(d.route, Route::Refuse(Refusal::Busy(at(0, 0))));
}

#[test]
fn a_stateless_hint_session_waits_for_any_worker_when_all_are_busy() {
    let slots = vec![slot(Ready, true, 1), slot(Ready, true, 1)];
    let d = decide(&slots, Hint, Some(bound(0, false)), call(Hint));
    assert_eq!(d.route, Route::WaitAny);
}

#[test]
fn a_hint_session_placed_on_a_starting_worker_stays_placed_there() {
    let slots = vec![slot(Starting, false, 0), slot(Starting, false, 1)];
    let d = decide(&slots, Hint, None, call(Hint));
    assert_eq!(d.route, Route::WaitAny);
    assert_eq!(d.bind, Bind::To(0), "placed on the least-loaded worker");
    // Its call borrows an idle worker; the session stays placed on its own.
    let slots = vec![slot(Starting, false, 1), slot(Ready, false, 2)];
    let d = decide(&slots, Hint, Some(bound(0, false)), call(Hint));
    assert_eq!((d.route, d.bind), (Route::Run(1), Bind::Keep));
}

#[test]
fn a_new_session_goes_to_the_least_loaded_worker_or_an_idle_one() {
    let slots = vec![slot(Ready, false, 2), slot(Ready, false, 1)];
    let d = decide(&slots, StrictQueue, None, call(StrictQueue));
    assert_eq!((d.route, d.bind), (Route::Run(1), Bind::To(1)));
    // Hint: the least-loaded worker is busy, another is idle: it starts there.
    let slots = vec![slot(Ready, false, 2), slot(Ready, true, 1)];
    let d = decide(&slots, Hint, None, call(Hint));
    assert_eq!((d.route, d.bind), (Route::Run(0), Bind::To(0)));
}

#[test]
fn a_lost_session_is_refused_whatever_the_call() {
    let lost = Binding::Lost {
        worker: at(0, 0),
        reason: LossReason::HeartbeatTimeout,
    };
    let slots = vec![slot(Ready, false, 0), slot(Ready, false, 0)];
    for affinity in [Hint, StrictQueue, StrictFailFast] {
        let d = decide(&slots, StrictQueue, Some(lost.clone()), call(affinity));
        assert!(
            matches!(d.route, Route::Refuse(Refusal::Lost { .. })),
            "{affinity:?}"
        );
    }
}

#[test]
fn a_call_with_refs_runs_where_they_live_or_is_refused() {
    let mut slots = vec![slot(Ready, false, 0), slot(Ready, true, 0)];
    let pinned = |pin| Call {
        pin: Some(pin),
        ..call(Hint)
    };
    let d = decide(&slots, Hint, Some(bound(0, false)), pinned(at(1, 0)));
    assert_eq!(
        d.route,
        Route::Wait(1),
        "waits for the refs' worker, not the idle one"
    );
    slots[1].0.generation = 1;
    slots[1].0.record_loss(0, LossReason::HeartbeatTimeout);
    slots[1].0.status = Restarting;
    let d = decide(&slots, Hint, Some(bound(0, false)), pinned(at(1, 0)));
    assert_eq!(
        d.route,
        Route::Refuse(Refusal::Lost {
            worker: at(1, 0),
            reason: LossReason::HeartbeatTimeout
        })
    );
    let d = decide(&slots, Hint, None, pinned(at(1, 9)));
    assert_eq!(d.route, Route::Refuse(Refusal::UnknownWorker(at(1, 9))));
    let d = decide(&slots, Hint, None, pinned(at(5, 0)));
    assert_eq!(d.route, Route::Refuse(Refusal::UnknownWorker(at(5, 0))));
}

#[test]
fn a_call_outside_any_session_runs_anywhere() {
    let outside = Call {
        in_session: false,
        ..call(StrictQueue)
    };
    let d = decide(&busy_and_idle(), StrictQueue, None, outside);
    assert_eq!(d.route, Route::Run(1));
    let busy = vec![slot(Ready, true, 0), slot(Starting, false, 0)];
    let d = decide(&busy, StrictQueue, None, outside);
    assert_eq!(d.route, Route::WaitAny);
    let down = vec![slot(Stopped, false, 0)];
    let d = decide(&down, StrictQueue, None, outside);
    assert_eq!(d.route, Route::Refuse(Refusal::NoWorker));
}
