//! AVX2 + FMA + F16C kernels for x86-64.
//!
//! Every function here is `unsafe` for one reason only: it must run on a CPU with the
//! features named in its `#[target_feature]`. They are reachable only through the
//! dispatching functions in the parent module, which check [`super::cpu_level`] first.
//! Slice lengths are handled inside (each kernel reads `min` of its inputs' lengths),
//! so no caller can make a load go out of bounds.
//!
//! Shape of each kernel: four 8-lane accumulators over 32 values per iteration (enough
//! independent FMA chains to hide their latency), then single 8-lane blocks, then a
//! scalar tail for the last `n % 8` values.

use std::arch::x86_64::*;

use half::{bf16, f16};

/// Horizontal sum of eight lanes.
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// Runs `$step` (which reads the 8 values at `$i` and returns `$acc` plus their
/// terms) over every full 8-value block of `0..$n`; evaluates to the horizontal sum
/// and the index where the scalar tail starts.
macro_rules! sum_blocks {
    ($n:expr, |$i:ident, $acc:ident| $step:expr) => {{
        let n: usize = $n;
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut $i = 0usize;
        while $i + 32 <= n {
            for k in 0..4 {
                let $acc = acc[k];
                acc[k] = $step;
                $i += 8;
            }
        }
        while $i + 8 <= n {
            let $acc = acc[0];
            acc[0] = $step;
            $i += 8;
        }
        let total = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        (hsum(total), $i)
    }};
}

/// Eight bytes at `p` widened to eight f32 lanes (0..=255).
///
/// # Safety
/// `p` must be valid for reading 8 bytes.
#[target_feature(enable = "avx2,fma")]
unsafe fn load_u8x8(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 8 readable bytes; the load is unaligned.
    _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(p.cast::<__m128i>()) })
}

/// Inner product of two f32 slices.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let (mut sum, tail) = sum_blocks!(n, |i, acc| {
        // SAFETY: i + 8 <= n, so both 8-value loads are in bounds.
        let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
        _mm256_fmadd_ps(x, y, acc)
    });
    for j in tail..n {
        sum += a[j] * b[j];
    }
    sum
}

/// Squared Euclidean distance of two f32 slices.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn l2sq_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let (mut sum, tail) = sum_blocks!(n, |i, acc| {
        // SAFETY: i + 8 <= n, so both 8-value loads are in bounds.
        let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
        let d = _mm256_sub_ps(x, y);
        _mm256_fmadd_ps(d, d, acc)
    });
    for j in tail..n {
        let d = a[j] - b[j];
        sum += d * d;
    }
    sum
}

/// Eight f16 values at `p` converted to f32 with F16C.
///
/// # Safety
/// `p` must be valid for reading 8 values.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_f16x8(p: *const f16) -> __m256 {
    // SAFETY: the caller guarantees 16 readable bytes; the load is unaligned.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast::<__m128i>()) })
}

/// Eight bf16 values at `p` converted to f32: bf16 is the top half of an f32.
///
/// # Safety
/// `p` must be valid for reading 8 values.
#[target_feature(enable = "avx2,fma")]
unsafe fn load_bf16x8(p: *const bf16) -> __m256 {
    // SAFETY: the caller guarantees 16 readable bytes; the load is unaligned.
    let h = unsafe { _mm_loadu_si128(p.cast::<__m128i>()) };
    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
}

/// Inner product of an f32 query with f16 values.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_f16(q: &[f32], x: &[f16]) -> f32 {
    let n = q.len().min(x.len());
    let (pq, px) = (q.as_ptr(), x.as_ptr());
    let (mut sum, tail) = sum_blocks!(n, |i, acc| {
        // SAFETY: i + 8 <= n for both slices.
        let (a, b) = unsafe { (_mm256_loadu_ps(pq.add(i)), load_f16x8(px.add(i))) };
        _mm256_fmadd_ps(a, b, acc)
    });
    for j in tail..n {
        sum += q[j] * x[j].to_f32();
    }
    sum
}

