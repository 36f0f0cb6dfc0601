//! The methods `octet weights sweep` compares Octet against, applied to one linear
//! weight `[rows, cols]` (row-major, rows are output channels) and returned
//! dequantised, with the bits per weight their stored form costs.
//!
//! - Round-to-nearest (RTN) group-wise integer quantisation, the naive baseline:
//!   every `group` consecutive weights of a row share an asymmetric min/max grid of
//!   `2^bits` levels; scale and minimum are stored as f16, so a weight costs
//!   `bits + 32 / group` bits.
//! - llama.cpp's k-quants through candle's port of ggml (`QTensor::quantize`, the
//!   reference `quantize_row_*_K_ref` code), optionally with an importance matrix
//!   (llama.cpp's `--imatrix`: per-input-channel mean x^2). A k-quant super-block
//!   holds 256 weights; SmolLM2's rows of 576 are not a multiple of 256, so the
//!   matrix is quantised as one flat sequence of super-blocks (llama.cpp instead
//!   falls back to another type for such tensors). The 32-weight sub-blocks, which
//!   carry the scales, still never straddle a row when `cols` is a multiple of 32;
//!   only the super-block's f16 scale-of-scales is shared across a row boundary.
//!   Bits per weight are the format's: Q4_K 4.5, Q3_K 3.4375, Q2_K 2.625.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use half::f16;

use super::{ModelError, Result};

/// Round-to-nearest group-wise asymmetric quantisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rtn {
    /// Bits per code, 1..=8.
    pub bits: u8,
    /// Consecutive weights of a row sharing one scale and minimum.
    pub group: usize,
}

impl Rtn {
    /// Bits per weight of the stored form: the codes plus an f16 scale and an f16
    /// minimum per group.
    pub fn bits_per_weight(&self) -> f64 {
        f64::from(self.bits) + 32.0 / self.group as f64
    }

    /// Quantises and dequantises `w` (`rows x cols`). Groups run along each row; a
    /// row whose length is not a multiple of `group` ends with a shorter group.
    pub fn apply(&self, w: &[f32], rows: usize, cols: usize) -> Result<Vec<f32>> {
        if !(1..=8).contains(&self.bits) {
            return Err(ModelError::Parameter {
                name: "RTN bits",
                value: self.bits.to_string(),
                expected: "1..=8".into(),
            });
        }
        if self.group == 0 {
            return Err(ModelError::Parameter {
                name: "RTN group",
                value: "0".into(),
                expected: "a positive group".into(),
            });
        }
        if w.len() != rows * cols || cols == 0 {
            return Err(ModelError::MatrixLen {
                method: "RTN",
                rows,
                cols,
                expected: rows * cols,
                actual: w.len(),
            });
        }
        let levels = ((1u32 << self.bits) - 1) as f32;
        let mut out = Vec::with_capacity(w.len());
        for row in w.chunks_exact(cols) {
            for g in row.chunks(self.group) {
                let (lo, hi) = g
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
                        (lo.min(x), hi.max(x))
                    });
                if !(lo.is_finite() && hi.is_finite()) {
                    return Err(ModelError::NonFinite { method: "RTN" });
                }
                // What is stored: f16 minimum and f16 step.
                let min = f16::from_f32(lo).to_f32();
                let step = f16::from_f32((hi - min) / levels).to_f32();
                if step <= 0.0 {
                    out.extend(std::iter::repeat_n(min, g.len()));
                    continue;
                }
                out.extend(g.iter().map(|&x| {
                    let q = ((x - min) / step).round().clamp(0.0, levels);
                    min + q * step
                }));
            }
        }
        Ok(out)
    }
}

/// A llama.cpp k-quant type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KQuant {
    /// 2-bit codes, 4-bit sub-block scales and minimums.
    Q2K,
    /// 3-bit codes, 6-bit sub-block scales.
    Q3K,
    /// 4-bit codes, 6-bit sub-block scales and minimums.
    Q4K,
    /// 5-bit codes.
    Q5K,
    /// 6-bit codes, 8-bit sub-block scales.
    Q6K,
}

/// Weights per k-quant super-block.
pub const QK_K: usize = 256;

impl KQuant {
    /// The ggml type.
    pub fn dtype(self) -> GgmlDType {
        match self {
            KQuant::Q2K => GgmlDType::Q2K,
            KQuant::Q3K => GgmlDType::Q3K,
            KQuant::Q4K => GgmlDType::Q4K,
            KQuant::Q5K => GgmlDType::Q5K,
            KQuant::Q6K => GgmlDType::Q6K,
        }
    }

