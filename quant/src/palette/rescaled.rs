//! Rescaled nested palettes: a nested scaled palette ([`super::nested`]) whose every
//! refinement step also re-fits the block scales and offsets for its own width.
//!
//! A plain nested palette keeps the base's block parameters at every width, and
//! parameters fitted for 4 levels serve 16 poorly. Here step `l` carries, besides
//! its table and bit plane, a small correction per block: a `bits`-bit code into a
//! per-step table of `2^bits` pairs `[f, g]`, and a block with code `c` decodes as
//!
//! ```text
//! w = s (f_c t[index] + g_c) + o      (scale s f_c, offset o + s g_c)
//! ```
//!
//! with `s, o` the base's block scale and offset. Only the last loaded step's
//! correction applies (each is relative to the base, not to the step before), so a
//! budget's prefix holds every step it uses and nothing after.
//!
//! Fitting a step: split every level in two as [`super::nested`] does, in the
//! coordinates of the previous width's corrected blocks, then alternate a few rounds
//! of (1) each block's least-squares `[f, g]` for the current table and indices, (2)
//! a weighted k-means of those pairs into the step's table of corrections, under
//! each block's exact quadratic error (`s^2 [[sum m t^2, sum m t], [sum m t, sum m]]`,
//! `m` the calibration importance of the column), (3) each weight's last bit
//! re-chosen under its block's corrected parameters, (4) each level moved to the
//! weighted mean of what it holds, keeping the round of least error. Costs
//! `bits * ceil(cols / group_cols) / 8` bytes per row and `4 * 2^bits` bytes per
//! step: 0.125 bits per weight at 4 bits and blocks of 32.
//!
//! ```
//! use octet_quant::palette::{nest_rescaled, nest_scaled};
//! let (rows, cols) = (8, 128);
//! let w: Vec<f32> = (0..rows * cols)
//!     .map(|i| ((i * 37 % 101) as f32 - 50.0) / (10.0 + (i / 32 % 5) as f32 * 20.0))
//!     .collect();
//! let plain = nest_scaled(&w, rows, cols, None, 2, 4, 32)?;
//! let fitted = nest_rescaled(&w, rows, cols, None, 2, 4, 32, 4)?;
//! let err = |d: Vec<f32>| -> f32 { d.iter().zip(&w).map(|(a, b)| (a - b) * (a - b)).sum() };
//! assert!(err(fitted.decode(2)) <= err(plain.decode(2)));
//! # Ok::<(), octet_quant::QuantError>(())
//! ```

use half::f16;

use super::nested::{NestedPalette, NestedStep, plane_row_bytes, split_step};
use super::scaled::{CODE_BITS, CODE_MAX};
use super::{index_row_bytes, pack_row, palettize_scaled, unpack_indices};
use crate::error::{QuantError, Result};

/// The widest correction code.
pub const MAX_RESCALE_BITS: u8 = 8;
/// Alternation rounds per step.
const ROUNDS: usize = 4;
/// The most widths above the fit that [`JointFit::upper_weight`] serves.
pub const MAX_UPPER_WIDTHS: u8 = 2;
/// Weighted k-means iterations per round.
const KMEANS_ITERS: usize = 8;

/// One step's per-block correction of the base's block scales and offsets.
#[derive(Debug, Clone, PartialEq)]
pub struct Rescale {
    /// Bits of each block's code (1..=[`MAX_RESCALE_BITS`]).
    pub bits: u8,
    /// `2^bits` pairs `[f, g]`: a block with code `c` takes table values `t` to
    /// `f t + g` before its scale and offset apply.
    pub entries: Vec<[f16; 2]>,
    /// Codes, per row `ceil(cols / group_cols)` of `bits` bits packed LSB-first like
    /// palette indices, `rows x index_row_bytes(blocks, bits)` bytes.
    pub codes: Vec<u8>,
}

impl Rescale {
    /// The decoding view (entries as f32).
    pub(crate) fn view(&self) -> RescaleView<'_> {
        RescaleView {
            bits: self.bits,
            entries: self
                .entries
                .iter()
                .map(|e| [e[0].to_f32(), e[1].to_f32()])
                .collect(),
            codes: &self.codes,
        }
    }
}

/// A correction as decoding applies it: entries as f32, codes borrowed (from the
/// fitted step or from a checkpoint section).
#[derive(Debug)]
pub(crate) struct RescaleView<'a> {
    pub bits: u8,
    pub entries: Vec<[f32; 2]>,
    pub codes: &'a [u8],
}

impl RescaleView<'_> {
    /// Applies row `r`'s corrections to `row` (table values, blocks of `group_cols`).
    /// Lengths are checked by the caller; a short code slice leaves the row as it is.
    #[cfg_attr(not(test), allow(dead_code))] // used by the scalar decode twin
    pub(crate) fn apply_row(&self, r: usize, group_cols: usize, row: &mut [f32]) {
        if group_cols == 0 || !(1..=MAX_RESCALE_BITS).contains(&self.bits) {
            return;
        }
        let nb = row.len().div_ceil(group_cols);
        let rb = index_row_bytes(nb, self.bits);
        let Some(packed) = self.codes.get(r * rb..(r + 1) * rb) else {
            return;
        };
        let mut c = vec![0u8; nb];
        unpack_indices(packed, self.bits, &mut c);
        for (block, &code) in row.chunks_mut(group_cols).zip(&c) {
            let [f, g] = self
                .entries
                .get(usize::from(code))
                .copied()
                .unwrap_or([1.0, 0.0]);
            for v in block {
                *v = f * *v + g;
            }
        }
    }
}

/// Fits a rescaled nested palette of `w` (`rows x cols`): a scaled palette at
/// `base_bits` with blocks of `group_cols`, then one step per bit up to `top_bits`,
/// each with `rescale_bits`-bit block corrections (1..=[`MAX_RESCALE_BITS`]).
/// `importance` as in [`palettize_scaled`].
#[allow(clippy::too_many_arguments)]
pub fn nest_rescaled(
    w: &[f32],
    rows: usize,
    cols: usize,
    importance: Option<&[f32]>,
    base_bits: u8,
    top_bits: u8,
    group_cols: usize,
    rescale_bits: u8,
) -> Result<NestedPalette> {
    nest_rescaled_at(
        w,
        rows,
        cols,
        importance,
        base_bits,
        base_bits,
        top_bits,
        group_cols,
        rescale_bits,
    )
}

/// As [`nest_rescaled`], with the block scales and offsets and the index tree
/// fitted at `fit_bits` (`base_bits..=top_bits`): the scaled palette at that width
/// is fitted as [`palettize_scaled`] does (and kept as is unless a correction
/// lowers its error), narrower widths merge its levels in adjacent pairs (each
/// with its own table and corrections, the base's stored as
/// [`NestedPalette::base_rescale`]), wider ones split them.
#[allow(clippy::too_many_arguments)]
pub fn nest_rescaled_at(
    w: &[f32],
    rows: usize,
    cols: usize,
    importance: Option<&[f32]>,
    base_bits: u8,
    fit_bits: u8,
    top_bits: u8,
    group_cols: usize,
    rescale_bits: u8,
) -> Result<NestedPalette> {
    nest_rescaled_joint(
        w,
        rows,
        cols,
        importance,
        base_bits,
        fit_bits,
        top_bits,
        group_cols,
        rescale_bits,
        JointFit::default(),
    )
}

/// How [`nest_rescaled_joint`] serves the widths below the fit width.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JointFit {
    /// Rounds that re-choose the fit width's levels for every width from the base
    /// to the fit together.
    pub rounds: usize,
    /// In each round, also re-fit the stored block scales and offsets (their 6-bit
    /// codes) to all those widths at once.
    pub params: bool,
    /// The weight of the fit width's error in the sum, each merged width's being
    /// 1: above 1 the fit width (and the widths split from it) keeps closer to its
    /// own palette, below 1 the merged widths gain more.
    pub fit_weight: f64,
    /// Which steps carry a block correction.
    pub corrections: Corrections,
    /// The weight in the sum of the width one bit above the fit, as the split of
    /// the fit width's levels would give it (each weight its nearer child): above 0
    /// a round also chooses the fit width's levels for the width split from them.
    /// 0 (the default) leaves it out.
    pub upper_weight: f64,
    /// How many widths above the fit `upper_weight` serves, each split from the one
    /// below as the file would split it (each weight its nearer child): 1 (the
    /// default) to [`MAX_UPPER_WIDTHS`]. The split widths' block corrections are
    /// left out.
    pub upper_widths: u8,
    /// The code widths of the block corrections of the steps above the fit width,
    /// one per step from the fit width + 1 up, the last repeating; empty (the
    /// default): the same as the base's and the fit's. A width other than theirs
    /// makes the file format version 6.
    pub upper_rescale_bits: UpperRescaleBits,
    /// A second code width the first step above the fit width may take instead
    /// of `upper_rescale_bits`' first, tensor by tensor: the step is fitted at
    /// both, and the dearer correction is kept where the error it removes beyond
    /// the cheaper one's, per extra byte, is at least what the next step is
    /// estimated to remove per byte (`Fit::dearer_pays`). `None` (the default):
    /// one width.
    pub upper_rescale_choice: Option<u8>,
    /// The first step above the fit width is also fitted with `N`-bit
    /// corrections that are not stored, and the next width is split in their
    /// coordinates and starts its own correction from them (a width that keeps
    /// the stored correction is split in the stored one's). `None` (the
    /// default): every split in the stored corrections' coordinates.
    pub upper_seed_bits: Option<u8>,
}

