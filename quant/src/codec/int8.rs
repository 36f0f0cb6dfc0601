//! 8-bit scalar quantization with a per-dimension affine map fitted to each
//! dimension's range in a sample: `x_i = min_i + step_i * c_i`, `c_i` in 0..=255,
//! `step_i = (max_i - min_i) / 255`.
//!
//! The levels are evenly spaced, so unlike float8 every part of a dimension's range
//! gets the same absolute precision; on neighbour recall this beats float8 at the
//! same byte count (the design notes' MiniLM measurements). Values outside the
//! fitted range clamp to the end levels. The code byte is the unsigned level; the
//! name follows the usual "int8 quantization".

use serde::{Deserialize, Serialize};

use crate::codec::affine::{AffineScorer, Levels};
use crate::codec::fit::{check_params, column_min_max, sample_rows};
use crate::codec::{CodecSpec, ElementSpec, Scorer, VectorCodec};
use crate::error::{QuantError, Result};
use crate::metric::Metric;

/// Per-dimension affine 8-bit codes. Fitted on a sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "I8Params")]
pub struct I8Codec {
    min: Vec<f32>,
    step: Vec<f32>,
}

/// The serialized form, checked before it becomes a codec.
#[derive(Deserialize)]
struct I8Params {
    min: Vec<f32>,
    step: Vec<f32>,
}

impl TryFrom<I8Params> for I8Codec {
    type Error = QuantError;

    fn try_from(p: I8Params) -> Result<Self> {
        check_params(
            "i8 parameters",
            &[("min", &p.min), ("step", &p.step)],
            &["step"],
        )?;
        Ok(I8Codec {
            min: p.min,
            step: p.step,
        })
    }
}

impl I8Codec {
    /// Fits each dimension's range on `sample` (row-major, at least one row of `dim`
    /// finite values).
    pub fn fit(sample: &[f32], dim: usize) -> Result<Self> {
        sample_rows("i8 codec", sample, dim)?;
        let (min, max) = column_min_max(sample, dim);
        let step = min
            .iter()
            .zip(&max)
            .map(|(lo, hi)| (hi - lo) / 255.0)
            .collect();
        Ok(I8Codec { min, step })
    }

    /// Per-dimension value of level 0.
    pub fn min(&self) -> &[f32] {
        &self.min
    }

    /// Per-dimension distance between adjacent levels.
    pub fn step(&self) -> &[f32] {
        &self.step
    }

    fn scorer_with(&self, query: &[f32], metric: Metric, fast: bool) -> AffineScorer {
        AffineScorer::new(
            query,
            metric,
            Some(&self.min),
            Some(&self.step),
            Levels::Integer,
            fast,
        )
    }
}

impl VectorCodec for I8Codec {
    fn spec(&self) -> CodecSpec {
        CodecSpec::element(ElementSpec::I8)
    }

    fn dim(&self) -> usize {
        self.min.len()
    }

    fn code_len(&self) -> usize {
        self.min.len()
    }

    fn encode_into(&self, vector: &[f32], code: &mut [u8]) {
        for (((c, &v), &lo), &s) in code.iter_mut().zip(vector).zip(&self.min).zip(&self.step) {
            let level = if s > 0.0 { ((v - lo) / s).round() } else { 0.0 };
            // In range after the clamp, so the cast is exact.
            *c = level.clamp(0.0, 255.0) as u8;
        }
    }

    fn decode_into(&self, code: &[u8], out: &mut [f32]) {
        for (((o, &c), &lo), &s) in out.iter_mut().zip(code).zip(&self.min).zip(&self.step) {
            *o = lo + s * f32::from(c);
        }
    }

    fn scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_> {
        Box::new(self.scorer_with(query, metric, true))
    }

    fn reference_scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_> {
        Box::new(self.scorer_with(query, metric, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::testing::synthetic;

    #[test]
    fn error_is_at_most_half_a_step_inside_the_fitted_range() {
        let dim = 33;
        let data = synthetic(50, dim, 11);
        let codec = I8Codec::fit(&data, dim).expect("fit");
        let decoded = codec
            .decode(&codec.encode(&data).expect("encode"))
            .expect("decode");
        for (i, (x, y)) in data.iter().zip(&decoded).enumerate() {
            let step = codec.step()[i % dim];
            assert!(
                (x - y).abs() <= 0.5 * step * 1.0001 + 1e-6,
                "value {i}: {x} vs {y}"
            );
        }
        // The range ends are levels 0 and 255 exactly.
        let (min, max) = column_min_max(&data, dim);
        assert_eq!(codec.encode(&min).expect("encode"), vec![0u8; dim]);
        assert_eq!(codec.encode(&max).expect("encode"), vec![255u8; dim]);
    }

    #[test]
    fn out_of_range_values_clamp_and_constant_dimensions_decode_exactly() {
        // Dimension 1 is constant in the sample.
        let codec = I8Codec::fit(&[0.0, 5.0, 1.0, 5.0], 2).expect("fit");
        assert_eq!(codec.step()[1], 0.0);
        let code = codec.encode(&[-3.0, 5.0, 9.0, 7.0]).expect("encode");
        assert_eq!(code, [0, 0, 255, 0]);
        assert_eq!(codec.decode(&code).expect("decode"), [0.0, 5.0, 1.0, 5.0]);
        // L2 against a constant dimension still counts its distance.
        let scorer = codec.scorer(&[0.0, 7.0], Metric::L2);
        assert!((scorer.score(&[0, 0]) + 4.0).abs() < 1e-6);
    }
}
