//! # pyvisor
//!
//! Supervised pools of Python worker processes for Rust programs, modeled on Erlang/OTP.
//!
//! * Every Python process is owned by a worker actor; a pool actor per named pool supervises its
//!   workers (restart types, restart intensity, backoff) and routes calls by session.
//! * Sessions keep their Python state on one worker. When that worker dies, the session is told
//!   so — [`Event::SessionWorkerUnavailable`] at once, and
//!   [`Error::SessionWorkerUnavailable`] on its next call under strict affinity — and never
//!   silently continues on a fresh interpreter.
//! * Python's stdout and stderr are free for user code: the protocol runs on dedicated pipes, and
//!   output is re-emitted as `tracing` events.
//!
//! ```no_run
//! use pyvisor::{Affinity, PoolConfig, Runtime};
//!
//! # #[tokio::main] async fn main() -> Result<(), pyvisor::Error> {
//! let rt = Runtime::builder()
//!     .pool(PoolConfig::new("triage").size(2).affinity(Affinity::StrictQueue))
//!     .start()
//!     .await?;
//! let s1 = rt.session("triage", "s1")?;
//! let root: f64 = s1.call("math", "sqrt", &(2.0,), &()).await?;
//! println!("{root}");
//! rt.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! See `docs/architecture.md` for the supervision tree and the failure semantics, and
//! `docs/protocol.md` for the wire protocol.

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![deny(unused_must_use)]
#![warn(clippy::mod_module_files)]

// The layers, bottom up (docs/architecture.md, "Modules"): identity, error, call, event, value,
// protocol, alarm, process, supervisor; then worker and template; then pool; then runtime.
mod alarm;
mod call;
pub mod dspy;
mod error;
mod event;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod identity;
mod pool;
mod process;
pub mod protocol;
mod runtime;
pub mod supervisor;
mod template;
pub mod value;
pub mod worker;

pub use call::{Affinity, CallOptions};
pub use error::{Error, PythonError, Result};
pub use event::{Event, EventStream};
pub use identity::{ExitStatus, LossReason, WorkerId};
pub use pool::{LaunchMode, Placement, PoolConfig, PoolStats, PoolStatus, WorkerStats};
pub use runtime::{Delivered, Runtime, RuntimeBuilder, RuntimeConfig, Session};
pub use supervisor::RestartPolicy;
pub use value::{from_value, NdArray, Ref, StreamRef, Value};
