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

/// Exact integer inner product of two i8 slices: sixteen bytes at a time widened
/// to i16 and multiplied pairwise into i32 lanes (`vpmaddwd`).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_si256(); 2];
    let mut i = 0;
    while i + 32 <= n {
        for (k, lane) in acc.iter_mut().enumerate() {
            // SAFETY: i + 16 k + 16 <= n, so both 16-byte loads are in bounds.
            let (x, y) = unsafe {
                (
                    _mm_loadu_si128(pa.add(i + 16 * k).cast()),
                    _mm_loadu_si128(pb.add(i + 16 * k).cast()),
                )
            };
            let prod = _mm256_madd_epi16(_mm256_cvtepi8_epi16(x), _mm256_cvtepi8_epi16(y));
            *lane = _mm256_add_epi32(*lane, prod);
        }
        i += 32;
    }
    let total = _mm256_add_epi32(acc[0], acc[1]);
    let half = _mm_add_epi32(
        _mm256_castsi256_si128(total),
        _mm256_extracti128_si256::<1>(total),
    );
    let quad = _mm_add_epi32(half, _mm_shuffle_epi32::<0b01_00_11_10>(half));
    let one = _mm_add_epi32(quad, _mm_shuffle_epi32::<0b10_11_00_01>(quad));
    let mut sum = _mm_cvtsi128_si32(one);
    for j in i..n {
        sum += i32::from(a[j]) * i32::from(b[j]);
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

/// Runs `$step` over every full 16-value block of `0..$n`; `$step` reads the 16
/// values at `$i` and returns `($lo, $hi)` plus the terms of their low and high 8.
/// Evaluates to the horizontal sum and the index where the scalar tail starts.
macro_rules! sum_blocks16 {
    ($n:expr, |$i:ident, $lo:ident, $hi:ident| $step:expr) => {{
        let n: usize = $n;
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut $i = 0usize;
        while $i + 32 <= n {
            for k in [0usize, 2] {
                let ($lo, $hi) = (acc[k], acc[k + 1]);
                (acc[k], acc[k + 1]) = $step;
                $i += 16;
            }
        }
        if $i + 16 <= n {
            let ($lo, $hi) = (acc[0], acc[1]);
            (acc[0], acc[1]) = $step;
            $i += 16;
        }
        let total = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        (hsum(total), $i)
    }};
}

/// Sixteen E4M3 bytes at `p` as f32 values divided by 2^8 (see `kernels::float8`):
/// each byte goes to the top of a 16-bit lane, an arithmetic shift right by one
/// moves exponent and mantissa into f16 position while keeping the sign, and the
/// copy of the sign that lands in bit 14 is cleared.
///
/// # Safety
/// `p` must be valid for reading 16 bytes.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_e4m3x16_div256(p: *const u8) -> (__m256, __m256) {
    // SAFETY: the caller guarantees 16 readable bytes; the load is unaligned.
    let v = unsafe { _mm_loadu_si128(p.cast::<__m128i>()) };
    let zero = _mm_setzero_si128();
    let keep = _mm_set1_epi16(0xBFFF_u16 as i16);
    let lo = _mm_and_si128(_mm_srai_epi16::<1>(_mm_unpacklo_epi8(zero, v)), keep);
    let hi = _mm_and_si128(_mm_srai_epi16::<1>(_mm_unpackhi_epi8(zero, v)), keep);
    (_mm256_cvtph_ps(lo), _mm256_cvtph_ps(hi))
}

/// Sixteen E5M2 bytes at `p` as f32: each byte is the top half of an f16. Patterns
/// with the exponent all ones (infinity, NaN) become 0, as in the table.
///
/// # Safety
/// `p` must be valid for reading 16 bytes.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_e5m2x16(p: *const u8) -> (__m256, __m256) {
    // SAFETY: the caller guarantees 16 readable bytes; the load is unaligned.
    let v = unsafe { _mm_loadu_si128(p.cast::<__m128i>()) };
    let zero = _mm_setzero_si128();
    let exponent = _mm_set1_epi16(0x7C00);
    let finite = |h: __m128i| {
        let special = _mm_cmpeq_epi16(_mm_and_si128(h, exponent), exponent);
        _mm_andnot_si128(special, h)
    };
    let lo = finite(_mm_unpacklo_epi8(zero, v));
    let hi = finite(_mm_unpackhi_epi8(zero, v));
    (_mm256_cvtph_ps(lo), _mm256_cvtph_ps(hi))
}

