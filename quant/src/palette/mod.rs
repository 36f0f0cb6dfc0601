//! k-means weight palettes, eDKM style.
//!
//! Implements the palettization of eDKM (Cho et al., "eDKM: An Efficient and Accurate
//! Train-time Weight Clustering for Large Language Models", arXiv 2309.00964) and
//! coremltools: a tensor, or each group of `group_rows` output channels (rows), gets a
//! lookup table (LUT) of `2^b` centroids stored as f16, and every weight becomes a
//! `b`-bit index into its group's table: `b + 16 * 2^b / (group_rows * cols)` bits
//! per weight.
//!
//! **Uniquification.** Weights are rounded to f16 first. An f16 takes one of 65,536
//! bit patterns, so a group's weights collapse into a histogram `(distinct value,
//! total weight)` of at most 65,536 entries, built in one pass over a 65,536-entry
//! array. The weighted optimal 1-D k-means ([`crate::kmeans1d`]) over that histogram
//! is *exactly* the k-means of all the (f16-rounded) weights, because k-means' cost
//! only depends on each distinct value's total weight: the clustering time does not
//! grow with the tensor. Rounding to f16 is what makes this exact for f32 inputs; for
//! bf16/f16 checkpoints it changes nothing a bf16 weight does not already lose in
//! f16 (bf16 values outside f16's range are rejected rather than clamped).
//!
//! **Importance.** Optionally each input channel `j` carries an importance (for
//! example the mean of `x_j^2` over calibration tokens): a weight in column `j`
//! counts `importance[j]` times instead of once, so the centroids favour the weights
//! whose errors the activations amplify.
//!
//! **Parallelism.** Groups are clustered in parallel on the rayon pool; each task
//! holds one 512 KiB histogram and the k-means split table (`2^b x distinct values x
//! 4` bytes, at most 64 MiB for `b = 8`), so peak working memory is bounded by the
//! number of threads, not the number of groups.
//!
//! ```
//! use octet_quant::palette::{palettize, PaletteConfig};
//! let w = [0.5f32, -0.25, 0.5, 1.0, -0.25, 0.5];
//! let p = palettize(&w, 2, 3, None, &PaletteConfig { bits: 2, group_rows: None })?;
//! assert_eq!(p.decode(), w.to_vec()); // three distinct values fit in 2^2 centroids
//! # Ok::<(), octet_quant::QuantError>(())
//! ```

pub mod gptq;
pub mod nested;
pub(crate) mod nested_decode;
pub mod pack;
pub mod rescaled;
pub mod scaled;

pub use gptq::{GptqConfig, GptqReport, palettize_gptq, scaled_gptq};
pub use nested::{NestedPalette, NestedStep, nest_scaled, nest_scaled_at};
pub use pack::{
    index_row_bytes, pack_row, unpack_indices, unpack_indices_scalar, unpack_lookup,
    unpack_lookup_scalar,
};
pub use rescaled::{
    Corrections, JointFit, Rescale, UpperRescaleBits, nest_rescaled, nest_rescaled_at,
    nest_rescaled_joint,
};
pub use scaled::{ScaledLayout, ScaledPalette, palettize_scaled};

use half::f16;
use rayon::prelude::*;

use crate::checkpoint::align_usize;
use crate::error::{QuantError, Result, check_batch};
use crate::kmeans1d::optimal_kmeans_1d;

/// Parameters of [`palettize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaletteConfig {
    /// Bits per index, 2..=8 (a table of `2^bits` centroids).
    pub bits: u8,
    /// Output channels per group sharing one table; `None` = one table per tensor.
    pub group_rows: Option<usize>,
}

impl PaletteConfig {
    fn validate(&self) -> Result<()> {
        if !(2..=8).contains(&self.bits) {
            return Err(QuantError::InvalidConfig {
                field: "bits",
                reason: format!("expected 2..=8, got {}", self.bits),
            });
        }
        if self.group_rows == Some(0) {
            return Err(QuantError::InvalidConfig {
                field: "group_rows",
                reason: "expected at least 1 row per group, got 0".into(),
            });
        }
        Ok(())
    }
}

/// Where a palette's parts lie in its checkpoint section (offsets relative to the
/// section start): the f16 little-endian tables of all groups back to back, then at
/// the next 64-byte boundary the packed index rows ([`index_row_bytes`] each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaletteLayout {
    /// Rows of the tensor.
    pub rows: usize,
    /// Columns of the tensor.
    pub cols: usize,
    /// Bits per index.
    pub bits: u8,
    /// Rows per group (the last group may be shorter).
    pub group_rows: usize,
    /// `(offset, len)` of the tables.
    pub luts: (usize, usize),
    /// `(offset, len)` of the packed indices.
    pub indices: (usize, usize),
    /// Section length.
    pub len: usize,
}

