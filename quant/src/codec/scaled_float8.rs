//! float8 with a fitted per-dimension affine map: `x_i = mean_i + scale_i * f8_i`.
//!
//! Centring removes each dimension's offset (embedding models have a few dimensions
//! with large means), so the format's relative precision is spent on the deviation
//! `x_i - mean_i` rather than the offset. The scale maps the dimension's largest
//! deviation in the fitting sample to the format's largest finite value, which
//! keeps almost every value out of the subnormal range; values beyond the sample's
//! range saturate.
//!
//! The scale reference is a quantile of `|x_i - mean_i|` ([`ScaledFloat8Codec::fit_quantile`]).
//! The default is the maximum (quantile 1): float8's exponent gives it a dynamic
//! range of 2^15 (E4M3) or more, so clipping outliers buys no precision for the bulk
//! of the values and only adds saturation error. Measured on the 20k MiniLM set
//! (`cargo run --release -p octet-quant --example element_recall`), recall@10 of
//! E4M3 at quantiles 1 / 0.9999 / 0.999 / 0.99 is 0.9850 / 0.9848 / 0.9832 / 0.9666
//! (plain cast: 0.9816); for E5M2 0.9688 / 0.9662 / 0.9698 / 0.9586, a wash down to
//! 0.999 (plain cast: 0.9622).

use serde::{Deserialize, Serialize};

use crate::codec::affine::{AffineScorer, Levels};
use crate::codec::fit::{check_params, column_means, sample_rows};
use crate::codec::float8::Float8Format;
use crate::codec::{CodecSpec, Scorer, VectorCodec};
use crate::error::{QuantError, Result};
use crate::metric::Metric;

/// float8 codes of centred, per-dimension scaled values. Fitted on a sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ScaledParams")]
pub struct ScaledFloat8Codec {
    format: Float8Format,
    mean: Vec<f32>,
    scale: Vec<f32>,
}

/// The serialized form, checked before it becomes a codec.
#[derive(Deserialize)]
struct ScaledParams {
    format: Float8Format,
    mean: Vec<f32>,
    scale: Vec<f32>,
}

impl TryFrom<ScaledParams> for ScaledFloat8Codec {
    type Error = QuantError;

    fn try_from(p: ScaledParams) -> Result<Self> {
        check_params(
            "scaled float8 parameters",
            &[("mean", &p.mean), ("scale", &p.scale)],
            &["scale"],
        )?;
        Ok(ScaledFloat8Codec {
            format: p.format,
            mean: p.mean,
            scale: p.scale,
        })
    }
}

impl ScaledFloat8Codec {
    /// The quantile of `|x - mean|` that [`ScaledFloat8Codec::fit`] maps to the
    /// format's largest finite value: the maximum (see the module docs).
    pub const DEFAULT_QUANTILE: f32 = 1.0;

    /// Fits mean and scale per dimension on `sample` (row-major, at least one row of
    /// `dim` finite values).
    pub fn fit(format: Float8Format, sample: &[f32], dim: usize) -> Result<Self> {
        Self::fit_quantile(format, sample, dim, Self::DEFAULT_QUANTILE)
    }

    /// Like [`ScaledFloat8Codec::fit`], mapping the `quantile` (in `(0, 1]`) of each
    /// dimension's `|x - mean|` to the largest finite value instead of its maximum.
    pub fn fit_quantile(
        format: Float8Format,
        sample: &[f32],
        dim: usize,
        quantile: f32,
    ) -> Result<Self> {
        if !(quantile > 0.0 && quantile <= 1.0) {
            return Err(QuantError::InvalidConfig {
                field: "scale quantile",
                reason: format!("must be in (0, 1], got {quantile}"),
            });
        }
        let rows = sample_rows("scaled float8 codec", sample, dim)?;
        let mean = column_means(sample, dim);
        // Nearest-rank quantile: the smallest deviation that at least `quantile` of
        // the rows do not exceed.
        let rank = ((quantile * rows as f32).ceil() as usize).clamp(1, rows) - 1;
        let mut deviations = vec![0f32; rows];
        let scale = (0..dim)
            .map(|d| {
                for (dev, row) in deviations.iter_mut().zip(sample.chunks_exact(dim)) {
                    *dev = (row[d] - mean[d]).abs();
                }
                deviations.select_nth_unstable_by(rank, f32::total_cmp);
                let mut reference = deviations[rank];
                if reference == 0.0 {
                    // Most rows sit on the mean: scale to the largest deviation so the
                    // rest are still coded (0 when the dimension is constant).
                    reference = deviations.iter().fold(0.0, |m: f32, &v| m.max(v));
                }
                reference / format.max_finite()
            })
            .collect();
        Ok(ScaledFloat8Codec {
            format,
            mean,
            scale,
        })
    }

