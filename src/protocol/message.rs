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

/// The target of `GET_ATTR`: a ref, or a module by name.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Target<'a> {
    Ref(&'a crate::value::Ref),
    Module(&'a str),
}

/// The body of a `CALL_METHOD` request.
#[derive(Debug, Serialize)]
pub(crate) struct MethodBody<'a, A: ?Sized, K: ?Sized> {
    pub(crate) target: &'a crate::value::Ref,
    pub(crate) method: &'a str,
    pub(crate) args: &'a A,
    pub(crate) kwargs: &'a K,
    pub(crate) session: Option<&'a str>,
}

/// The body of a `GET_ATTR` request.
#[derive(Debug, Serialize)]
pub(crate) struct GetAttrBody<'a> {
    pub(crate) target: Target<'a>,
    pub(crate) name: &'a str,
    pub(crate) session: Option<&'a str>,
}

/// The body of a `SET_ATTR` request.
#[derive(Debug, Serialize)]
pub(crate) struct SetAttrBody<'a, V: ?Sized> {
    pub(crate) target: &'a crate::value::Ref,
    pub(crate) name: &'a str,
    pub(crate) value: &'a V,
    pub(crate) session: Option<&'a str>,
}

/// The body of a `RELEASE` request (`refs: None` = the whole session).
#[derive(Debug, Serialize)]
pub(crate) struct ReleaseBody<'a> {
    pub(crate) session: Option<&'a str>,
    pub(crate) refs: Option<Vec<u64>>,
}

/// The body of a `STREAM_NEXT` request.
#[derive(Debug, Serialize)]
pub(crate) struct StreamNextBody<'a> {
    pub(crate) target: &'a crate::value::StreamRef,
    pub(crate) max: usize,
    pub(crate) session: Option<&'a str>,
}

/// The reply of a `STREAM_NEXT` request.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamPage {
    pub(crate) items: Vec<crate::Value>,
    pub(crate) done: bool,
}

/// The body of a `CONTEXT` request (`module: None` clears the session's contexts).
#[derive(Debug, Serialize)]
pub(crate) struct ContextBody<'a, A: ?Sized, K: ?Sized> {
    pub(crate) session: Option<&'a str>,
    pub(crate) module: Option<&'a str>,
    pub(crate) function: &'a str,
    pub(crate) args: &'a A,
    pub(crate) kwargs: &'a K,
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
