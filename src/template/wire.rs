//! The datagrams between the host and a template (`docs/protocol.md`, "Template process").

use serde::{Deserialize, Serialize};

/// Host → template: fork a worker. Carries four descriptors, in this order: the request pipe's
/// read end, the reply pipe's write end, stdout's write end, stderr's write end.
#[derive(Debug, Serialize)]
pub(super) struct ForkRequest<'a> {
    pub(super) op: &'a str,
    pub(super) id: u64,
    pub(super) slot: usize,
    pub(super) generation: u64,
}

/// Template → host.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum TemplateReply {
    /// The template imported its preload list and is single-threaded: it can fork.
    Ready {
        pid: u32,
        python: String,
        #[serde(default)]
        preloaded: Vec<String>,
    },
    /// A worker was cloned; its parent is the host and its process group exists.
    Forked { id: u64, pid: u32 },
    /// The template could not fork this worker (it keeps serving). `pid`: a child was cloned but
    /// died during its setup; it is the host's child, to be reaped.
    ForkFailed {
        id: u64,
        error: String,
        #[serde(default)]
        pid: Option<u32>,
    },
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::TemplateReply;

    #[test]
    fn replies_decode_from_plain_msgpack_maps() {
        let mut forked = BTreeMap::new();
        forked.insert("op", rmpv_like::str("forked"));
        forked.insert("id", rmpv_like::int(7));
        forked.insert("pid", rmpv_like::int(4242));
        let bytes = rmp_serde::to_vec_named(&forked).unwrap();
        let reply: TemplateReply = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(reply, TemplateReply::Forked { id: 7, pid: 4242 });
    }

    /// A tiny untagged value so the test map can mix strings and integers.
    mod rmpv_like {
        #[derive(serde::Serialize)]
        #[serde(untagged)]
        pub(super) enum V {
            S(&'static str),
            I(u64),
        }
        pub(super) fn str(s: &'static str) -> V {
            V::S(s)
        }
        pub(super) fn int(i: u64) -> V {
            V::I(i)
        }
    }
}