/// The correction code widths of the steps above a nesting's fit width: the first
/// for the step to the fit width + 1, the next for the one after, the last
/// repeating for every step beyond the list. Empty: the base's width throughout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpperRescaleBits {
    widths: [u8; UpperRescaleBits::MAX_LEN],
    len: u8,
}

impl UpperRescaleBits {
    /// The most widths a list holds: one per step above the narrowest fit.
    pub const MAX_LEN: usize = super::nested::MAX_BITS as usize - 1;

    /// The list `widths` (each 1..=[`MAX_RESCALE_BITS`], at most [`Self::MAX_LEN`]).
    pub fn new(widths: &[u8]) -> Result<UpperRescaleBits> {
        if widths.len() > Self::MAX_LEN {
            return Err(QuantError::InvalidConfig {
                field: "upper_rescale_bits",
                reason: format!(
                    "{} widths: expected at most {} (one per step above the fit)",
                    widths.len(),
                    Self::MAX_LEN
                ),
            });
        }
        if let Some(b) = widths.iter().find(|b| !(1..=MAX_RESCALE_BITS).contains(*b)) {
            return Err(QuantError::InvalidConfig {
                field: "upper_rescale_bits",
                reason: format!("{b}: expected 1..={MAX_RESCALE_BITS}"),
            });
        }
        let mut out = UpperRescaleBits::default();
        out.widths[..widths.len()].copy_from_slice(widths);
        out.len = widths.len() as u8;
        Ok(out)
    }

    /// The widths as given.
    pub fn as_slice(&self) -> &[u8] {
        &self.widths[..usize::from(self.len)]
    }

    /// The width of the `i`-th step above the fit (0: the step to the fit width +
    /// 1); `None` for an empty list.
    pub fn step(&self, i: usize) -> Option<u8> {
        let w = self.as_slice();
        w.get(i).or(w.last()).copied()
    }
}

impl From<Option<u8>> for UpperRescaleBits {
    /// One width for every step above the fit, or none. Unchecked here:
    /// [`nest_rescaled_joint`] refuses a width outside 1..=[`MAX_RESCALE_BITS`].
    fn from(width: Option<u8>) -> UpperRescaleBits {
        let mut out = UpperRescaleBits::default();
        if let Some(w) = width {
            out.widths[0] = w;
            out.len = 1;
        }
        out
    }
}

impl std::fmt::Display for UpperRescaleBits {
    /// Comma-separated, as the command line takes it (`3,4`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, w) in self.as_slice().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{w}")?;
        }
        Ok(())
    }
}

/// Which refinement steps of a rescaled nested palette carry their own block
/// correction.
///
/// Only the last loaded correction applies, so every earlier one is dead weight
/// once a later step loads: at 6 bits a palette from 2 bits with 2-bit codes per 32
/// weights carries 0.19 bits per weight of corrections it does not use. A step
/// without a correction keeps the last loaded step's correction (none: the base's
/// block parameters as stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Corrections {
    /// Every step carries one (format version 4).
    #[default]
    Every,
    /// A step carries one only when it removes at least as much weighted squared
    /// error per byte as the step's own table and plane do under the correction it
    /// would otherwise keep (format version 5 when a step has none). On MiniLM
    /// (fit 3, 2-bit codes) the fit width's and the 5- and 6-bit steps' go.
    WherePaying,
}

impl Default for JointFit {
    fn default() -> Self {
        JointFit {
            rounds: 0,
            params: false,
            fit_weight: 1.0,
            corrections: Corrections::Every,
            upper_weight: 0.0,
            upper_widths: 1,
            upper_rescale_bits: UpperRescaleBits::default(),
            upper_rescale_choice: None,
            upper_seed_bits: None,
        }
    }
}

