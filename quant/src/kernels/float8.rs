//! float8 kernels: an f32 weight vector against E4M3 or E5M2 codes.
//!
//! The decode tables here (built once from the `float8` crate) define the value of
//! every byte; the scalar twins index them. The AVX2 kernels decode arithmetically
//! instead, because a table lookup per byte needs a gather, which is slow on many x86
//! cores: a float8 byte is the top of an f16 bit pattern, so F16C converts eight at a
//! time.
//!
//! - E5M2 has f16's exponent: `f16::from_bits(byte << 8)` is the value, subnormals
//!   included.
//! - E4M3: place the sign at bit 15 and the 7 exponent-and-mantissa bits at bits
//!   7..14; the f16 then has E4M3's exponent field under a bias of 15 instead of 7, so
//!   its value times 2^8 is the E4M3 value, subnormals included.
//!
//! Non-finite patterns never come out of the encoder, which saturates. They still
//! decode to finite values, so a damaged byte cannot make a score NaN, and to the
//! same values in the table and the fast kernels: E4M3's NaN patterns `0x7F`/`0xFF`
//! decode to +-480, the value their bits have in the arithmetic above; E5M2's
//! infinity and NaN patterns (exponent all ones) decode to 0.

use std::sync::OnceLock;

use float8::{F8E4M3, F8E5M2};

use super::portable;

#[cfg(target_arch = "x86_64")]
use super::{avx2, cpu_level};

static E4M3_TABLE: OnceLock<[f32; 256]> = OnceLock::new();
static E5M2_TABLE: OnceLock<[f32; 256]> = OnceLock::new();

/// The value of every E4M3 (FN) byte; `0x7F` and `0xFF` (NaN) are +-480.
pub fn e4m3_table() -> &'static [f32; 256] {
    E4M3_TABLE.get_or_init(|| {
        let mut table = [0f32; 256];
        for (bits, entry) in (0..=u8::MAX).zip(table.iter_mut()) {
            *entry = match bits {
                0x7F => 480.0,
                0xFF => -480.0,
                _ => F8E4M3::from_bits(bits).to_f32(),
            };
        }
        table
    })
}

/// The value of every E5M2 byte; infinity and NaN patterns are 0.
pub fn e5m2_table() -> &'static [f32; 256] {
    E5M2_TABLE.get_or_init(|| {
        let mut table = [0f32; 256];
        for (bits, entry) in (0..=u8::MAX).zip(table.iter_mut()) {
            let v = F8E5M2::from_bits(bits).to_f32();
            *entry = if v.is_finite() { v } else { 0.0 };
        }
        table
    })
}

/// `sum w_i * e4m3(c_i)`. Twin: [`dot_e4m3_scalar`].
pub fn dot_e4m3(w: &[f32], codes: &[u8]) -> f32 {
    super::check_len("dot_e4m3", w.len(), codes.len());
    #[cfg(target_arch = "x86_64")]
    if cpu_level().avx2_fma_f16c {
        // SAFETY: AVX2, FMA and F16C were detected at run time; lengths are handled inside.
        return unsafe { avx2::dot_e4m3(w, codes) };
    }
    portable::dot_lut8(w, e4m3_table(), codes)
}

/// `sum w_i * (a_i - e4m3(c_i))^2`. Twin: [`l2sq_e4m3_scalar`].
pub fn l2sq_e4m3(w: &[f32], a: &[f32], codes: &[u8]) -> f32 {
    super::check_len("l2sq_e4m3", w.len(), codes.len());
    super::check_len("l2sq_e4m3", a.len(), codes.len());
    #[cfg(target_arch = "x86_64")]
    if cpu_level().avx2_fma_f16c {
        // SAFETY: AVX2, FMA and F16C were detected at run time; lengths are handled inside.
        return unsafe { avx2::l2sq_e4m3(w, a, codes) };
    }
    portable::l2sq_lut8(w, a, e4m3_table(), codes)
}

/// `sum w_i * e5m2(c_i)`. Twin: [`dot_e5m2_scalar`].
pub fn dot_e5m2(w: &[f32], codes: &[u8]) -> f32 {
    super::check_len("dot_e5m2", w.len(), codes.len());
    #[cfg(target_arch = "x86_64")]
    if cpu_level().avx2_fma_f16c {
        // SAFETY: AVX2, FMA and F16C were detected at run time; lengths are handled inside.
        return unsafe { avx2::dot_e5m2(w, codes) };
    }
    portable::dot_lut8(w, e5m2_table(), codes)
}

/// `sum w_i * (a_i - e5m2(c_i))^2`. Twin: [`l2sq_e5m2_scalar`].
pub fn l2sq_e5m2(w: &[f32], a: &[f32], codes: &[u8]) -> f32 {
    super::check_len("l2sq_e5m2", w.len(), codes.len());
    super::check_len("l2sq_e5m2", a.len(), codes.len());
    #[cfg(target_arch = "x86_64")]
    if cpu_level().avx2_fma_f16c {
        // SAFETY: AVX2, FMA and F16C were detected at run time; lengths are handled inside.
        return unsafe { avx2::l2sq_e5m2(w, a, codes) };
    }
    portable::l2sq_lut8(w, a, e5m2_table(), codes)
}

/// Scalar twin of [`dot_e4m3`]: a table lookup per byte.
pub fn dot_e4m3_scalar(w: &[f32], codes: &[u8]) -> f32 {
    super::dot_lut8_scalar(w, e4m3_table(), codes)
}

/// Scalar twin of [`l2sq_e4m3`].
pub fn l2sq_e4m3_scalar(w: &[f32], a: &[f32], codes: &[u8]) -> f32 {
    super::l2sq_lut8_scalar(w, a, e4m3_table(), codes)
}

/// Scalar twin of [`dot_e5m2`].
pub fn dot_e5m2_scalar(w: &[f32], codes: &[u8]) -> f32 {
    super::dot_lut8_scalar(w, e5m2_table(), codes)
}

/// Scalar twin of [`l2sq_e5m2`].
pub fn l2sq_e5m2_scalar(w: &[f32], a: &[f32], codes: &[u8]) -> f32 {
    super::l2sq_lut8_scalar(w, a, e5m2_table(), codes)
}
