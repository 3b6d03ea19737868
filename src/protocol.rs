//! The wire protocol between the host and a Python worker (`docs/protocol.md`).
//!
//! Frames are a big-endian `u32` length followed by one MessagePack value `[op, id, body]`.
//! This module owns the framing, the operation codes and the bodies of the messages; the worker
//! actor moves frames and never looks inside bodies it does not need.

mod error;
mod frame;
mod message;

pub use error::ProtocolError;
pub(crate) use frame::{encode_request, FrameReader, Incoming, NIL_BODY};
pub use message::ReadyInfo;
pub(crate) use message::{
    CallBody, ContextBody, ErrorBody, GetAttrBody, MethodBody, ReleaseBody, SetAttrBody,
    StreamNextBody, StreamPage, Target,
};

/// The protocol version this crate speaks; the worker must report the same in its handshake.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default maximum frame payload size: 64 MiB.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024 * 1024;

/// Operation codes (`docs/protocol.md`, "Operations").
pub(crate) mod op {
    pub(crate) const READY: u8 = 0;
    pub(crate) const CALL: u8 = 1;
    pub(crate) const OK: u8 = 2;
    pub(crate) const ERROR: u8 = 3;
    pub(crate) const PING: u8 = 4;
    pub(crate) const PONG: u8 = 5;
    pub(crate) const SHUTDOWN: u8 = 6;
    pub(crate) const CALL_METHOD: u8 = 7;
    pub(crate) const GET_ATTR: u8 = 8;
    pub(crate) const SET_ATTR: u8 = 9;
    pub(crate) const RELEASE: u8 = 10;
    pub(crate) const STREAM_NEXT: u8 = 11;
    pub(crate) const CONTEXT: u8 = 12;
}