    /// The float8 format.
    pub fn format(&self) -> Float8Format {
        self.format
    }

    /// Per-dimension means subtracted before scaling.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// Per-dimension scales: `x_i = mean_i + scale_i * f8_i`.
    pub fn scale(&self) -> &[f32] {
        &self.scale
    }

    fn scorer_with(&self, query: &[f32], metric: Metric, fast: bool) -> AffineScorer {
        let levels = Levels::Float8(self.format);
        AffineScorer::new(
            query,
            metric,
            Some(&self.mean),
            Some(&self.scale),
            levels,
            fast,
        )
    }
}

impl VectorCodec for ScaledFloat8Codec {
    fn spec(&self) -> CodecSpec {
        CodecSpec::element(self.format.scaled_element())
    }

    fn dim(&self) -> usize {
        self.mean.len()
    }

    fn code_len(&self) -> usize {
        self.mean.len()
    }

    fn encode_into(&self, vector: &[f32], code: &mut [u8]) {
        for (((c, &v), &m), &s) in code.iter_mut().zip(vector).zip(&self.mean).zip(&self.scale) {
            // A zero scale means a constant dimension: everything decodes to the mean.
            let scaled = if s > 0.0 { (v - m) / s } else { 0.0 };
            *c = self.format.encode(scaled);
        }
    }

    fn decode_into(&self, code: &[u8], out: &mut [f32]) {
        let table = self.format.decode_table();
        for (((o, &c), &m), &s) in out.iter_mut().zip(code).zip(&self.mean).zip(&self.scale) {
            *o = m + s * table[usize::from(c)];
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
    fn error_is_relative_to_the_deviation_from_the_mean() {
        let dim = 17;
        let data = synthetic(60, dim, 5);
        let codec = ScaledFloat8Codec::fit(Float8Format::E4m3, &data, dim).expect("fit");
        let decoded = codec
            .decode(&codec.encode(&data).expect("encode"))
            .expect("decode");
        for (i, (x, y)) in data.iter().zip(&decoded).enumerate() {
            let d = i % dim;
            let deviation = (x - codec.mean()[d]).abs();
            // 2^-4 relative in the normal range; the subnormal floor is 2^-10 of a unit
            // that is scale_i, so tiny next to any value.
            let bound = deviation / 16.0 + codec.scale()[d] / 1024.0 + 1e-6;
            assert!((x - y).abs() <= bound, "value {i}: {x} vs {y}");
        }
    }

    #[test]
    fn the_largest_deviation_maps_to_the_largest_finite_value() {
        let codec =
            ScaledFloat8Codec::fit(Float8Format::E4m3, &[1.0, 10.0, 3.0, 10.0], 2).expect("fit");
        assert_eq!(codec.mean(), [2.0, 10.0]);
        assert_eq!(codec.scale(), [1.0 / 448.0, 0.0]);
        let code = codec.encode(&[3.0, 10.0, 1.0, 10.0]).expect("encode");
        assert_eq!(code, [0x7E, 0x00, 0xFE, 0x00]);
        assert_eq!(codec.decode(&code).expect("decode"), [3.0, 10.0, 1.0, 10.0]);
        // Beyond the fitted range saturates.
        let far = codec.encode(&[100.0, 10.0]).expect("encode");
        assert_eq!(codec.decode(&far).expect("decode"), [3.0, 10.0]);
    }

    #[test]
    fn a_quantile_clips_outliers() {
        // 99 rows spread over [-1, 1] and one outlier at 100.
        let mut sample: Vec<f32> = (0..99).map(|i| (i as f32 - 49.0) / 49.0).collect();
        sample.push(100.0);
        let full = ScaledFloat8Codec::fit(Float8Format::E4m3, &sample, 1).expect("fit");
        let clipped =
            ScaledFloat8Codec::fit_quantile(Float8Format::E4m3, &sample, 1, 0.99).expect("fit");
        // The mean is 1, so the 99th smallest deviation is 2 against the outlier's 99.
        assert_eq!(clipped.scale()[0], 2.0 / 448.0);
        assert_eq!(full.scale()[0], 99.0 / 448.0);
        let code = clipped.encode(&[100.0]).expect("encode");
        assert_eq!(code, [0x7E], "the outlier saturates");
        for bad in [0.0, -0.5, 1.5, f32::NAN] {
            assert!(ScaledFloat8Codec::fit_quantile(Float8Format::E4m3, &sample, 1, bad).is_err());
        }
    }
}
