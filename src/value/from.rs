//! `from_value`: a [`Value`] as a serde `Deserializer`, for typed results.

use std::any::Any;
use std::fmt;
use std::vec;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;

use super::ext::EXT_NAME;
use super::Value;

/// Builds a `T` from a [`Value`], the way typed results are decoded.
///
/// Sequences (`Vec`, tuples, sets) accept a list, tuple, set, frozenset, a 1-D view of a numeric
/// ndarray, or bytes; `i128`/`u128`/`String` accept a big int; `String` accepts datetimes;
/// `(f64, f64)` accepts a complex.
///
/// # Errors
///
/// [`Error::Decode`](crate::Error::Decode) naming the type when the value does not fit.
///
/// # Examples
///
/// ```
/// use pyvisor::{from_value, Value};
///
/// let v = Value::Tuple(vec![Value::Int(7), Value::Str("x".into())]);
/// let (n, s): (u8, String) = from_value(v).unwrap();
/// assert_eq!((n, s.as_str()), (7, "x"));
/// ```
pub fn from_value<T: DeserializeOwned + 'static>(value: Value) -> Result<T, crate::Error> {
    // A `Value` asked for as a `Value` is returned as is (a round trip through serde would turn
    // tuples into lists).
    let value: Box<dyn Any> = Box::new(value);
    match value.downcast::<T>() {
        Ok(same) => Ok(*same),
        Err(value) => {
            let value = *value.downcast::<Value>().expect("boxed a Value");
            T::deserialize(ValueDeserializer(value)).map_err(|e| crate::Error::Decode {
                expected: std::any::type_name::<T>(),
                message: e.0,
            })
        }
    }
}

/// Why a value did not fit the requested type.
#[derive(Debug)]
pub(crate) struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

impl de::Error for DecodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DecodeError(msg.to_string())
    }
}

pub(crate) struct ValueDeserializer(pub(crate) Value);

impl ValueDeserializer {
    /// The ext form of a value that has no serde-native form.
    fn ext(self) -> Result<ExtDeserializer, DecodeError> {
        let (tag, data) = self
            .0
            .ext_parts()
            .ok_or_else(|| de::Error::custom("not an ext value"))?
            .map_err(de::Error::custom)?;
        Ok(ExtDeserializer(
            Some(Value::Int(i64::from(tag))),
            Some(Value::Bytes(data)),
        ))
    }

    fn is_ext(&self) -> bool {
        !matches!(
            self.0,
            Value::Nil
                | Value::Bool(_)
                | Value::Int(_)
                | Value::UInt(_)
                | Value::Float(_)
                | Value::Str(_)
                | Value::Bytes(_)
                | Value::List(_)
                | Value::Map(_)
        )
    }
}

fn seq_of(items: Vec<Value>) -> SeqDeserializer {
    SeqDeserializer(items.into_iter())
}

impl<'de> de::Deserializer<'de> for ValueDeserializer {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::Nil => v.visit_unit(),
            Value::Bool(b) => v.visit_bool(b),
            Value::Int(i) => v.visit_i64(i),
            Value::UInt(u) => v.visit_u64(u),
            Value::Float(f) => v.visit_f64(f),
            Value::Str(s) => v.visit_string(s),
            Value::Bytes(b) => v.visit_byte_buf(b),
            Value::List(items) => v.visit_seq(seq_of(items)),
            Value::Map(entries) => v.visit_map(MapDeserializer {
                entries: entries.into_iter(),
                value: None,
            }),
            _ => v.visit_newtype_struct(self.ext()?),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::List(items)
            | Value::Tuple(items)
            | Value::Set(items)
            | Value::FrozenSet(items) => v.visit_seq(seq_of(items)),
            Value::Complex { re, im } => {
                v.visit_seq(seq_of(vec![Value::Float(re), Value::Float(im)]))
            }
            Value::Bytes(b) => v.visit_seq(seq_of(
                b.into_iter().map(|x| Value::Int(x.into())).collect(),
            )),
            Value::NdArray(a) => match a.elements() {
                Some(items) => v.visit_seq(seq_of(items)),
                None => Err(de::Error::custom(format!(
                    "cannot read an ndarray of dtype {} as a sequence",
                    a.dtype
                ))),
            },
            other => ValueDeserializer(other).deserialize_any(v),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        v: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::Nil => v.visit_none(),
            other => v.visit_some(ValueDeserializer(other)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, DecodeError> {
        if name == EXT_NAME && self.is_ext() {
            v.visit_newtype_struct(self.ext()?)
        } else if name == EXT_NAME {
            Err(de::Error::custom(format!(
                "expected a ref, got a Python {}",
                self.0.kind()
            )))
        } else {
            v.visit_newtype_struct(self)
        }
    }

    fn deserialize_i128<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::BigInt(t) => v.visit_i128(
                t.parse()
                    .map_err(|_| de::Error::custom(format!("{t} does not fit in i128")))?,
            ),
            other => ValueDeserializer(other).deserialize_any(v),
        }
    }

    fn deserialize_u128<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::BigInt(t) => v.visit_u128(
                t.parse()
                    .map_err(|_| de::Error::custom(format!("{t} does not fit in u128")))?,
            ),
            other => ValueDeserializer(other).deserialize_any(v),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::BigInt(t) | Value::DateTime(t) | Value::Date(t) | Value::Time(t) => {
                v.visit_string(t)
            }
            other => ValueDeserializer(other).deserialize_any(v),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        self.deserialize_string(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::Str(s) => v.visit_enum(IntoDeserializer::<DecodeError>::into_deserializer(s)),
            other => Err(de::Error::custom(format!(
                "expected an enum variant name, got a Python {}",
                other.kind()
            ))),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        v.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 char bytes byte_buf unit unit_struct map struct
        identifier
    }
}

struct SeqDeserializer(vec::IntoIter<Value>);

impl<'de> de::SeqAccess<'de> for SeqDeserializer {
    type Error = DecodeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DecodeError> {
        self.0
            .next()
            .map(|v| seed.deserialize(ValueDeserializer(v)))
            .transpose()
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

impl<'de> de::Deserializer<'de> for SeqDeserializer {
    type Error = DecodeError;
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        v.visit_seq(self)
    }
    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

struct MapDeserializer {
    entries: vec::IntoIter<(Value, Value)>,
    value: Option<Value>,
}

impl<'de> de::MapAccess<'de> for MapDeserializer {
    type Error = DecodeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DecodeError> {
        match self.entries.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(ValueDeserializer(k)).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DecodeError> {
        let value = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("value before key"))?;
        seed.deserialize(ValueDeserializer(value))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// The `(tag, payload)` pair of an ext value, as rmp-serde presents it.
struct ExtDeserializer(Option<Value>, Option<Value>);

impl<'de> de::Deserializer<'de> for ExtDeserializer {
    type Error = DecodeError;
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        let items: Vec<Value> = [self.0, self.1].into_iter().flatten().collect();
        v.visit_seq(seq_of(items))
    }
    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}
