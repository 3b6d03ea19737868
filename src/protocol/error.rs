use std::io;

/// A broken wire rule: the worker that caused it is killed and restarted.
///
/// # Examples
///
/// ```
/// use pyvisor::protocol::ProtocolError;
///
/// let e = ProtocolError::FrameTooLarge { size: 10, limit: 4 };
/// assert_eq!(e.to_string(), "frame of 10 bytes exceeds the 4-byte limit");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame announced a payload above the limit.
    #[error("frame of {size} bytes exceeds the {limit}-byte limit")]
    FrameTooLarge {
        /// Announced payload size.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The payload is not a `[op, id, body]` MessagePack array.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The channel failed while reading or writing.
    #[error("channel i/o: {0}")]
    Io(#[from] io::Error),
}
