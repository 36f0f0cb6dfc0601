//! AVX-512 (F, BW, VNNI) kernels: `vpdpbusd` multiply-adds of 64 bytes at a time.

use std::arch::x86_64::*;

/// Exact integer inner product of two signed byte slices of equal length (at
/// most [`super::DOT_I8_MAX_LEN`]).
///
/// `vpdpbusd` multiplies unsigned by signed bytes, so `a` is read as
/// `a + 128` (its sign bit flipped) and `128 sum b` taken back out, by a second
/// multiply-add of `b` with 128. Every partial sum fits `i32`: a lane gathers at
/// most `4 * 255 * 128` per 64 bytes, and the whole sum `sum (a + 128) b` is at
/// most `255 * 128 * 2^16 < 2^31` in size.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let flip = _mm512_set1_epi8(i8::MIN);
    let mut shifted = _mm512_setzero_si512();
    let mut offset = _mm512_setzero_si512();
    let mut i = 0;
    while i < n {
        // The tail loads under a mask: missing bytes read as zero, and a zero
        // byte of `b` adds nothing to either sum.
        let mask: __mmask64 = if n - i >= 64 {
            u64::MAX
        } else {
            (1u64 << (n - i)) - 1
        };
        // SAFETY: the mask covers bytes i..min(i + 64, n) of both slices only.
        let (x, y) = unsafe {
            (
                _mm512_maskz_loadu_epi8(mask, pa.add(i)),
                _mm512_maskz_loadu_epi8(mask, pb.add(i)),
            )
        };
        let ux = _mm512_xor_si512(x, flip);
        shifted = _mm512_dpbusd_epi32(shifted, ux, y);
        offset = _mm512_dpbusd_epi32(offset, flip, y);
        i += 64;
    }
    // Lane by lane, then across: the wrapped lanes add up to the exact total.
    _mm512_reduce_add_epi32(_mm512_sub_epi32(shifted, offset))
}
