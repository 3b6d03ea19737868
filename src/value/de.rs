//! `Deserialize for Value`: MessagePack natives, plus ext types decoded by tag.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::ext::{self, Ext};
use super::{NdArray, Ref, StreamRef, Value};

/// Deepest nesting of containers a decoded value may have. Decoding recurses once per level (and
/// every tuple or set payload is decoded by a fresh decoder, whose own depth limit starts over),
/// so an unbounded depth would overflow the stack — and a stack overflow aborts the host process.
/// 128 levels fit the 2 MiB stack of a tokio worker thread in debug builds with a wide margin.
pub const MAX_DEPTH: usize = 128;

thread_local! {
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// One level of nesting, counted for the whole decode on this thread (decoding is synchronous).
struct Level;

impl Level {
    fn enter<E: de::Error>() -> Result<Level, E> {
        DEPTH.with(|d| {
            let depth = d.get() + 1;
            if depth > MAX_DEPTH {
                return Err(E::custom(format!(
                    "value nested deeper than {MAX_DEPTH} levels"
                )));
            }
            d.set(depth);
            Ok(Level)
        })
    }
}

impl Drop for Level {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get() - 1));
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

fn text<E: de::Error>(data: Vec<u8>, what: &str) -> Result<String, E> {
    String::from_utf8(data).map_err(|_| E::custom(format!("{what} is not UTF-8")))
}

/// Decodes an ext value by tag.
pub(crate) fn from_ext<E: de::Error>(e: Ext) -> Result<Value, E> {
    let _level = Level::enter::<E>()?;
    Ok(match e.tag {
        ext::TUPLE => Value::Tuple(ext::decode_payload(&e.data)?),
        ext::SET => Value::Set(ext::decode_payload(&e.data)?),
        ext::FROZENSET => Value::FrozenSet(ext::decode_payload(&e.data)?),
        ext::BIGINT => Value::BigInt(text(e.data, "a big int")?),
        ext::COMPLEX => {
            let (re, im) = ext::decode_payload(&e.data)?;
            Value::Complex { re, im }
        }
        ext::DATETIME => Value::DateTime(text(e.data, "a datetime")?),
        ext::DATE => Value::Date(text(e.data, "a date")?),
        ext::TIME => Value::Time(text(e.data, "a time")?),
        ext::NDARRAY => Value::NdArray(NdArray::from_payload(&e.data)?),
        ext::REF => Value::Ref(Ref::from_payload(&e.data)?),
        ext::STREAM_REF => Value::StreamRef(StreamRef(Ref::from_payload(&e.data)?)),
        tag => return Err(E::custom(format!("unknown ext type {tag}"))),
    })
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Python value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from_u64(v))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or_else(|_| Value::BigInt(v.to_string()), Value::Int))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        Ok(u64::try_from(v).map_or_else(|_| Value::BigInt(v.to_string()), Value::from_u64))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        from_ext(Ext::deserialize(d)?)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let _level = Level::enter::<A::Error>()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let _level = Level::enter::<A::Error>()?;
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Value::Map(entries))
    }
}
