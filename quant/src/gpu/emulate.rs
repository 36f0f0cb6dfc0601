//! Scalar twins of the CUDA kernels in `kernels/rebuild.cu`: the same tiles, thread
//! mapping, rank chunks, zero padding, byte offsets and operation order, run on the
//! CPU over the same prefix bytes. The CPU tests compare these with the reference
//! rebuild ([`Reader::rebuild_index`](crate::checkpoint::Reader::rebuild_index)),
//! so CI checks the device layout logic without a GPU; the GPU check compares the
//! real kernels with the reference again.

use half::f16;

use super::jobs::{DeviceTensor, RescaleJob, TensorJob};
use crate::palette::scaled::CODE_BITS;

/// Output rows per thread block (`TR` in the kernel).
pub const TILE_ROWS: usize = 64;
/// Output columns per thread block (`TC`).
pub const TILE_COLS: usize = 64;
/// Rank chunk held in shared memory (`KC`).
pub const RANK_CHUNK: usize = 16;
/// Threads along columns (`TX`), each owning 8 columns: one sign byte.
pub const THREADS_X: usize = 8;
/// Threads along rows (`TY`).
pub const THREADS_Y: usize = 32;
const ROWS_PER_THREAD: usize = TILE_ROWS / THREADS_Y;

fn f16_at(base: &[u8], off: usize) -> f32 {
    f16::from_le_bytes([base[off], base[off + 1]]).to_f32()
}

fn f32_at(base: &[u8], off: usize) -> f32 {
    f32::from_le_bytes([base[off], base[off + 1], base[off + 2], base[off + 3]])
}

/// Rebuilds one tensor from `base` (the file prefix) the way the kernels do.
///
/// # Panics
/// If the job's offsets lie outside `base`; [`super::device_jobs`] checks them
/// against the budget's prefix, so this happens only for jobs made for other bytes.
pub fn rebuild(base: &[u8], t: &DeviceTensor) -> Vec<f32> {
    match &t.job {
        TensorJob::F16 { offset, numel } => (0..*numel as usize)
            .map(|e| f16_at(base, *offset as usize + 2 * e))
            .collect(),
        TensorJob::F32 { offset, numel } => (0..*numel as usize)
            .map(|e| f32_at(base, *offset as usize + 4 * e))
            .collect(),
        TensorJob::Palette {
            rows,
            cols,
            bits,
            group_rows,
            luts_offset,
            indices_offset,
        } => palette_decode(
            base,
            *luts_offset as usize,
            *indices_offset as usize,
            *rows,
            *cols,
            *bits,
            *group_rows,
        ),
        TensorJob::NestedPalette {
            rows,
            cols,
            bits,
            group_cols,
            table_offset,
            params_offset,
            codes_offset,
            indices_offset,
            plane_offsets,
            rescale,
        } => nested_palette_decode(
            base,
            &NestedPaletteArgs {
                rows: *rows,
                cols: *cols,
                bits: *bits,
                group_cols: *group_cols,
                table_offset: *table_offset as usize,
                params_offset: *params_offset as usize,
                codes_offset: *codes_offset as usize,
                indices_offset: *indices_offset as usize,
                rescale: *rescale,
            },
            plane_offsets,
        ),
        TensorJob::BitStack {
            rows,
            cols,
            rank,
            block_offsets,
            u_off,
            vt_off,
            scales_offset,
        } => bitstack_rebuild(
            base,
            block_offsets,
            *rows,
            *cols,
            *rank,
            *u_off as usize,
            *vt_off as usize,
            scales_offset.map(|s| s as usize),
        ),
    }
}

