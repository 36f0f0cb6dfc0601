//! Scaled palettes: one learned table per tensor, applied to every block of
//! `group_cols` weights of a row through that block's own scale and offset.
//!
//! A plain palette ([`super::palettize`]) gives each row (or group of rows) `2^b`
//! values for all its weights. A row of a real checkpoint mixes blocks of very
//! different ranges (every 32 weights of a llama.cpp Q4_1 file have their own
//! grid), which one table per row cannot follow. Here a weight is
//!
//! ```text
//! w = d_r * s_rb * table[index] + m_r * o_rb
//! ```
//!
//! with `table` (`2^bits` f16, shared by the tensor) fitted by weighted k-means on the
//! block-normalised weights, `d_r, m_r` f16 per row, and `s_rb, o_rb` 6-bit codes per
//! block of `group_cols` weights (k-quants' super-block idea with a learned, not
//! uniform, set of levels). At `group_cols = 32` this is `bits + 0.375 + 32 / cols`
//! bits per weight: 4.43 at 4 bits for a 576-column matrix, against Q4_K's 4.5.
//!
//! Fitting alternates, keeping the lowest importance-weighted error seen: assign
//! each weight its nearest level, solve each block's scale and offset by weighted
//! least squares, quantise them to the 6-bit codes, reassign, and move each table
//! entry to the weighted mean of the normalised weights it holds.
//!
//! Section layout (offsets from the section start, each part at a 64-byte boundary):
//! the table (`2^bits` f16), the row parameters (`rows x [d, m]` f16), the block
//! codes (per row `2 * blocks` 6-bit codes, scale then offset of each block, packed
//! LSB-first like palette indices), then the packed index rows.

use half::f16;
use rayon::prelude::*;

use super::{index_row_bytes, nearest_sorted, pack_row, unpack_indices, unpack_lookup};
use crate::checkpoint::align_usize;
use crate::error::{QuantError, Result, check_batch};

/// Bits of each block's scale and offset code.
pub const CODE_BITS: u8 = 6;
pub(crate) const CODE_MAX: f32 = ((1 << CODE_BITS) - 1) as f32;
/// Fitting rounds.
const ROUNDS: usize = 6;

/// Where a scaled palette's parts lie in its section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaledLayout {
    /// Rows of the tensor.
    pub rows: usize,
    /// Columns of the tensor.
    pub cols: usize,
    /// Bits per index.
    pub bits: u8,
    /// Weights per block along a row (the last block of a row may be shorter).
    pub group_cols: usize,
    /// `(offset, len)` of the table.
    pub table: (usize, usize),
    /// `(offset, len)` of the row parameters.
    pub params: (usize, usize),
    /// `(offset, len)` of the block codes.
    pub codes: (usize, usize),
    /// `(offset, len)` of the packed indices.
    pub indices: (usize, usize),
    /// Section length.
    pub len: usize,
}

impl ScaledLayout {
    /// The layout for a `rows x cols` tensor; `None` if a size overflows or a
    /// parameter is out of range (`bits` outside 2..=8, `group_cols` 0).
    pub fn new(rows: usize, cols: usize, bits: u8, group_cols: usize) -> Option<ScaledLayout> {
        if !(2..=8).contains(&bits) || group_cols == 0 {
            return None;
        }
        let table_len = 2usize << bits;
        let params_off = align_usize(table_len)?;
        let params_len = rows.checked_mul(4)?;
        let codes_off = align_usize(params_off.checked_add(params_len)?)?;
        let codes_len = rows.checked_mul(Self::code_row_bytes_of(cols, group_cols)?)?;
        let idx_off = align_usize(codes_off.checked_add(codes_len)?)?;
        let idx_len = rows.checked_mul(cols.checked_mul(usize::from(bits))?.div_ceil(8))?;
        Some(ScaledLayout {
            rows,
            cols,
            bits,
            group_cols,
            table: (0, table_len),
            params: (params_off, params_len),
            codes: (codes_off, codes_len),
            indices: (idx_off, idx_len),
            len: idx_off.checked_add(idx_len)?,
        })
    }

