use serde::{Deserialize, Serialize};

/// What a worker says about itself in its handshake.
///
/// # Examples
///
/// ```
/// let info = pyvisor::protocol::ReadyInfo::default();
/// assert_eq!(info.protocol, 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct ReadyInfo {
    /// Protocol version the worker speaks.
    pub protocol: u32,
    /// OS process id of the worker.
    pub pid: u32,
    /// Python version, e.g. `3.11.7`.
    pub python: String,
    /// `sys.implementation.name`, e.g. `cpython`.
    pub implementation: String,
    /// Version of the `pyvisor_worker` package.
    pub package: String,
}

/// The body of a `CALL` request.
#[derive(Debug, Serialize)]
pub(crate) struct CallBody<'a, A: ?Sized, K: ?Sized> {
    pub(crate) module: &'a str,
    pub(crate) function: &'a str,
    pub(crate) args: &'a A,
    pub(crate) kwargs: &'a K,
    pub(crate) session: Option<&'a str>,
}

/// The body of an `ERROR` reply.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    pub(crate) kind: String,
    #[serde(rename = "type", default)]
    pub(crate) type_name: String,
    #[serde(default)]
    pub(crate) module: String,
    #[serde(default)]
    pub(crate) message: String,
    #[serde(default)]
    pub(crate) traceback: String,
}