/// Defines `sum w_i * f8(c_i)` and `sum w_i * (a_i - f8(c_i))^2` for one float8
/// loader, whose values are the format's divided by `$scale` (a power of two, so
/// scaling back is exact); the last `n % 16` values go through `$table`.
macro_rules! float8_kernels {
    ($dot:ident, $l2sq:ident, $load:ident, $scale:expr, $table:path) => {
        /// `sum w_i * f8(c_i)` for this float8 format.
        ///
        /// # Safety
        /// The CPU must support AVX2, FMA and F16C.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn $dot(w: &[f32], codes: &[u8]) -> f32 {
            let n = w.len().min(codes.len());
            let (pw, pc) = (w.as_ptr(), codes.as_ptr());
            let (sum, tail) = sum_blocks16!(n, |i, lo, hi| {
                // SAFETY: i + 16 <= n for both slices.
                let (w0, w1, (x0, x1)) = unsafe {
                    (
                        _mm256_loadu_ps(pw.add(i)),
                        _mm256_loadu_ps(pw.add(i + 8)),
                        $load(pc.add(i)),
                    )
                };
                (_mm256_fmadd_ps(w0, x0, lo), _mm256_fmadd_ps(w1, x1, hi))
            });
            // Scaling the sum instead of every value: exact, a power of two.
            let mut sum = sum * $scale;
            let table = $table();
            for j in tail..n {
                sum += w[j] * table[usize::from(codes[j])];
            }
            sum
        }

        /// `sum w_i * (a_i - f8(c_i))^2` for this float8 format.
        ///
        /// # Safety
        /// The CPU must support AVX2, FMA and F16C.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn $l2sq(w: &[f32], a: &[f32], codes: &[u8]) -> f32 {
            let n = w.len().min(a.len()).min(codes.len());
            let (pw, pa, pc) = (w.as_ptr(), a.as_ptr(), codes.as_ptr());
            let scale = _mm256_set1_ps($scale);
            let (mut sum, tail) = sum_blocks16!(n, |i, lo, hi| {
                // SAFETY: i + 16 <= n for all three slices.
                let (w0, w1, a0, a1, (x0, x1)) = unsafe {
                    (
                        _mm256_loadu_ps(pw.add(i)),
                        _mm256_loadu_ps(pw.add(i + 8)),
                        _mm256_loadu_ps(pa.add(i)),
                        _mm256_loadu_ps(pa.add(i + 8)),
                        $load(pc.add(i)),
                    )
                };
                // a - x * scale: the product is exact, so this rounds once like a - f8.
                let d0 = _mm256_fnmadd_ps(x0, scale, a0);
                let d1 = _mm256_fnmadd_ps(x1, scale, a1);
                (
                    _mm256_fmadd_ps(_mm256_mul_ps(w0, d0), d0, lo),
                    _mm256_fmadd_ps(_mm256_mul_ps(w1, d1), d1, hi),
                )
            });
            let table = $table();
            for j in tail..n {
                let d = a[j] - table[usize::from(codes[j])];
                sum += w[j] * d * d;
            }
            sum
        }
    };
}

float8_kernels!(
    dot_e4m3,
    l2sq_e4m3,
    load_e4m3x16_div256,
    256.0,
    super::float8::e4m3_table
);
float8_kernels!(
    dot_e5m2,
    l2sq_e5m2,
    load_e5m2x16,
    1.0,
    super::float8::e5m2_table
);

/// Lane selectors for the bits of byte `k` of a broadcast 32-bit word: lane `l`
/// holds bit `8k + l`.
#[target_feature(enable = "avx2,fma")]
fn byte_bit_selector(k: u32) -> __m256i {
    let bit = |l: u32| (1u32 << (8 * k + l)) as i32;
    _mm256_setr_epi32(
        bit(0),
        bit(1),
        bit(2),
        bit(3),
        bit(4),
        bit(5),
        bit(6),
        bit(7),
    )
}

/// `sum w_i * (+1 if bit i is set else -1)` over LSB-first packed bits.
///
/// Four code bytes (32 dimensions) per step share one broadcast; each lane tests its
/// bit and flips the sign bit of its weight where the code bit is clear.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dot_b1(w: &[f32], bits: &[u8]) -> f32 {
    let n = w.len().min(bits.len() * 8);
    let pw = w.as_ptr();
    let sign = _mm256_set1_epi32(i32::MIN);
    let select = [
        byte_bit_selector(0),
        byte_bit_selector(1),
        byte_bit_selector(2),
        byte_bit_selector(3),
    ];
    let signed = |wv: __m256, word: __m256i, sel: __m256i| {
        let set = _mm256_cmpeq_epi32(_mm256_and_si256(word, sel), sel);
        _mm256_xor_ps(wv, _mm256_castsi256_ps(_mm256_andnot_si256(set, sign)))
    };
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0usize;
    while i + 32 <= n {
        let b = &bits[i / 8..i / 8 + 4];
        let word = _mm256_set1_epi32(i32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        for k in 0..4 {
            // SAFETY: i + 8k + 8 <= i + 32 <= n <= w.len().
            let wv = unsafe { _mm256_loadu_ps(pw.add(i + 8 * k)) };
            acc[k] = _mm256_add_ps(acc[k], signed(wv, word, select[k]));
        }
        i += 32;
    }
    while i + 8 <= n {
        let word = _mm256_set1_epi32(i32::from(bits[i / 8]));
        // SAFETY: i + 8 <= n <= w.len().
        let wv = unsafe { _mm256_loadu_ps(pw.add(i)) };
        acc[0] = _mm256_add_ps(acc[0], signed(wv, word, select[0]));
        i += 8;
    }
    let total = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut sum = hsum(total);
    for (j, wj) in w.iter().enumerate().take(n).skip(i) {
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