/// As [`nest_rescaled_at`], with the widths below the fit served as `joint` says.
///
/// A palette fitted at `fit_bits` gives each weight its nearest level there and
/// block parameters fitted for that width; the merged widths below inherit both (a
/// weight's coarse level is its fine one shifted), whatever that costs them. With
/// `joint.rounds`, each round fits every merged width (table and corrections) to
/// the current indices, then gives each weight the fine level, among the two either
/// side of its nearest, that minimises the sum over the widths `base_bits..=fit_bits`
/// of its importance-weighted squared errors (the fit width's weighted by
/// `joint.fit_weight`), and moves the
/// fine levels to the weighted means of what they hold. With `joint.params` the
/// round also re-fits each block's stored scale and offset to the same sum (least
/// squares, then the best of the neighbouring 6-bit codes). The round of least
/// summed error is kept, so that sum is never above the plain fit's; the
/// fit width alone, and the widths above it, may get worse. No effect when
/// `fit_bits == base_bits`.
#[allow(clippy::too_many_arguments)]
pub fn nest_rescaled_joint(
    w: &[f32],
    rows: usize,
    cols: usize,
    importance: Option<&[f32]>,
    base_bits: u8,
    fit_bits: u8,
    top_bits: u8,
    group_cols: usize,
    rescale_bits: u8,
    joint: JointFit,
) -> Result<NestedPalette> {
    super::nested::check_widths(base_bits, fit_bits, top_bits)?;
    let upper = joint.upper_rescale_bits.as_slice().iter();
    let choice = joint.upper_rescale_choice.iter();
    for (field, &rb) in std::iter::once(("rescale_bits", &rescale_bits))
        .chain(upper.map(|b| ("upper_rescale_bits", b)))
        .chain(choice.map(|b| ("upper_rescale_choice", b)))
        .chain(joint.upper_seed_bits.iter().map(|b| ("upper_seed_bits", b)))
    {
        if !(1..=MAX_RESCALE_BITS).contains(&rb) {
            return Err(QuantError::InvalidConfig {
                field,
                reason: format!("{rb}: expected 1..={MAX_RESCALE_BITS}"),
            });
        }
    }
    if !(joint.upper_weight.is_finite() && joint.upper_weight >= 0.0) {
        return Err(QuantError::InvalidConfig {
            field: "upper_weight",
            reason: format!(
                "{}: expected a finite weight of 0 or more",
                joint.upper_weight
            ),
        });
    }
    if !(1..=MAX_UPPER_WIDTHS).contains(&joint.upper_widths) {
        return Err(QuantError::InvalidConfig {
            field: "upper_widths",
            reason: format!("{}: expected 1..={MAX_UPPER_WIDTHS}", joint.upper_widths),
        });
    }
    if !(joint.fit_weight.is_finite() && joint.fit_weight > 0.0) {
        return Err(QuantError::InvalidConfig {
            field: "fit_weight",
            reason: format!("{}: expected a finite weight above 0", joint.fit_weight),
        });
    }
    // Validates shape, bits, group and importance.
    let fixed = palettize_scaled(w, rows, cols, importance, fit_bits, group_cols)?;
    let m = super::nested::column_weights(importance, cols);
    let l = fixed.layout;
    let nb = l.blocks();
    let mut fixed = fixed;
    let mut idx = vec![0u8; rows * cols];
    let rb = index_row_bytes(cols, l.bits);
    for r in 0..rows {
        unpack_indices(
            &fixed.indices[r * rb..(r + 1) * rb],
            l.bits,
            &mut idx[r * cols..(r + 1) * cols],
        );
    }
    let mut table: Vec<f32> = fixed.table.iter().map(|v| v.to_f32()).collect();
    if joint.rounds > 0 && fit_bits > base_bits {
        let shape = Shape {
            w,
            m: &m,
            rows,
            cols,
            group_cols,
        };
        (table, idx) = joint_fit(
            &shape,
            &mut fixed,
            table,
            idx,
            (base_bits, fit_bits),
            rescale_bits,
            joint,
        );
    }
    let grids = fixed.block_grids();
    let fit = Fit {
        w,
        m: &m,
        grids: &grids,
        rows,
        cols,
        group_cols,
        nb,
    };
    let identity = vec![[1f32, 0f32]; rows * nb];
    let mut fg = identity.clone();
    let mut steps = Vec::with_capacity(usize::from(top_bits - base_bits));
    let mut base = fixed;
    let mut base_rescale = None;
    let mut prev = fit.error(&table, &idx, &fg);
    if fit_bits > base_bits {
        // Widths below the fit: its levels merged, each width corrected.
        let (u, c) = fit.coords(None);
        for b in base_bits..fit_bits {
            let shift = fit_bits - b;
            let coarse: Vec<u8> = idx.iter().map(|&i| i >> shift).collect();
            let merged = super::nested::merged_table(&u, &c, &idx, &table, shift);
            let st = fit.step(merged, coarse, &identity, rescale_bits, false);
            if b == base_bits {
                let layout = super::ScaledLayout::new(rows, cols, base_bits, group_cols)
                    .ok_or_else(|| QuantError::InvalidConfig {
                        field: "base_bits",
                        reason: format!("{base_bits}: no scaled palette layout"),
                    })?;
                let rbb = index_row_bytes(cols, base_bits);
                let mut indices = vec![0u8; layout.indices.1];
                for (row, out) in st.idx.chunks_exact(cols).zip(indices.chunks_exact_mut(rbb)) {
                    pack_row(row, base_bits, out);
                }
                base = super::ScaledPalette {
                    layout,
                    table: st.table.iter().map(|&v| f16::from_f32(v)).collect(),
                    params: base.params,
                    codes: base.codes,
                    indices,
                };
                base_rescale = fit.rescale(&st, rescale_bits);
            } else {
                steps.push(fit.nested_step(&st, prev, rescale_bits));
            }
            prev = st.err;
        }
        // The fit width: the fixed palette, corrected only where that helps.
        let plain = StepFit {
            table: table.clone(),
            idx: idx.clone(),
            err: fit.error(&table, &idx, &identity),
            fg: identity.clone(),
            correction: None,
        };
        let corrected = fit.step(table.clone(), idx.clone(), &identity, rescale_bits, false);
        let st = match joint.corrections {
            // A correction that removes nothing is stored as the identity.
            Corrections::Every if plain.err <= corrected.err => StepFit {
                correction: Some((vec![[1.0, 0.0]; 1 << rescale_bits], vec![0; rows * nb])),
                ..plain
            },
            Corrections::Every => corrected,
            Corrections::WherePaying => fit.paying(prev, plain, corrected, fit_bits, rescale_bits),
        };
        steps.push(fit.nested_step(&st, prev, rescale_bits));
        prev = st.err;
        (table, idx, fg) = (st.table, st.idx, st.fg);
    }
    // Corrections fitted for the first step above the fit and not stored: where
    // the next width's own correction starts from.
    let mut seed: Option<Vec<[f32; 2]>> = None;
    for (i, width) in (fit_bits + 1..=top_bits).enumerate() {
        let upper_bits = joint.upper_rescale_bits.step(i).unwrap_or(rescale_bits);
        let seed_idx = seed.as_ref().map(|_| idx.clone());
        // Split in the previous width's corrected coordinates.
        let (u, c) = fit.coords(Some(&fg));
        let (_, split) = split_step(&u, &c, &mut idx, &table, rows, cols);
        drop((u, c));
        // The split a fit with its own correction starts from: in the seed's
        // coordinates when there is one, else the same.
        let (fresh_split, fresh_idx, fresh_fg) = match (seed.take(), seed_idx) {
            (Some(sfg), Some(mut sidx)) => {
                let (u, c) = fit.coords(Some(&sfg));
                let (_, sp) = split_step(&u, &c, &mut sidx, &table, rows, cols);
                (sp, sidx, sfg)
            }
            _ => (split.clone(), idx.clone(), fg.clone()),
        };
        if i == 0
            && let Some(b) = joint.upper_seed_bits
        {
            seed = Some(
                fit.step(fresh_split.clone(), fresh_idx.clone(), &fresh_fg, b, true)
                    .fg,
            );
        }
        // The second width of the first step above the fit, fitted from the same split.
        let dearer = joint
            .upper_rescale_choice
            .filter(|&b| i == 0 && b != upper_bits)
            .map(|b| {
                let st = fit.step(fresh_split.clone(), fresh_idx.clone(), &fresh_fg, b, true);
                (b, st)
            });
        let st = match joint.corrections {
            Corrections::Every => fit.step(fresh_split, fresh_idx, &fresh_fg, upper_bits, true),
            Corrections::WherePaying => {
                let kept = fit.keep(split, idx, &fg);
                let fresh = fit.step(fresh_split, fresh_idx, &fresh_fg, upper_bits, true);
                fit.paying(prev, kept, fresh, width, upper_bits)
            }
        };
        let (st, upper_bits) = match dearer {
            Some((b, other)) => fit.dearer_pays(prev, (st, upper_bits), (other, b), width),
            None => (st, upper_bits),
        };
        steps.push(fit.nested_step(&st, prev, upper_bits));
        prev = st.err;
        (table, idx, fg) = (st.table, st.idx, st.fg);
    }
    Ok(NestedPalette {
        base,
        steps,
        base_rescale,
    })
}

/// The tensor being fitted, without block parameters.
struct Shape<'a> {
    w: &'a [f32],
    m: &'a [f64],
    rows: usize,
    cols: usize,
    group_cols: usize,
}

