//! One sign bit per dimension: 32x smaller than f32, for candidate generation
//! followed by rescoring from a finer tier.
//!
//! Layout: bit `i` of the code is bit `i % 8` (least significant first) of byte
//! `i / 8`; it is set when `x_i >= 0`. Bits past the dimension in the last byte are 0.
//!
//! Decoding gives `x_i ~ sign_i * scale_i` with `scale_i = mean |x_i|` over the
//! fitting sample, the per-dimension value that minimises the squared
//! reconstruction error given only the sign. Scores are the metric evaluated against
//! that decoded vector, with the f32 query kept as is (asymmetric):
//!
//! - dot / cosine: `sum_i q_i scale_i sign_i`: with `w = q * scale`, the fast scorer
//!   sums one entry of a per-query byte table per code byte ([`kernels::b1_table`]),
//!   its reference twin runs [`kernels::dot_b1_scalar`];
//! - L2: `-(|q|^2 - 2 sum_i q_i scale_i sign_i + sum_i scale_i^2)`.
//!
//! Between two codes, [`B1Codec::hamming`] counts differing signs with `POPCNT`: the
//! symmetric path, for code-vs-code comparisons (for example graph construction),
//! where a smaller distance means more agreeing signs.

use serde::{Deserialize, Serialize};

use crate::codec::fit::{check_params, sample_rows};
use crate::codec::{CodecSpec, ElementSpec, Scorer, VectorCodec};
use crate::error::{QuantError, Result};
use crate::kernels;
use crate::metric::Metric;

/// Sign bits with a per-dimension magnitude. Fitted on a sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "B1Params")]
pub struct B1Codec {
    scale: Vec<f32>,
}

/// The serialized form, checked before it becomes a codec.
#[derive(Deserialize)]
struct B1Params {
    scale: Vec<f32>,
}

impl TryFrom<B1Params> for B1Codec {
    type Error = QuantError;

    fn try_from(p: B1Params) -> Result<Self> {
        check_params("b1 parameters", &[("scale", &p.scale)], &["scale"])?;
        Ok(B1Codec { scale: p.scale })
    }
}

impl B1Codec {
    /// Fits `scale_i = mean |x_i|` on `sample` (row-major, at least one row of `dim`
    /// finite values).
    pub fn fit(sample: &[f32], dim: usize) -> Result<Self> {
        let rows = sample_rows("b1 codec", sample, dim)?;
        let mut sums = vec![0f64; dim];
        for row in sample.chunks_exact(dim) {
            for (s, &v) in sums.iter_mut().zip(row) {
                *s += f64::from(v.abs());
            }
        }
        let scale = sums.into_iter().map(|s| (s / rows as f64) as f32).collect();
        Ok(B1Codec { scale })
    }

    /// Per-dimension magnitude of a decoded value.
    pub fn scale(&self) -> &[f32] {
        &self.scale
    }

    /// Number of dimensions whose signs differ between two codes of this codec.
    pub fn hamming(&self, a: &[u8], b: &[u8]) -> u32 {
        kernels::hamming(a, b)
    }
}

/// How a [`B1Scorer`] sums its signed weights.
enum SignedSum {
    /// Per-query byte table ([`kernels::b1_table`]): one load per code byte.
    Table(Vec<f32>),
    /// The scalar twin over the weights.
    Scalar(Vec<f32>),
}

/// The prepared query of a [`B1Codec`]; see the module docs for the score.
struct B1Scorer {
    sum: SignedSum,
    code_len: usize,
    /// 0 for dot / cosine; `|q|^2 + sum scale^2` for L2.
    constant: f32,
    l2: bool,
}

impl B1Scorer {
    fn new(codec: &B1Codec, query: &[f32], metric: Metric, fast: bool) -> Self {
        let q = metric.prepare_query(query);
        let w: Vec<f32> = q.iter().zip(&codec.scale).map(|(a, s)| a * s).collect();
        let l2 = metric == Metric::L2;
        let constant = if l2 {
            kernels::dot_f32_scalar(&q, &q) + kernels::dot_f32_scalar(&codec.scale, &codec.scale)
        } else {
            0.0
        };
        let code_len = w.len().div_ceil(8);
        let sum = if fast {
            SignedSum::Table(kernels::b1_table(&w))
        } else {
            SignedSum::Scalar(w)
        };
        B1Scorer {
            sum,
            code_len,
            constant,
            l2,
        }
    }
}

