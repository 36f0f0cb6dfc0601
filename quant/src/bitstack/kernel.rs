//! The BitStack block kernels: packing residual signs, and accumulating
//! `out += S * (u vt)` for one block.
//!
//! The fast kernel computes `u vt` a panel of rows at a time with faer's matrix
//! multiply (runtime-dispatched SIMD), then applies the signs by flipping the f32
//! sign bit with an XOR, which keeps the inner loop branch-free. Panels run in
//! parallel on the rayon pool. [`accumulate_signed_product_scalar`] is its
//! obviously-correct twin.

use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

/// Bytes per row of packed signs: rows start on a byte boundary.
pub fn sign_row_bytes(cols: usize) -> usize {
    cols.div_ceil(8)
}

/// Packs the signs of a row-major `rows x cols` matrix: bit `j % 8` of byte
/// `i * sign_row_bytes(cols) + j / 8` is set when `w[i][j] < 0`. Zero (and `-0.0`)
/// count as positive, as in the reference. Padding bits are zero.
///
/// # Panics
/// If `w.len() != rows * cols`.
pub fn pack_signs(w: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    assert_eq!(w.len(), rows * cols, "pack_signs: matrix length");
    let rb = sign_row_bytes(cols);
    let mut out = vec![0u8; rows * rb];
    if cols == 0 {
        return out;
    }
    for (row, bytes) in w.chunks_exact(cols).zip(out.chunks_exact_mut(rb.max(1))) {
        for (chunk, byte) in row.chunks(8).zip(bytes.iter_mut()) {
            *byte = chunk
                .iter()
                .enumerate()
                .fold(0u8, |acc, (b, &x)| acc | (u8::from(x < 0.0) << b));
        }
    }
    out
}

/// Rows per panel: about 64 Ki floats of `u vt`, so a panel stays in L2 cache.
fn panel_rows(cols: usize) -> usize {
    (65_536 / cols.max(1)).max(1)
}

fn check_lengths(
    out: &[f32],
    rows: usize,
    cols: usize,
    signs: &[u8],
    u: &[f32],
    vt: &[f32],
    rank: usize,
) {
    assert_eq!(out.len(), rows * cols, "signed product: output length");
    assert_eq!(
        signs.len(),
        rows * sign_row_bytes(cols),
        "signed product: sign bytes"
    );
    assert_eq!(u.len(), rows * rank, "signed product: u length");
    assert_eq!(vt.len(), rank * cols, "signed product: vt length");
}

/// `out += S * (u vt)` for one block: `out` is `rows x cols` row-major, `signs` as
/// [`pack_signs`] writes them, `u` is `rows x rank` and `vt` is `rank x cols`, both
/// row-major. To subtract a block, pass `-u`.
///
/// # Panics
/// If a slice length does not match the shape (callers holding file data check
/// first, see [`super::Rebuilder::add_block`]).
pub fn accumulate_signed_product(
    out: &mut [f32],
    rows: usize,
    cols: usize,
    signs: &[u8],
    u: &[f32],
    vt: &[f32],
    rank: usize,
) {
    check_lengths(out, rows, cols, signs, u, vt, rank);
    if rows == 0 || cols == 0 || rank == 0 {
        return;
    }
    let rb = sign_row_bytes(cols);
    let pr = panel_rows(cols);
    let vt_m = MatRef::from_row_major_slice(vt, rank, cols);
    out.par_chunks_mut(pr * cols)
        .zip(signs.par_chunks(pr * rb))
        .zip(u.par_chunks(pr * rank))
        .for_each(|((out_p, signs_p), u_p)| {
            let n = out_p.len() / cols;
            let mut prod = vec![0f32; n * cols];
            let u_m = MatRef::from_row_major_slice(u_p, n, rank);
            let prod_m = MatMut::from_row_major_slice_mut(&mut prod, n, cols);
            // Sequential inside a panel: the panels are already spread over the pool.
            faer::linalg::matmul::matmul(prod_m, Accum::Replace, u_m, vt_m, 1.0f32, Par::Seq);
            for ((o_row, p_row), s_row) in out_p
                .chunks_exact_mut(cols)
                .zip(prod.chunks_exact(cols))
                .zip(signs_p.chunks_exact(rb))
            {
                apply_signs_row(o_row, p_row, s_row);
            }
        });
}