    fn code_row_bytes_of(cols: usize, group_cols: usize) -> Option<usize> {
        Some(
            cols.div_ceil(group_cols)
                .checked_mul(2 * usize::from(CODE_BITS))?
                .div_ceil(8),
        )
    }

    /// Blocks per row.
    pub fn blocks(&self) -> usize {
        self.cols.div_ceil(self.group_cols)
    }

    pub(crate) fn code_row_bytes(&self) -> usize {
        index_row_bytes(2 * self.blocks(), CODE_BITS)
    }

    /// Decodes a section of exactly [`ScaledLayout::len`] bytes into `rows x cols`
    /// row-major f32.
    pub fn decode(&self, section: &[u8]) -> Result<Vec<f32>> {
        if section.len() != self.len {
            return Err(QuantError::DimMismatch {
                what: "scaled palette section (bytes)",
                expected: self.len,
                actual: section.len(),
            });
        }
        let f16s = |(off, len): (usize, usize)| -> Vec<f32> {
            section[off..off + len]
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect()
        };
        Ok(self.decode_parts(
            &f16s(self.table),
            &f16s(self.params),
            &section[self.codes.0..self.codes.0 + self.codes.1],
            &section[self.indices.0..],
        ))
    }

    fn decode_parts(&self, table: &[f32], params: &[f32], codes: &[u8], idx: &[u8]) -> Vec<f32> {
        let rb = index_row_bytes(self.cols, self.bits);
        self.decode_with(params, codes, |r, row| {
            unpack_lookup(&idx[r * rb..(r + 1) * rb], self.bits, table, row);
        })
    }

    /// Decodes with `lookup(r, row)` filling row `r` with table values, then applies
    /// each block's scale and offset ([`super::nested`] widens the indices first).
    pub(crate) fn decode_with(
        &self,
        params: &[f32],
        codes: &[u8],
        lookup: impl Fn(usize, &mut [f32]) + Sync,
    ) -> Vec<f32> {
        let (cb, nb) = (self.code_row_bytes(), self.blocks());
        let mut out = crate::buffer::zeroed_f32(self.rows * self.cols);
        if self.cols == 0 {
            return out;
        }
        out.par_chunks_mut(self.cols)
            .enumerate()
            .for_each(|(r, row)| {
                lookup(r, row);
                let mut c = vec![0u8; 2 * nb];
                unpack_indices(&codes[r * cb..(r + 1) * cb], CODE_BITS, &mut c);
                let (d, m) = (params[2 * r], params[2 * r + 1]);
                for (b, block) in row.chunks_mut(self.group_cols).enumerate() {
                    let (s, o) = (d * f32::from(c[2 * b]), m * f32::from(c[2 * b + 1]));
                    for v in block {
                        *v = s * *v + o;
                    }
                }
            });
        out
    }
}

/// A tensor as a scaled palette.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaledPalette {
    /// Layout.
    pub layout: ScaledLayout,
    /// The `2^bits` levels, ascending.
    pub table: Vec<f16>,
    /// `[d, m]` of each row.
    pub params: Vec<f16>,
    /// Packed block codes, [`ScaledLayout::codes`] bytes.
    pub codes: Vec<u8>,
    /// Packed index rows.
    pub indices: Vec<u8>,
}

impl ScaledPalette {
    /// Bits per weight including table, row parameters and block codes.
    pub fn bits_per_weight(&self) -> f64 {
        let l = &self.layout;
        8.0 * (l.table.1 + l.params.1 + l.codes.1 + l.indices.1) as f64
            / (l.rows * l.cols).max(1) as f64
    }

