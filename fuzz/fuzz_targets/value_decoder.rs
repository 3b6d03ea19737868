//! The value codec (`src/value.rs`, `src/value/de.rs`, ext types in `src/value/ext.rs`, ndarrays,
//! ref payloads) on an arbitrary reply body, as a caller decodes an `OK` reply; then typed results
//! (`from_value`, `src/value/from.rs`) for a set of result types.
//!
//! Checked, besides "no panic, no abort, no hang": an undecodable body is `Error::Decode`; a
//! decoded value re-encodes, and the re-encoding decodes to the same value (`Value: PartialEq`;
//! bit for bit through the bytes when a NaN makes `==` useless) and encodes to the same bytes; a
//! type a value does not fit is `Error::Decode`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pyvisor::fuzzing::{decode_value, encode_value, typed_views};
use pyvisor::Error;
use pyvisor_fuzz::{has_nan, on_host_stack};

fuzz_target!(|data: &[u8]| {
    let data = data.to_vec();
    on_host_stack(move || check(&data));
});

fn check(body: &[u8]) {
    let first = match decode_value(body) {
        Ok(v) => v,
        Err(Error::Decode { .. }) => return,
        Err(other) => panic!("decoding gave a non-decode error: {other:?}"),
    };
    let bytes = encode_value(&first).expect("a decoded value encodes");
    let second = decode_value(&bytes).expect("an encoded value decodes");
    let again = encode_value(&second).expect("a decoded value encodes");
    assert_eq!(bytes, again, "encode(decode(encode(v))) != encode(v)");
    if !has_nan(&first) {
        assert_eq!(first, second, "decode(encode(v)) != v");
    }
    typed_views(&first);
}
