//! Nested scaled palettes: a scaled palette at a low bit width plus refinement steps
//! that each add one bit per weight, so the `b`-bit tensor is a prefix of the
//! `b + 1`-bit one.
//!
//! The construction follows Any-Precision LLM (Park et al., "Any-Precision LLM:
//! Low-Cost Deployment of Multiple, Different-Sized LLMs", ICML 2024): fit a seed
//! quantizer at the lowest precision, then *upscale* it by splitting every level in
//! two. Here the seed is a [`ScaledPalette`] (`w = d_r s_rb table[i] + m_r o_rb`);
//! its row parameters and block codes stay fixed, and each step replaces the table
//! by one twice as long in which level `i` becomes levels `2i` and `2i + 1`. A weight
//! keeps its parent level and gains one bit choosing the child, so a step stores one
//! bit plane (`rows x ceil(cols / 8)` bytes) and the new table (`2^(b+1)` f16).
//!
//! A split is the exact importance-weighted 1-D 2-means of the block-normalised
//! weights `u = (w - o) / s` held by the parent level (weight `importance_j s^2`,
//! which makes the error in `u` the error in `w`): a parent's members are sorted by
//! `u`, the best cut is found from prefix sums, and the children are their weighted
//! means (rounded to f16, then every member takes the nearer child). The levels stay
//! ascending because a parent's members lie between its neighbours' members.
//!
//! Every step records its *gain*: how much it lowers the importance-weighted squared
//! error `sum_j importance_j (w - w_hat)^2` of the tensor (the diagonal of the
//! calibration Gram matrix, GPTQ's objective without the off-diagonal terms). The
//! checkpoint orders steps across tensors by gain per byte.
//!
//! ```
//! use octet_quant::palette::nested::nest_scaled;
//! let (rows, cols) = (4, 64);
//! let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
//! let p = nest_scaled(&w, rows, cols, None, 2, 4, 32)?;
//! assert_eq!(p.steps.len(), 2);
//! let err = |n: usize| -> f32 {
//!     p.decode(n).iter().zip(&w).map(|(a, b)| (a - b) * (a - b)).sum()
//! };
//! assert!(err(2) < err(1) && err(1) < err(0));
//! # Ok::<(), octet_quant::QuantError>(())
//! ```

use half::f16;
use rayon::prelude::*;

use super::nested_decode::NestedParts;
pub(crate) use super::nested_decode::decode_nested;
use super::{ScaledPalette, index_row_bytes, palettize_scaled, unpack_indices};
use crate::error::{QuantError, Result};

/// The widest index a nested palette reaches (tables of at most 256 levels).
pub const MAX_BITS: u8 = 8;

/// One refinement step: one more bit per weight.
#[derive(Debug, Clone, PartialEq)]
pub struct NestedStep {
    /// The refined table: `2 x` the previous one, ascending; level `i` of the
    /// previous table became levels `2i` and `2i + 1`.
    pub table: Vec<f16>,
    /// One bit per weight, `rows x ceil(cols / 8)` bytes, bit `j % 8` (LSB first) of
    /// byte `j / 8` of a row: set where the weight takes child `2i + 1`.
    pub plane: Vec<u8>,
    /// Importance-weighted squared error this step removes (>= 0 up to rounding).
    pub gain: f64,
    /// Per-block correction of the base's block scales and offsets at this step's
    /// width (format version 4, [`super::rescaled`]); `None` in a plain nested
    /// palette, whose every width uses the base's block parameters, and in a
    /// rescaled step that keeps the last loaded step's correction (format version
    /// 5, [`super::rescaled::Corrections`]).
    pub rescale: Option<super::rescaled::Rescale>,
}

/// A scaled palette at `base.layout.bits` bits and refinement steps up to
/// `base.layout.bits + steps.len()` bits.
#[derive(Debug, Clone, PartialEq)]
pub struct NestedPalette {
    /// The seed quantizer; its table is the one used with no step loaded.
    pub base: ScaledPalette,
    /// Refinement steps in order.
    pub steps: Vec<NestedStep>,
    /// Correction of the base's block parameters used when no step is loaded
    /// (a rescaled palette fitted above its base width, [`super::rescaled`]).
    pub base_rescale: Option<super::rescaled::Rescale>,
}

