//! BitStack: any-size weight compression by iterative absolute-value decomposition.
//!
//! Implements BitStack (Wang et al., "BitStack: Any-Size Compression of Large Language
//! Models in Variable Memory Environments", arXiv 2410.23918; reference code
//! `xinghaow99/BitStack`). A linear weight `W` (rows = output channels, cols = input
//! channels, row-major) is first scaled per input channel, `W' = W diag(s)`, then peeled
//! into a stack of blocks. Each block is one bit per weight (the sign of the current
//! residual) times a rank-`k` approximation of the residual's magnitude:
//!
//! ```text
//! repeat n_iter times:
//!     S  = sign(W')                      (0 counts as +1)
//!     |W'| ~ U_k Sigma_k V_k^T           (truncated SVD)
//!     u  = U_k sqrt(Sigma_k)             (rows x k, stored f16)
//!     vt = sqrt(Sigma_k) V_k^T           (k x cols, stored f16)
//!     W' = W' - S * (u vt)               (element-wise sign, residual in f32)
//! ```
//!
//! Loading the first `n` blocks gives `W ~ (sum of blocks) / s`, so a matrix can be
//! loaded at any of `n_iter` sizes, and a whole model at any byte budget once blocks
//! of all matrices are put in one global order ([`order`]).
//!
//! ```
//! use octet_quant::bitstack::{decompose, BitStackConfig, RankPolicy};
//!
//! let (rows, cols) = (24, 40);
//! let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
//! let cfg = BitStackConfig { n_iter: 6, rank: RankPolicy::Fixed(2), ..Default::default() };
//! let m = decompose(&w, rows, cols, None, &cfg)?;
//! let err = |n: usize| -> f32 {
//!     let r = m.rebuild(n).expect("n <= n_iter");
//!     r.iter().zip(&w).map(|(a, b)| (a - b) * (a - b)).sum()
//! };
//! assert!(err(6) < err(1));
//! # Ok::<(), octet_quant::QuantError>(())
//! ```

mod decompose;
pub mod kernel;
pub mod order;
mod svd;

pub use decompose::decompose;
pub use kernel::{
    accumulate_signed_product, accumulate_signed_product_scalar, pack_signs, sign_row_bytes,
};
pub use order::{
    BlockId, MatrixBlocks, OrderPolicy, Seam, global_order, score_levels_by_eval, seam_order,
};

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::error::{QuantError, Result};

/// The most blocks one matrix may have; also the cap the checkpoint reader enforces.
pub const MAX_LEVELS: usize = 1024;

/// How the rank `k` of every block's magnitude factors is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RankPolicy {
    /// The same `k` for every matrix (the reference uses 16), clamped to `min(rows, cols)`.
    Fixed(usize),
    /// The largest `k <= max_rank` whose factor bytes `2 k (rows + cols)` are at most
    /// `share` times the sign bytes `rows cols / 8`, and at least 1:
    /// `k = clamp(floor(share rows cols / (16 (rows + cols))), 1, max_rank)`.
    ///
    /// A fixed `k = 16` costs 1.9 bits per weight per block on a 576x576 matrix, most
    /// of it factors; this keeps small matrices near one bit per weight per block
    /// while large ones get the reference's rank. With the default `share = 0.25`,
    /// `max_rank = 16`:
    ///
    /// | shape | k | bits per weight per block |
    /// |---|---|---|
    /// | 576 x 576 | 4 | 1.222 |
    /// | 576 x 1536 | 6 | 1.229 |
    /// | 4096 x 11008 | 16 | 1.086 |
    FactorShare {
        /// Upper bound on factor bytes as a fraction of sign bytes.
        share: f32,
        /// The largest rank ever chosen.
        max_rank: usize,
    },
}

impl Default for RankPolicy {
    fn default() -> Self {
        RankPolicy::FactorShare {
            share: 0.25,
            max_rank: 16,
        }
    }
}

impl RankPolicy {
    /// The rank this policy gives a `rows x cols` matrix, within `1..=min(rows, cols)`.
    pub fn rank_for(&self, rows: usize, cols: usize) -> usize {
        let cap = rows.min(cols).max(1);
        let k = match *self {
            RankPolicy::Fixed(k) => k,
            RankPolicy::FactorShare { share, max_rank } => {
                let ideal = f64::from(share) * rows as f64 * cols as f64
                    / (16.0 * (rows + cols).max(1) as f64);
                // `as` saturates, and NaN (rejected by `validate`) would give 0.
                (ideal.floor() as usize).min(max_rank)
            }
        };
        k.clamp(1, cap)
    }

    fn validate(&self) -> Result<()> {
        match *self {
            RankPolicy::Fixed(0) => Err(QuantError::InvalidConfig {
                field: "rank",
                reason: "a fixed rank must be at least 1".into(),
            }),
            RankPolicy::FactorShare { share, max_rank } => {
                if !(share.is_finite() && share > 0.0) {
                    return Err(QuantError::InvalidConfig {
                        field: "rank.share",
                        reason: format!("expected a finite value > 0, got {share}"),
                    });
                }
                if max_rank == 0 {
                    return Err(QuantError::InvalidConfig {
                        field: "rank.max_rank",
                        reason: "expected at least 1, got 0".into(),
                    });
                }
                Ok(())
            }
            RankPolicy::Fixed(_) => Ok(()),
        }
    }
}

