use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The delay before restart attempt `attempt` (0 for the first restart after a healthy period).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pyvisor::supervisor::Backoff;
///
/// struct Fixed(Duration);
/// impl Backoff for Fixed {
///     fn delay(&mut self, _attempt: u32) -> Duration { self.0 }
/// }
/// assert_eq!(Fixed(Duration::from_millis(5)).delay(3), Duration::from_millis(5));
/// ```
pub trait Backoff {
    /// The delay before the given attempt.
    fn delay(&mut self, attempt: u32) -> Duration;
}

/// `initial * factor^attempt`, capped at `max`, then spread by ±`jitter` (a fraction of the delay).
///
/// The default is 50 ms doubling up to 5 s with ±20 % jitter.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pyvisor::supervisor::{Backoff, ExponentialBackoff};
///
/// let mut b = ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(1), 2.0, 0.0);
/// assert_eq!(b.delay(0), Duration::from_millis(100));
/// assert_eq!(b.delay(2), Duration::from_millis(400));
/// assert_eq!(b.delay(10), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExponentialBackoff {
    /// Delay of the first attempt.
    pub initial: Duration,
    /// Upper bound before jitter.
    pub max: Duration,
    /// Growth per attempt.
    pub factor: f64,
    /// Spread as a fraction of the delay, in `0.0..=1.0`.
    pub jitter: f64,
}

impl ExponentialBackoff {
    /// A backoff with the given shape.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = pyvisor::supervisor::ExponentialBackoff::new(Duration::ZERO, Duration::ZERO, 1.0, 0.0);
    /// assert_eq!(b.max, Duration::ZERO);
    /// ```
    pub const fn new(initial: Duration, max: Duration, factor: f64, jitter: f64) -> Self {
        ExponentialBackoff {
            initial,
            max,
            factor,
            jitter,
        }
    }
}

impl Default for ExponentialBackoff {
    fn default() -> Self {
        ExponentialBackoff::new(Duration::from_millis(50), Duration::from_secs(5), 2.0, 0.2)
    }
}

impl Backoff for ExponentialBackoff {
    fn delay(&mut self, attempt: u32) -> Duration {
        let base = self.initial.as_secs_f64() * self.factor.powi(attempt.min(64) as i32);
        let base = base.min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        // A uniform sample in [-1, 1) from std's randomly keyed hasher: no RNG dependency needed.
        let unit = (RandomState::new().build_hasher().finish() >> 11) as f64 / (1u64 << 53) as f64;
        let spread = base * jitter * (unit * 2.0 - 1.0);
        Duration::from_secs_f64((base + spread).max(0.0))
    }
}
