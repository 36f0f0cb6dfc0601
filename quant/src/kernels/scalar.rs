//! The scalar twins: one plain loop per kernel, accumulated left to right in f32.
//!
//! These are the definitions the fast kernels are tested against and what every
//! codec's `reference_scorer` runs. They favour being obviously right over speed;
//! callers check slice lengths (see the dispatching functions in the parent module).

use half::{bf16, f16};

/// Inner product `sum a_i * b_i`.
pub fn dot_f32_scalar(a: &[f32], b: &[f32]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        sum += x * y;
    }
    sum
}

/// Squared Euclidean distance `sum (a_i - b_i)^2`.
pub fn l2sq_f32_scalar(a: &[f32], b: &[f32]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        let d = x - y;
        sum += d * d;
    }
    sum
}

/// Inner product of an f32 query with f16 values.
pub fn dot_f16_scalar(q: &[f32], x: &[f16]) -> f32 {
    let mut sum = 0.0f32;
    for (a, b) in q.iter().zip(x) {
        sum += a * b.to_f32();
    }
    sum
}

/// Squared distance of an f32 query to f16 values.
pub fn l2sq_f16_scalar(q: &[f32], x: &[f16]) -> f32 {
    let mut sum = 0.0f32;
    for (a, b) in q.iter().zip(x) {
        let d = a - b.to_f32();
        sum += d * d;
    }
    sum
}

/// Inner product of an f32 query with bf16 values.
pub fn dot_bf16_scalar(q: &[f32], x: &[bf16]) -> f32 {
    let mut sum = 0.0f32;
    for (a, b) in q.iter().zip(x) {
        sum += a * b.to_f32();
    }
    sum
}

/// Squared distance of an f32 query to bf16 values.
pub fn l2sq_bf16_scalar(q: &[f32], x: &[bf16]) -> f32 {
    let mut sum = 0.0f32;
    for (a, b) in q.iter().zip(x) {
        let d = a - b.to_f32();
        sum += d * d;
    }
    sum
}

/// Integer inner product of two signed byte vectors, left to right in `i64`.
pub fn dot_i8_scalar(a: &[i8], b: &[i8]) -> i64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i64::from(x) * i64::from(y))
        .sum()
}

/// Weighted sum of byte codes read as integers 0..=255: `sum w_i * c_i`.
pub fn dot_u8_scalar(w: &[f32], codes: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (a, &c) in w.iter().zip(codes) {
        sum += a * f32::from(c);
    }
    sum
}

/// Weighted squared distance to byte codes: `sum w_i * (a_i - c_i)^2`.
pub fn l2sq_u8_scalar(w: &[f32], a: &[f32], codes: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for ((wi, ai), &c) in w.iter().zip(a).zip(codes) {
        let d = ai - f32::from(c);
        sum += wi * d * d;
    }
    sum
}

/// Weighted sum of byte codes decoded through a table: `sum w_i * table[c_i]`.
pub fn dot_lut8_scalar(w: &[f32], table: &[f32; 256], codes: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (a, &c) in w.iter().zip(codes) {
        sum += a * table[usize::from(c)];
    }
    sum
}

/// Weighted squared distance to table-decoded codes: `sum w_i * (a_i - table[c_i])^2`.
pub fn l2sq_lut8_scalar(w: &[f32], a: &[f32], table: &[f32; 256], codes: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for ((wi, ai), &c) in w.iter().zip(a).zip(codes) {
        let d = ai - table[usize::from(c)];
        sum += wi * d * d;
    }
    sum
}

/// Signed sum over packed sign bits: `sum w_i * (+1 if bit i is set else -1)`.
///
/// Bit `i` is bit `i % 8` (least significant first) of byte `i / 8`; only the first
/// `w.len()` bits are read.
pub fn dot_b1_scalar(w: &[f32], bits: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (i, wi) in w.iter().enumerate() {
        if bits[i / 8] >> (i % 8) & 1 == 1 {
            sum += wi;
        } else {
            sum -= wi;
        }
    }
    sum
}

/// Number of differing bits between two equally long bit strings.
pub fn hamming_scalar(a: &[u8], b: &[u8]) -> u32 {
    let mut count = 0u32;
    for (x, y) in a.iter().zip(b) {
        count += (x ^ y).count_ones();
    }
    count
}