impl Scorer for B1Scorer {
    fn code_len(&self) -> usize {
        self.code_len
    }

    fn score(&self, code: &[u8]) -> f32 {
        let dot = match &self.sum {
            SignedSum::Table(table) => kernels::dot_b1_table(table, code),
            SignedSum::Scalar(w) => kernels::dot_b1_scalar(w, code),
        };
        if self.l2 {
            -(self.constant - 2.0 * dot)
        } else {
            dot
        }
    }
}

impl VectorCodec for B1Codec {
    fn spec(&self) -> CodecSpec {
        CodecSpec::element(ElementSpec::B1)
    }

    fn dim(&self) -> usize {
        self.scale.len()
    }

    fn code_len(&self) -> usize {
        self.scale.len().div_ceil(8)
    }

    fn encode_into(&self, vector: &[f32], code: &mut [u8]) {
        for (byte, values) in code.iter_mut().zip(vector.chunks(8)) {
            *byte = values
                .iter()
                .enumerate()
                .fold(0u8, |b, (bit, &v)| b | (u8::from(v >= 0.0) << bit));
        }
    }

    fn decode_into(&self, code: &[u8], out: &mut [f32]) {
        for (i, (o, &s)) in out.iter_mut().zip(&self.scale).enumerate() {
            *o = if code[i / 8] >> (i % 8) & 1 == 1 {
                s
            } else {
                -s
            };
        }
    }

    fn scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_> {
        Box::new(B1Scorer::new(self, query, metric, true))
    }

    fn reference_scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_> {
        Box::new(B1Scorer::new(self, query, metric, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_lsb_first_with_zero_padding() {
        let dim = 11;
        let sample: Vec<f32> = (0..dim)
            .map(|i| if i % 3 == 0 { 2.0 } else { -1.0 })
            .collect();
        let codec = B1Codec::fit(&sample, dim).expect("fit");
        let code = codec.encode(&sample).expect("encode");
        // Set at dims 0, 3, 6, 9: byte 0 = bits 0,3,6; byte 1 = bit 1 (dim 9).
        assert_eq!(code, [0b0100_1001, 0b0000_0010]);
        let decoded = codec.decode(&code).expect("decode");
        assert_eq!(
            decoded, sample,
            "sign times mean |x| reproduces a one-row sample"
        );
        // Zero counts as non-negative.
        assert_eq!(
            codec.encode(&[0.0; 11]).expect("encode"),
            [0xFF, 0b0000_0111]
        );
    }

    #[test]
    fn hamming_counts_disagreeing_signs() {
        let dim = 70;
        let a: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.7).sin()).collect();
        let b: Vec<f32> = (0..dim).map(|i| (i as f32 * 1.3).cos()).collect();
        let codec = B1Codec::fit(&a, dim).expect("fit");
        let (ca, cb) = (codec.encode(&a).expect("a"), codec.encode(&b).expect("b"));
        let expected = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| (**x >= 0.0) != (**y >= 0.0))
            .count();
        assert_eq!(codec.hamming(&ca, &cb) as usize, expected);
        assert_eq!(codec.hamming(&ca, &ca), 0);
    }

    #[test]
    fn scores_are_the_metric_against_the_decoded_signs() {
        let codec = B1Codec::fit(&[1.0, -2.0, 3.0, 4.0, -6.0, 1.0], 3).expect("fit");
        assert_eq!(codec.scale(), [2.5, 4.0, 2.0]);
        let code = codec.encode(&[1.0, 1.0, -1.0]).expect("encode");
        let q = [1.0, 2.0, 3.0];
        // Decoded: [2.5, 4, -2]; q . x = 2.5 + 8 - 6 = 4.5; |q - x|^2 = 2.25 + 4 + 25.
        assert!((codec.scorer(&q, Metric::Dot).score(&code) - 4.5).abs() < 1e-5);
        assert!((codec.scorer(&q, Metric::L2).score(&code) + 31.25).abs() < 1e-4);
    }
}
