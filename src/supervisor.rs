//! One-for-one restart decisions, OTP style.
//!
//! [`Supervisor`] is the decision engine a supervising actor embeds: it is told when a child exits
//! and answers whether to restart it, after which delay, or to give up (escalate). The pool actor is
//! the supervising process of its workers and uses it for every slot. The engine is generic: it
//! knows children only by index and owns no actor, so its rules are unit-tested under paused time.
//!
//! * restart types: [`RestartPolicy::Permanent`], [`RestartPolicy::Transient`],
//!   [`RestartPolicy::Temporary`];
//! * restart intensity: at most `max_restarts` restarts within `within`, counted over all
//!   children ([`RestartIntensity`]); one more and the supervisor escalates;
//! * exponential backoff with jitter per child ([`Backoff`], [`ExponentialBackoff`]); a child's
//!   backoff resets when it reports itself healthy again.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use pyvisor::supervisor::{ChildExit, Decision, RestartIntensity, RestartPolicy, Supervisor};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut sup: Supervisor = Supervisor::new(
//!     RestartPolicy::Permanent,
//!     RestartIntensity::new(1, Duration::from_secs(5)),
//!     Default::default(),
//!     2,
//! );
//! assert!(matches!(sup.child_exited(0, ChildExit::Abnormal), Decision::Restart { .. }));
//! assert!(matches!(sup.child_exited(1, ChildExit::Abnormal), Decision::Escalate { .. }));
//! # }
//! ```

mod backoff;
mod policy;

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

pub use backoff::{Backoff, ExponentialBackoff};
pub use policy::{RestartIntensity, RestartPolicy};

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    /// It finished on its own, successfully (a worker process that exited with status 0).
    Normal,
    /// It crashed, was killed, or failed a health check.
    Abnormal,
}

/// What the supervisor should do about an exited child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start the child again after `after`.
    Restart {
        /// The backoff delay.
        after: Duration,
    },
    /// Leave the child stopped (temporary child, or transient child that exited normally).
    Leave,
    /// Too many restarts: give up and escalate to the supervisor's own parent.
    Escalate {
        /// Restarts counted in the window, including the refused one.
        restarts: usize,
        /// The intensity window.
        within: Duration,
    },
}

/// The restart engine of a one-for-one supervisor over `children` indexed children.
///
/// Time comes from `tokio::time`, so `#[tokio::test(start_paused = true)]` drives it.
#[derive(Debug)]
pub struct Supervisor<B = ExponentialBackoff> {
    policy: RestartPolicy,
    intensity: RestartIntensity,
    backoff: B,
    restarts: VecDeque<Instant>,
    attempts: Vec<u32>,
}

impl<B: Backoff> Supervisor<B> {
    /// A supervisor with the given rules for `children` children.
    ///
    /// # Examples
    ///
    /// ```
    /// use pyvisor::supervisor::{RestartPolicy, Supervisor};
    /// let sup: Supervisor = Supervisor::new(RestartPolicy::Permanent, Default::default(), Default::default(), 4);
    /// assert_eq!(sup.restarts_in_window(), 0);
    /// ```
    pub fn new(
        policy: RestartPolicy,
        intensity: RestartIntensity,
        backoff: B,
        children: usize,
    ) -> Self {
        Supervisor {
            policy,
            intensity,
            backoff,
            restarts: VecDeque::new(),
            attempts: vec![0; children],
        }
    }

    /// Decides what to do about child `child`, which just ended with `exit`.
    ///
    /// A restart is counted against the intensity only when one is granted or refused; leaving a
    /// child down costs nothing.
    ///
    /// # Panics
    ///
    /// If `child` is not below the number of children given to [`Supervisor::new`].
    pub fn child_exited(&mut self, child: usize, exit: ChildExit) -> Decision {
        let leave = matches!(
            (self.policy, exit),
            (RestartPolicy::Temporary, _) | (RestartPolicy::Transient, ChildExit::Normal)
        );
        if leave {
            return Decision::Leave;
        }
        let now = Instant::now();
        while let Some(&t) = self.restarts.front() {
            if now.duration_since(t) >= self.intensity.within {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.push_back(now);
        if self.restarts.len() > self.intensity.max_restarts as usize {
            return Decision::Escalate {
                restarts: self.restarts.len(),
                within: self.intensity.within,
            };
        }
        let attempt = self.attempts[child];
        self.attempts[child] = attempt.saturating_add(1);
        Decision::Restart {
            after: self.backoff.delay(attempt),
        }
    }

    /// Child `child` is healthy again: its next failure starts from the first backoff step.
    pub fn child_healthy(&mut self, child: usize) {
        self.attempts[child] = 0;
    }

    /// Restarts granted or refused within the current intensity window.
    pub fn restarts_in_window(&self) -> usize {
        let now = Instant::now();
        self.restarts
            .iter()
            .filter(|t| now.duration_since(**t) < self.intensity.within)
            .count()
    }
}

#[cfg(test)]
mod tests;
