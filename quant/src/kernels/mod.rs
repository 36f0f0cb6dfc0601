//! Distance kernels: an f32 query (or per-dimension weights folded from one) against
//! stored values or codes.
//!
//! Each kernel comes as a pair:
//!
//! - the fast function (`dot_f32`, `dot_u8`, ...), which picks the best
//!   implementation for this CPU at run time: AVX2 + FMA (+ F16C) on x86-64 when
//!   present, else a portable eight-lane version the compiler vectorises for the
//!   target's baseline. Detection happens once ([`cpu_level`]); nothing depends on
//!   `-C target-cpu=native`, so downstream crates get the fast path too;
//! - its scalar twin (`dot_f32_scalar`, ...), a plain left-to-right loop that defines
//!   what the kernel computes. Property tests compare the two on odd lengths, and every
//!   codec's `reference_scorer` runs the twins.
//!
//! Results of a fast kernel and its twin differ only by float rounding (lanes are
//! summed in another order, FMA rounds once).
//!
//! The fast functions panic when their slices disagree in length: that is a bug in
//! the caller (codecs check user input before it gets here), never a data error.

mod b1_table;
mod dispatch;
mod float8;
mod portable;
mod prefetch;
mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(test)]
mod tests;

use half::{bf16, f16};

pub use b1_table::{b1_table, dot_b1_table};
pub use dispatch::{CpuLevel, cpu_level};
pub use float8::{
    dot_e4m3, dot_e4m3_scalar, dot_e5m2, dot_e5m2_scalar, e4m3_table, e5m2_table, l2sq_e4m3,
    l2sq_e4m3_scalar, l2sq_e5m2, l2sq_e5m2_scalar,
};
pub use prefetch::{prefetch, prefetch_l2};
pub use scalar::{
    dot_b1_scalar, dot_bf16_scalar, dot_f16_scalar, dot_f32_scalar, dot_i8_scalar, dot_lut8_scalar,
    dot_u8_scalar, hamming_scalar, l2sq_bf16_scalar, l2sq_f16_scalar, l2sq_f32_scalar,
    l2sq_lut8_scalar, l2sq_u8_scalar,
};

/// Calls the AVX2 kernel when the CPU has it, else the portable one.
macro_rules! dispatch {
    ($name:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        if cpu_level().avx2_fma_f16c {
            // SAFETY: AVX2, FMA and F16C were detected on this CPU at run time, which is
            // the only requirement of the `avx2` kernels (they bound-check lengths).
            return unsafe { avx2::$name($($arg),*) };
        }
        portable::$name($($arg),*)
    }};
}

#[track_caller]
fn check_len(kernel: &str, a: usize, b: usize) {
    assert_eq!(a, b, "{kernel}: slice lengths differ");
}

/// Inner product `sum a_i * b_i`. Twin: [`dot_f32_scalar`].
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    check_len("dot_f32", a.len(), b.len());
    dispatch!(dot_f32(a, b))
}

/// Squared Euclidean distance `sum (a_i - b_i)^2`. Twin: [`l2sq_f32_scalar`].
pub fn l2sq_f32(a: &[f32], b: &[f32]) -> f32 {
    check_len("l2sq_f32", a.len(), b.len());
    dispatch!(l2sq_f32(a, b))
}

/// Inner product of an f32 query with f16 values. Twin: [`dot_f16_scalar`].
pub fn dot_f16(q: &[f32], x: &[f16]) -> f32 {
    check_len("dot_f16", q.len(), x.len());
    dispatch!(dot_f16(q, x))
}

/// Squared distance of an f32 query to f16 values. Twin: [`l2sq_f16_scalar`].
pub fn l2sq_f16(q: &[f32], x: &[f16]) -> f32 {
    check_len("l2sq_f16", q.len(), x.len());
    dispatch!(l2sq_f16(q, x))
}

/// Inner product of an f32 query with bf16 values. Twin: [`dot_bf16_scalar`].
pub fn dot_bf16(q: &[f32], x: &[bf16]) -> f32 {
    check_len("dot_bf16", q.len(), x.len());
    dispatch!(dot_bf16(q, x))
}

/// Squared distance of an f32 query to bf16 values. Twin: [`l2sq_bf16_scalar`].
pub fn l2sq_bf16(q: &[f32], x: &[bf16]) -> f32 {
    check_len("l2sq_bf16", q.len(), x.len());
    dispatch!(l2sq_bf16(q, x))
}

/// Longest vectors [`dot_i8`] takes: every partial sum of `127^2` products per lane
/// then fits an `i32`.
pub const DOT_I8_MAX_LEN: usize = 1 << 16;