/// The rounds of [`nest_rescaled_joint`] for the widths `widths.0..=widths.1`: the
/// fit width's `table` and `idx` (and with `joint.params` the block codes of
/// `fixed`) re-chosen for all of them together. Returns the table and indices of
/// the round of least summed error and leaves that round's codes in
/// `fixed`.
fn joint_fit(
    t: &Shape<'_>,
    fixed: &mut super::ScaledPalette,
    mut table: Vec<f32>,
    mut idx: Vec<u8>,
    widths: (u8, u8),
    rescale_bits: u8,
    joint: JointFit,
) -> (Vec<f32>, Vec<u8>) {
    let (base_bits, fit_bits) = widths;
    let l = fixed.layout;
    let (rows, cols, nb) = (t.rows, t.cols, l.blocks());
    let cb = l.code_row_bytes();
    let mut codes = vec![0u8; rows * 2 * nb];
    for r in 0..rows {
        unpack_indices(
            &fixed.codes[r * cb..(r + 1) * cb],
            CODE_BITS,
            &mut codes[r * 2 * nb..(r + 1) * 2 * nb],
        );
    }
    let params: Vec<f32> = fixed.params.iter().map(|v| v.to_f32()).collect();
    let identity = vec![[1f32, 0f32]; rows * nb];
    // The kept round: summed error, table, indices, packed block codes.
    let mut best: Option<Kept> = None;
    for round in 0..=joint.rounds {
        // `fixed.codes` holds this round's codes.
        let grids = fixed.block_grids();
        let fit = Fit {
            w: t.w,
            m: t.m,
            grids: &grids,
            rows,
            cols,
            group_cols: t.group_cols,
            nb,
        };
        let (u, c) = fit.coords(None);
        if round > 0 {
            // The fit width's levels moved to the weighted means of what they now
            // hold, in the (possibly new) block coordinates.
            table = super::nested::merged_table(&u, &c, &idx, &table, 0);
        }
        // Every merged width fitted to the current indices: (shift, table, fg).
        let mut fitted: Vec<(u8, Vec<f32>, Vec<[f32; 2]>)> = Vec::new();
        let mut errs = Vec::new();
        for b in base_bits..fit_bits {
            let shift = fit_bits - b;
            let coarse: Vec<u8> = idx.iter().map(|&i| i >> shift).collect();
            let merged = super::nested::merged_table(&u, &c, &idx, &table, shift);
            let st = fit.step(merged, coarse, &identity, rescale_bits, false);
            errs.push(st.err);
            fitted.push((shift, st.table, st.fg));
        }
        errs.push(joint.fit_weight * fit.error(&table, &idx, &identity));
        fitted.push((0, table.clone(), identity.clone()));
        // The widths above the fit as the splits of the current levels give them:
        // the children of every level (and with two widths their children), and
        // each weight's nearer child.
        let upper = (joint.upper_weight > 0.0 && fit_bits < super::nested::MAX_BITS).then(|| {
            let mut split_idx = idx.clone();
            let mut tables: Vec<Vec<f32>> = Vec::with_capacity(usize::from(joint.upper_widths));
            for width in fit_bits + 1..=(fit_bits + joint.upper_widths).min(super::nested::MAX_BITS)
            {
                let parent = tables.last().unwrap_or(&table);
                let (_, children) =
                    super::nested::split_step(&u, &c, &mut split_idx, parent, rows, cols);
                errs.push(joint.upper_weight * fit.error(&children, &split_idx, &identity));
                debug_assert_eq!(children.len(), 1 << width);
                tables.push(children);
            }
            tables
        });
        // The plain sum, not each width's error relative to its own: a narrow width
        // has the larger error and moves perplexity most (on SmolLM2 the 2-bit
        // width's squared error is about 6x the 3-bit one's, and its relative error
        // costs about 6x the log-perplexity), so it should weigh most.
        let total: f64 = errs.iter().sum();
        if best.as_ref().is_none_or(|x| total < x.total) {
            best = Some(Kept {
                total,
                table: table.clone(),
                idx: idx.clone(),
                codes: fixed.codes.clone(),
            });
        }
        if round == joint.rounds {
            break;
        }
        for (b, range) in fit.blocks() {
            let s = grids[2 * b];
            if s == 0.0 {
                continue;
            }
            // Each width's corrected grid for this block.
            let at: Vec<WidthAt<'_>> = fitted
                .iter()
                .map(|(shift, tw, fg)| {
                    let (sw, ow) = fit.grid(b, fg[b]);
                    WidthAt {
                        s: sw,
                        o: ow,
                        fg: fg[b],
                        shift: *shift,
                        table: tw,
                        weight: if *shift == 0 { joint.fit_weight } else { 1.0 },
                    }
                })
                .collect();
            // Down the split widths from level `k`, for `x` on the block's grid.
            let (s0, o0) = fit.grid(b, [1.0, 0.0]);
            let descend = |k: usize, x: f32| -> Descent {
                let (mut at, mut d) = (k, Descent::default());
                for (ch, value) in upper.iter().flatten().zip(&mut d.values) {
                    let (lo, hi) = (ch[2 * at], ch[2 * at + 1]);
                    let (ea, eb) = (
                        f64::from(x - (s0 * lo + o0)).powi(2),
                        f64::from(x - (s0 * hi + o0)).powi(2),
                    );
                    at = 2 * at + usize::from(eb < ea);
                    *value = ch[at];
                    d.n += 1;
                    d.cost += joint.upper_weight * ea.min(eb);
                }
                d
            };
            // Sums for the block's joint least squares in (s, o).
            let mut q = [0f64; 6];
            for i in range {
                let x = t.w[i];
                let near = super::nearest_sorted(&table, u[i]);
                let (lo, hi) = (near.saturating_sub(2), (near + 2).min(table.len() - 1));
                let mut pick = (f64::INFINITY, near, Descent::default());
                for k in lo..=hi {
                    let split = descend(k, x);
                    let cost: f64 = at
                        .iter()
                        .map(|a| {
                            let v = a.s * a.table[k >> a.shift] + a.o;
                            a.weight * f64::from(x - v).powi(2)
                        })
                        .sum::<f64>()
                        + split.cost;
                    if cost < pick.0 {
                        pick = (cost, k, split);
                    }
                }
                let (_, k, split) = pick;
                idx[i] = k as u8;
                let mi = t.m[i % cols];
                // Each width's (value in block coordinates, weight); a split
                // width's value is the nearer child.
                let terms = at
                    .iter()
                    .map(|w| (w.fg[0] * w.table[k >> w.shift] + w.fg[1], w.weight))
                    .chain(
                        split.values[..split.n]
                            .iter()
                            .map(|&v| (v, joint.upper_weight)),
                    );
                for (a, weight) in terms {
                    let (a, wt, x) = (f64::from(a), mi * weight, f64::from(x));
                    q[0] += wt * a * a;
                    q[1] += wt * a;
                    q[2] += wt;
                    q[3] += wt * a * x;
                    q[4] += wt * x;
                    q[5] += wt * x * x;
                }
            }
            if !joint.params {
                continue;
            }
            let r = b / nb;
            let (d, mr) = (params[2 * r], params[2 * r + 1]);
            let det = q[0] * q[2] - q[1] * q[1];
            if d == 0.0 || mr == 0.0 || det <= 1e-12 * (q[0] * q[2]).max(f64::MIN_POSITIVE) {
                continue;
            }
            let s_ls = (q[2] * q[3] - q[1] * q[4]) / det;
            let o_ls = (q[0] * q[4] - q[1] * q[3]) / det;
            let cost = |cs: f32, co: f32| {
                let (s, o) = (f64::from(d * cs), f64::from(mr * co));
                q[5] - 2.0 * s * q[3] - 2.0 * o * q[4]
                    + s * s * q[0]
                    + 2.0 * s * o * q[1]
                    + o * o * q[2]
            };
            let (cs0, co0) = (f32::from(codes[2 * b]), f32::from(codes[2 * b + 1]));
            let mut pick = (cost(cs0, co0), cs0, co0);
            let rs = (s_ls / f64::from(d)).round() as f32;
            let ro = (o_ls / f64::from(mr)).round() as f32;
            for ds in [-1f32, 0.0, 1.0] {
                for dc in [-1f32, 0.0, 1.0] {
                    let (cs, co) = (
                        (rs + ds).clamp(0.0, CODE_MAX),
                        (ro + dc).clamp(0.0, CODE_MAX),
                    );
                    let e = cost(cs, co);
                    if e < pick.0 && cs > 0.0 {
                        pick = (e, cs, co);
                    }
                }
            }
            codes[2 * b] = pick.1 as u8;
            codes[2 * b + 1] = pick.2 as u8;
        }
        for (row, out) in codes
            .chunks_exact(2 * nb)
            .zip(fixed.codes.chunks_exact_mut(cb))
        {
            pack_row(row, CODE_BITS, out);
        }
    }
    let Some(Kept {
        table, idx, codes, ..
    }) = best
    else {
        return (table, idx);
    };
    fixed.codes = codes;
    // The stored table is the kept round's (the caller re-derives the rest).
    fixed.table = table.iter().map(|&v| f16::from_f32(v)).collect();
    (table, idx)
}

/// A weight's way down the split widths of [`joint_fit`] from a fit level: each
/// width's nearer child (`values[..n]`) and their summed weighted squared error.
#[derive(Debug, Clone, Copy, Default)]
struct Descent {
    cost: f64,
    values: [f32; MAX_UPPER_WIDTHS as usize],
    n: usize,
}

/// A round of [`joint_fit`] kept as the best so far.
struct Kept {
    total: f64,
    table: Vec<f32>,
    idx: Vec<u8>,
    codes: Vec<u8>,
}

/// One width as a block of [`joint_fit`] sees it: its corrected grid, its
/// correction, how far its levels are merged and its table.
struct WidthAt<'a> {
    s: f32,
    o: f32,
    fg: [f32; 2],
    shift: u8,
    table: &'a [f32],
    /// Its weight in the sum.
    weight: f64,
}

/// The tensor being fitted and its base's block parameters.
struct Fit<'a> {
    w: &'a [f32],
    m: &'a [f64],
    grids: &'a [f32],
    rows: usize,
    cols: usize,
    group_cols: usize,
    nb: usize,
}

/// One fitted step: table, indices, each block's effective correction, the
/// correction it stores (entries and each block's code; `None` when it keeps the
/// one before), all values as stored (f16-exact), and its weighted squared error.
struct StepFit {
    table: Vec<f32>,
    idx: Vec<u8>,
    fg: Vec<[f32; 2]>,
    correction: Option<(Vec<[f32; 2]>, Vec<usize>)>,
    err: f64,
}