/// Twin of kernel `palette_decode`: one "thread" per weight.
pub fn palette_decode(
    base: &[u8],
    luts_off: usize,
    idx_off: usize,
    rows: usize,
    cols: usize,
    bits: u8,
    group_rows: usize,
) -> Vec<f32> {
    let bits = usize::from(bits);
    let rb = (cols * bits).div_ceil(8);
    let k = 1usize << bits;
    let mut out = vec![0f32; rows * cols];
    for i in 0..rows {
        let row = idx_off + i * rb;
        for j in 0..cols {
            let bit = j * bits;
            let mut v = u32::from(base[row + bit / 8]);
            if bit % 8 + bits > 8 {
                v |= u32::from(base[row + bit / 8 + 1]) << 8;
            }
            let ix = (v >> (bit % 8)) as usize & (k - 1);
            out[i * cols + j] = f16_at(base, luts_off + 2 * ((i / group_rows) * k + ix));
        }
    }
    out
}

/// The scalar arguments of kernel `nested_palette_decode` (offsets absolute).
#[derive(Debug, Clone, Copy)]
pub struct NestedPaletteArgs {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Bits per base index.
    pub bits: u8,
    /// Weights per block along a row.
    pub group_cols: usize,
    /// The f16 table looked up.
    pub table_offset: usize,
    /// The f16 pairs `[d, m]` per row.
    pub params_offset: usize,
    /// The packed 6-bit block codes.
    pub codes_offset: usize,
    /// The packed base indices.
    pub indices_offset: usize,
    /// The block correction, if any.
    pub rescale: Option<RescaleJob>,
}

/// The `w`-bit field `k` of a packed LSB-first stream starting at `row` (`w <= 8`):
/// the kernel's `field` (at most two bytes).
fn field(base: &[u8], row: usize, k: usize, w: usize) -> u32 {
    let bit = k * w;
    let mut v = u32::from(base[row + bit / 8]);
    if bit % 8 + w > 8 {
        v |= u32::from(base[row + bit / 8 + 1]) << 8;
    }
    (v >> (bit % 8)) & ((1u32 << w) - 1)
}

/// Twin of kernel `nested_palette_decode`: one "thread" per weight. Multiplies and
/// adds are separate roundings (`__fmul_rn`, `__fadd_rn` in the kernel), as in the
/// CPU rebuild, so both give the same bits.
pub fn nested_palette_decode(base: &[u8], a: &NestedPaletteArgs, planes: &[u64]) -> Vec<f32> {
    let (rows, cols, gc) = (a.rows, a.cols, a.group_cols.max(1));
    let bits = usize::from(a.bits);
    let (rb, pb, nb) = (
        (cols * bits).div_ceil(8),
        cols.div_ceil(8),
        cols.div_ceil(gc),
    );
    let code_bits = usize::from(CODE_BITS);
    let crb = (2 * nb * code_bits).div_ceil(8);
    let mut out = vec![0f32; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            let mut ix = field(base, a.indices_offset + i * rb, j, bits) as usize;
            for &p in planes {
                let byte = base[p as usize + i * pb + j / 8];
                ix = (ix << 1) | usize::from((byte >> (j % 8)) & 1);
            }
            let mut v = f16_at(base, a.table_offset + 2 * ix);
            let b = j / gc;
            if let Some(r) = a.rescale {
                let w = usize::from(r.bits);
                let rrb = (nb * w).div_ceil(8);
                let code = field(base, r.codes_offset as usize + i * rrb, b, w) as usize;
                let f = f16_at(base, r.entries_offset as usize + 4 * code);
                let g = f16_at(base, r.entries_offset as usize + 4 * code + 2);
                v = f * v + g;
            }
            let row = a.codes_offset + i * crb;
            let (cs, co) = (
                field(base, row, 2 * b, code_bits),
                field(base, row, 2 * b + 1, code_bits),
            );
            let d = f16_at(base, a.params_offset + 4 * i);
            let m = f16_at(base, a.params_offset + 4 * i + 2);
            let (s, o) = (d * cs as f32, m * co as f32);
            out[i * cols + j] = s * v + o;
        }
    }
    out
}