/// How the top-`k` singular triplets of `|W'|` are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvdMethod {
    /// faer's full thin SVD, truncated to `k`. Exact, but it costs the whole
    /// spectrum for the few triplets a block keeps.
    Exact,
    /// Randomized range finder (Halko, Martinsson, Tropp 2011): sample `k + oversample`
    /// directions, refine them with `power_iters` power iterations (re-orthonormalized
    /// each time), and take the exact SVD of the small projected matrix. `|W'|` is
    /// non-negative, so its spectrum has one dominant value and decays fast; two power
    /// iterations already match the exact SVD's residual to well under 1% (tested).
    /// Falls back to [`SvdMethod::Exact`] when `k + oversample >= min(rows, cols)`.
    Randomized {
        /// Extra sampled directions beyond `k`.
        oversample: usize,
        /// Power iterations.
        power_iters: usize,
    },
}

impl Default for SvdMethod {
    fn default() -> Self {
        SvdMethod::Randomized {
            oversample: 8,
            power_iters: 2,
        }
    }
}

/// Which factors the residual update `W' <- W' - S * (u vt)` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResidualFactors {
    /// The f32 factors before rounding to f16, as the reference does.
    #[default]
    F32,
    /// The f16 factors that are stored, so each block also corrects the rounding of
    /// the blocks before it.
    Stored,
}

/// Parameters of [`decompose`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BitStackConfig {
    /// Number of blocks (the reference uses 16).
    pub n_iter: usize,
    /// Rank of each block's magnitude factors.
    pub rank: RankPolicy,
    /// How the truncated SVD is computed.
    pub svd: SvdMethod,
    /// Which factors update the residual.
    pub residual: ResidualFactors,
}

impl Default for BitStackConfig {
    fn default() -> Self {
        BitStackConfig {
            n_iter: 16,
            rank: RankPolicy::default(),
            svd: SvdMethod::default(),
            residual: ResidualFactors::default(),
        }
    }
}

impl BitStackConfig {
    /// Checks every field; [`decompose`] calls this first.
    pub fn validate(&self) -> Result<()> {
        if self.n_iter == 0 || self.n_iter > MAX_LEVELS {
            return Err(QuantError::InvalidConfig {
                field: "n_iter",
                reason: format!("expected 1..={MAX_LEVELS}, got {}", self.n_iter),
            });
        }
        self.rank.validate()
    }
}

/// Bytes of one block's payload: packed signs (each row padded to a whole byte) and
/// the f16 factors `u` and `vt`.
pub fn block_payload_bytes(rows: usize, cols: usize, rank: usize) -> usize {
    rows * sign_row_bytes(cols) + 2 * rank * (rows + cols)
}

/// Bits per weight one block costs: `1 + 16 k (rows + cols) / (rows cols)` when
/// `cols` is a multiple of 8.
pub fn bits_per_weight_per_block(rows: usize, cols: usize, rank: usize) -> f64 {
    8.0 * block_payload_bytes(rows, cols, rank) as f64 / (rows * cols).max(1) as f64
}

/// One level of the stack.
#[derive(Debug, Clone, PartialEq)]
pub struct BitStackBlock {
    /// Sign bits of the residual: row-major, each row padded to
    /// [`sign_row_bytes`]`(cols)` bytes; element `(i, j)` is bit `j % 8` (least
    /// significant first) of byte `i * sign_row_bytes(cols) + j / 8`, set when the
    /// residual was negative.
    pub signs: Vec<u8>,
    /// `U_k sqrt(Sigma_k)`, `rows x rank` row-major.
    pub u: Vec<f16>,
    /// `sqrt(Sigma_k) V_k^T`, `rank x cols` row-major.
    pub vt: Vec<f16>,
    /// Importance proxy: the squared Frobenius norm of the scaled residual `W'` that
    /// this block removed (before minus after). With calibration scales this is the
    /// activation-weighted reconstruction error the block removes; it is what
    /// [`global_order`] ranks by, divided by the block's bytes.
    pub importance: f64,
}

/// A decomposed matrix: its shape, scales, and blocks in level order.
#[derive(Debug, Clone, PartialEq)]
pub struct BitStackMatrix {
    /// Output channels.
    pub rows: usize,
    /// Input channels.
    pub cols: usize,
    /// Rank of every block's factors.
    pub rank: usize,
    /// Per-input-channel scales `s` (length `cols`); `None` means all ones (no
    /// activation-aware scaling).
    pub scales: Option<Vec<f32>>,
    /// Blocks in level order; block 0 is the coarsest.
    pub blocks: Vec<BitStackBlock>,
    /// `||W diag(s)||_F^2`, the error of loading no block, for relative errors.
    pub scaled_norm_sq: f64,
}

impl BitStackMatrix {
    /// Bytes of one block's payload.
    pub fn block_bytes(&self) -> usize {
        block_payload_bytes(self.rows, self.cols, self.rank)
    }

