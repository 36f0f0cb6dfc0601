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

/// [`dot_i8`] of `q` with every row of `rows` (row-major, `q.len()` each), four
/// rows per pass over `q`, into `out` (one per row).
///
/// Here the rows' sign bits are flipped (`row + 128`, unsigned) and `128 sum q`,
/// the same for every row, is taken back out once, so a 64-byte step is one load,
/// one xor and one `vpdpbusd` per row; the bounds of [`dot_i8`] hold as they are.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI; `q.len()` is at most
/// [`super::DOT_I8_MAX_LEN`] and `rows.len() == q.len() * out.len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn dot_i8_rows(q: &[i8], rows: &[i8], out: &mut [i32]) {
    let n = q.len();
    assert_eq!(
        rows.len(),
        n * out.len(),
        "dot_i8_rows: rows do not fit the output"
    );
    // SAFETY: row r of `out` starts at r * n, within `rows` (its length was
    // checked); the CPU features were required above.
    unsafe { dot_i8_rows_at(q, rows, |r| r * n, out) }
}

/// [`dot_i8`] of `q` with the rows `ids` of `rows` (row-major, `q.len()` each),
/// into `out` (one per id): [`dot_i8_rows`]'s passes over rows gathered by index
/// (a graph insertion scoring a list's neighbours against the new point).
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI; `q.len()` is at most
/// [`super::DOT_I8_MAX_LEN`], `ids.len() == out.len()` and every row `ids[r]`
/// lies within `rows`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn dot_i8_gather(q: &[i8], rows: &[i8], ids: &[u32], out: &mut [i32]) {
    let n = q.len();
    // SAFETY: the caller keeps every row ids[r] within `rows`.
    unsafe { dot_i8_rows_at(q, rows, |r| ids[r] as usize * n, out) }
}

/// The passes of [`dot_i8_rows`] and [`dot_i8_gather`]: row `r` of the output
/// starts at byte `start(r)` of `rows`. Four rows per pass over `q`; the rows'
/// sign bits are flipped (`row + 128`, unsigned) and `128 sum q`, the same for
/// every row, is taken back out once, so a 64-byte step is one load, one xor and
/// one `vpdpbusd` per row; the bounds of [`dot_i8`] hold as they are.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI; `q.len()` is at most
/// [`super::DOT_I8_MAX_LEN`]; `start(r) + q.len() <= rows.len()` for every
/// `r < out.len()`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn dot_i8_rows_at(q: &[i8], rows: &[i8], start: impl Fn(usize) -> usize, out: &mut [i32]) {
    let n = q.len();
    let flip = _mm512_set1_epi8(i8::MIN);
    let sum_q: i32 = q.iter().map(|&v| i32::from(v)).sum();
    let offset = sum_q.wrapping_mul(128);
    let mask_at = |i: usize| -> __mmask64 {
        if n - i >= 64 {
            u64::MAX
        } else {
            (1u64 << (n - i)) - 1
        }
    };
    let (pq, pr) = (q.as_ptr(), rows.as_ptr());
    let mut blocks = out.chunks_exact_mut(4);
    let mut r = 0;
    for block in &mut blocks {
        let at = [start(r), start(r + 1), start(r + 2), start(r + 3)];
        let mut acc = [_mm512_setzero_si512(); 4];
        let mut i = 0;
        while i < n {
            let mask = mask_at(i);
            // SAFETY: the mask covers bytes i..min(i + 64, n) of `q` and of the
            // four rows, which `rows` holds (the caller's contract).
            unsafe {
                let y = _mm512_maskz_loadu_epi8(mask, pq.add(i));
                for (a, &s) in acc.iter_mut().zip(&at) {
                    let x = _mm512_maskz_loadu_epi8(mask, pr.add(s + i));
                    *a = _mm512_dpbusd_epi32(*a, _mm512_xor_si512(x, flip), y);
                }
            }
            i += 64;
        }
        for (o, a) in block.iter_mut().zip(acc) {
            *o = _mm512_reduce_add_epi32(a).wrapping_sub(offset);
        }
        r += 4;
    }
    for o in blocks.into_remainder() {
        let s = start(r);
        // SAFETY: row r lies within `rows`; the CPU features were required above.
        *o = unsafe { dot_i8(q, &rows[s..s + n]) };
        r += 1;
    }
}

/// [`super::lookup_f32`] for tables of at most 16 entries: sixteen indices widened
/// to lanes and looked up in one register by `vpermps`, lanes whose index is past
/// the table zeroed under a mask.
///
/// # Safety
/// The CPU must support AVX-512 F; `table.len() <= 16`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn lookup16_f32(table: &[f32], idx: &[u8], out: &mut [f32]) {
    let n = idx.len().min(out.len());
    let len = table.len().min(16);
    let tmask = ((1u32 << len) - 1) as __mmask16;
    // SAFETY: the mask covers table[..len] only.
    let t = unsafe { _mm512_maskz_loadu_ps(tmask, table.as_ptr()) };
    let limit = _mm512_set1_epi32(len as i32);
    let (pi, po) = (idx.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n, within both slices.
        unsafe {
            let ix = _mm512_cvtepu8_epi32(_mm_loadu_si128(pi.add(i).cast()));
            let inside = _mm512_cmplt_epu32_mask(ix, limit);
            _mm512_storeu_ps(po.add(i), _mm512_maskz_permutexvar_ps(inside, ix, t));
        }
        i += 16;
    }
    for j in i..n {
        out[j] = table.get(usize::from(idx[j])).copied().unwrap_or(0.0);
    }
}
