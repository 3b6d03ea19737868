//! MessagePack ext type codes and the `(tag, payload)` form rmp-serde uses for them.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, Serializer};

pub(crate) const TUPLE: i8 = 1;
pub(crate) const SET: i8 = 2;
pub(crate) const FROZENSET: i8 = 3;
pub(crate) const BIGINT: i8 = 4;
pub(crate) const COMPLEX: i8 = 5;
pub(crate) const DATETIME: i8 = 6;
pub(crate) const DATE: i8 = 7;
pub(crate) const TIME: i8 = 8;
pub(crate) const NDARRAY: i8 = 9;
pub(crate) const REF: i8 = 10;
pub(crate) const STREAM_REF: i8 = 11;

/// rmp-serde's name for "serialize this `(i8, bytes)` pair as an ext value".
pub(crate) const EXT_NAME: &str = rmp_serde::MSGPACK_EXT_STRUCT_NAME;

/// Writes an ext value with any serializer (rmp-serde turns it into a real ext type).
pub(crate) fn serialize_ext<S: Serializer>(
    s: S,
    tag: i8,
    payload: &[u8],
) -> Result<S::Ok, S::Error> {
    s.serialize_newtype_struct(EXT_NAME, &(tag, RawBytes(payload)))
}

/// A byte slice that serializes as MessagePack `bin`.
pub(crate) struct RawBytes<'a>(pub(crate) &'a [u8]);

impl Serialize for RawBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// Owned bytes that deserialize from `bin` (or an array of small ints).
#[derive(Debug, Default)]
pub(crate) struct Blob(pub(crate) Vec<u8>);

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Blob, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Blob(out))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// An ext value read back: its tag and payload.
#[derive(Debug)]
pub(crate) struct Ext {
    pub(crate) tag: i8,
    pub(crate) data: Vec<u8>,
}

impl<'de> Deserialize<'de> for Ext {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ext, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ext;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a MessagePack ext value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ext, A::Error> {
                let tag: i8 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("ext without tag"))?;
                let Blob(data) = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("ext without data"))?;
                Ok(Ext { tag, data })
            }
        }
        d.deserialize_tuple(2, V)
    }
}

/// Reads a MessagePack ext payload.
pub(crate) fn decode_payload<'de, T: Deserialize<'de>, E: de::Error>(
    data: &'de [u8],
) -> Result<T, E> {
    rmp_serde::from_slice(data).map_err(E::custom)
}
