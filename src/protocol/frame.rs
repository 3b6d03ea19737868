use std::io::Cursor;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::ProtocolError;

/// One frame read from a worker: the op, the request id, and the payload with the offset where the
/// body starts (the body is decoded later, by whoever needs it, without another copy).
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) op: u8,
    pub(crate) id: u64,
    pub(crate) payload: Vec<u8>,
    pub(crate) body_at: usize,
}

impl Incoming {
    pub(crate) fn body(&self) -> &[u8] {
        &self.payload[self.body_at..]
    }

    fn parse(payload: Vec<u8>) -> Result<Incoming, ProtocolError> {
        let malformed = |what: &str| ProtocolError::Malformed(what.to_string());
        let mut cur = Cursor::new(payload.as_slice());
        let len = rmp::decode::read_array_len(&mut cur).map_err(|_| malformed("not an array"))?;
        if len != 3 {
            return Err(malformed("envelope is not [op, id, body]"));
        }
        let op: u8 = rmp::decode::read_int(&mut cur).map_err(|_| malformed("bad op"))?;
        let id: u64 = rmp::decode::read_int(&mut cur).map_err(|_| malformed("bad id"))?;
        let body_at = cur.position() as usize;
        if body_at >= payload.len() {
            return Err(malformed("missing body"));
        }
        Ok(Incoming {
            op,
            id,
            payload,
            body_at,
        })
    }
}

/// Reads length-prefixed frames, enforcing the size limit before allocating.
#[derive(Debug)]
pub(crate) struct FrameReader<R> {
    inner: R,
    limit: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(inner: R, limit: usize) -> Self {
        FrameReader { inner, limit }
    }

    /// The next frame, or `None` at a clean end of stream (between frames).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a cancelled read loses the part of the frame already read. The reader runs
    /// in its own task and is never raced against anything.
    pub(crate) async fn next(&mut self) -> Result<Option<Incoming>, ProtocolError> {
        let mut len = [0u8; 4];
        // End of stream before the first byte of a length prefix is the clean end; inside one, it
        // is a torn frame (`Io` with `UnexpectedEof`), like an end of stream inside a payload.
        let first = self.inner.read(&mut len).await?;
        if first == 0 {
            return Ok(None);
        }
        self.inner.read_exact(&mut len[first..]).await?;
        let size = u32::from_be_bytes(len) as usize;
        if size > self.limit {
            return Err(ProtocolError::FrameTooLarge {
                size,
                limit: self.limit,
            });
        }
        let mut payload = vec![0u8; size];
        self.inner.read_exact(&mut payload).await?;
        Incoming::parse(payload).map(Some)
    }
}

/// Builds a whole request frame around an already encoded body.
///
/// The body is copied once into the frame so the writer issues one `write` per frame.
pub(crate) fn encode_request(op: u8, id: u64, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(4 + 1 + 1 + 9 + body.len());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    rmp::encode::write_array_len(&mut frame, 3).expect("vec write");
    rmp::encode::write_uint(&mut frame, u64::from(op)).expect("vec write");
    rmp::encode::write_uint(&mut frame, id).expect("vec write");
    frame.extend_from_slice(body);
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    frame
}

/// MessagePack `nil`: the body of bodiless requests.
pub(crate) const NIL_BODY: &[u8] = &[0xc0];

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_frame_reads_back_with_op_id_and_body() {
        let frame = encode_request(4, 77, NIL_BODY);
        let mut reader = FrameReader::new(frame.as_slice(), 1024);
        let got = reader.next().await.unwrap().unwrap();
        assert_eq!((got.op, got.id, got.body()), (4, 77, NIL_BODY));
        assert!(reader.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_oversize_frame_is_refused_before_reading_it() {
        let frame = encode_request(1, 1, &[0xc0; 64]);
        let mut reader = FrameReader::new(frame.as_slice(), 16);
        let err = reader.next().await.unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::FrameTooLarge { limit: 16, .. }
        ));
    }

    #[tokio::test]
    async fn a_stream_that_ends_inside_a_length_prefix_is_a_torn_frame_not_a_clean_end() {
        // Found by the `frame_decoder` fuzz target's property (docs/reliability.md, "Fuzzing";
        // its input was `[251, 10]`: the default limit, then the one-byte stream `[10]`): the
        // reader reported 1 to 3 bytes of a length prefix followed by the end of stream as a
        // clean end between frames.
        for stream in [&[10u8][..], &[0, 0], &[0, 0, 1]] {
            let mut reader = FrameReader::new(stream, crate::protocol::DEFAULT_MAX_FRAME);
            match reader.next().await {
                Err(ProtocolError::Io(e)) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{stream:?}")
                }
                other => panic!("{stream:?}: {other:?}"),
            }
        }
        let frame = encode_request(5, 9, NIL_BODY);
        let torn = [frame.as_slice(), &[0, 0]].concat();
        let mut reader = FrameReader::new(torn.as_slice(), 1024);
        assert_eq!(reader.next().await.unwrap().unwrap().id, 9);
        assert!(matches!(reader.next().await, Err(ProtocolError::Io(_))));
    }

    #[tokio::test]
    async fn a_payload_that_is_not_an_envelope_is_malformed() {
        let mut frame = 1u32.to_be_bytes().to_vec();
        frame.push(0xc0);
        let mut reader = FrameReader::new(frame.as_slice(), 16);
        assert!(matches!(
            reader.next().await.unwrap_err(),
            ProtocolError::Malformed(_)
        ));
    }
}
