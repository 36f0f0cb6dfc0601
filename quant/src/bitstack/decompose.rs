//! The BitStack decomposition loop: signs, truncated SVD of the magnitude, residual.

use faer::Mat;
use half::slice::HalfFloatSliceExt;

use super::kernel::{accumulate_signed_product, pack_signs};
use super::svd::balanced_factors;
use super::{BitStackBlock, BitStackConfig, BitStackMatrix, ResidualFactors, check_scales, to_f16};
use crate::error::{Result, check_batch};

/// Decomposes `w` (`rows x cols` row-major: rows are output channels, cols input
/// channels) into `cfg.n_iter` BitStack blocks.
///
/// `scales` are the per-input-channel activation scales `s_j` (mean over calibration
/// samples of the token-wise L2 norm of input channel `j`, plus 1e-3, as in the
/// paper): the stack approximates `W diag(s)` so channels that see large activations
/// are reconstructed more carefully. `None` means uniform scales (all ones), i.e. no
/// activation-aware scaling: a plain Frobenius-norm decomposition of `W`.
///
/// Deterministic: the randomized SVD draws its test matrix from a fixed seed.
pub fn decompose(
    w: &[f32],
    rows: usize,
    cols: usize,
    scales: Option<&[f32]>,
    cfg: &BitStackConfig,
) -> Result<BitStackMatrix> {
    cfg.validate()?;
    if rows == 0 || cols == 0 {
        return Err(crate::QuantError::InvalidConfig {
            field: "shape",
            reason: format!("a BitStack matrix needs rows and cols >= 1, got {rows}x{cols}"),
        });
    }
    check_batch("BitStack weight matrix", w, cols)?;
    if w.len() != rows * cols {
        return Err(crate::QuantError::DimMismatch {
            what: "BitStack weight matrix (rows x cols)",
            expected: rows * cols,
            actual: w.len(),
        });
    }
    let mut resid = w.to_vec();
    if let Some(s) = scales {
        check_scales(s, cols)?;
        for row in resid.chunks_exact_mut(cols) {
            for (x, sj) in row.iter_mut().zip(s) {
                *x *= sj;
            }
        }
    }
    let rank = cfg.rank.rank_for(rows, cols);
    let scaled_norm_sq = norm_sq(&resid);
    let mut norm = scaled_norm_sq;
    let mut blocks = Vec::with_capacity(cfg.n_iter);
    for level in 0..cfg.n_iter {
        let signs = pack_signs(&resid, rows, cols);
        let abs = Mat::<f32>::from_fn(rows, cols, |i, j| resid[i * cols + j].abs());
        let seed = 0x6269_7473_7461_636b ^ (level as u64);
        let (mut u, mut vt) = balanced_factors(abs.as_ref(), rank, cfg.svd, seed)?;
        drop(abs);
        let (u16, vt16) = (to_f16(&u), to_f16(&vt));
        if cfg.residual == ResidualFactors::Stored {
            u16.convert_to_f32_slice(&mut u);
            vt16.convert_to_f32_slice(&mut vt);
        }
        for x in &mut u {
            *x = -*x;
        }
        accumulate_signed_product(&mut resid, rows, cols, &signs, &u, &vt, rank);
        let after = norm_sq(&resid);
        blocks.push(BitStackBlock {
            signs,
            u: u16,
            vt: vt16,
            importance: norm - after,
        });
        norm = after;
    }
    Ok(BitStackMatrix {
        rows,
        cols,
        rank,
        scales: scales.map(<[f32]>::to_vec),
        blocks,
        scaled_norm_sq,
    })
}

fn norm_sq(x: &[f32]) -> f64 {
    x.iter().map(|v| f64::from(*v) * f64::from(*v)).sum()
}