    /// The section bytes a checkpoint stores ([`ScaledLayout`]).
    pub fn section_bytes(&self) -> Vec<u8> {
        let l = &self.layout;
        let mut out = vec![0u8; l.len];
        for (c, v) in out[l.table.0..l.table.0 + l.table.1]
            .chunks_exact_mut(2)
            .zip(&self.table)
        {
            c.copy_from_slice(&v.to_le_bytes());
        }
        for (c, v) in out[l.params.0..l.params.0 + l.params.1]
            .chunks_exact_mut(2)
            .zip(&self.params)
        {
            c.copy_from_slice(&v.to_le_bytes());
        }
        out[l.codes.0..l.codes.0 + l.codes.1].copy_from_slice(&self.codes);
        out[l.indices.0..].copy_from_slice(&self.indices);
        out
    }

    /// Each block's `[scale, offset]` (`rows x blocks x 2`), as decoding applies them.
    pub fn block_grids(&self) -> Vec<f32> {
        let l = &self.layout;
        let (cb, nb) = (l.code_row_bytes(), l.blocks());
        let mut out = vec![0f32; l.rows * 2 * nb];
        let mut c = vec![0u8; 2 * nb];
        for (r, g) in out.chunks_exact_mut(2 * nb).enumerate() {
            unpack_indices(&self.codes[r * cb..(r + 1) * cb], CODE_BITS, &mut c);
            let (d, m) = (self.params[2 * r].to_f32(), self.params[2 * r + 1].to_f32());
            for (sm, cc) in g.chunks_exact_mut(2).zip(c.chunks_exact(2)) {
                sm[0] = d * f32::from(cc[0]);
                sm[1] = m * f32::from(cc[1]);
            }
        }
        out
    }

    /// The decoded tensor, `rows x cols` row-major.
    pub fn decode(&self) -> Vec<f32> {
        let f = |v: &[f16]| v.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
        self.layout.decode_parts(
            &f(&self.table),
            &f(&self.params),
            &self.codes,
            &self.indices,
        )
    }
}

/// One fitted row: packed block codes, `[d, m]`, packed indices, weighted squared
/// error.
type RowCodes = (Vec<u8>, [f16; 2], Vec<u8>, f64);

/// One row's fitted state: unquantised block scales and offsets.
struct RowFit {
    scale: Vec<f32>,
    offset: Vec<f32>,
}