/// Bytes of one bit-plane row of `cols` weights.
pub fn plane_row_bytes(cols: usize) -> usize {
    cols.div_ceil(8)
}

impl NestedPalette {
    /// The block correction that applies with `n` steps loaded: the last of them
    /// that has one (a step without keeps the one before), the base's own with no
    /// step, none where no loaded step has one.
    pub fn correction_at(&self, n: usize) -> Option<&super::rescaled::Rescale> {
        match n.min(self.steps.len()) {
            0 => self.base_rescale.as_ref(),
            n => self.steps[..n]
                .iter()
                .rev()
                .find_map(|s| s.rescale.as_ref()),
        }
    }

    /// The tensor rebuilt with the base and its first `n_steps` steps (clamped to
    /// the steps there are), `rows x cols` row-major.
    pub fn decode(&self, n_steps: usize) -> Vec<f32> {
        let n = n_steps.min(self.steps.len());
        let table: Vec<f32> = match n {
            0 => self.base.table.iter().map(|v| v.to_f32()).collect(),
            _ => self.steps[n - 1].table.iter().map(|v| v.to_f32()).collect(),
        };
        let planes: Vec<&[u8]> = self.steps[..n].iter().map(|s| s.plane.as_slice()).collect();
        let params: Vec<f32> = self.base.params.iter().map(|v| v.to_f32()).collect();
        let rescale = self.correction_at(n).map(|r| r.view());
        let parts = NestedParts {
            table: &table,
            params: &params,
            codes: &self.base.codes,
            indices: &self.base.indices,
            planes: &planes,
            rescale: rescale.as_ref(),
        };
        decode_nested(&self.base.layout, &parts)
    }
}

/// Fits a nested scaled palette of `w` (`rows x cols`): a [`palettize_scaled`] seed
/// at `base_bits` with blocks of `group_cols`, then one split step per bit up to
/// `top_bits` (at most [`MAX_BITS`]). `importance` as in [`palettize_scaled`].
pub fn nest_scaled(
    w: &[f32],
    rows: usize,
    cols: usize,
    importance: Option<&[f32]>,
    base_bits: u8,
    top_bits: u8,
    group_cols: usize,
) -> Result<NestedPalette> {
    nest_scaled_at(
        w, rows, cols, importance, base_bits, base_bits, top_bits, group_cols,
    )
}

/// Checks a nesting's widths: `base <= fit <= top <= MAX_BITS`.
pub(super) fn check_widths(base_bits: u8, fit_bits: u8, top_bits: u8) -> Result<()> {
    if top_bits < base_bits || top_bits > MAX_BITS || !(base_bits..=top_bits).contains(&fit_bits) {
        return Err(QuantError::InvalidConfig {
            field: "top_bits",
            reason: format!(
                "base {base_bits}, fit {fit_bits}, top {top_bits}: expected base <= fit <= top <= {MAX_BITS}"
            ),
        });
    }
    Ok(())
}

/// Each column's weight in a nesting's errors: its importance floored at 1e-3 of
/// the mean (so no column is ignored), or 1 for every column without importance.
pub(super) fn column_weights(importance: Option<&[f32]>, cols: usize) -> Vec<f64> {
    match importance {
        Some(imp) => {
            let mean = imp.iter().map(|&x| f64::from(x)).sum::<f64>() / cols as f64;
            let floor = (1e-3 * mean).max(f64::MIN_POSITIVE);
            imp.iter().map(|&x| f64::from(x).max(floor)).collect()
        }
        None => vec![1.0; cols],
    }
}