/// Twin of kernel `bitstack_rebuild`, thread block by thread block.
// Index loops on purpose: they spell out the kernel's (row, column) arithmetic.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub fn bitstack_rebuild(
    base: &[u8],
    block_offsets: &[u64],
    rows: usize,
    cols: usize,
    rank: usize,
    u_off: usize,
    vt_off: usize,
    scales_off: Option<usize>,
) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    let srb = cols.div_ceil(8);
    for row0 in (0..rows).step_by(TILE_ROWS) {
        for col0 in (0..cols).step_by(TILE_COLS) {
            // Registers of every thread of the block: acc[ty][tx][m][c].
            let mut acc = vec![[[0f32; 8]; ROWS_PER_THREAD]; THREADS_X * THREADS_Y];
            for &boff in block_offsets {
                let blk = boff as usize;
                let mut p = vec![[[0f32; 8]; ROWS_PER_THREAD]; THREADS_X * THREADS_Y];
                for k0 in (0..rank).step_by(RANK_CHUNK) {
                    let kc = RANK_CHUNK.min(rank - k0);
                    // Shared-memory tiles, zero outside the matrix and past `kc`.
                    let mut su = [[0f32; RANK_CHUNK]; TILE_ROWS];
                    let mut svt = [[0f32; TILE_COLS]; RANK_CHUNK];
                    for (rr, su_row) in su.iter_mut().enumerate() {
                        let row = row0 + rr;
                        for (kk, x) in su_row.iter_mut().enumerate().take(kc) {
                            if row < rows {
                                *x = f16_at(base, blk + u_off + 2 * (row * rank + k0 + kk));
                            }
                        }
                    }
                    for (kk, svt_row) in svt.iter_mut().enumerate().take(kc) {
                        for (cc, x) in svt_row.iter_mut().enumerate() {
                            let col = col0 + cc;
                            if col < cols {
                                *x = f16_at(base, blk + vt_off + 2 * ((k0 + kk) * cols + col));
                            }
                        }
                    }
                    for (t, pt) in p.iter_mut().enumerate() {
                        let (ty, tx) = (t / THREADS_X, t % THREADS_X);
                        for kk in 0..kc {
                            for (m, pm) in pt.iter_mut().enumerate() {
                                let uu = su[ty + THREADS_Y * m][kk];
                                for (c, x) in pm.iter_mut().enumerate() {
                                    *x = uu.mul_add(svt[kk][tx * 8 + c], *x);
                                }
                            }
                        }
                    }
                }
                for (t, (at, pt)) in acc.iter_mut().zip(&p).enumerate() {
                    let (ty, tx) = (t / THREADS_X, t % THREADS_X);
                    let c0 = col0 + tx * 8;
                    if c0 >= cols {
                        continue;
                    }
                    for m in 0..ROWS_PER_THREAD {
                        let row = row0 + ty + THREADS_Y * m;
                        if row >= rows {
                            continue;
                        }
                        let byte = u32::from(base[blk + row * srb + c0 / 8]);
                        for c in 0..8 {
                            let flip = ((byte >> c) & 1) << 31;
                            at[m][c] += f32::from_bits(pt[m][c].to_bits() ^ flip);
                        }
                    }
                }
            }
            for (t, at) in acc.iter().enumerate() {
                let (ty, tx) = (t / THREADS_X, t % THREADS_X);
                let c0 = col0 + tx * 8;
                for m in 0..ROWS_PER_THREAD {
                    let row = row0 + ty + THREADS_Y * m;
                    if row >= rows {
                        continue;
                    }
                    for c in 0..8 {
                        let col = c0 + c;
                        if col >= cols {
                            continue;
                        }
                        let v = match scales_off {
                            Some(s) => at[m][c] * (1.0 / f32_at(base, s + 4 * col)),
                            None => at[m][c],
                        };
                        out[row * cols + col] = v;
                    }
                }
            }
        }
    }
    out
}