impl PaletteLayout {
    /// The layout for a `rows x cols` tensor; `None` if a size overflows or the
    /// parameters are out of range (`bits` outside 1..=8, `group_rows == 0`).
    pub fn new(rows: usize, cols: usize, bits: u8, group_rows: usize) -> Option<PaletteLayout> {
        if !(1..=8).contains(&bits) || group_rows == 0 {
            return None;
        }
        let lut_len = rows.div_ceil(group_rows).checked_mul(2usize << bits)?;
        let idx_off = align_usize(lut_len)?;
        let idx_len = rows.checked_mul(cols.checked_mul(usize::from(bits))?.div_ceil(8))?;
        Some(PaletteLayout {
            rows,
            cols,
            bits,
            group_rows,
            luts: (0, lut_len),
            indices: (idx_off, idx_len),
            len: idx_off.checked_add(idx_len)?,
        })
    }

    /// Number of groups.
    pub fn n_groups(&self) -> usize {
        self.rows.div_ceil(self.group_rows)
    }

    /// Decodes a section of exactly [`PaletteLayout::len`] bytes into `rows x cols`
    /// row-major f32.
    pub fn decode(&self, section: &[u8]) -> Result<Vec<f32>> {
        if section.len() != self.len {
            return Err(QuantError::DimMismatch {
                what: "palette section (bytes)",
                expected: self.len,
                actual: section.len(),
            });
        }
        let luts: Vec<f32> = section[self.luts.0..self.luts.0 + self.luts.1]
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        Ok(self.decode_parts(&luts, &section[self.indices.0..]))
    }

    /// Decodes from f32 tables and packed indices whose lengths match the layout.
    fn decode_parts(&self, luts: &[f32], idx: &[u8]) -> Vec<f32> {
        let k = 1usize << self.bits;
        let rb = index_row_bytes(self.cols, self.bits);
        let mut out = vec![0f32; self.rows * self.cols];
        if self.cols == 0 {
            return out;
        }
        out.par_chunks_mut(self.cols)
            .enumerate()
            .for_each(|(i, row)| {
                let g = i / self.group_rows;
                let lut = &luts[g * k..(g + 1) * k];
                unpack_lookup(&idx[i * rb..(i + 1) * rb], self.bits, lut, row);
            });
        out
    }
}

/// A palettized tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct PaletteTensor {
    /// Layout (shape, bits, group size).
    pub layout: PaletteLayout,
    /// `n_groups x 2^bits` centroids, ascending within a group; entries past a
    /// group's distinct values repeat its largest centroid.
    pub luts: Vec<f16>,
    /// Packed index rows.
    pub indices: Vec<u8>,
}

impl PaletteTensor {
    /// Bits per weight including the tables.
    pub fn bits_per_weight(&self) -> f64 {
        let l = &self.layout;
        8.0 * (l.luts.1 + l.indices.1) as f64 / (l.rows * l.cols).max(1) as f64
    }

    /// The section bytes the checkpoint stores ([`PaletteLayout`]).
    pub fn section_bytes(&self) -> Vec<u8> {
        let l = &self.layout;
        let mut out = vec![0u8; l.len];
        for (c, v) in out[..l.luts.1].chunks_exact_mut(2).zip(&self.luts) {
            c.copy_from_slice(&v.to_le_bytes());
        }
        out[l.indices.0..].copy_from_slice(&self.indices);
        out
    }

    /// The decoded tensor, `rows x cols` row-major.
    pub fn decode(&self) -> Vec<f32> {
        let luts: Vec<f32> = self.luts.iter().map(|v| v.to_f32()).collect();
        self.layout.decode_parts(&luts, &self.indices)
    }
}

/// Palettizes `w` (`rows x cols` row-major; rows are output channels). `importance`,
/// if given, holds one finite non-negative weight per input channel (column).
pub fn palettize(
    w: &[f32],
    rows: usize,
    cols: usize,
    importance: Option<&[f32]>,
    cfg: &PaletteConfig,
) -> Result<PaletteTensor> {
    cfg.validate()?;
    check_batch("palette weight matrix", w, cols)?;
    if w.len() != rows * cols || rows == 0 {
        return Err(QuantError::DimMismatch {
            what: "palette weight matrix (rows x cols)",
            expected: rows * cols,
            actual: w.len(),
        });
    }
    if let Some(imp) = importance {
        if imp.len() != cols {
            return Err(QuantError::DimMismatch {
                what: "palette importance (one per input channel)",
                expected: cols,
                actual: imp.len(),
            });
        }
        if let Some(j) = imp.iter().position(|x| !(x.is_finite() && *x >= 0.0)) {
            return Err(QuantError::InvalidConfig {
                field: "importance",
                reason: format!("channel {j} is {}, expected finite and >= 0", imp[j]),
            });
        }
    }
    let codes: Vec<u16> = w.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
    if let Some(i) = codes.iter().position(|&c| !f16::from_bits(c).is_finite()) {
        return Err(QuantError::InvalidConfig {
            field: "palette weight matrix",
            reason: format!("value {} at index {i} overflows f16", w[i]),
        });
    }
    let group_rows = cfg.group_rows.unwrap_or(rows).min(rows);
    let layout = PaletteLayout::new(rows, cols, cfg.bits, group_rows).ok_or_else(|| {
        QuantError::InvalidConfig {
            field: "palette shape",
            reason: format!("{rows}x{cols} at {} bits overflows usize", cfg.bits),
        }
    })?;
    let rb = index_row_bytes(cols, cfg.bits);
    let groups: Vec<(Vec<f16>, Vec<u8>)> = codes
        .par_chunks(group_rows * cols)
        .map(|g| cluster_group(g, cols, rb, importance, cfg.bits))
        .collect::<Result<_>>()?;
    let mut luts = Vec::with_capacity(layout.luts.1 / 2);
    let mut indices = Vec::with_capacity(layout.indices.1);
    for (l, ix) in groups {
        luts.extend(l);
        indices.extend(ix);
    }
    Ok(PaletteTensor {
        layout,
        luts,
        indices,
    })
}

