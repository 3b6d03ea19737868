use std::time::Duration;

use serde::Deserialize;

/// When an exited child is restarted (OTP restart types).
///
/// # Examples
///
/// ```
/// assert_eq!(pyvisor::supervisor::RestartPolicy::default(), pyvisor::supervisor::RestartPolicy::Permanent);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Always restarted.
    #[default]
    Permanent,
    /// Restarted only after an abnormal exit.
    Transient,
    /// Never restarted.
    Temporary,
}

/// At most `max_restarts` restarts within `within` (OTP `MaxR` / `MaxT`); one more escalates.
///
/// The default is 3 restarts in 5 seconds, as in OTP and Snakepit.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let i = pyvisor::supervisor::RestartIntensity::new(10, Duration::from_secs(60));
/// assert_eq!(i.max_restarts, 10);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartIntensity {
    /// Restarts allowed in the window.
    pub max_restarts: u32,
    /// The sliding window.
    pub within: Duration,
}

impl RestartIntensity {
    /// `max_restarts` restarts within `within`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let i = pyvisor::supervisor::RestartIntensity::new(3, Duration::from_secs(5));
    /// assert_eq!(i, Default::default());
    /// ```
    pub const fn new(max_restarts: u32, within: Duration) -> Self {
        RestartIntensity {
            max_restarts,
            within,
        }
    }
}

impl Default for RestartIntensity {
    fn default() -> Self {
        RestartIntensity::new(3, Duration::from_secs(5))
    }
}
