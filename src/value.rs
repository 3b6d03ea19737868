//! Python values in Rust, and the codec between them (`docs/values.md`).
//!
//! [`Value`] holds any value that crosses the wire: use it as a call's result type when the shape
//! is not known in advance. Typed calls take any `serde` type instead
//! (`session.call::<f64>(...)`, `session.call::<Vec<(String, i64)>>(...)`). Python types that
//! MessagePack cannot express (tuple, set, complex, datetime, big ints, numpy arrays, refs) travel
//! as MessagePack ext types, never as magic map keys.

mod de;
mod ext;
mod from;
mod ndarray;
mod reference;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

pub use de::MAX_DEPTH;
pub use from::from_value;
pub use ndarray::NdArray;
pub use reference::{Ref, StreamRef};

pub(crate) use reference::{capture_issued, collect_refs};

/// A Python value.
///
/// | Python | `Value` |
/// |---|---|
/// | `None` | `Nil` |
/// | `bool` | `Bool` |
/// | `int` (fits i64 / u64 / beyond) | `Int` / `UInt` / `BigInt` (decimal text) |
/// | `float` | `Float` (NaN and ±inf exact) |
/// | `str` / `bytes` | `Str` / `Bytes` |
/// | `list` / `tuple` | `List` / `Tuple` |
/// | `set` / `frozenset` | `Set` / `FrozenSet` |
/// | `dict` | `Map` (insertion order, any keys) |
/// | `complex` | `Complex` |
/// | `datetime` / `date` / `time` | `DateTime` / `Date` / `Time` (ISO 8601 text) |
/// | `numpy.ndarray` | `NdArray` |
/// | any other object | `Ref`; generators and iterators `StreamRef` |
///
/// # Examples
///
/// ```
/// use pyvisor::Value;
///
/// let v = Value::Tuple(vec![Value::Int(1), Value::Str("a".into())]);
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
    /// An `int` beyond 64 bits, as decimal text (`"-123456789012345678901234567890"`).
    BigInt(String),
    /// `float`.
    Float(f64),
    /// `str`.
    Str(String),
    /// `bytes`.
    Bytes(Vec<u8>),
    /// `list`.
    List(Vec<Value>),
    /// `tuple`.
    Tuple(Vec<Value>),
    /// `set`.
    Set(Vec<Value>),
    /// `frozenset`.
    FrozenSet(Vec<Value>),
    /// `dict`, in insertion order.
    Map(Vec<(Value, Value)>),
    /// `complex`.
    Complex {
        /// Real part.
        re: f64,
        /// Imaginary part.
        im: f64,
    },
    /// `datetime.datetime`, as `isoformat()` text (with its UTC offset when aware).
    DateTime(String),
    /// `datetime.date`, as `isoformat()` text.
    Date(String),
    /// `datetime.time`, as `isoformat()` text.
    Time(String),
    /// `numpy.ndarray` of a bool, int, uint, float or complex dtype.
    NdArray(NdArray),
    /// Any other Python object, held by its worker.
    Ref(Ref),
    /// A Python generator or iterator, held by its worker.
    StreamRef(StreamRef),
}

impl Value {
    pub(crate) fn from_u64(v: u64) -> Value {
        i64::try_from(v).map_or(Value::UInt(v), Value::Int)
    }

    /// The name of the variant, for error messages (`"str"`, `"tuple"`, ...).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(pyvisor::Value::Nil.kind(), "None");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Nil => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::UInt(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Set(_) => "set",
            Value::FrozenSet(_) => "frozenset",
            Value::Map(_) => "dict",
            Value::Complex { .. } => "complex",
            Value::DateTime(_) => "datetime",
            Value::Date(_) => "date",
            Value::Time(_) => "time",
            Value::NdArray(_) => "ndarray",
            Value::Ref(_) => "ref",
            Value::StreamRef(_) => "stream ref",
        }
    }

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

    /// The ref, if this is a `Ref`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(pyvisor::Value::Nil.as_ref().is_none());
    /// ```
    pub fn as_ref(&self) -> Option<&Ref> {
        match self {
            Value::Ref(r) => Some(r),
            _ => None,
        }
    }

    /// The items of a list, tuple, set or frozenset.
    ///
    /// # Examples
    ///
    /// ```
    /// use pyvisor::Value;
    /// assert_eq!(Value::Tuple(vec![Value::Nil]).items().map(<[_]>::len), Some(1));
    /// ```
    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => Some(v),
            _ => None,
        }
    }

    /// The value under the string key `key`, if this is a map that has it.
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

impl Value {
    /// The ext type tag and payload of a value that has no MessagePack-native form.
    pub(crate) fn ext_parts(&self) -> Option<Result<(i8, Vec<u8>), rmp_serde::encode::Error>> {
        let items = |tag: i8, items: &Vec<Value>| rmp_serde::to_vec(items).map(|p| (tag, p));
        Some(match self {
            Value::Tuple(v) => items(ext::TUPLE, v),
            Value::Set(v) => items(ext::SET, v),
            Value::FrozenSet(v) => items(ext::FROZENSET, v),
            Value::Complex { re, im } => rmp_serde::to_vec(&(re, im)).map(|p| (ext::COMPLEX, p)),
            Value::BigInt(t) => Ok((ext::BIGINT, t.as_bytes().to_vec())),
            Value::DateTime(t) => Ok((ext::DATETIME, t.as_bytes().to_vec())),
            Value::Date(t) => Ok((ext::DATE, t.as_bytes().to_vec())),
            Value::Time(t) => Ok((ext::TIME, t.as_bytes().to_vec())),
            Value::NdArray(a) => a.to_payload().map(|p| (ext::NDARRAY, p)),
            Value::Ref(r) => r.to_payload().map(|p| (ext::REF, p)),
            Value::StreamRef(r) => r.0.to_payload().map(|p| (ext::STREAM_REF, p)),
            _ => return None,
        })
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
            // Refs note themselves for the caller's pre-send checks.
            Value::Ref(r) => r.serialize(s),
            Value::StreamRef(r) => r.serialize(s),
            other => {
                let (tag, payload) = other
                    .ext_parts()
                    .expect("every other variant is an ext type")
                    .map_err(serde::ser::Error::custom)?;
                ext::serialize_ext(s, tag, &payload)
            }
        }
    }
}

#[cfg(test)]
mod tests;