    /// llama.cpp's name.
    pub fn name(self) -> &'static str {
        match self {
            KQuant::Q2K => "Q2_K",
            KQuant::Q3K => "Q3_K",
            KQuant::Q4K => "Q4_K",
            KQuant::Q5K => "Q5_K",
            KQuant::Q6K => "Q6_K",
        }
    }

    /// Bits per weight: bytes of a super-block over its 256 weights.
    pub fn bits_per_weight(self) -> f64 {
        let d = self.dtype();
        8.0 * d.type_size() as f64 / d.block_size() as f64
    }

    /// Quantises and dequantises `w` (`rows x cols`, `rows * cols` a multiple of 256)
    /// as a flat run of super-blocks. With `importance` (one non-negative value per
    /// column, llama.cpp's imatrix), each super-block is quantised with the
    /// importances of the columns it covers.
    pub fn apply(
        self,
        w: &[f32],
        rows: usize,
        cols: usize,
        importance: Option<&[f32]>,
    ) -> Result<Vec<f32>> {
        let n = rows * cols;
        let method = self.name();
        if w.len() != n || cols == 0 {
            return Err(ModelError::MatrixLen {
                method,
                rows,
                cols,
                expected: n,
                actual: w.len(),
            });
        }
        if !n.is_multiple_of(QK_K) {
            return Err(ModelError::SuperBlocks {
                method,
                rows,
                cols,
                block: QK_K,
            });
        }
        let quantisation = |what: &'static str| {
            move |source| ModelError::Tensor {
                what: format!("{method} quantisation{what}"),
                source: Box::new(source),
            }
        };
        let cpu = Device::Cpu;
        let Some(imp) = importance else {
            let t = Tensor::from_slice(w, (n / QK_K, QK_K), &cpu)?;
            let q = QTensor::quantize(&t, self.dtype()).map_err(quantisation(""))?;
            return Ok(q.dequantize(&cpu)?.flatten_all()?.to_vec1()?);
        };
        if imp.len() != cols {
            return Err(ModelError::ImportanceLen {
                method,
                actual: imp.len(),
                cols,
            });
        }
        // One call per super-block: candle takes one importance vector per row of
        // what it quantises, and a flat super-block covers different columns each time.
        let mut out = Vec::with_capacity(n);
        let mut block_imp = vec![0f32; QK_K];
        for (b, chunk) in w.chunks_exact(QK_K).enumerate() {
            for (p, v) in block_imp.iter_mut().enumerate() {
                *v = imp[(b * QK_K + p) % cols];
            }
            let t = Tensor::from_slice(chunk, (1, QK_K), &cpu)?;
            let q = QTensor::quantize_imatrix(&t, &block_imp, self.dtype())
                .map_err(quantisation(" with importance"))?;
            out.extend(q.dequantize(&cpu)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|i| (rng.random::<f32>() * 2.0 - 1.0) * (1.0 + (i % 5) as f32))
            .collect()
    }

    /// Every value lands within half a step (plus f16 rounding of the grid) of
    /// itself, and a group never uses more than `2^bits` distinct values.
    #[test]
    fn rtn_error_is_bounded_by_half_a_step() {
        let (rows, cols) = (7, 83);
        let w = random(rows * cols, 1);
        for bits in [2u8, 3, 4, 8] {
            for group in [1usize, 16, 32, 83, 100] {
                let rtn = Rtn { bits, group };
                let d = rtn.apply(&w, rows, cols).expect("valid");
                assert_eq!(d.len(), w.len());
                for (r, (row, drow)) in w.chunks(cols).zip(d.chunks(cols)).enumerate() {
                    for (g, dg) in row.chunks(group).zip(drow.chunks(group)) {
                        let lo = g.iter().copied().fold(f32::INFINITY, f32::min);
                        let hi = g.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let step = (hi - lo) / ((1u32 << bits) - 1) as f32;
                        // f16 rounding of min and step, accumulated over the levels.
                        let slack = 1e-3 * (hi.abs() + lo.abs()) + 1e-6;
                        for (x, y) in g.iter().zip(dg) {
                            assert!(
                                (x - y).abs() <= step / 2.0 + slack,
                                "bits {bits} group {group} row {r}: {x} -> {y}, step {step}"
                            );
                        }
                        let mut distinct: Vec<u32> = dg.iter().map(|v| v.to_bits()).collect();
                        distinct.sort_unstable();
                        distinct.dedup();
                        assert!(distinct.len() <= 1 << bits);
                    }
                }
            }
        }
        assert!(Rtn { bits: 0, group: 4 }.apply(&w, rows, cols).is_err());
        assert!(Rtn { bits: 4, group: 4 }.apply(&w, rows, cols + 1).is_err());
    }

    #[test]
    fn rtn_bits_per_weight_counts_the_f16_scale_and_minimum() {
        assert_eq!(Rtn { bits: 4, group: 32 }.bits_per_weight(), 5.0);
        assert_eq!(Rtn { bits: 3, group: 64 }.bits_per_weight(), 3.5);
        assert_eq!(Rtn { bits: 2, group: 32 }.bits_per_weight(), 3.0);
        // A grid that holds the values exactly reproduces them.
        let w = [0.0f32, 0.5, 1.0, 1.5, 1.5, 0.0, 0.5, 1.0];
        let d = Rtn { bits: 2, group: 4 }.apply(&w, 2, 4).expect("valid");
        assert_eq!(d, w.to_vec());
    }

    #[test]
    fn kquant_bits_and_error_order() {
        assert_eq!(KQuant::Q4K.bits_per_weight(), 4.5);
        assert_eq!(KQuant::Q3K.bits_per_weight(), 3.4375);
        assert_eq!(KQuant::Q2K.bits_per_weight(), 2.625);
        let (rows, cols) = (8, 96);
        let w = random(rows * cols, 2);
        let err = |k: KQuant, imp: Option<&[f32]>| {
            let d = k.apply(&w, rows, cols, imp).expect("quantises");
            let num: f32 = w.iter().zip(&d).map(|(a, b)| (a - b).powi(2)).sum();
            let den: f32 = w.iter().map(|a| a * a).sum();
            (num / den).sqrt()
        };
        let (e2, e3, e4) = (
            err(KQuant::Q2K, None),
            err(KQuant::Q3K, None),
            err(KQuant::Q4K, None),
        );
        assert!(e4 < e3 && e3 < e2 && e2 < 0.5, "{e2} {e3} {e4}");
        let imp: Vec<f32> = (0..cols).map(|j| 1.0 + j as f32).collect();
        assert!(err(KQuant::Q3K, Some(&imp)) < 0.5);
        assert!(KQuant::Q4K.apply(&w[..100], 10, 10, None).is_err());
        assert!(KQuant::Q4K.apply(&w, rows, cols, Some(&imp[..3])).is_err());
    }
}