/// `o += sign * p` by XOR-ing each product's sign bit with the packed bit.
#[inline]
fn apply_signs_row(o: &mut [f32], p: &[f32], s: &[u8]) {
    let tail_byte = s.get(o.len() / 8).copied();
    let mut o8 = o.chunks_exact_mut(8);
    let mut p8 = p.chunks_exact(8);
    for ((oc, pc), &byte) in (&mut o8).zip(&mut p8).zip(s) {
        let byte = u32::from(byte);
        for b in 0..8 {
            let flip = ((byte >> b) & 1) << 31;
            oc[b] += f32::from_bits(pc[b].to_bits() ^ flip);
        }
    }
    let (ot, pt) = (o8.into_remainder(), p8.remainder());
    if let Some(byte) = tail_byte {
        for (b, (x, y)) in ot.iter_mut().zip(pt).enumerate() {
            let flip = ((u32::from(byte) >> b) & 1) << 31;
            *x += f32::from_bits(y.to_bits() ^ flip);
        }
    }
}

/// Scalar twin of [`accumulate_signed_product`]: a triple loop with an explicit
/// sign per element.
///
/// # Panics
/// If a slice length does not match the shape.
pub fn accumulate_signed_product_scalar(
    out: &mut [f32],
    rows: usize,
    cols: usize,
    signs: &[u8],
    u: &[f32],
    vt: &[f32],
    rank: usize,
) {
    check_lengths(out, rows, cols, signs, u, vt, rank);
    let rb = sign_row_bytes(cols);
    for i in 0..rows {
        for j in 0..cols {
            let mut p = 0f32;
            for r in 0..rank {
                p += u[i * rank + r] * vt[r * cols + j];
            }
            let negative = (signs[i * rb + j / 8] >> (j % 8)) & 1 == 1;
            out[i * cols + j] += if negative { -p } else { p };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn signs_pack_lsb_first_with_zero_positive() {
        let w = [-1.0, 0.0, -0.0, 2.0, -3.0, 1.0, 1.0, 1.0, -5.0, 1.0];
        assert_eq!(pack_signs(&w, 1, 10), vec![0b0001_0001, 0b0000_0001]);
        let w2 = [-1.0, 1.0, 1.0, -1.0];
        assert_eq!(pack_signs(&w2, 2, 2), vec![0b01, 0b10]);
    }

    fn case(
        rows: usize,
        cols: usize,
        rank: usize,
        seed: u64,
    ) -> (Vec<f32>, Vec<u8>, Vec<f32>, Vec<f32>) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
        let out = draw(rows * cols);
        let signs_src = draw(rows * cols);
        let u = draw(rows * rank);
        let vt = draw(rank * cols);
        (out, pack_signs(&signs_src, rows, cols), u, vt)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn fast_matches_scalar(
            rows in prop::sample::select(vec![1usize, 7, 65, 129, 383]),
            cols in prop::sample::select(vec![1usize, 7, 65, 129, 383]),
            rank in 0usize..6,
            seed in any::<u64>(),
        ) {
            let (out, signs, u, vt) = case(rows, cols, rank, seed);
            let mut fast = out.clone();
            let mut slow = out;
            accumulate_signed_product(&mut fast, rows, cols, &signs, &u, &vt, rank);
            accumulate_signed_product_scalar(&mut slow, rows, cols, &signs, &u, &vt, rank);
            for (a, b) in fast.iter().zip(&slow) {
                prop_assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }
}