/// Squared distance of an f32 query to f16 values.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn l2sq_f16(q: &[f32], x: &[f16]) -> f32 {
    let n = q.len().min(x.len());
    let (pq, px) = (q.as_ptr(), x.as_ptr());
    let (mut sum, tail) = sum_blocks!(n, |i, acc| {
        // SAFETY: i + 8 <= n for both slices.
        let (a, b) = unsafe { (_mm256_loadu_ps(pq.add(i)), load_f16x8(px.add(i))) };
        let d = _mm256_sub_ps(a, b);
        _mm256_fmadd_ps(d, d, acc)
    });
    for j in tail..n {
        let d = q[j] - x[j].to_f32();
        sum += d * d;
    }
    sum
}

/// Inner product of an f32 query with bf16 values.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dot_bf16(q: &[f32], x: &[bf16]) -> f32 {
    let n = q.len().min(x.len());
    let (pq, px) = (q.as_ptr(), x.as_ptr());
    let (mut sum, tail) = sum_blocks!(n, |i, acc| {
        // SAFETY: i + 8 <= n for both slices.
        let (a, b) = unsafe { (_mm256_loadu_ps(pq.add(i)), load_bf16x8(px.add(i))) };
        _mm256_fmadd_ps(a, b, acc)
    });
    for j in tail..n {
        sum += q[j] * x[j].to_f32();
    }
    sum
}

/// Squared distance of an f32 query to bf16 values.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn l2sq_bf16(q: &[f32], x: &[bf16]) -> f32 {
    let n = q.len().min(x.len());
    let (pq, px) = (q.as_ptr(), x.as_ptr());
    let (mut sum, tail) = sum_blocks!(n, |i, acc| {
        // SAFETY: i + 8 <= n for both slices.
        let (a, b) = unsafe { (_mm256_loadu_ps(pq.add(i)), load_bf16x8(px.add(i))) };
        let d = _mm256_sub_ps(a, b);
        _mm256_fmadd_ps(d, d, acc)
    });
    for j in tail..n {
        let d = q[j] - x[j].to_f32();
        sum += d * d;
    }
    sum
}

/// `sum w_i * c_i` over byte codes.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dot_u8(w: &[f32], codes: &[u8]) -> f32 {
    let n = w.len().min(codes.len());
    let (pw, pc) = (w.as_ptr(), codes.as_ptr());
    let (mut sum, tail) = sum_blocks!(n, |i, acc| {
        // SAFETY: i + 8 <= n for both slices.
        let (a, c) = unsafe { (_mm256_loadu_ps(pw.add(i)), load_u8x8(pc.add(i))) };
        _mm256_fmadd_ps(a, _mm256_cvtepi32_ps(c), acc)
    });
    for j in tail..n {
        sum += w[j] * f32::from(codes[j]);
    }
    sum
}

/// `sum w_i * (a_i - c_i)^2` over byte codes.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn l2sq_u8(w: &[f32], a: &[f32], codes: &[u8]) -> f32 {
    let n = w.len().min(a.len()).min(codes.len());
    let (pw, pa, pc) = (w.as_ptr(), a.as_ptr(), codes.as_ptr());
    let (mut sum, tail) = sum_blocks!(n, |i, acc| {
        // SAFETY: i + 8 <= n for all three slices.
        let (wv, av, c) = unsafe {
            (
                _mm256_loadu_ps(pw.add(i)),
                _mm256_loadu_ps(pa.add(i)),
                load_u8x8(pc.add(i)),
            )
        };
        let d = _mm256_sub_ps(av, _mm256_cvtepi32_ps(c));
        _mm256_fmadd_ps(_mm256_mul_ps(wv, d), d, acc)
    });
    for j in tail..n {
        let d = a[j] - f32::from(codes[j]);
        sum += w[j] * d * d;
    }
    sum
}

/// Eight table entries selected by the eight bytes at `p`.
///
/// # Safety
/// `p` must be valid for reading 8 bytes. The gather cannot leave the table: every
/// index is a byte and the table has 256 entries.
#[target_feature(enable = "avx2,fma")]
unsafe fn gather_lut8(table: &[f32; 256], p: *const u8) -> __m256 {
    // SAFETY: 8 readable bytes per the caller; indices are 0..=255 < table.len().
    unsafe { _mm256_i32gather_ps::<4>(table.as_ptr(), load_u8x8(p)) }
}