/// As [`nest_scaled`], but the scaled palette (its block scales and offsets, which
/// every prefix shares) is fitted at `fit_bits` (`base_bits..=top_bits`): the widths
/// from `base_bits` up to `fit_bits` are that palette's levels merged in adjacent
/// pairs (each merged level the weighted mean of what it holds), so the
/// `fit_bits` prefix *is* the fixed palette; widths above it are split as in
/// [`nest_scaled`].
#[allow(clippy::too_many_arguments)]
pub fn nest_scaled_at(
    w: &[f32],
    rows: usize,
    cols: usize,
    importance: Option<&[f32]>,
    base_bits: u8,
    fit_bits: u8,
    top_bits: u8,
    group_cols: usize,
) -> Result<NestedPalette> {
    check_widths(base_bits, fit_bits, top_bits)?;
    // Validates shape, bits, group and importance.
    let base = palettize_scaled(w, rows, cols, importance, fit_bits, group_cols)?;
    let imp = column_weights(importance, cols);
    let l = base.layout;
    let nb = l.blocks();
    let grids = base.block_grids();
    // Per weight: normalised value, its weight in the error, and the current index.
    let (mut u, mut c) = (vec![0f32; rows * cols], vec![0f64; rows * cols]);
    let mut idx = vec![0u8; rows * cols];
    let rb = index_row_bytes(cols, l.bits);
    for r in 0..rows {
        unpack_indices(
            &base.indices[r * rb..(r + 1) * rb],
            l.bits,
            &mut idx[r * cols..(r + 1) * cols],
        );
        let grid = &grids[r * 2 * nb..(r + 1) * 2 * nb];
        for (j, &m) in imp.iter().enumerate() {
            let b = j / l.group_cols;
            let (s, o) = (grid[2 * b], grid[2 * b + 1]);
            let i = r * cols + j;
            if s != 0.0 {
                u[i] = (w[i] - o) / s;
                c[i] = m * f64::from(s) * f64::from(s);
            }
        }
    }
    let mut table: Vec<f32> = base.table.iter().map(|v| v.to_f32()).collect();
    let mut steps = Vec::with_capacity(usize::from(top_bits - base_bits));
    let mut base = base;
    if fit_bits > base_bits {
        let merged: Vec<Vec<f32>> = (base_bits..fit_bits)
            .map(|b| merged_table(&u, &c, &idx, &table, fit_bits - b))
            .collect();
        let err_at = |t: &[f32], shift: u8| -> f64 {
            u.iter()
                .zip(&c)
                .zip(&idx)
                .map(|((&x, &m), &i)| m * f64::from(x - t[usize::from(i >> shift)]).powi(2))
                .sum()
        };
        let pb = plane_row_bytes(cols);
        let mut prev = err_at(&merged[0], fit_bits - base_bits);
        for b in base_bits + 1..=fit_bits {
            let shift = fit_bits - b;
            let t: &[f32] = if b == fit_bits {
                &table
            } else {
                &merged[usize::from(b - base_bits)]
            };
            let mut plane = vec![0u8; rows * pb];
            for r in 0..rows {
                for j in 0..cols {
                    let bit = (idx[r * cols + j] >> shift) & 1;
                    plane[r * pb + j / 8] |= bit << (j % 8);
                }
            }
            let e = err_at(t, shift);
            steps.push(NestedStep {
                table: t.iter().map(|&v| f16::from_f32(v)).collect(),
                plane,
                gain: prev - e,
                rescale: None,
            });
            prev = e;
        }
        let layout =
            super::ScaledLayout::new(rows, cols, base_bits, group_cols).ok_or_else(|| {
                QuantError::InvalidConfig {
                    field: "base_bits",
                    reason: format!("{base_bits}: no scaled palette layout"),
                }
            })?;
        let shift = fit_bits - base_bits;
        let mut indices = vec![0u8; layout.indices.1];
        let rbb = index_row_bytes(cols, base_bits);
        let mut row = vec![0u8; cols];
        for r in 0..rows {
            for (o, &i) in row.iter_mut().zip(&idx[r * cols..(r + 1) * cols]) {
                *o = i >> shift;
            }
            super::pack_row(&row, base_bits, &mut indices[r * rbb..(r + 1) * rbb]);
        }
        base = ScaledPalette {
            layout,
            table: merged[0].iter().map(|&v| f16::from_f32(v)).collect(),
            params: base.params,
            codes: base.codes,
            indices,
        };
    }
    for _ in fit_bits..top_bits {
        let (step, next) = split_step(&u, &c, &mut idx, &table, rows, cols);
        steps.push(step);
        table = next;
    }
    Ok(NestedPalette {
        base,
        steps,
        base_rescale: None,
    })
}