fn f16r(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

impl Fit<'_> {
    /// Visits every weight as `(block, weight index, column)`.
    fn blocks(&self) -> impl Iterator<Item = (usize, std::ops::Range<usize>)> + '_ {
        (0..self.rows).flat_map(move |r| {
            (0..self.nb).map(move |b| {
                let start = r * self.cols + b * self.group_cols;
                let end = r * self.cols + ((b + 1) * self.group_cols).min(self.cols);
                (r * self.nb + b, start..end)
            })
        })
    }

    /// Every weight in its block's coordinates, `u = (w - o) / s`, and its weight in
    /// them, `m s^2`, under the stored scales and offsets or, with `fg`, under those
    /// corrected per block (0 for both where a block's scale is 0).
    fn coords(&self, fg: Option<&[[f32; 2]]>) -> (Vec<f32>, Vec<f64>) {
        let n = self.rows * self.cols;
        let (mut u, mut c) = (vec![0f32; n], vec![0f64; n]);
        for (b, range) in self.blocks() {
            let (s, o) = match fg {
                Some(fg) => self.grid(b, fg[b]),
                None => (self.grids[2 * b], self.grids[2 * b + 1]),
            };
            for i in range {
                if s != 0.0 {
                    u[i] = (self.w[i] - o) / s;
                    c[i] = self.m[i % self.cols] * f64::from(s) * f64::from(s);
                }
            }
        }
        (u, c)
    }

    /// Block `b`'s corrected `(scale, offset)` under `[f, g]`.
    fn grid(&self, b: usize, fg: [f32; 2]) -> (f32, f32) {
        let (s, o) = (self.grids[2 * b], self.grids[2 * b + 1]);
        (s * fg[0], o + s * fg[1])
    }

    /// Weighted squared error of `table[idx]` under per-block corrections `fg`, as
    /// decoding computes it.
    fn error(&self, table: &[f32], idx: &[u8], fg: &[[f32; 2]]) -> f64 {
        let mut e = 0f64;
        for (b, range) in self.blocks() {
            let (s, o) = (self.grids[2 * b], self.grids[2 * b + 1]);
            let [f, g] = fg[b];
            for i in range {
                let t = table[usize::from(idx[i])];
                let v = s * (f * t + g) + o;
                e += self.m[i % self.cols] * f64::from(self.w[i] - v).powi(2);
            }
        }
        e
    }

    /// The correction a fitted width stores, if any.
    fn rescale(&self, st: &StepFit, bits: u8) -> Option<Rescale> {
        let (entries, codes) = st.correction.as_ref()?;
        Some(Rescale {
            bits,
            entries: entries
                .iter()
                .map(|e| [f16::from_f32(e[0]), f16::from_f32(e[1])])
                .collect(),
            codes: self.pack_codes(codes, bits),
        })
    }

    /// A fitted width as a refinement step from a width of error `prev`.
    fn nested_step(&self, st: &StepFit, prev: f64, bits: u8) -> NestedStep {
        NestedStep {
            table: st.table.iter().map(|&v| f16::from_f32(v)).collect(),
            plane: self.plane(&st.idx),
            gain: prev - st.err,
            rescale: self.rescale(st, bits),
        }
    }

    /// Of a width reaching `width` bits from one of error `prev`, fitted keeping
    /// the correction before (`kept`) and with its own `bits`-bit one (`fresh`):
    /// `fresh` if its correction removes at least as much error per byte as the
    /// step's table and plane do in `kept`, else `kept`.
    fn paying(&self, prev: f64, kept: StepFit, fresh: StepFit, width: u8, bits: u8) -> StepFit {
        let step_bytes = (self.rows * plane_row_bytes(self.cols) + (2usize << width)) as f64;
        let correction_bytes =
            (self.rows * index_row_bytes(self.nb, bits) + (4usize << bits)) as f64;
        let by_step = (prev - kept.err).max(0.0) / step_bytes;
        let by_correction = (kept.err - fresh.err) / correction_bytes;
        if by_correction > 0.0 && by_correction >= by_step {
            fresh
        } else {
            kept
        }
    }

    /// Bytes of a `bits`-bit correction (codes and table) when `st` stores one.
    fn correction_bytes(&self, st: &StepFit, bits: u8) -> usize {
        match st.correction {
            Some(_) => self.rows * index_row_bytes(self.nb, bits) + (4usize << bits),
            None => 0,
        }
    }

    /// Of two fits of a width reaching `width` bits from one of error `prev`, each
    /// with its correction width: the one whose correction costs more bytes if the
    /// error it removes beyond the other, per extra byte, is at least what the
    /// next step would remove per byte; else the other. Equal bytes: the lower
    /// error.
    ///
    /// The extra bytes load with the step, so at the budgets past this level they
    /// compete with the next level's steps. That rate is estimated as the
    /// cheaper fit's own (table, plane and correction), times the fraction of the
    /// error it leaves (`err / prev`: each step removing the same share as this
    /// one). Against the step's own rate, which the budgets inside this level
    /// pay, a wider code would seldom pay; on SmolLM2 4-bit codes everywhere cost
    /// 1% at 4.0 bits and gain 0.4-0.7% from 4.5 to 6.
    fn dearer_pays(
        &self,
        prev: f64,
        a: (StepFit, u8),
        b: (StepFit, u8),
        width: u8,
    ) -> (StepFit, u8) {
        let (ca, cb) = (
            self.correction_bytes(&a.0, a.1),
            self.correction_bytes(&b.0, b.1),
        );
        let (cheap, dear, c_cheap, c_dear) = match ca.cmp(&cb) {
            std::cmp::Ordering::Less => (a, b, ca, cb),
            std::cmp::Ordering::Greater => (b, a, cb, ca),
            std::cmp::Ordering::Equal => return if b.0.err < a.0.err { b } else { a },
        };
        let step_bytes = (self.rows * plane_row_bytes(self.cols) + (2usize << width)) as f64;
        let by_step = (prev - cheap.0.err).max(0.0) / (step_bytes + c_cheap as f64);
        let by_next = by_step * (cheap.0.err / prev).clamp(0.0, 1.0);
        let by_extra = (cheap.0.err - dear.0.err) / (c_dear - c_cheap) as f64;
        if by_extra > 0.0 && by_extra >= by_next {
            dear
        } else {
            cheap
        }
    }

    /// A width fitted under the fixed corrections `fg`, storing none: rounds of
    /// each weight's last bit re-chosen and each level moved to the weighted mean of
    /// what it holds, as [`Fit::step`] does, keeping the round of least error.
    fn keep(&self, split: Vec<f32>, idx: Vec<u8>, fg: &[[f32; 2]]) -> StepFit {
        self.fit_step(split, idx, fg, None, true)
    }

    /// Fits a width from an initial table and indices, starting from corrections
    /// `fg` (after a split, the previous width's, under which the split is exact);
    /// with `rechoose`, each weight's last bit may change.
    fn step(
        &self,
        split: Vec<f32>,
        idx: Vec<u8>,
        fg: &[[f32; 2]],
        bits: u8,
        rechoose: bool,
    ) -> StepFit {
        self.fit_step(split, idx, fg, Some(bits), rechoose)
    }

    /// [`Fit::step`] (`bits` set) or [`Fit::keep`] (`None`: `fg` stays).
    fn fit_step(
        &self,
        split: Vec<f32>,
        idx: Vec<u8>,
        fg: &[[f32; 2]],
        bits: Option<u8>,
        rechoose: bool,
    ) -> StepFit {
        let nblocks = self.rows * self.nb;
        let mut table: Vec<f32> = split.iter().map(|&v| f16r(v)).collect();
        let mut idx = idx;
        let mut entries: Vec<[f32; 2]> = Vec::new();
        let mut best: Option<StepFit> = None;
        let mut ideal = fg.to_vec();
        for round in 0..ROUNDS {
            let Some(bits) = bits else {
                // No correction of its own: the error under `fg`, then (3)-(4).
                let err = self.error(&table, &idx, fg);
                if best.as_ref().is_none_or(|x| err < x.err) {
                    best = Some(StepFit {
                        table: table.clone(),
                        idx: idx.clone(),
                        fg: fg.to_vec(),
                        correction: None,
                        err,
                    });
                }
                if round + 1 < ROUNDS {
                    self.rechoose_and_move(&mut table, &mut idx, fg, rechoose);
                }
                continue;
            };
            let k = 1usize << bits;
            // (1) Each block's least-squares [f, g] and its error metric.
            let mut metric = vec![[0f64; 3]; nblocks];
            for (b, range) in self.blocks() {
                let (s, o) = (
                    f64::from(self.grids[2 * b]),
                    f64::from(self.grids[2 * b + 1]),
                );
                let (mut sw, mut st, mut stt, mut sy, mut sty) = (0f64, 0f64, 0f64, 0f64, 0f64);
                for i in range {
                    let (mi, t) = (self.m[i % self.cols], f64::from(table[usize::from(idx[i])]));
                    let y = f64::from(self.w[i]) - o;
                    sw += mi;
                    st += mi * t;
                    stt += mi * t * t;
                    sy += mi * y;
                    sty += mi * t * y;
                }
                let s2 = s * s;
                metric[b] = [s2 * stt, s2 * st, s2 * sw];
                let det = sw * stt - st * st;
                if s != 0.0 && det > 1e-12 * sw * stt.max(f64::MIN_POSITIVE) {
                    // y = s f t + s g: regress on (s t, s).
                    let f = (sw * sty - st * sy) / (det * s);
                    let g = (sy - s * f * st) / (s * sw);
                    if f.is_finite() && g.is_finite() && f.abs() < 1e3 && g.abs() < 1e3 {
                        ideal[b] = [f as f32, g as f32];
                    }
                }
            }
            // (2) Weighted k-means of the ideal pairs under each block's metric.
            entries = kmeans(
                &ideal,
                &metric,
                k,
                (round > 0).then_some(entries.as_slice()),
            );
            let codes: Vec<usize> = (0..nblocks)
                .map(|b| nearest_entry(&entries, ideal[b], metric[b]))
                .collect();
            let cfg: Vec<[f32; 2]> = codes.iter().map(|&c| entries[c]).collect();
            let err = self.error(&table, &idx, &cfg);
            if best.as_ref().is_none_or(|x| err < x.err) {
                best = Some(StepFit {
                    table: table.clone(),
                    idx: idx.clone(),
                    fg: cfg.clone(),
                    correction: Some((entries.clone(), codes.clone())),
                    err,
                });
            }
            if round + 1 < ROUNDS {
                self.rechoose_and_move(&mut table, &mut idx, &cfg, rechoose);
            }
        }
        // ROUNDS >= 1, so a round was kept.
        best.unwrap_or(StepFit {
            table,
            idx,
            fg: fg.to_vec(),
            correction: bits.map(|_| (entries, vec![0; nblocks])),
            err: f64::INFINITY,
        })
    }

    /// (3) Re-choose each weight's last bit (with `rechoose`), (4) move each level
    /// to the weighted mean of what it holds, under the corrections `cfg`.
    fn rechoose_and_move(
        &self,
        table: &mut [f32],
        idx: &mut [u8],
        cfg: &[[f32; 2]],
        rechoose: bool,
    ) {
        let (mut num, mut den) = (vec![0f64; table.len()], vec![0f64; table.len()]);
        for (b, range) in self.blocks() {
            let (s, o) = self.grid(b, cfg[b]);
            for i in range {
                let p = usize::from(idx[i] >> 1) << 1;
                let x = self.w[i];
                let (ea, eb) = (
                    (x - (s * table[p] + o)).abs(),
                    (x - (s * table[p + 1] + o)).abs(),
                );
                let q = match rechoose {
                    true if eb < ea => p + 1,
                    true => p,
                    false => usize::from(idx[i]),
                };
                idx[i] = q as u8;
                let mi = self.m[i % self.cols];
                num[q] += mi * f64::from(s) * f64::from(x - o);
                den[q] += mi * f64::from(s) * f64::from(s);
            }
        }
        for (t, (n, d)) in table.iter_mut().zip(num.iter().zip(&den)) {
            if *d > 0.0 {
                let v = (n / d) as f32;
                if v.is_finite() {
                    *t = f16r(v);
                }
            }
        }
    }

    /// The last bit of every index, as a step's plane.
    fn plane(&self, idx: &[u8]) -> Vec<u8> {
        let pb = plane_row_bytes(self.cols);
        let mut plane = vec![0u8; self.rows * pb];
        for r in 0..self.rows {
            for j in 0..self.cols {
                plane[r * pb + j / 8] |= (idx[r * self.cols + j] & 1) << (j % 8);
            }
        }
        plane
    }

    fn pack_codes(&self, codes: &[usize], bits: u8) -> Vec<u8> {
        let rb = index_row_bytes(self.nb, bits);
        let mut out = vec![0u8; self.rows * rb];
        for (row, o) in codes.chunks_exact(self.nb).zip(out.chunks_exact_mut(rb)) {
            let c: Vec<u8> = row.iter().map(|&x| x as u8).collect();
            pack_row(&c, bits, o);
        }
        out
    }
}