/// `sum w_i * table[c_i]`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dot_lut8(w: &[f32], table: &[f32; 256], codes: &[u8]) -> f32 {
    let n = w.len().min(codes.len());
    let (pw, pc) = (w.as_ptr(), codes.as_ptr());
    let (mut sum, tail) = sum_blocks!(n, |i, acc| {
        // SAFETY: i + 8 <= n for both slices.
        let (a, x) = unsafe { (_mm256_loadu_ps(pw.add(i)), gather_lut8(table, pc.add(i))) };
        _mm256_fmadd_ps(a, x, acc)
    });
    for j in tail..n {
        sum += w[j] * table[usize::from(codes[j])];
    }
    sum
}

/// `sum w_i * (a_i - table[c_i])^2`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn l2sq_lut8(w: &[f32], a: &[f32], table: &[f32; 256], codes: &[u8]) -> f32 {
    let n = w.len().min(a.len()).min(codes.len());
    let (pw, pa, pc) = (w.as_ptr(), a.as_ptr(), codes.as_ptr());
    let (mut sum, tail) = sum_blocks!(n, |i, acc| {
        // SAFETY: i + 8 <= n for all three slices.
        let (wv, av, x) = unsafe {
            (
                _mm256_loadu_ps(pw.add(i)),
                _mm256_loadu_ps(pa.add(i)),
                gather_lut8(table, pc.add(i)),
            )
        };
        let d = _mm256_sub_ps(av, x);
        _mm256_fmadd_ps(_mm256_mul_ps(wv, d), d, acc)
    });
    for j in tail..n {
        let d = a[j] - table[usize::from(codes[j])];
        sum += w[j] * d * d;
    }
    sum
}

/// `sum w_i * (+1 if bit i is set else -1)` over LSB-first packed bits.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dot_b1(w: &[f32], bits: &[u8]) -> f32 {
    let n = w.len().min(bits.len() * 8);
    let pw = w.as_ptr();
    // Lane l tests bit l of the broadcast byte.
    let select = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    let sign = _mm256_set1_epi32(i32::MIN);
    let (mut sum, tail) = sum_blocks!(n, |i, acc| {
        // SAFETY: i + 8 <= n <= w.len().
        let wv = unsafe { _mm256_loadu_ps(pw.add(i)) };
        let byte = _mm256_set1_epi32(i32::from(bits[i / 8]));
        let set = _mm256_cmpeq_epi32(_mm256_and_si256(byte, select), select);
        // Flip w's sign bit where the code bit is clear: +-w without a branch.
        let flip = _mm256_castsi256_ps(_mm256_andnot_si256(set, sign));
        _mm256_add_ps(acc, _mm256_xor_ps(wv, flip))
    });
    for (j, wj) in w.iter().enumerate().take(n).skip(tail) {
        if bits[j / 8] >> (j % 8) & 1 == 1 {
            sum += wj;
        } else {
            sum -= wj;
        }
    }
    sum
}

/// Number of differing bits, one `POPCNT` per 64 bits.
///
/// # Safety
/// The CPU must support `POPCNT`.
#[target_feature(enable = "popcnt")]
pub(super) unsafe fn hamming(a: &[u8], b: &[u8]) -> u32 {
    let ac = a.chunks_exact(8);
    let bc = b.chunks_exact(8);
    let mut count = 0u32;
    for (x, y) in ac.remainder().iter().zip(bc.remainder()) {
        count += (x ^ y).count_ones();
    }
    for (x, y) in ac.zip(bc) {
        let mut xa = [0u8; 8];
        let mut ya = [0u8; 8];
        xa.copy_from_slice(x);
        ya.copy_from_slice(y);
        count += (u64::from_le_bytes(xa) ^ u64::from_le_bytes(ya)).count_ones();
    }
    count
}