    /// Rebuilds `W` (row-major `rows x cols`) from the first `n_blocks` blocks.
    pub fn rebuild(&self, n_blocks: usize) -> Result<Vec<f32>> {
        if n_blocks > self.blocks.len() {
            return Err(QuantError::InvalidConfig {
                field: "n_blocks",
                reason: format!("expected at most {}, got {n_blocks}", self.blocks.len()),
            });
        }
        let mut r = Rebuilder::new(self.rows, self.cols, self.rank);
        let mut u = vec![0f32; self.rows * self.rank];
        let mut vt = vec![0f32; self.rank * self.cols];
        for b in &self.blocks[..n_blocks] {
            b.u.convert_to_f32_slice(&mut u);
            b.vt.convert_to_f32_slice(&mut vt);
            r.add_block(&b.signs, &u, &vt)?;
        }
        r.finish(self.scales.as_deref())
    }
}

/// Accumulates blocks into a dense matrix: the one rebuild path shared by in-memory
/// matrices and the checkpoint reader (which decodes factors from file bytes).
#[derive(Debug)]
pub struct Rebuilder {
    rows: usize,
    cols: usize,
    rank: usize,
    acc: Vec<f32>,
}

impl Rebuilder {
    /// An all-zero `rows x cols` accumulator for blocks of rank `rank`.
    pub fn new(rows: usize, cols: usize, rank: usize) -> Rebuilder {
        Rebuilder {
            rows,
            cols,
            rank,
            acc: vec![0.0; rows * cols],
        }
    }

    /// Adds `S * (u vt)` for one block given its packed signs and f32 factors.
    pub fn add_block(&mut self, signs: &[u8], u: &[f32], vt: &[f32]) -> Result<()> {
        let (rows, cols, rank) = (self.rows, self.cols, self.rank);
        for (what, expected, actual) in [
            (
                "block signs (bytes)",
                rows * sign_row_bytes(cols),
                signs.len(),
            ),
            ("block factor u", rows * rank, u.len()),
            ("block factor vt", rank * cols, vt.len()),
        ] {
            if expected != actual {
                return Err(QuantError::DimMismatch {
                    what,
                    expected,
                    actual,
                });
            }
        }
        accumulate_signed_product(&mut self.acc, rows, cols, signs, u, vt, rank);
        Ok(())
    }

    /// Divides the scales back out (`W = acc / s` per input channel) and returns `W`.
    pub fn finish(mut self, scales: Option<&[f32]>) -> Result<Vec<f32>> {
        if let Some(s) = scales {
            check_scales(s, self.cols)?;
            let inv: Vec<f32> = s.iter().map(|x| 1.0 / x).collect();
            for row in self.acc.chunks_exact_mut(self.cols.max(1)) {
                for (x, i) in row.iter_mut().zip(&inv) {
                    *x *= i;
                }
            }
        }
        Ok(self.acc)
    }
}

/// Checks that `s` holds `cols` finite, positive scales.
pub(crate) fn check_scales(s: &[f32], cols: usize) -> Result<()> {
    if s.len() != cols {
        return Err(QuantError::DimMismatch {
            what: "scales (one per input channel)",
            expected: cols,
            actual: s.len(),
        });
    }
    if let Some(j) = s.iter().position(|x| !(x.is_finite() && *x > 0.0)) {
        return Err(QuantError::InvalidConfig {
            field: "scales",
            reason: format!("scale {j} is {}, expected finite and > 0", s[j]),
        });
    }
    Ok(())
}

/// f16 factors from f32, round to nearest even.
pub(crate) fn to_f16(x: &[f32]) -> Vec<f16> {
    let mut out = vec![f16::ZERO; x.len()];
    out.convert_from_f32_slice(x);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rank_rule_matches_the_documented_table() {
        let p = RankPolicy::default();
        for (rows, cols, k, bits) in [
            (576, 576, 4, 1.222),
            (576, 1536, 6, 1.229),
            (1536, 576, 6, 1.229),
            (4096, 11008, 16, 1.086),
        ] {
            assert_eq!(p.rank_for(rows, cols), k, "{rows}x{cols}");
            let b = bits_per_weight_per_block(rows, cols, k);
            assert!((b - bits).abs() < 5e-4, "{rows}x{cols}: {b}");
        }
        assert_eq!(p.rank_for(3, 2), 1);
        assert_eq!(RankPolicy::Fixed(16).rank_for(576, 576), 16);
        assert_eq!(RankPolicy::Fixed(16).rank_for(5, 9), 5);
        assert!((bits_per_weight_per_block(576, 576, 16) - 1.889).abs() < 1e-3);
    }

    #[test]
    fn config_validation_names_the_field() {
        let bad = BitStackConfig {
            n_iter: 0,
            ..Default::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(QuantError::InvalidConfig {
                field: "n_iter",
                ..
            })
        ));
        let bad = BitStackConfig {
            rank: RankPolicy::FactorShare {
                share: f32::NAN,
                max_rank: 4,
            },
            ..Default::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(QuantError::InvalidConfig {
                field: "rank.share",
                ..
            })
        ));
        assert!(BitStackConfig::default().validate().is_ok());
    }
}
