//! Portable fast kernels: eight independent f32 accumulators over fixed-size chunks,
//! a shape LLVM vectorises for whatever the target's baseline is (SSE2 on x86-64,
//! NEON on aarch64). A strictly left-to-right sum cannot be vectorised because float
//! addition does not associate; splitting it into lanes is what makes the difference.
//!
//! These run where the AVX2 kernels cannot (other architectures, older x86 CPUs).

use half::{bf16, f16};

const LANES: usize = 8;

/// `sum term(a_i, b_i)` in eight lanes plus a left-to-right tail.
#[inline(always)]
fn sum2<A: Copy, B: Copy>(a: &[A], b: &[B], term: impl Fn(A, B) -> f32) -> f32 {
    let ac = a.chunks_exact(LANES);
    let bc = b.chunks_exact(LANES);
    let mut tail = 0.0f32;
    for (&x, &y) in ac.remainder().iter().zip(bc.remainder()) {
        tail += term(x, y);
    }
    let mut acc = [0.0f32; LANES];
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] += term(x[l], y[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `sum term(a_i, b_i, c_i)` in eight lanes plus a left-to-right tail.
#[inline(always)]
fn sum3<A: Copy, B: Copy, C: Copy>(
    a: &[A],
    b: &[B],
    c: &[C],
    term: impl Fn(A, B, C) -> f32,
) -> f32 {
    let ac = a.chunks_exact(LANES);
    let bc = b.chunks_exact(LANES);
    let cc = c.chunks_exact(LANES);
    let mut tail = 0.0f32;
    for ((&x, &y), &z) in ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .zip(cc.remainder())
    {
        tail += term(x, y, z);
    }
    let mut acc = [0.0f32; LANES];
    for ((x, y), z) in ac.zip(bc).zip(cc) {
        for l in 0..LANES {
            acc[l] += term(x[l], y[l], z[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

pub(super) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    sum2(a, b, |x, y| x * y)
}

pub(super) fn l2sq_f32(a: &[f32], b: &[f32]) -> f32 {
    sum2(a, b, |x, y| (x - y) * (x - y))
}

pub(super) fn dot_f16(q: &[f32], x: &[f16]) -> f32 {
    sum2(q, x, |a, b| a * b.to_f32())
}

pub(super) fn l2sq_f16(q: &[f32], x: &[f16]) -> f32 {
    sum2(q, x, |a, b| {
        let d = a - b.to_f32();
        d * d
    })
}

pub(super) fn dot_bf16(q: &[f32], x: &[bf16]) -> f32 {
    sum2(q, x, |a, b| a * b.to_f32())
}

pub(super) fn l2sq_bf16(q: &[f32], x: &[bf16]) -> f32 {
    sum2(q, x, |a, b| {
        let d = a - b.to_f32();
        d * d
    })
}

pub(super) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    // Sixteen i32 lanes: LLVM widens and multiplies them as vectors.
    let ac = a.chunks_exact(16);
    let bc = b.chunks_exact(16);
    let mut tail = 0i32;
    for (&x, &y) in ac.remainder().iter().zip(bc.remainder()) {
        tail += i32::from(x) * i32::from(y);
    }
    let mut acc = [0i32; 16];
    for (x, y) in ac.zip(bc) {
        for l in 0..16 {
            acc[l] += i32::from(x[l]) * i32::from(y[l]);
        }
    }
    acc.iter().sum::<i32>() + tail
}

pub(super) fn dot_u8(w: &[f32], codes: &[u8]) -> f32 {
    sum2(w, codes, |a, c| a * f32::from(c))
}

pub(super) fn l2sq_u8(w: &[f32], a: &[f32], codes: &[u8]) -> f32 {
    sum3(w, a, codes, |wi, ai, c| {
        let d = ai - f32::from(c);
        wi * d * d
    })
}

pub(super) fn dot_lut8(w: &[f32], table: &[f32; 256], codes: &[u8]) -> f32 {
    sum2(w, codes, |a, c| a * table[usize::from(c)])
}

pub(super) fn l2sq_lut8(w: &[f32], a: &[f32], table: &[f32; 256], codes: &[u8]) -> f32 {
    sum3(w, a, codes, |wi, ai, c| {
        let d = ai - table[usize::from(c)];
        wi * d * d
    })
}

pub(super) fn dot_b1(w: &[f32], bits: &[u8]) -> f32 {
    let chunks = w.chunks_exact(LANES);
    let tail_start = w.len() - chunks.remainder().len();
    let mut acc = [0.0f32; LANES];
    for (ws, &byte) in chunks.zip(bits) {
        for l in 0..LANES {
            // Flip the sign bit of w where the code bit is clear: branch-free +-w.
            let flip = u32::from(!byte >> l & 1) << 31;
            acc[l] += f32::from_bits(ws[l].to_bits() ^ flip);
        }
    }
    let mut tail = 0.0f32;
    for (i, wi) in w.iter().enumerate().skip(tail_start) {
        let flip = u32::from(!bits[i / 8] >> (i % 8) & 1) << 31;
        tail += f32::from_bits(wi.to_bits() ^ flip);
    }
    acc.iter().sum::<f32>() + tail
}

pub(super) fn hamming(a: &[u8], b: &[u8]) -> u32 {
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