/// The table of `idx >> shift`: each merged level the weighted mean of the values it
/// holds (the mean of its fine levels when it holds no weight), as stored f16,
/// ascending.
pub(super) fn merged_table(u: &[f32], c: &[f64], idx: &[u8], fine: &[f32], shift: u8) -> Vec<f32> {
    let k = fine.len() >> shift;
    let (mut num, mut den) = (vec![0f64; k], vec![0f64; k]);
    for ((&x, &m), &i) in u.iter().zip(c).zip(idx) {
        let g = usize::from(i >> shift);
        num[g] += m * f64::from(x);
        den[g] += m;
    }
    let span = 1usize << shift;
    let mut prev = f32::NEG_INFINITY;
    (0..k)
        .map(|g| {
            let v = if den[g] > 0.0 {
                (num[g] / den[g]) as f32
            } else {
                fine[g * span..(g + 1) * span].iter().sum::<f32>() / span as f32
            };
            let v = f16::from_f32(v).to_f32().max(prev);
            prev = v;
            v
        })
        .collect()
}

/// Splits every level of `table` in two, updates `idx` to the children and returns
/// the step and the new table (as f32 of the stored f16 values).
pub(super) fn split_step(
    u: &[f32],
    c: &[f64],
    idx: &mut [u8],
    table: &[f32],
    rows: usize,
    cols: usize,
) -> (NestedStep, Vec<f32>) {
    let k = table.len();
    // Members of each level sorted by u: one sort of (level, u) over the tensor.
    let mut order: Vec<u32> = (0..u.len() as u32).collect();
    order.par_sort_unstable_by(|&a, &b| {
        let (a, b) = (a as usize, b as usize);
        idx[a].cmp(&idx[b]).then(u[a].total_cmp(&u[b]))
    });
    let mut children = vec![0f32; 2 * k];
    let mut start = 0;
    for level in 0..k {
        let end =
            start + order[start..].partition_point(|&i| usize::from(idx[i as usize]) == level);
        let members = &order[start..end];
        let (lo, hi) = best_split(members, u, c).unwrap_or((table[level], table[level]));
        children[2 * level] = lo;
        children[2 * level + 1] = hi;
        start = end;
    }
    // Store as f16, keep ascending (rounding is monotone; the max guards ties of
    // children that came from empty levels).
    let mut prev = f32::NEG_INFINITY;
    for v in &mut children {
        *v = f16::from_f32(*v).to_f32().max(prev);
        prev = *v;
    }
    let pb = plane_row_bytes(cols);
    let mut plane = vec![0u8; rows * pb];
    let mut gain = 0f64;
    for r in 0..rows {
        for j in 0..cols {
            let i = r * cols + j;
            let p = usize::from(idx[i]);
            let (a, b) = (children[2 * p], children[2 * p + 1]);
            let x = f64::from(u[i]);
            let (ea, eb) = ((x - f64::from(a)).powi(2), (x - f64::from(b)).powi(2));
            let old = (x - f64::from(table[p])).powi(2);
            let bit = u8::from(eb < ea);
            gain += c[i] * (old - ea.min(eb));
            plane[r * pb + j / 8] |= bit << (j % 8);
            idx[i] = ((p as u8) << 1) | bit;
        }
    }
    let step = NestedStep {
        table: children.iter().map(|&v| f16::from_f32(v)).collect(),
        plane,
        gain,
        rescale: None,
    };
    (step, children)
}

