//! The host's frame reader (`src/protocol/frame.rs`) on an arbitrary byte stream from a worker,
//! then the decoding of each frame's body as the host does for its op (`src/protocol/message.rs`,
//! the value codec for `OK`).
//!
//! Input: one byte that picks the frame limit, then the stream. Checked, besides "no panic, no
//! abort, no hang": every frame returned lies inside the stream at the place the length prefixes
//! say and within the limit; a clean end of stream is reported only between frames; each error
//! names what really happened at the point where reading stopped; every frame read survives a
//! round trip through the host's own frame encoder.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pyvisor::fuzzing::{decode_reply_body, encode_frame, read_frames, ProtocolError};
use pyvisor::protocol::DEFAULT_MAX_FRAME;
use pyvisor_fuzz::on_host_stack;

/// Frame limits to read with: tiny ones make the size check bite on short inputs; the default
/// limit is what a pool uses unless configured otherwise.
const LIMITS: [usize; 4] = [0, 16, 4096, DEFAULT_MAX_FRAME];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, stream)) = data.split_first() else {
        return;
    };
    let limit = LIMITS[usize::from(pick) % LIMITS.len()];
    let stream = stream.to_vec();
    on_host_stack(move || check(&stream, limit));
});

fn announced(stream: &[u8], at: usize) -> Option<usize> {
    let len: [u8; 4] = stream.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(len) as usize)
}

fn check(stream: &[u8], limit: usize) {
    let (frames, error) = read_frames(stream, limit);

    // Frames come one after the other, each where its length prefix says.
    let mut at = 0;
    for frame in &frames {
        let size = announced(stream, at).expect("a frame was read from a whole length prefix");
        assert!(
            size <= limit,
            "a frame of {size} bytes passed the {limit}-byte limit"
        );
        let payload = &stream[at + 4..at + 4 + size];
        assert!(!frame.body.is_empty(), "a frame without a body");
        assert!(
            payload.ends_with(&frame.body),
            "the body is not the payload's tail"
        );
        at += 4 + size;

        // The host's own encoder builds a frame that reads back the same.
        let again = encode_frame(frame.op, frame.id, &frame.body);
        let (back, e) = read_frames(&again, usize::MAX);
        assert!(
            e.is_none(),
            "a frame built by the host does not read back: {e:?}"
        );
        assert_eq!(back, std::slice::from_ref(frame));

        let _ = decode_reply_body(frame.op, &frame.body);
    }

    let rest = stream.len() - at;
    match error {
        None => assert_eq!(rest, 0, "a clean end of stream reported inside a frame"),
        Some(ProtocolError::FrameTooLarge { size, limit: l }) => {
            assert_eq!(l, limit);
            assert_eq!(Some(size), announced(stream, at));
            assert!(size > limit);
        }
        Some(ProtocolError::Malformed(_)) => {
            let size = announced(stream, at).expect("malformed frame has a length prefix");
            assert!(size <= limit && 4 + size <= rest, "malformed but not whole");
        }
        Some(ProtocolError::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
            let whole = announced(stream, at).is_some_and(|size| 4 + size <= rest);
            assert!(rest > 0 && !whole, "an i/o error on a whole frame");
        }
        Some(other) => panic!("unexpected error {other:?}"),
    }
}