/// The uniquified histogram of one group of f16 codes (whole rows): distinct codes
/// in ascending code order, their values, and their total weights (counts, or sums
/// of the column importances). `-0.0` joins `+0.0`.
pub(crate) fn group_histogram(
    codes: &[u16],
    cols: usize,
    importance: Option<&[f32]>,
) -> (Vec<u16>, Vec<f64>, Vec<f64>) {
    let mut hist = vec![0f64; 1 << 16];
    match importance {
        Some(imp) if imp.iter().any(|&x| x > 0.0) => {
            for row in codes.chunks_exact(cols) {
                for (&c, &m) in row.iter().zip(imp) {
                    hist[usize::from(zero_key(c))] += f64::from(m);
                }
            }
        }
        // All-zero importance says nothing about which weights matter: count them.
        _ => {
            for &c in codes {
                hist[usize::from(zero_key(c))] += 1.0;
            }
        }
    }
    let distinct: Vec<u16> = (0..=u16::MAX)
        .filter(|&c| hist[usize::from(c)] > 0.0)
        .collect();
    let values = distinct
        .iter()
        .map(|&c| f64::from(f16::from_bits(c).to_f32()))
        .collect();
    let weights = distinct.iter().map(|&c| hist[usize::from(c)]).collect();
    (distinct, values, weights)
}

fn zero_key(c: u16) -> u16 {
    if c == 0x8000 { 0 } else { c }
}

/// Clusters one group of f16 codes (whole rows) into `2^bits` centroids and packs its
/// index rows.
fn cluster_group(
    codes: &[u16],
    cols: usize,
    row_bytes: usize,
    importance: Option<&[f32]>,
    bits: u8,
) -> Result<(Vec<f16>, Vec<u8>)> {
    let (distinct, values, weights) = group_histogram(codes, cols, importance);
    let k = 1usize << bits;
    let km = optimal_kmeans_1d(&values, &weights, k)?;
    let mut lut: Vec<f16> = km.centroids.iter().map(|&c| f16::from_f64(c)).collect();
    let last = lut.last().copied().unwrap_or(f16::ZERO);
    lut.resize(k, last);
    // Assign against the f16 table actually stored, so rounding the centroids cannot
    // leave a weight on a farther entry. Only distinct codes are looked up.
    let table: Vec<f32> = lut.iter().map(|v| v.to_f32()).collect();
    let mut index_of = vec![0u8; 1 << 16];
    for (&c, &v) in distinct.iter().zip(&values) {
        // `nearest` returns an index below k <= 256.
        index_of[usize::from(c)] = nearest(&table, v as f32) as u8;
    }
    let mut packed = vec![0u8; codes.len() / cols * row_bytes];
    let mut row_idx = vec![0u8; cols];
    for (row, out) in codes
        .chunks_exact(cols)
        .zip(packed.chunks_exact_mut(row_bytes))
    {
        for (ix, &c) in row_idx.iter_mut().zip(row) {
            *ix = index_of[usize::from(zero_key(c))];
        }
        pack_row(&row_idx, bits, out);
    }
    Ok((lut, packed))
}

/// Index of the entry of ascending `lut` nearest to `x` (the lower on a tie), by
/// binary search.
pub(crate) fn nearest_sorted(lut: &[f32], x: f32) -> usize {
    let p = lut.partition_point(|&v| v < x);
    if p == 0 {
        return 0;
    }
    if p == lut.len() {
        return lut.len() - 1;
    }
    if x - lut[p - 1] <= lut[p] - x {
        p - 1
    } else {
        p
    }
}

/// Index of the entry of ascending `table` nearest to `x` (the lower on a tie).
fn nearest(table: &[f32], x: f32) -> usize {
    let mut best = 0;
    for (i, &t) in table.iter().enumerate().skip(1) {
        if (t - x).abs() < (table[best] - x).abs() {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests;