#[track_caller]
fn check_i8_len(kernel: &str, len: usize) {
    assert!(
        len <= DOT_I8_MAX_LEN,
        "{kernel}: {len} values, at most {DOT_I8_MAX_LEN}"
    );
}

/// Exact integer inner product of two signed byte vectors (at most
/// [`DOT_I8_MAX_LEN`] long). Twin: [`dot_i8_scalar`].
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    check_len("dot_i8", a.len(), b.len());
    check_i8_len("dot_i8", a.len());
    #[cfg(target_arch = "x86_64")]
    if cpu_level().avx512_vnni {
        // SAFETY: AVX-512 F, BW and VNNI were detected at run time; the lengths
        // were checked above.
        return unsafe { avx512::dot_i8(a, b) };
    }
    dispatch!(dot_i8(a, b))
}

/// [`dot_i8`] of `q` with every row of `rows` (row-major, `q.len()` values each),
/// into `out`, one per row: a matrix-vector product whose rows are read once
/// (the transform scorer's query rotation). Twin: [`dot_i8_scalar`] per row.
pub fn dot_i8_rows(q: &[i8], rows: &[i8], out: &mut [i32]) {
    check_len("dot_i8_rows", rows.len(), q.len() * out.len());
    check_i8_len("dot_i8_rows", q.len());
    #[cfg(target_arch = "x86_64")]
    if cpu_level().avx512_vnni {
        // SAFETY: AVX-512 F, BW and VNNI were detected at run time; the lengths
        // were checked above.
        return unsafe { avx512::dot_i8_rows(q, rows, out) };
    }
    if q.is_empty() {
        out.fill(0);
        return;
    }
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(q.len())) {
        *o = dot_i8(q, row);
    }
}

/// [`dot_i8`] of `q` with the rows `ids` of `rows` (row-major, `q.len()` values
/// each), into `out`, one per id: the graph builder scores a neighbour list
/// against the point it inserts in one call, four rows per pass over `q`.
/// Twin: [`dot_i8_scalar`] per row.
///
/// Panics when `out` and `ids` differ in length, `rows` is not whole rows, or an
/// id is past the last row.
pub fn dot_i8_gather(q: &[i8], rows: &[i8], ids: &[u32], out: &mut [i32]) {
    check_len("dot_i8_gather", ids.len(), out.len());
    check_i8_len("dot_i8_gather", q.len());
    let n = q.len();
    if n == 0 {
        out.fill(0);
        return;
    }
    assert!(
        rows.len().is_multiple_of(n),
        "dot_i8_gather: {} bytes of rows are not whole rows of {n}",
        rows.len()
    );
    let count = rows.len() / n;
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= count) {
        panic!("dot_i8_gather: row {bad} of {count}");
    }
    #[cfg(target_arch = "x86_64")]
    if cpu_level().avx512_vnni {
        // SAFETY: AVX-512 F, BW and VNNI were detected at run time; the lengths
        // and every id were checked above.
        return unsafe { avx512::dot_i8_gather(q, rows, ids, out) };
    }
    for (o, &id) in out.iter_mut().zip(ids) {
        *o = dot_i8(q, &rows[id as usize * n..][..n]);
    }
}

/// Whether every value is finite, in one pass that vectorises (`0 x` is 0 for a
/// finite `x` and NaN otherwise, so the sum stays 0 only when all are): the check
/// every search request and every query's coarse weights pay.
pub fn all_finite(x: &[f32]) -> bool {
    x.iter().fold(0f32, |a, &v| a + 0.0 * v) == 0.0
}

/// `out[i] = table[idx[i]]`, 0 for an index past the table: the nested palette
/// loader's per-weight lookup in a block's final values. With AVX-512 and at most
/// 16 entries, sixteen lookups per instruction. Twin: [`lookup_f32_scalar`].
pub fn lookup_f32(table: &[f32], idx: &[u8], out: &mut [f32]) {
    check_len("lookup_f32", idx.len(), out.len());
    #[cfg(target_arch = "x86_64")]
    if table.len() <= 16 && cpu_level().avx512_vnni {
        // SAFETY: AVX-512 F (with BW and VNNI) was detected at run time; the table
        // holds at most 16 entries.
        return unsafe { avx512::lookup16_f32(table, idx, out) };
    }
    lookup_f32_scalar(table, idx, out);
}