/// `(e - x)^T A (e - x)` with `A = [[a0, a1], [a1, a2]]`.
fn quad(e: [f32; 2], x: [f32; 2], a: [f64; 3]) -> f64 {
    let (df, dg) = (f64::from(e[0] - x[0]), f64::from(e[1] - x[1]));
    a[0] * df * df + 2.0 * a[1] * df * dg + a[2] * dg * dg
}

fn nearest_entry(entries: &[[f32; 2]], x: [f32; 2], a: [f64; 3]) -> usize {
    let mut best = (f64::INFINITY, 0);
    for (c, &e) in entries.iter().enumerate() {
        let q = quad(e, x, a);
        if q < best.0 {
            best = (q, c);
        }
    }
    best.1
}

/// `k` f16-exact entries minimising `sum_b quad(entry(b), x_b, a_b)`: Lloyd
/// iterations from `init`, or from weighted quantiles of `f` (entry 0 the identity).
fn kmeans(x: &[[f32; 2]], a: &[[f64; 3]], k: usize, init: Option<&[[f32; 2]]>) -> Vec<[f32; 2]> {
    let mut entries: Vec<[f32; 2]> = match init {
        Some(e) if e.len() == k => e.to_vec(),
        _ => {
            let mut order: Vec<usize> = (0..x.len()).collect();
            order.sort_by(|&p, &q| x[p][0].total_cmp(&x[q][0]));
            let total: f64 = a.iter().map(|m| m[0] + m[2]).sum();
            let mut out = vec![[1f32, 0f32]; k];
            let mut acc = 0f64;
            let mut next = 1;
            for &b in &order {
                acc += a[b][0] + a[b][2];
                while next < k && acc >= total * (next as f64 - 0.5) / (k - 1).max(1) as f64 {
                    out[next] = x[b];
                    next += 1;
                }
            }
            out
        }
    };
    for e in &mut entries {
        *e = [f16r(e[0]), f16r(e[1])];
    }
    for _ in 0..KMEANS_ITERS {
        let mut acc = vec![[0f64; 5]; k];
        for (b, (&xb, &ab)) in x.iter().zip(a).enumerate() {
            let _ = b;
            let c = nearest_entry(&entries, xb, ab);
            let (f, g) = (f64::from(xb[0]), f64::from(xb[1]));
            let s = &mut acc[c];
            s[0] += ab[0];
            s[1] += ab[1];
            s[2] += ab[2];
            s[3] += ab[0] * f + ab[1] * g;
            s[4] += ab[1] * f + ab[2] * g;
        }
        let mut moved = false;
        for (e, s) in entries.iter_mut().zip(&acc) {
            let det = s[0] * s[2] - s[1] * s[1];
            if det > 1e-12 * (s[0] * s[2]).max(f64::MIN_POSITIVE) {
                let f = (s[2] * s[3] - s[1] * s[4]) / det;
                let g = (s[0] * s[4] - s[1] * s[3]) / det;
                let new = [f16r(f as f32), f16r(g as f32)];
                if new[0].is_finite() && new[1].is_finite() && new != *e {
                    *e = new;
                    moved = true;
                }
            }
        }
        if !moved {
            break;
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::palette::tests::{assert_gains_exact, blocky, sq_err};
    use crate::palette::{nest_scaled, palettize_scaled};

    #[test]
    fn every_step_lowers_the_error_by_its_gain_and_beats_the_plain_split() {
        let mut ratios = Vec::new();
        for (rows, cols, g, rb) in [(6, 65, 32, 4), (4, 129, 16, 2), (9, 383, 32, 1)] {
            let w = blocky(rows, cols, 5, true);
            let p = nest_rescaled(&w, rows, cols, None, 2, 5, g, rb).expect("fits");
            let plain = nest_scaled(&w, rows, cols, None, 2, 5, g).expect("fits");
            assert_eq!(p.decode(0), p.base.decode());
            let mut prev = sq_err(&w, &p.decode(0));
            for n in 1..=3 {
                let s = &p.steps[n - 1];
                let rs = s.rescale.as_ref().expect("rescaled");
                assert_eq!(rs.entries.len(), 1 << rb);
                assert_eq!(rs.codes.len(), rows * index_row_bytes(cols.div_ceil(g), rb));
                let e = sq_err(&w, &p.decode(n));
                assert!(e < prev, "step {n}: {e} >= {prev}");
                let rel = (prev - e - s.gain).abs() / prev;
                assert!(rel < 1e-3, "step {n}: gain {} vs {}", s.gain, prev - e);
                let ep = sq_err(&w, &plain.decode(n));
                eprintln!("{rows}x{cols} g{g} r{rb} step {n}: rescaled {e:.4} plain {ep:.4}");
                ratios.push(e / ep);
                prev = e;
            }
        }
        // Per step the trees differ, so either may win a step; on the whole the
        // corrections must pay.
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        assert!(mean < 0.95, "rescaled / plain error: {ratios:?}");
    }

    #[test]
    fn fitted_above_the_base_its_fit_width_is_no_worse_than_the_fixed_palette() {
        for (rows, cols, g) in [(7, 129, 32), (5, 200, 16)] {
            let w = blocky(rows, cols, 8, true);
            let p = nest_rescaled_at(&w, rows, cols, None, 2, 4, 5, g, 3).expect("fits");
            let fixed = palettize_scaled(&w, rows, cols, None, 4, g).expect("fits");
            assert_eq!(p.base.layout.bits, 2);
            assert_eq!(p.steps.len(), 3);
            let br = p.base_rescale.as_ref().expect("base correction");
            assert_eq!(br.entries.len(), 8);
            let (e4, ef) = (sq_err(&w, &p.decode(2)), sq_err(&w, &fixed.decode()));
            assert!(e4 <= ef * 1.0001, "fit width {e4} vs fixed {ef}");
            let mut prev = sq_err(&w, &p.decode(0));
            for n in 1..=3 {
                let e = sq_err(&w, &p.decode(n));
                assert!(e < prev, "step {n}: {e} >= {prev}");
                let rel = (prev - e - p.steps[n - 1].gain).abs() / prev;
                assert!(rel < 1e-3, "step {n}: gain {}", p.steps[n - 1].gain);
                prev = e;
            }
        }
    }

    fn rounds(rounds: usize, params: bool) -> JointFit {
        JointFit {
            rounds,
            params,
            ..JointFit::default()
        }
    }

    #[test]
    fn joint_rounds_never_raise_the_summed_error_of_the_merged_widths() {
        let mut lowered = 0;
        let cases = [(7, 129, 32, 3), (5, 200, 16, 8), (9, 96, 32, 11)];
        for ((rows, cols, g, seed), params) in
            cases.into_iter().flat_map(|c| [(c, false), (c, true)])
        {
            let w = blocky(rows, cols, seed, true);
            let plain = nest_rescaled_at(&w, rows, cols, None, 2, 4, 5, g, 2).expect("fits");
            let joint = nest_rescaled_joint(&w, rows, cols, None, 2, 4, 5, g, 2, rounds(3, params))
                .expect("fits");
            assert_eq!(joint.steps.len(), 3);
            // Widths 2, 3 and 4 are prefixes 0, 1 and 2.
            let sum =
                |p: &NestedPalette| -> f64 { (0..=2).map(|n| sq_err(&w, &p.decode(n))).sum() };
            let (sj, sp) = (sum(&joint), sum(&plain));
            eprintln!("{rows}x{cols} params {params}: summed error {sj:.4} against {sp:.4}");
            // The corrections are refitted after the rounds, so allow rounding.
            assert!(
                sj <= sp * 1.001,
                "{rows}x{cols} params {params}: {sj} > {sp}"
            );
            if sj < sp * 0.999 {
                lowered += 1;
            }
            // Still a nesting whose every step lowers the error by its gain.
            assert_gains_exact(&w, &joint, |_| {});
        }
        assert!(
            lowered >= 4,
            "the rounds lowered the sum on {lowered} of 6 fits"
        );
        // At the base width the rounds change nothing.
        let w = blocky(4, 64, 2, true);
        assert_eq!(
            nest_rescaled_joint(&w, 4, 64, None, 2, 2, 4, 32, 2, rounds(3, true)).expect("fits"),
            nest_rescaled_at(&w, 4, 64, None, 2, 2, 4, 32, 2).expect("fits")
        );
    }

    /// Weighted by `fit_weight`, the sum the rounds keep is never above the plain
    /// fit's; a heavy weight keeps the fit width at its own palette's error.
    #[test]
    fn the_fit_weight_trades_the_fit_width_against_the_merged_ones() {
        for (rows, cols, g, seed) in [(7, 129, 32, 3), (9, 96, 32, 11)] {
            let w = blocky(rows, cols, seed, true);
            let plain = nest_rescaled_at(&w, rows, cols, None, 2, 4, 5, g, 2).expect("fits");
            let errs =
                |p: &NestedPalette| -> [f64; 3] { [0, 1, 2].map(|n| sq_err(&w, &p.decode(n))) };
            let ep = errs(&plain);
            for fit_weight in [0.25, 4.0, 1e6] {
                let joint = JointFit {
                    rounds: 3,
                    params: true,
                    fit_weight,
                    ..JointFit::default()
                };
                let p =
                    nest_rescaled_joint(&w, rows, cols, None, 2, 4, 5, g, 2, joint).expect("fits");
                let e = errs(&p);
                let sum = |e: [f64; 3]| e[0] + e[1] + fit_weight * e[2];
                assert!(
                    sum(e) <= sum(ep) * 1.001,
                    "{rows}x{cols} weight {fit_weight}: {e:?} against {ep:?}"
                );
                if fit_weight >= 1e6 {
                    assert!(e[2] <= ep[2] * 1.001, "{e:?} against {ep:?}");
                }
            }
        }
        let w = blocky(4, 64, 2, true);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let joint = JointFit {
                rounds: 1,
                params: false,
                fit_weight: bad,
                ..JointFit::default()
            };
            let e = nest_rescaled_joint(&w, 4, 64, None, 2, 3, 4, 32, 2, joint)
                .expect_err("no such weight")
                .to_string();
            assert!(e.contains("fit_weight"), "{e}");
        }
    }

    /// Where paying, a fit drops the corrections that remove less error per byte
    /// than their step's plane, and is still a nesting whose every step lowers the
    /// error by its gain, decoded with the last loaded correction that exists.
    #[test]
    fn corrections_where_paying_drop_some_and_keep_the_gains_exact() {
        let mut dropped = 0;
        for (rows, cols, g, seed, fit) in [(16, 256, 32, 3, 3), (9, 160, 16, 7, 2)] {
            let w = blocky(rows, cols, seed, true);
            let every = JointFit {
                rounds: 2,
                params: true,
                ..JointFit::default()
            };
            let lean = JointFit {
                corrections: Corrections::WherePaying,
                ..every
            };
            let e =
                nest_rescaled_joint(&w, rows, cols, None, 2, fit, 6, g, 2, every).expect("fits");
            let p = nest_rescaled_joint(&w, rows, cols, None, 2, fit, 6, g, 2, lean).expect("fits");
            assert!(e.steps.iter().all(|s| s.rescale.is_some()));
            // The base and the widths below the fit are the same fit either way.
            assert_eq!(p.base, e.base);
            assert_eq!(p.base_rescale, e.base_rescale);
            dropped += p.steps.iter().filter(|s| s.rescale.is_none()).count();
            // The correction that applies is the last loaded one that exists.
            assert_gains_exact(&w, &p, |n| {
                let want = p.steps[..n].iter().rev().find_map(|s| s.rescale.as_ref());
                assert_eq!(p.correction_at(n), want);
            });
        }
        assert!(dropped >= 2, "{dropped} corrections dropped");
    }

    /// The width above the fit in the joint sum: weight 0 is the plain joint fit
    /// to the bit; a heavy weight lowers the width above the fit (decoded as the
    /// file gives it, after its own split and rounds) and, with it, the fit width,
    /// at the base width's cost.
    #[test]
    fn the_upper_weight_serves_the_width_split_from_the_fit() {
        let joint = JointFit {
            rounds: 3,
            params: true,
            ..JointFit::default()
        };
        for (rows, cols, g, seed) in [(12, 256, 32, 3), (9, 160, 32, 11)] {
            let w = blocky(rows, cols, seed, true);
            let fit = |upper_weight: f64| {
                let j = JointFit {
                    upper_weight,
                    ..joint
                };
                nest_rescaled_joint(&w, rows, cols, None, 2, 3, 5, g, 2, j).expect("fits")
            };
            let plain = fit(0.0);
            assert_eq!(
                plain,
                nest_rescaled_joint(&w, rows, cols, None, 2, 3, 5, g, 2, joint).expect("fits")
            );
            // Widths 2, 3 and 4 are prefixes 0, 1 and 2.
            let errs =
                |p: &NestedPalette| -> [f64; 3] { [0, 1, 2].map(|n| sq_err(&w, &p.decode(n))) };
            let ep = errs(&plain);
            let e = errs(&fit(4.0));
            eprintln!("{rows}x{cols}: widths 2..4 {e:?} against {ep:?}");
            assert!(e[2] < ep[2], "{e:?} against {ep:?}");
            assert!(e[1] + e[2] < ep[1] + ep[2], "{e:?} against {ep:?}");
        }
        let w = blocky(4, 64, 2, true);
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let j = JointFit {
                upper_weight: bad,
                ..joint
            };
            let e = nest_rescaled_joint(&w, 4, 64, None, 2, 3, 4, 32, 2, j)
                .expect_err("no such weight")
                .to_string();
            assert!(e.contains("upper_weight"), "{e}");
        }
    }

    /// Serving two widths above the fit lowers the second one (split from the
    /// first as the file splits it) against the plain fit; 1 is the default and
    /// only 1 or 2 are taken.
    #[test]
    fn the_upper_weight_serves_two_widths_when_asked() {
        let joint = JointFit {
            rounds: 3,
            params: true,
            upper_weight: 4.0,
            ..JointFit::default()
        };
        for (rows, cols, g, seed) in [(12, 256, 32, 5), (9, 160, 32, 13)] {
            let w = blocky(rows, cols, seed, true);
            let fit = |j: JointFit| nest_rescaled_joint(&w, rows, cols, None, 2, 3, 6, g, 2, j);
            let one = fit(joint).expect("fits");
            assert_eq!(
                one,
                fit(JointFit {
                    upper_widths: 1,
                    ..joint
                })
                .expect("fits")
            );
            let plain = fit(JointFit {
                upper_weight: 0.0,
                ..joint
            })
            .expect("fits");
            let two = fit(JointFit {
                upper_widths: 2,
                ..joint
            })
            .expect("fits");
            assert_ne!(one, two);
            // Widths 4 and 5 are prefixes 2 and 3.
            let errs = |p: &NestedPalette| -> [f64; 2] { [2, 3].map(|n| sq_err(&w, &p.decode(n))) };
            let (ep, e1, e2) = (errs(&plain), errs(&one), errs(&two));
            eprintln!("{rows}x{cols}: widths 4, 5 plain {ep:?}, one {e1:?}, two {e2:?}");
            assert!(e2[1] < ep[1], "{e2:?} against {ep:?}");
            assert!(e2[0] + e2[1] < ep[0] + ep[1], "{e2:?} against {ep:?}");
        }
        let w = blocky(4, 64, 2, true);
        for bad in [0, 3] {
            let j = JointFit {
                upper_widths: bad,
                ..joint
            };
            let e = nest_rescaled_joint(&w, 4, 64, None, 2, 3, 4, 32, 2, j)
                .expect_err("no such width count")
                .to_string();
            assert!(e.contains("upper_widths"), "{e}");
        }
        // At the widest fit the second width does not exist; it is left out.
        let j = JointFit {
            upper_widths: 2,
            ..joint
        };
        nest_rescaled_joint(&w, 4, 64, None, 2, 7, 8, 32, 2, j).expect("fits");
    }

    /// Each step above the fit takes its own width from the list, the last
    /// repeating; the base's and the fit's keep `rescale_bits`. One width is the
    /// list of one, and a list that repeats its last width is that shorter list.
    #[test]
    fn the_upper_widths_go_step_by_step() {
        let (rows, cols) = (9, 160);
        let w = blocky(rows, cols, 7, true);
        let fit = |upper: &[u8]| {
            let joint = JointFit {
                upper_rescale_bits: UpperRescaleBits::new(upper).expect("widths"),
                ..JointFit::default()
            };
            nest_rescaled_joint(&w, rows, cols, None, 2, 3, 7, 32, 2, joint).expect("fits")
        };
        let widths = |p: &NestedPalette| -> Vec<u8> {
            std::iter::once(&p.base_rescale)
                .chain(p.steps.iter().map(|s| &s.rescale))
                .map(|r| r.as_ref().map_or(0, |r| r.bits))
                .collect()
        };
        // Base, then the steps to 3 (the fit), 4, 5, 6 and 7 bits.
        assert_eq!(widths(&fit(&[])), [2, 2, 2, 2, 2, 2]);
        assert_eq!(widths(&fit(&[3])), [2, 2, 3, 3, 3, 3]);
        assert_eq!(widths(&fit(&[3, 4])), [2, 2, 3, 4, 4, 4]);
        assert_eq!(widths(&fit(&[3, 5, 1])), [2, 2, 3, 5, 1, 1]);
        assert_eq!(fit(&[3, 4, 4]), fit(&[3, 4]));
        assert_eq!(
            fit(&[3]),
            nest_rescaled_joint(
                &w,
                rows,
                cols,
                None,
                2,
                3,
                7,
                32,
                2,
                JointFit {
                    upper_rescale_bits: Some(3).into(),
                    ..JointFit::default()
                }
            )
            .expect("fits")
        );
        // The steps below the fit width do not depend on the list.
        let (a, b) = (fit(&[3]), fit(&[6, 1]));
        assert_eq!((&a.base, &a.base_rescale), (&b.base, &b.base_rescale));
        assert_eq!(a.steps[0], b.steps[0]);
        let up = UpperRescaleBits::new(&[3, 4]).expect("widths");
        assert_eq!(up.to_string(), "3,4");
        assert_eq!(
            (up.step(0), up.step(1), up.step(5)),
            (Some(3), Some(4), Some(4))
        );
        assert_eq!(UpperRescaleBits::default().step(0), None);
        for bad in [&[3, 9][..], &[0], &[3; 8]] {
            let e = UpperRescaleBits::new(bad).expect_err("refused").to_string();
            assert!(e.contains("upper_rescale_bits"), "{bad:?}: {e}");
        }
        // Unchecked from an Option, refused by the fit.
        let joint = JointFit {
            upper_rescale_bits: Some(9).into(),
            ..JointFit::default()
        };
        let e = nest_rescaled_joint(&w, rows, cols, None, 2, 3, 7, 32, 2, joint)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("upper_rescale_bits"), "{e}");
    }

    /// With a second width, the first step above the fit is the one fitted at the
    /// list's width or the one fitted at the second, whichever the byte rule picks
    /// (checked here from the two fits' gains); the other steps do not change.
    #[test]
    fn the_first_upper_step_chooses_its_correction_width() {
        // A Q4_1-like tensor: every 32 weights on their own 16-level grid, which
        // the 4-bit width can follow only with fine block corrections.
        let (rows, cols) = (48, 160);
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let grids: Vec<(f32, f32)> = (0..rows * cols / 32)
            .map(|_| {
                (
                    rng.random_range(0.01f32..0.1),
                    rng.random_range(-0.8f32..-0.1),
                )
            })
            .collect();
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| {
                let (d, m) = grids[i / 32];
                let q = (rng.random_range(0.0f32..1.0) + rng.random_range(0.0f32..1.0)) * 7.5;
                m + d * q.round()
            })
            .collect();
        let fit = |upper: &[u8], choice: Option<u8>| {
            let joint = JointFit {
                upper_rescale_bits: UpperRescaleBits::new(upper).expect("widths"),
                upper_rescale_choice: choice,
                ..JointFit::default()
            };
            nest_rescaled_joint(&w, rows, cols, None, 2, 3, 6, 32, 2, joint).expect("fits")
        };
        // The step to 4 bits is steps[1]; the base's correction and steps[0] are
        // the fit's.
        let nb = cols.div_ceil(32);
        let bytes = |b: u8| (rows * index_row_bytes(nb, b) + (4usize << b)) as f64;
        let step_bytes = (rows * plane_row_bytes(cols) + (2usize << 4)) as f64;
        let mut picked = [false; 2];
        for (narrow, wide) in [(1u8, 4u8), (2, 3), (3, 8), (2, 6)] {
            let one = fit(&[narrow], None);
            assert_eq!(fit(&[narrow], Some(narrow)), one, "the same width twice");
            let other = fit(&[wide, narrow], None);
            let (gn, gw) = (one.steps[1].gain, other.steps[1].gain);
            // The error at the fit width, then left by the narrower step.
            let prev = sq_err(&one.decode(1), &w);
            let left = prev - gn;
            let by_next = gn.max(0.0) / (step_bytes + bytes(narrow)) * (left / prev);
            let by_extra = (gw - gn) / (bytes(wide) - bytes(narrow));
            let wider = by_extra > 0.0 && by_extra >= by_next;
            // The fit's own errors are in f32 corrections, the decode's in f16:
            // only a clear margin tells which the rule picked.
            let clear = (by_extra / by_next - 1.0).abs() > 0.02;
            let chosen = fit(&[narrow], Some(wide));
            assert!(
                chosen == other || chosen == one,
                "{narrow}/{wide}: one of the two"
            );
            if clear {
                assert_eq!(chosen == other, wider, "{narrow}/{wide}");
                picked[usize::from(wider)] = true;
            }
            assert_eq!(chosen.steps[0], one.steps[0]);
            // The second width may also be the narrower one: the same choice.
            let reverse = fit(&[wide, narrow], Some(narrow));
            let expected = if chosen == other {
                other
            } else {
                fit(&[narrow], None)
            };
            assert_eq!(reverse, expected, "{wide}/{narrow}");
        }
        assert_eq!(picked, [true, true], "both outcomes exercised");
        let joint = JointFit {
            upper_rescale_choice: Some(9),
            ..JointFit::default()
        };
        let e = nest_rescaled_joint(&w, rows, cols, None, 2, 3, 6, 32, 2, joint)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("upper_rescale_choice"), "{e}");
    }

    /// A seed changes only the widths above the first step over the fit; those
    /// still decode to their recorded gains.
    #[test]
    fn a_seed_moves_only_the_widths_after_it() {
        let (rows, cols) = (9, 160);
        let w = blocky(rows, cols, 5, true);
        for corrections in [Corrections::Every, Corrections::WherePaying] {
            let fit = |seed: Option<u8>| {
                let joint = JointFit {
                    upper_rescale_bits: Some(3).into(),
                    upper_seed_bits: seed,
                    corrections,
                    ..JointFit::default()
                };
                nest_rescaled_joint(&w, rows, cols, None, 2, 3, 6, 32, 2, joint).expect("fits")
            };
            let (plain, seeded) = (fit(None), fit(Some(8)));
            assert_eq!(plain.base, seeded.base);
            assert_eq!(plain.base_rescale, seeded.base_rescale);
            // Steps to 3 (the fit) and 4 bits are the same, 5 and 6 split anew.
            assert_eq!(plain.steps[..2], seeded.steps[..2]);
            if corrections == Corrections::Every {
                // (Where only paying corrections are stored, these small steps
                // keep the one before and split as before.)
                assert_ne!(plain.steps[2..], seeded.steps[2..]);
            }
            assert_gains_exact(&w, &seeded, |_| ());
        }
        let joint = JointFit {
            upper_seed_bits: Some(0),
            ..JointFit::default()
        };
        let e = nest_rescaled_joint(&w, rows, cols, None, 2, 3, 6, 32, 2, joint)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("upper_seed_bits"), "{e}");
    }

    #[test]
    fn rejects_bad_parameters() {
        let w = vec![0.5f32; 16];
        assert!(nest_rescaled(&w, 2, 8, None, 3, 2, 4, 2).is_err());
        assert!(nest_rescaled(&w, 2, 8, None, 2, 4, 4, 0).is_err());
        assert!(nest_rescaled(&w, 2, 8, None, 2, 4, 4, 9).is_err());
    }
}
