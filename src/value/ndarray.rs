use serde::{Deserialize, Serialize};

use super::ext::{Blob, RawBytes};
use super::Value;

/// A numpy array: dtype (numpy's `dtype.str`, e.g. `"<f8"`), shape, and the raw C-contiguous
/// buffer. It crosses the wire as one binary blob: no per-element encoding on either side.
///
/// # Examples
///
/// ```
/// use pyvisor::NdArray;
///
/// let a = NdArray::from_f64(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]);
/// assert_eq!(a.dtype, "<f8");
/// assert_eq!(a.to_f64().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NdArray {
    /// numpy's `dtype.str`: byte order, kind and item size (`"<f8"`, `"|b1"`, `"<i4"`).
    pub dtype: String,
    /// The shape.
    pub shape: Vec<usize>,
    /// The buffer, C order.
    pub data: Vec<u8>,
}

impl NdArray {
    /// A float64 array from values in C order.
    ///
    /// # Panics
    ///
    /// If the shape does not hold exactly `values.len()` elements.
    pub fn from_f64(shape: Vec<usize>, values: &[f64]) -> NdArray {
        assert_eq!(
            shape.iter().product::<usize>(),
            values.len(),
            "shape does not match"
        );
        NdArray {
            dtype: "<f8".into(),
            shape,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// The elements as `f64`, for float and integer dtypes (`None` for others).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = pyvisor::NdArray { dtype: "<i4".into(), shape: vec![2], data: vec![1, 0, 0, 0, 2, 0, 0, 0] };
    /// assert_eq!(a.to_f64(), Some(vec![1.0, 2.0]));
    /// ```
    pub fn to_f64(&self) -> Option<Vec<f64>> {
        self.elements()?.into_iter().map(|v| v.as_f64()).collect()
    }

    /// The elements as scalar [`Value`]s (bool, int, float dtypes; `None` for others).
    pub fn elements(&self) -> Option<Vec<Value>> {
        let bytes = self.dtype.as_bytes();
        let (order, kind, size) = match bytes {
            [o @ (b'<' | b'>' | b'|' | b'='), k, rest @ ..] => (
                *o,
                *k,
                std::str::from_utf8(rest).ok()?.parse::<usize>().ok()?,
            ),
            _ => return None,
        };
        if size == 0 || !self.data.len().is_multiple_of(size) {
            return None;
        }
        let big = order == b'>';
        let chunks = self.data.chunks_exact(size);
        let word = |c: &[u8]| {
            let mut b = [0u8; 8];
            if big {
                b[8 - size..].copy_from_slice(c);
                u64::from_be_bytes(b)
            } else {
                b[..size].copy_from_slice(c);
                u64::from_le_bytes(b)
            }
        };
        let out = match (kind, size) {
            (b'b', 1) => chunks.map(|c| Value::Bool(c[0] != 0)).collect(),
            (b'u', 1 | 2 | 4 | 8) => chunks.map(|c| Value::from_u64(word(c))).collect(),
            (b'i', 1 | 2 | 4 | 8) => chunks
                .map(|c| {
                    let shift = 64 - 8 * size as u32;
                    Value::Int(((word(c) << shift) as i64) >> shift)
                })
                .collect(),
            (b'f', 4) => chunks
                .map(|c| Value::Float(f32::from_bits(word(c) as u32) as f64))
                .collect(),
            (b'f', 8) => chunks
                .map(|c| Value::Float(f64::from_bits(word(c))))
                .collect(),
            _ => return None,
        };
        Some(out)
    }

    pub(crate) fn to_payload(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        rmp_serde::to_vec_named(&(&self.dtype, &self.shape, RawBytes(&self.data)))
    }

    pub(crate) fn from_payload<E: serde::de::Error>(data: &[u8]) -> Result<NdArray, E> {
        let (dtype, shape, Blob(data)): (String, Vec<usize>, Blob) =
            super::ext::decode_payload(data)?;
        Ok(NdArray { dtype, shape, data })
    }
}

impl Serialize for NdArray {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let payload = self.to_payload().map_err(serde::ser::Error::custom)?;
        super::ext::serialize_ext(s, super::ext::NDARRAY, &payload)
    }
}

impl<'de> Deserialize<'de> for NdArray {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<NdArray, D::Error> {
        match Value::deserialize(d)? {
            Value::NdArray(a) => Ok(a),
            other => Err(serde::de::Error::custom(format!(
                "expected an ndarray, got {}",
                other.kind()
            ))),
        }
    }
}