/// The twin of [`lookup_f32`]: one index at a time.
pub fn lookup_f32_scalar(table: &[f32], idx: &[u8], out: &mut [f32]) {
    for (o, &i) in out.iter_mut().zip(idx) {
        *o = table.get(usize::from(i)).copied().unwrap_or(0.0);
    }
}

/// Rounds `x` to `i8` steps of `max |x| / 127` into `out` (as long as `x`) and
/// returns the step, so `x_i ~ step * out_i` with an error of at most half a step:
/// the form [`dot_i8`] multiplies exactly (the graph builder's rows, the transform
/// scorer's coarse rotation).
pub fn quantize_i8(x: &[f32], out: &mut [i8]) -> f32 {
    check_len("quantize_i8", x.len(), out.len());
    let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let inv = if max > 0.0 { 127.0 / max } else { 0.0 };
    for (o, &v) in out.iter_mut().zip(x) {
        *o = round_half_away(v * inv).clamp(-127, 127) as i8;
    }
    max / 127.0
}

/// `x.round()` as an integer (half away from zero) for `|x| < 2^23`, without the
/// libm call `round` is on the baseline x86-64 target (no rounding instruction):
/// the cast truncates, and the remainder `x - trunc(x)` is exact in f32.
#[inline]
fn round_half_away(x: f32) -> i32 {
    let t = x as i32;
    let rest = x - t as f32;
    t + i32::from(rest >= 0.5) - i32::from(rest <= -0.5)
}

/// Weighted sum of byte codes read as integers: `sum w_i * c_i`.
///
/// With `x_i = offset_i + step_i * c_i` (an affine code) and `w_i = q_i * step_i`,
/// `q . x = q . offset + dot_u8(w, c)`. Twin: [`dot_u8_scalar`].
pub fn dot_u8(w: &[f32], codes: &[u8]) -> f32 {
    check_len("dot_u8", w.len(), codes.len());
    dispatch!(dot_u8(w, codes))
}

/// Weighted squared distance to byte codes: `sum w_i * (a_i - c_i)^2`.
///
/// With `x_i = offset_i + step_i * c_i`, `w_i = step_i^2` and
/// `a_i = (q_i - offset_i) / step_i`, this is `|q - x|^2`. Twin: [`l2sq_u8_scalar`].
pub fn l2sq_u8(w: &[f32], a: &[f32], codes: &[u8]) -> f32 {
    check_len("l2sq_u8", w.len(), codes.len());
    check_len("l2sq_u8", a.len(), codes.len());
    dispatch!(l2sq_u8(w, a, codes))
}

/// Weighted sum of codes decoded through a 256-entry table: `sum w_i * table[c_i]`.
/// For any table (k-means levels, per-query tables); float8 codes have faster
/// dedicated kernels ([`dot_e4m3`], [`dot_e5m2`]). Twin: [`dot_lut8_scalar`].
pub fn dot_lut8(w: &[f32], table: &[f32; 256], codes: &[u8]) -> f32 {
    check_len("dot_lut8", w.len(), codes.len());
    dispatch!(dot_lut8(w, table, codes))
}

/// Weighted squared distance to table-decoded codes: `sum w_i * (a_i - table[c_i])^2`.
/// Twin: [`l2sq_lut8_scalar`].
pub fn l2sq_lut8(w: &[f32], a: &[f32], table: &[f32; 256], codes: &[u8]) -> f32 {
    check_len("l2sq_lut8", w.len(), codes.len());
    check_len("l2sq_lut8", a.len(), codes.len());
    dispatch!(l2sq_lut8(w, a, table, codes))
}

/// Signed sum over packed sign bits: `sum w_i * (+1 if bit i is set else -1)`.
///
/// Bits are packed least significant first (bit `i` is bit `i % 8` of byte `i / 8`);
/// `bits` holds exactly `w.len().div_ceil(8)` bytes. With `w_i = q_i * scale_i` this is
/// the inner product of `q` with the decoded sign vector. Twin: [`dot_b1_scalar`].
pub fn dot_b1(w: &[f32], bits: &[u8]) -> f32 {
    check_len("dot_b1 (bytes)", w.len().div_ceil(8), bits.len());
    dispatch!(dot_b1(w, bits))
}

/// Number of differing bits between two equally long bit strings (`POPCNT` when the
/// CPU has it). Twin: [`hamming_scalar`].
pub fn hamming(a: &[u8], b: &[u8]) -> u32 {
    check_len("hamming", a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if cpu_level().popcnt {
        // SAFETY: POPCNT was detected on this CPU at run time; lengths are checked inside.
        return unsafe { avx2::hamming(a, b) };
    }
    portable::hamming(a, b)
}