/// Palettizes `w` (`rows x cols`, rows are output channels) as a scaled palette of
/// `bits`-bit indices and blocks of `group_cols` weights; `importance` (one finite
/// value >= 0 per column) weights the error as in [`super::palettize`].
pub fn palettize_scaled(
    w: &[f32],
    rows: usize,
    cols: usize,
    importance: Option<&[f32]>,
    bits: u8,
    group_cols: usize,
) -> Result<ScaledPalette> {
    check_batch("scaled palette weight matrix", w, cols)?;
    if w.len() != rows * cols || rows == 0 || cols == 0 {
        return Err(QuantError::DimMismatch {
            what: "scaled palette weight matrix (rows x cols)",
            expected: rows * cols,
            actual: w.len(),
        });
    }
    let layout = ScaledLayout::new(rows, cols, bits, group_cols).ok_or_else(|| {
        QuantError::InvalidConfig {
            field: "scaled palette",
            reason: format!(
                "{bits} bits, blocks of {group_cols}: expected 2..=8 bits and at least 1 weight per block"
            ),
        }
    })?;
    let imp: Vec<f32> = match importance {
        Some(imp) if imp.len() != cols => {
            return Err(QuantError::DimMismatch {
                what: "scaled palette importance (one per input channel)",
                expected: cols,
                actual: imp.len(),
            });
        }
        Some(imp) => {
            if let Some(j) = imp.iter().position(|x| !(x.is_finite() && *x >= 0.0)) {
                return Err(QuantError::InvalidConfig {
                    field: "importance",
                    reason: format!("channel {j} is {}, expected finite and >= 0", imp[j]),
                });
            }
            // A floor keeps every weight in play (all-zero importance = counts).
            let mean = imp.iter().map(|&x| f64::from(x)).sum::<f64>() / cols as f64;
            let floor = (1e-3 * mean).max(f64::MIN_POSITIVE) as f32;
            imp.iter().map(|&x| x.max(floor)).collect()
        }
        None => vec![1.0; cols],
    };
    if let Some(i) = w.iter().position(|x| f16::from_f32(*x).is_infinite()) {
        return Err(QuantError::InvalidConfig {
            field: "scaled palette weight matrix",
            reason: format!("value {} at index {i} overflows f16", w[i]),
        });
    }

    let k = 1usize << bits;
    let nb = layout.blocks();
    // Start: each block min..max onto uniform levels 0..=1.
    let mut table: Vec<f32> = (0..k).map(|i| i as f32 / (k - 1) as f32).collect();
    let mut fits: Vec<RowFit> = w
        .par_chunks_exact(cols)
        .map(|row| {
            let (mut scale, mut offset) = (Vec::with_capacity(nb), Vec::with_capacity(nb));
            for block in row.chunks(group_cols) {
                let lo = block.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                scale.push(hi - lo);
                offset.push(lo);
            }
            RowFit { scale, offset }
        })
        .collect();
    let mut best: Option<(f64, ScaledPalette)> = None;
    for round in 0..ROUNDS {
        // Fit against the f16 table that will be stored.
        for t in &mut table {
            *t = f16::from_f32(*t).to_f32();
        }
        let quantised: Vec<RowCodes> = w
            .par_chunks_exact(cols)
            .zip(fits.par_iter_mut())
            .map(|(row, fit)| fit_row(row, &imp, &table, fit, group_cols, round > 0))
            .collect();
        let err: f64 = quantised.iter().map(|q| q.3).sum();
        let candidate = assemble(layout, &table, &quantised);
        // Move each level to the weighted mean of the normalised weights it holds,
        // under the quantised block parameters.
        table = refit_table(&candidate, w, &imp);
        if best.as_ref().is_none_or(|(e, _)| err < *e) {
            best = Some((err, candidate));
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| QuantError::Numerical {
        what: "scaled palette",
        reason: "no fitting round ran".into(),
    })
}

/// Fits one row: optional weighted least-squares scale and offset per block for
/// the current table, then 6-bit codes against the row's `d` and `m`, then indices.
/// Returns (block codes packed, `[d, m]`, packed indices, weighted squared error).
fn fit_row(
    row: &[f32],
    imp: &[f32],
    table: &[f32],
    fit: &mut RowFit,
    group_cols: usize,
    refine: bool,
) -> RowCodes {
    let k = table.len();
    if refine {
        for (b, (block, bimp)) in row
            .chunks(group_cols)
            .zip(imp.chunks(group_cols))
            .enumerate()
        {
            let (s, o) = (fit.scale[b], fit.offset[b]);
            // Indices under the current parameters, then the 2x2 normal equations.
            let (mut sw, mut st, mut stt, mut sx, mut stx) = (0f64, 0f64, 0f64, 0f64, 0f64);
            for (&x, &m) in block.iter().zip(bimp) {
                let u = if s != 0.0 { (x - o) / s } else { 0.0 };
                let t = f64::from(table[nearest_sorted(table, u)]);
                let (m, x) = (f64::from(m), f64::from(x));
                sw += m;
                st += m * t;
                stt += m * t * t;
                sx += m * x;
                stx += m * t * x;
            }
            let det = sw * stt - st * st;
            if det > 1e-12 * sw * stt.max(f64::MIN_POSITIVE) {
                let scale = (sw * stx - st * sx) / det;
                let offset = (sx - scale * st) / sw;
                if scale.is_finite() && offset.is_finite() && scale >= 0.0 {
                    fit.scale[b] = scale as f32;
                    fit.offset[b] = offset as f32;
                }
            }
        }
    }
    // Row super-scales: codes 0..=63 of d and m.
    let smax = fit.scale.iter().copied().fold(0f32, f32::max);
    let d = f16::from_f32(smax / CODE_MAX);
    let omin = fit.offset.iter().copied().fold(0f32, f32::min);
    let omax = fit.offset.iter().copied().fold(0f32, f32::max);
    // Offsets share the sign of the larger magnitude; the other side clamps to 0.
    let m = f16::from_f32(if -omin >= omax { omin } else { omax } / CODE_MAX);
    let (df, mf) = (d.to_f32(), m.to_f32());
    let code = |v: f32, unit: f32| -> u8 {
        if unit == 0.0 {
            0
        } else {
            (v / unit).round().clamp(0.0, CODE_MAX) as u8
        }
    };
    let nb = fit.scale.len();
    let mut codes = vec![0u8; 2 * nb];
    let mut idx = vec![0u8; row.len()];
    let mut err = 0f64;
    for (b, ((block, bimp), bidx)) in row
        .chunks(group_cols)
        .zip(imp.chunks(group_cols))
        .zip(idx.chunks_mut(group_cols))
        .enumerate()
    {
        // The rounded codes, then their neighbours: keep the pair with the least
        // weighted error after reassigning the block's indices.
        let (sq0, oq0) = (code(fit.scale[b], df), code(fit.offset[b], mf));
        let block_err = |sq: u8, oq: u8, out: Option<&mut [u8]>| -> f64 {
            let (s, o) = (df * f32::from(sq), mf * f32::from(oq));
            let mut e = 0f64;
            let mut out = out;
            for (j, (&x, &mi)) in block.iter().zip(bimp).enumerate() {
                let q = if s != 0.0 {
                    nearest_sorted(table, (x - o) / s)
                } else {
                    0
                };
                if let Some(o) = out.as_deref_mut() {
                    o[j] = q as u8;
                }
                e += f64::from(mi) * f64::from(x - (s * table[q] + o)).powi(2);
            }
            e
        };
        let near = |c: u8| {
            [
                c.saturating_sub(1),
                c,
                c.saturating_add(1).min(CODE_MAX as u8),
            ]
        };
        let mut best = (f64::INFINITY, sq0, oq0);
        for sq in near(sq0) {
            for oq in near(oq0) {
                let e = block_err(sq, oq, None);
                if e < best.0 {
                    best = (e, sq, oq);
                }
            }
        }
        let (e, sq, oq) = best;
        codes[2 * b] = sq;
        codes[2 * b + 1] = oq;
        block_err(sq, oq, Some(bidx));
        err += e;
    }
    debug_assert!(k <= 256);
    let mut packed_codes = vec![0u8; index_row_bytes(2 * nb, CODE_BITS)];
    pack_row(&codes, CODE_BITS, &mut packed_codes);
    let bits = k.trailing_zeros() as u8;
    let mut packed = vec![0u8; index_row_bytes(row.len(), bits)];
    pack_row(&idx, bits, &mut packed);
    (packed_codes, [d, m], packed, err)
}

fn assemble(layout: ScaledLayout, table: &[f32], rows: &[RowCodes]) -> ScaledPalette {
    // The table is kept ascending (refit_table sorts it, f16 rounding is monotone),
    // so the indices need no remapping.
    debug_assert!(table.windows(2).all(|t| t[0] <= t[1]), "{table:?}");
    let mut indices = Vec::with_capacity(layout.indices.1);
    let mut codes = Vec::with_capacity(layout.codes.1);
    let mut params = Vec::with_capacity(2 * layout.rows);
    for (c, p, ix, _) in rows {
        codes.extend_from_slice(c);
        params.extend_from_slice(p);
        indices.extend_from_slice(ix);
    }
    ScaledPalette {
        layout,
        table: table.iter().map(|&v| f16::from_f32(v)).collect(),
        params,
        codes,
        indices,
    }
}

/// Each level moved to the importance-and-scale weighted mean of the normalised
/// weights assigned to it (`sum m s (x - o) / sum m s^2`); unused levels stay.
fn refit_table(p: &ScaledPalette, w: &[f32], imp: &[f32]) -> Vec<f32> {
    let l = &p.layout;
    let k = p.table.len();
    let (rb, nb) = (index_row_bytes(l.cols, l.bits), l.blocks());
    let grids = p.block_grids();
    let (num, den) = w
        .par_chunks_exact(l.cols)
        .zip(grids.par_chunks_exact(2 * nb))
        .enumerate()
        .map(|(r, (row, grid))| {
            let mut idx = vec![0u8; l.cols];
            unpack_indices(&p.indices[r * rb..(r + 1) * rb], l.bits, &mut idx);
            let (mut num, mut den) = (vec![0f64; k], vec![0f64; k]);
            for (j, (&x, &q)) in row.iter().zip(&idx).enumerate() {
                let b = j / l.group_cols;
                let (s, o) = (f64::from(grid[2 * b]), f64::from(grid[2 * b + 1]));
                let mi = f64::from(imp[j]);
                num[usize::from(q)] += mi * s * (f64::from(x) - o);
                den[usize::from(q)] += mi * s * s;
            }
            (num, den)
        })
        .reduce(
            || (vec![0f64; k], vec![0f64; k]),
            |mut a, b| {
                a.0.iter_mut().zip(&b.0).for_each(|(x, y)| *x += y);
                a.1.iter_mut().zip(&b.1).for_each(|(x, y)| *x += y);
                a
            },
        );
    // `p.table` is sorted; map its entries back through values (the same f16s).
    let sorted: Vec<f32> = p.table.iter().map(|v| v.to_f32()).collect();
    let mut out: Vec<f32> = (0..k)
        .map(|i| {
            if den[i] > 0.0 {
                (num[i] / den[i]) as f32
            } else {
                sorted[i]
            }
        })
        .collect();
    out.sort_by(f32::total_cmp);
    out
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::palette::{PaletteConfig, palettize};

    fn rel_err(a: &[f32], b: &[f32]) -> f64 {
        let num: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
        let den: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
        (num / den).sqrt()
    }

    /// Rows of blocks whose ranges differ by up to 100x, as in real checkpoints.
    fn blocky(rows: usize, cols: usize, block: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut w = Vec::with_capacity(rows * cols);
        for _ in 0..rows {
            for b in 0..cols.div_ceil(block) {
                let scale = 10f32.powf(rng.random_range(-2.0..0.0));
                let n = block.min(cols - b * block);
                w.extend((0..n).map(|_| scale * rng.random_range(-1.0f32..1.0)));
            }
        }
        w
    }

    #[test]
    fn section_bytes_decode_like_the_tensor() {
        for (rows, cols, bits, g) in [
            (3, 70, 4, 32),
            (5, 64, 2, 16),
            (2, 33, 3, 33),
            (1, 10, 8, 3),
        ] {
            let w = blocky(rows, cols, g, 1);
            let p = palettize_scaled(&w, rows, cols, None, bits, g).expect("ok");
            let bytes = p.section_bytes();
            assert_eq!(bytes.len(), p.layout.len);
            assert_eq!(p.layout.decode(&bytes).expect("ok"), p.decode());
            assert!(p.table.windows(2).all(|t| t[0] <= t[1]), "{:?}", p.table);
            let err = p.layout.decode(&bytes[1..]).expect_err("must fail");
            assert!(err.to_string().contains("scaled palette section"), "{err}");
        }
    }

    #[test]
    fn reproduces_a_matrix_on_its_own_grid() {
        // Every block of 32 is d * s_b * (i / 15) + m * o_b with 6-bit codes, and
        // block 0 of each row has both codes at 63 (so d and m are the row's): the
        // format holds it exactly, and the fit must find it.
        let (rows, cols, g) = (4, 128, 32);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (d, m) = (0.015625f32, -0.0078125f32);
        let mut w = Vec::new();
        for _ in 0..rows {
            for b in 0..cols / g {
                let (s, o) = if b == 0 {
                    (63u8, 63u8)
                } else {
                    (rng.random_range(1..64u8), rng.random_range(0..64u8))
                };
                for j in 0..g {
                    // Both ends of the grid occur in every block.
                    let i = match j {
                        0 => 0,
                        1 => 15,
                        _ => rng.random_range(0..16u8),
                    };
                    w.push(d * f32::from(s) * f32::from(i) / 15.0 + m * f32::from(o));
                }
            }
        }
        let p = palettize_scaled(&w, rows, cols, None, 4, g).expect("ok");
        let dec = p.decode();
        let e = rel_err(&w, &dec);
        if e >= 2e-3 {
            let worst = (0..w.len())
                .max_by(|&a, &b| (w[a] - dec[a]).abs().total_cmp(&(w[b] - dec[b]).abs()))
                .expect("ok");
            eprintln!(
                "worst {worst}: {} vs {}; table {:?} params {:?}",
                w[worst], dec[worst], p.table, p.params
            );
        }
        assert!(e < 2e-3, "relative error {e}");
        assert!(
            (p.bits_per_weight()
                - (4.0 + 0.375 + 32.0 / 128.0 + 16.0 * 16.0 / (rows * cols) as f64))
                .abs()
                < 0.5
        );
    }

    #[test]
    fn follows_block_ranges_a_row_table_cannot() {
        let (rows, cols) = (16, 256);
        let w = blocky(rows, cols, 32, 9);
        let scaled = palettize_scaled(&w, rows, cols, None, 4, 32).expect("ok");
        let plain = palettize(
            &w,
            rows,
            cols,
            None,
            &PaletteConfig {
                bits: 4,
                group_rows: Some(1),
            },
        )
        .expect("ok");
        let (es, ep) = (rel_err(&w, &scaled.decode()), rel_err(&w, &plain.decode()));
        assert!(es < 0.85 * ep, "scaled {es} vs per-row palette {ep}");
        assert!(scaled.bits_per_weight() < plain.bits_per_weight());
    }

    #[test]
    fn importance_moves_error_off_the_heavy_columns() {
        let (rows, cols) = (8, 64);
        let w = blocky(rows, cols, 64, 3);
        let mut imp = vec![1.0f32; cols];
        for v in &mut imp[..8] {
            *v = 1000.0;
        }
        let col_err = |p: &ScaledPalette| -> f64 {
            let d = p.decode();
            (0..rows)
                .flat_map(|r| (0..8).map(move |j| r * cols + j))
                .map(|i| f64::from(w[i] - d[i]).powi(2))
                .sum()
        };
        let with = palettize_scaled(&w, rows, cols, Some(&imp), 2, 64).expect("ok");
        let without = palettize_scaled(&w, rows, cols, None, 2, 64).expect("ok");
        assert!(
            col_err(&with) < col_err(&without),
            "{} vs {}",
            col_err(&with),
            col_err(&without)
        );
    }

    #[test]
    fn rejects_bad_input() {
        let w = vec![0.5f32; 2 * 8];
        for (bits, g, what) in [(1u8, 4usize, "bits"), (9, 4, "bits"), (4, 0, "block")] {
            let err = palettize_scaled(&w, 2, 8, None, bits, g).expect_err("must fail");
            assert!(err.to_string().contains(what), "{err}");
        }
        let err = palettize_scaled(&w, 2, 8, Some(&[1.0; 7]), 4, 4).expect_err("must fail");
        assert!(err.to_string().contains("importance"), "{err}");
        let err = palettize_scaled(&w, 2, 8, Some(&[-1.0; 8]), 4, 4).expect_err("must fail");
        assert!(err.to_string().contains("channel 0"), "{err}");
        let mut bad = w.clone();
        bad[3] = f32::NAN;
        assert!(palettize_scaled(&bad, 2, 8, None, 4, 4).is_err());
        bad[3] = 1e6;
        let err = palettize_scaled(&bad, 2, 8, None, 4, 4).expect_err("must fail");
        assert!(err.to_string().contains("overflows f16"), "{err}");
        assert!(palettize_scaled(&w, 3, 8, None, 4, 4).is_err());
    }
}
