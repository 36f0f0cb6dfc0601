//! [`ElementCodec`]: every element codec behind one type, fitted from an
//! [`ElementSpec`] and serialized with a tag naming the codec, so a collection
//! manifest (or a PCA codec wrapping one) holds any of them.

use serde::{Deserialize, Serialize};

use crate::codec::bfloat16::Bf16Codec;
use crate::codec::float8::{Float8Codec, Float8Format};
use crate::codec::float16::F16Codec;
use crate::codec::float32::F32Codec;
use crate::codec::int8::I8Codec;
use crate::codec::scaled_float8::ScaledFloat8Codec;
use crate::codec::sign_bits::B1Codec;
use crate::codec::{CodecSpec, ElementSpec, Scorer, VectorCodec};
use crate::error::{QuantError, Result};
use crate::metric::Metric;

/// A fitted element codec: one value per dimension, no transform.
///
/// Serialized as the inner codec's parameters plus `"codec": "<name>"`, e.g.
/// `{"codec":"i8","min":[...],"step":[...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "codec", rename_all = "kebab-case")]
pub enum ElementCodec {
    /// [`F32Codec`].
    F32(F32Codec),
    /// [`F16Codec`].
    F16(F16Codec),
    /// [`Bf16Codec`].
    Bf16(Bf16Codec),
    /// [`Float8Codec`] (E4M3 or E5M2, plain cast).
    Float8(Float8Codec),
    /// [`ScaledFloat8Codec`] (E4M3 or E5M2, centred and scaled per dimension).
    ScaledFloat8(ScaledFloat8Codec),
    /// [`I8Codec`].
    I8(I8Codec),
    /// [`B1Codec`].
    B1(B1Codec),
}

impl ElementCodec {
    /// Fits the codec `spec` names for vectors of `dim` values.
    ///
    /// `sample` holds row-major vectors of `dim` finite values. Plain casts (f32,
    /// f16, bf16, e4m3, e5m2) ignore it; fitted codecs (the scaled float8s, i8, b1)
    /// need at least one row and return [`QuantError::NotEnoughSamples`] otherwise.
    /// A sample that is not whole rows, or holds NaN or infinity, is an error for
    /// every spec, so bad input never depends on the codec chosen.
    pub fn fit(spec: ElementSpec, sample: &[f32], dim: usize) -> Result<ElementCodec> {
        if dim == 0 {
            return Err(QuantError::InvalidConfig {
                field: "dim",
                reason: "must be >= 1".into(),
            });
        }
        crate::error::check_batch("fitting sample", sample, dim)?;
        Ok(match spec {
            ElementSpec::F32 => ElementCodec::F32(F32Codec::new(dim)),
            ElementSpec::F16 => ElementCodec::F16(F16Codec::new(dim)),
            ElementSpec::Bf16 => ElementCodec::Bf16(Bf16Codec::new(dim)),
            ElementSpec::E4m3 => ElementCodec::Float8(Float8Codec::new(dim, Float8Format::E4m3)),
            ElementSpec::E5m2 => ElementCodec::Float8(Float8Codec::new(dim, Float8Format::E5m2)),
            ElementSpec::E4m3Scaled => {
                ElementCodec::ScaledFloat8(ScaledFloat8Codec::fit(Float8Format::E4m3, sample, dim)?)
            }
            ElementSpec::E5m2Scaled => {
                ElementCodec::ScaledFloat8(ScaledFloat8Codec::fit(Float8Format::E5m2, sample, dim)?)
            }
            ElementSpec::I8 => ElementCodec::I8(I8Codec::fit(sample, dim)?),
            ElementSpec::B1 => ElementCodec::B1(B1Codec::fit(sample, dim)?),
        })
    }

    /// The element type this codec stores.
    pub fn element(&self) -> ElementSpec {
        match self {
            ElementCodec::F32(_) => ElementSpec::F32,
            ElementCodec::F16(_) => ElementSpec::F16,
            ElementCodec::Bf16(_) => ElementSpec::Bf16,
            ElementCodec::Float8(c) => c.format().element(),
            ElementCodec::ScaledFloat8(c) => c.format().scaled_element(),
            ElementCodec::I8(_) => ElementSpec::I8,
            ElementCodec::B1(_) => ElementSpec::B1,
        }
    }

    /// The inner codec.
    pub fn as_codec(&self) -> &dyn VectorCodec {
        match self {
            ElementCodec::F32(c) => c,
            ElementCodec::F16(c) => c,
            ElementCodec::Bf16(c) => c,
            ElementCodec::Float8(c) => c,
            ElementCodec::ScaledFloat8(c) => c,
            ElementCodec::I8(c) => c,
            ElementCodec::B1(c) => c,
        }
    }
}

impl VectorCodec for ElementCodec {
    fn spec(&self) -> CodecSpec {
        self.as_codec().spec()
    }

    fn dim(&self) -> usize {
        self.as_codec().dim()
    }

    fn code_len(&self) -> usize {
        self.as_codec().code_len()
    }

    fn encode_into(&self, vector: &[f32], code: &mut [u8]) {
        self.as_codec().encode_into(vector, code);
    }

    fn decode_into(&self, code: &[u8], out: &mut [f32]) {
        self.as_codec().decode_into(code, out);
    }

    fn scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_> {
        self.as_codec().scorer(query, metric)
    }

    fn reference_scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_> {
        self.as_codec().reference_scorer(query, metric)
    }
}

#[cfg(test)]
#[path = "element_tests.rs"]
mod tests;
