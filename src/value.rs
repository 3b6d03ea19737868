//! Dynamic Python values.
//!
//! [`Value`] holds any value that crosses the wire without a Rust type for it: use it as a call's
//! result type when the shape is not known in advance. Typed calls work with any `serde` type
//! instead (`session.call::<f64>(...)`).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// A MessagePack-native Python value.
///
/// | Python | `Value` |
/// |---|---|
/// | `None` | `Nil` |
/// | `bool` | `Bool` |
/// | `int` (fits i64 / u64) | `Int` / `UInt` |
/// | `float` | `Float` (NaN and ±inf exact) |
/// | `str` | `Str` |
/// | `bytes` | `Bytes` |
/// | `list`, `tuple` | `List` |
/// | `dict` | `Map` (insertion order, any keys) |
///
/// # Examples
///
/// ```
/// use pyvisor::Value;
///
/// let v = Value::List(vec![Value::Int(1), Value::Str("a".into())]);
/// let bytes = rmp_serde::to_vec(&v).unwrap();
/// let back: Value = rmp_serde::from_slice(&bytes).unwrap();
/// assert_eq!(v, back);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub enum Value {
    /// `None`.
    #[default]
    Nil,
    /// `bool`.
    Bool(bool),
    /// An `int` that fits in `i64`.
    Int(i64),
    /// An `int` above `i64::MAX` that fits in `u64`.
    UInt(u64),
    /// `float`.
    Float(f64),
    /// `str`.
    Str(String),
    /// `bytes`.
    Bytes(Vec<u8>),
    /// `list` or `tuple`.
    List(Vec<Value>),
    /// `dict`, in insertion order.
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// The string, if this is a `Str`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(pyvisor::Value::Str("x".into()).as_str(), Some("x"));
    /// ```
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The number as `f64`, if this is an int or a float.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(pyvisor::Value::Int(2).as_f64(), Some(2.0));
    /// ```
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::UInt(u) => Some(u as f64),
            Value::Float(f) => Some(f),
            _ => None,
        }
    }

    /// The value under `key`, if this is a map with a string key `key`.
    ///
    /// # Examples
    ///
    /// ```
    /// use pyvisor::Value;
    /// let m = Value::Map(vec![(Value::Str("a".into()), Value::Int(1))]);
    /// assert_eq!(m.get("a"), Some(&Value::Int(1)));
    /// ```
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Nil => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(v) => s.serialize_str(v),
            Value::Bytes(b) => s.serialize_bytes(b),
            Value::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a MessagePack value")
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
        Ok(i64::try_from(v).map_or(Value::UInt(v), Value::Int))
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
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_infinities_survive_a_round_trip() {
        for f in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let bytes = rmp_serde::to_vec(&Value::Float(f)).unwrap();
            let Value::Float(back) = rmp_serde::from_slice(&bytes).unwrap() else {
                panic!("not a float");
            };
            assert_eq!(back.to_bits(), f.to_bits());
        }
    }

    #[test]
    fn maps_keep_non_string_keys_in_order() {
        let v = Value::Map(vec![
            (Value::Int(2), Value::Nil),
            (Value::Int(1), Value::Bytes(vec![1, 2])),
        ]);
        let back: Value = rmp_serde::from_slice(&rmp_serde::to_vec(&v).unwrap()).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn large_unsigned_ints_stay_unsigned() {
        let back: Value = rmp_serde::from_slice(&rmp_serde::to_vec(&u64::MAX).unwrap()).unwrap();
        assert_eq!(back, Value::UInt(u64::MAX));
    }
}