/// The weighted 2-means of `members` (indices into `u`/`c`, sorted by `u`): the two
/// children's weighted means at the cut of least total squared error. `None` when
/// the members carry no weight.
fn best_split(members: &[u32], u: &[f32], c: &[f64]) -> Option<(f32, f32)> {
    let (mut w, mut s, mut q) = (0f64, 0f64, 0f64);
    for &i in members {
        let (x, m) = (f64::from(u[i as usize]), c[i as usize]);
        w += m;
        s += m * x;
        q += m * x * x;
    }
    if w <= 0.0 {
        return None;
    }
    let mean = (s / w) as f32;
    let sse = |w: f64, s: f64, q: f64| if w > 0.0 { q - s * s / w } else { 0.0 };
    let mut best = (sse(w, s, q), mean, mean);
    let (mut wl, mut sl, mut ql) = (0f64, 0f64, 0f64);
    for (n, &i) in members
        .iter()
        .enumerate()
        .take(members.len().saturating_sub(1))
    {
        let (x, m) = (f64::from(u[i as usize]), c[i as usize]);
        wl += m;
        sl += m * x;
        ql += m * x * x;
        // Cut only between distinct values.
        if u[members[n + 1] as usize] == u[i as usize] || wl <= 0.0 || w - wl <= 0.0 {
            continue;
        }
        let (wr, sr, qr) = (w - wl, s - sl, q - ql);
        let e = sse(wl, sl, ql) + sse(wr, sr, qr);
        if e < best.0 {
            best = (e, (sl / wl) as f32, (sr / wr) as f32);
        }
    }
    Some((best.1, best.2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::palette::tests::{blocky, sq_err};

    #[test]
    fn every_step_lowers_the_error_by_its_gain() {
        for (rows, cols, g) in [(5, 65, 32), (3, 129, 16), (7, 383, 32)] {
            let w = blocky(rows, cols, 3, false);
            let p = nest_scaled(&w, rows, cols, None, 2, 6, g).expect("fits");
            assert_eq!(p.steps.len(), 4);
            assert_eq!(p.decode(0), p.base.decode());
            let mut prev = sq_err(&w, &p.decode(0));
            for n in 1..=4 {
                let s = &p.steps[n - 1];
                assert_eq!(s.table.len(), 1 << (2 + n));
                assert!(s.table.windows(2).all(|t| t[0] <= t[1]));
                assert_eq!(s.plane.len(), rows * plane_row_bytes(cols));
                let e = sq_err(&w, &p.decode(n));
                assert!(e < prev, "step {n}: {e} >= {prev}");
                let rel = (prev - e - s.gain).abs() / prev;
                assert!(rel < 1e-3, "step {n}: gain {} vs {}", s.gain, prev - e);
                prev = e;
            }
        }
    }

    #[test]
    fn upscaled_is_close_to_a_palette_fitted_at_that_width() {
        let (rows, cols) = (16, 256);
        let w = blocky(rows, cols, 7, false);
        let p = nest_scaled(&w, rows, cols, None, 2, 4, 32).expect("fits");
        let fixed = palettize_scaled(&w, rows, cols, None, 4, 32).expect("fits");
        let (en, ef) = (sq_err(&w, &p.decode(2)), sq_err(&w, &fixed.decode()));
        assert!(en < 2.0 * ef, "nested {en} vs fixed {ef}");
    }

    #[test]
    fn fitted_at_a_middle_width_its_prefix_is_the_fixed_palette() {
        let (rows, cols) = (7, 129);
        let w = blocky(rows, cols, 11, false);
        let p = nest_scaled_at(&w, rows, cols, None, 2, 4, 5, 32).expect("fits");
        let fixed = palettize_scaled(&w, rows, cols, None, 4, 32).expect("fits");
        assert_eq!(p.base.layout.bits, 2);
        assert_eq!(p.steps.len(), 3);
        assert_eq!(p.decode(2), fixed.decode());
        let mut prev = sq_err(&w, &p.decode(0));
        for n in 1..=3 {
            let e = sq_err(&w, &p.decode(n));
            assert!(e < prev, "step {n}: {e} >= {prev}");
            let rel = (prev - e - p.steps[n - 1].gain).abs() / prev;
            assert!(rel < 1e-3, "step {n}: gain {}", p.steps[n - 1].gain);
            prev = e;
        }
    }

    #[test]
    fn rejects_bad_widths() {
        let w = vec![0.5f32; 16];
        assert!(nest_scaled(&w, 2, 8, None, 3, 2, 4).is_err());
        assert!(nest_scaled(&w, 2, 8, None, 2, 9, 4).is_err());
        assert!(nest_scaled(&w, 2, 8, None, 1, 3, 4).is_err());
    }
}
