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

/// The body of a `CALL` request, sent positionally: `[module, function, args, kwargs, session]`
/// (docs/protocol.md, "CALL"). The hottest request has no key strings to write or decode.
#[derive(Debug)]
pub(crate) struct CallBody<'a, A: ?Sized, K: ?Sized> {
    pub(crate) module: &'a str,
    pub(crate) function: &'a str,
    pub(crate) args: &'a A,
    pub(crate) kwargs: &'a K,
    pub(crate) session: Option<&'a str>,
}

impl<A: Serialize + ?Sized, K: Serialize + ?Sized> Serialize for CallBody<'_, A, K> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut fields = serializer.serialize_tuple(5)?;
        fields.serialize_element(self.module)?;
        fields.serialize_element(self.function)?;
        fields.serialize_element(self.args)?;
        fields.serialize_element(self.kwargs)?;
        fields.serialize_element(&self.session)?;
        fields.end()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Point {
        x: i32,
    }

    #[test]
    fn a_call_body_is_positional_and_its_arguments_keep_their_names() {
        let body = CallBody {
            module: "m",
            function: "f",
            args: &(Point { x: 1 },),
            kwargs: &(),
            session: Some("s"),
        };
        let bytes = rmp_serde::to_vec_named(&body).unwrap();
        // fixarray 5: "m", "f", [{"x": 1}], nil, "s".
        let expected = [
            0x95, 0xa1, b'm', 0xa1, b'f', 0x91, 0x81, 0xa1, b'x', 0x01, 0xc0, 0xa1, b's',
        ];
        assert_eq!(bytes, expected);
    }
}