#[cfg(test)]
mod tests {
    use super::super::{RankPolicy, SvdMethod};
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Llama-like weights: Gaussian-ish rows with heavy per-input-channel scales and a
    /// few outlier channels.
    pub(crate) fn weights(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let col: Vec<f32> = (0..cols)
            .map(|j| {
                if j % 17 == 3 {
                    4.0
                } else {
                    rng.random_range(0.3f32..1.5)
                }
            })
            .collect();
        (0..rows * cols)
            .map(|i| {
                let g: f32 = (0..3).map(|_| rng.random_range(-1.0f32..1.0)).sum();
                0.02 * g * col[i % cols]
            })
            .collect()
    }

    fn scaled_err(w: &[f32], r: &[f32], cols: usize, s: Option<&[f32]>) -> f64 {
        w.iter()
            .zip(r)
            .enumerate()
            .map(|(i, (a, b))| {
                let sj = s.map_or(1.0, |s| f64::from(s[i % cols]));
                (f64::from(a - b) * sj).powi(2)
            })
            .sum()
    }

    #[test]
    fn residual_decreases_every_block_and_rebuild_error_never_grows() {
        let (rows, cols) = (64, 176);
        let w = weights(rows, cols, 1);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let s: Vec<f32> = (0..cols).map(|_| rng.random_range(0.5f32..2.0)).collect();
        for svd in [SvdMethod::Exact, SvdMethod::default()] {
            for residual in [ResidualFactors::F32, ResidualFactors::Stored] {
                let cfg = BitStackConfig {
                    n_iter: 12,
                    svd,
                    residual,
                    ..Default::default()
                };
                let m = decompose(&w, rows, cols, Some(&s), &cfg).expect("decompose");
                assert_eq!(m.blocks.len(), 12);
                assert_eq!(m.rank, RankPolicy::default().rank_for(rows, cols));
                let mut left = m.scaled_norm_sq;
                for (l, b) in m.blocks.iter().enumerate() {
                    assert!(b.importance > 0.0, "{svd:?} level {l}: {}", b.importance);
                    left -= b.importance;
                }
                assert!(left >= 0.0);
                let mut prev = m.scaled_norm_sq * (1.0 + 1e-6);
                for n in 0..=12 {
                    let r = m.rebuild(n).expect("rebuild");
                    let e = scaled_err(&w, &r, cols, Some(&s));
                    assert!(
                        e <= prev,
                        "{svd:?} {residual:?}: {n} blocks error {e} > {prev}"
                    );
                    prev = e;
                }
                // Twelve blocks at ~1.3 bits each leave a small fraction of the energy.
                assert!(
                    prev < 0.05 * m.scaled_norm_sq,
                    "{prev} vs {}",
                    m.scaled_norm_sq
                );
            }
        }
    }

    #[test]
    fn full_rebuild_matches_the_tracked_residual() {
        // Error of the full rebuild = what the importances did not remove, up to the
        // f16 rounding of the factors.
        let (rows, cols) = (64, 64);
        let w = weights(rows, cols, 3);
        let cfg = BitStackConfig {
            n_iter: 8,
            residual: ResidualFactors::Stored,
            ..Default::default()
        };
        let m = decompose(&w, rows, cols, None, &cfg).expect("decompose");
        let left = m.scaled_norm_sq - m.blocks.iter().map(|b| b.importance).sum::<f64>();
        let e = scaled_err(&w, &m.rebuild(8).expect("rebuild"), cols, None);
        assert!((e - left).abs() <= 1e-3 * m.scaled_norm_sq, "{e} vs {left}");
    }

    #[test]
    fn rejects_bad_input() {
        let cfg = BitStackConfig::default();
        assert!(decompose(&[1.0; 6], 2, 4, None, &cfg).is_err());
        assert!(decompose(&[1.0, f32::NAN, 0.0, 1.0], 2, 2, None, &cfg).is_err());
        assert!(decompose(&[1.0; 4], 2, 2, Some(&[1.0, 0.0]), &cfg).is_err());
        assert!(decompose(&[1.0; 4], 2, 2, Some(&[1.0]), &cfg).is_err());
        let m = decompose(&[0.0; 4], 2, 2, None, &cfg).expect("zeros decompose");
        assert_eq!(m.rebuild(16).expect("rebuild"), vec![0.0; 4]);
    }
}
