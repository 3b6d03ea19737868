//! The routing decision: where one call runs, as a pure function of the pool's slots, the call's
//! session binding and the call. The schedule (`pool/schedule.rs`) applies the decision; this
//! module decides only.
//!
//! The rules, in the order they apply (the table in `docs/architecture.md`, "Sessions"):
//!
//! 1. A session that lost its state is refused until it is reset, whatever the call.
//! 2. A call with refs runs on the worker that holds them (or is refused if it is gone).
//! 3. A call without a session runs on any idle worker, else on the first that frees.
//! 4. A session's call runs on its home worker when that is idle. When it is busy or starting,
//!    a session that holds state there (strict, or refs/contexts) waits for it, whatever the
//!    call's affinity says (`StrictFailFast` refuses instead when the worker is ready and busy).
//!    Only a stateless session whose call is `Hint` may run elsewhere: on an idle worker now, or
//!    on the first worker that frees. It moves with its call when its own worker is busy; while
//!    its own worker is still starting, the call only borrows another one and the session stays
//!    placed where it is, so sessions placed before the pool is ready stay spread.

use crate::call::Affinity;
use crate::identity::{LossReason, SlotGen};

use super::sessions::Binding;
use super::slots::{any_idle, place_session, Slot, SlotStatus};

/// What routing needs to know of a call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call {
    /// The call belongs to a session.
    pub(crate) in_session: bool,
    /// The worker holding the refs the call carries.
    pub(crate) pin: Option<SlotGen>,
    /// The call's affinity: its override, else the pool's.
    pub(crate) affinity: Affinity,
    /// The call leaves state of its session on its worker (a context push).
    pub(crate) keeps_state: bool,
}

/// Where the call goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Route {
    /// Write it to this idle slot's worker now.
    Run(usize),
    /// Queue it for this slot's worker (busy or starting).
    Wait(usize),
    /// Queue it for whichever worker frees first.
    WaitAny,
    /// Answer it with an error; it never runs.
    Refuse(Refusal),
}

/// Why a call is refused.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Refusal {
    /// The session's state, or the refs the call carries, lived on `worker`, which is gone.
    Lost { worker: SlotGen, reason: LossReason },
    /// `StrictFailFast`: the session's worker is running another call.
    Busy(SlotGen),
    /// A ref names a worker this pool never had.
    UnknownWorker(SlotGen),
    /// No slot can ever take the call (every worker stopped for good).
    NoWorker,
}

/// How the call changes its session's binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bind {
    /// Leave it as it is.
    Keep,
    /// Bind the session to this slot's worker: a new session placed, or a stateless one moved.
    To(usize),
}

/// A routing decision.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    pub(crate) route: Route,
    pub(crate) bind: Bind,
}

impl Decision {
    fn keep(route: Route) -> Self {
        Decision {
            route,
            bind: Bind::Keep,
        }
    }
}

/// Routes `call`, whose session (if any) has `binding`, in a pool whose sessions have `pool`
/// affinity; `bound` counts the sessions bound to each slot. See the module docs for the rules.
pub(crate) fn route(
    slots: &[Slot],
    bound: &[usize],
    pool: Affinity,
    binding: Option<&Binding>,
    call: &Call,
) -> Decision {
    // 1. Lost state is reported until the caller acknowledges it (`Session::reset`).
    if let Some(Binding::Lost { worker, reason }) = binding {
        return Decision::keep(Route::Refuse(Refusal::Lost {
            worker: *worker,
            reason: reason.clone(),
        }));
    }
    // 2. Refs live on one worker: the call runs there or nowhere.
    if let Some(pin) = call.pin {
        let slot = slots.get(pin.slot);
        let route = match slot {
            Some(s) if s.generation == pin.generation && s.is_live() => {
                at_home(slots, pin.slot, call.affinity)
            }
            Some(s) => Route::Refuse(match s.loss_of(pin.generation) {
                Some(reason) => Refusal::Lost {
                    worker: pin,
                    reason,
                },
                None => Refusal::UnknownWorker(pin),
            }),
            None => Route::Refuse(Refusal::UnknownWorker(pin)),
        };
        return Decision::keep(route);
    }
    // 3. Outside a session: anywhere.
    if !call.in_session {
        return Decision::keep(match any_idle(slots, bound) {
            Some(slot) => Route::Run(slot),
            None if slots.iter().any(Slot::is_live) => Route::WaitAny,
            None => Route::Refuse(Refusal::NoWorker),
        });
    }
    // 4. A session: its home, or a new one.
    let (home, stateful, bind) = match binding {
        Some(Binding::Bound { home, stateful, .. }) => (home.slot, *stateful, Bind::Keep),
        _ => match place_session(slots, bound) {
            Some(slot) => (slot, pool.is_strict(), Bind::To(slot)),
            None => return Decision::keep(Route::Refuse(Refusal::NoWorker)),
        },
    };
    let stateful = stateful || call.keeps_state;
    if stateful || call.affinity.is_strict() || slots[home].is_idle() {
        return Decision {
            route: at_home(slots, home, call.affinity),
            bind,
        };
    }
    // A stateless session whose call may run anywhere, and whose worker is not free: it moves
    // with the call if its worker is up (and busy), and stays placed while it is starting.
    let moves = slots[home].status == SlotStatus::Ready;
    match any_idle(slots, bound) {
        Some(other) => Decision {
            route: Route::Run(other),
            bind: if moves { Bind::To(other) } else { bind },
        },
        None => Decision {
            route: Route::WaitAny,
            bind,
        },
    }
}

/// What becomes of a call that waited for any worker, when worker `slot` takes it: its session
/// may have changed since it was routed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Take {
    /// It runs there; `place` binds its session there (it moves there, or was placed nowhere).
    Run { place: bool },
    /// Its session lost its state meanwhile: it is refused.
    Refuse(Refusal),
    /// Its session came to hold state on this worker's sibling: it waits for that one.
    Requeue(usize),
}

/// Checks a call that waited for any worker against its session's `binding` when `slot` takes it.
pub(crate) fn take(slots: &[Slot], binding: Option<&Binding>, slot: usize) -> Take {
    match binding {
        Some(Binding::Lost { worker, reason }) => Take::Refuse(Refusal::Lost {
            worker: *worker,
            reason: reason.clone(),
        }),
        Some(Binding::Bound { home, stateful, .. }) if home.slot != slot => {
            if *stateful {
                Take::Requeue(home.slot)
            } else {
                // It moves with its call, unless its own worker is still starting.
                Take::Run {
                    place: slots[home.slot].status == SlotStatus::Ready,
                }
            }
        }
        Some(Binding::Unplaced) => Take::Run { place: true },
        _ => Take::Run { place: false },
    }
}

/// A call that may run only on `slot`: now if it is idle, else it waits (or, `StrictFailFast`,
/// is refused when the worker is ready and running another call).
fn at_home(slots: &[Slot], slot: usize, affinity: Affinity) -> Route {
    let s = &slots[slot];
    if s.is_idle() {
        Route::Run(slot)
    } else if affinity == Affinity::StrictFailFast && s.is_ready() {
        Route::Refuse(Refusal::Busy(s.at(slot)))
    } else {
        Route::Wait(slot)
    }
}

#[cfg(test)]
mod tests;
