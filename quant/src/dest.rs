//! The element types a budget is rebuilt into (f32, IEEE half, bfloat16) and the
//! rounding between them.
//!
//! Every encoding decodes in f32. A 2-byte destination gets each f32 value rounded to
//! nearest, ties to even, exactly as candle's `to_dtype` rounds it (through `half`'s
//! `f16::from_f32` / `bf16::from_f32`), so rebuilding straight into f16 or bf16 gives
//! the bits of rebuilding in f32 and converting, while materialising half the memory
//! (the loader's dominant cost is the kernel clearing fresh pages for the output,
//! [`crate::buffer`]). The kernels decode a row or a chunk into a small f32 scratch
//! that stays in cache ([`Element::fill_via_f32`]) and round it into the output.
//!
//! Fast kernels and their scalar twins (property tests below, every bit-pattern class
//! including NaNs): [`round_bf16`] / [`round_bf16_scalar`], [`copy_f16`] /
//! [`copy_f16_scalar`]; the f16 rounding is `half`'s slice conversion (F16C when the
//! CPU has it, detected at run time), tested against its scalar `from_f32`.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

/// Values per parallel task of the chunked conversions.
const CHUNK: usize = 1 << 16;

/// Where one tensor is rebuilt: a slice of exactly its elements, in the dtype loaded.
#[derive(Debug)]
pub enum Out<'a> {
    /// f32, as decoded.
    F32(&'a mut [f32]),
    /// IEEE half, each value rounded to nearest even from f32.
    F16(&'a mut [f16]),
    /// bfloat16, each value rounded to nearest even from f32.
    Bf16(&'a mut [bf16]),
}

/// `From` a mutable slice or vector of each element type, so
/// [`crate::checkpoint::Reader::rebuild_index_into`] takes any of them.
macro_rules! out_from {
    ($($t:ty => $v:ident),*) => {$(
        impl<'a> From<&'a mut [$t]> for Out<'a> {
            fn from(s: &'a mut [$t]) -> Self {
                Out::$v(s)
            }
        }

        impl<'a> From<&'a mut Vec<$t>> for Out<'a> {
            fn from(s: &'a mut Vec<$t>) -> Self {
                Out::$v(s)
            }
        }
    )*};
}

out_from!(f32 => F32, f16 => F16, bf16 => Bf16);

impl Out<'_> {
    /// Elements the destination holds.
    pub fn len(&self) -> usize {
        match self {
            Out::F32(s) => s.len(),
            Out::F16(s) => s.len(),
            Out::Bf16(s) => s.len(),
        }
    }

    /// Whether the destination holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes `src` (the same length, checked by the caller) rounded into the
    /// destination, in parallel chunks.
    pub(crate) fn fill_from_f32(self, src: &[f32]) {
        match self {
            Out::F32(o) => par_round(src, o),
            Out::F16(o) => par_round(src, o),
            Out::Bf16(o) => par_round(src, o),
        }
    }

    /// Writes little-endian f16 values `b` (`2 * len` bytes, checked by the caller)
    /// into the destination: widened to f32, copied as f16 (NaNs quietened, as the
    /// round trip through f32 does), or rounded to bf16. Parallel chunks; bytes that
    /// are not 2-aligned (or a big-endian host) go one value at a time.
    pub(crate) fn fill_from_f16_le(self, b: &[u8]) {
        let halves: &[f16] = match bytemuck::try_cast_slice(&b[..b.len() & !1]) {
            Ok(h) if cfg!(target_endian = "little") => h,
            _ => {
                let v: Vec<f32> = b
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect();
                return self.fill_from_f32(&v);
            }
        };
        match self {
            Out::F32(o) => o
                .par_chunks_mut(CHUNK)
                .zip(halves.par_chunks(CHUNK))
                .for_each(|(o, h)| {
                    let n = o.len().min(h.len());
                    h[..n].convert_to_f32_slice(&mut o[..n]);
                }),
            Out::F16(o) => o
                .par_chunks_mut(CHUNK)
                .zip(halves.par_chunks(CHUNK))
                .for_each(|(o, h)| copy_f16(h, o)),
            Out::Bf16(o) => o
                .par_chunks_mut(CHUNK)
                .zip(halves.par_chunks(CHUNK))
                .for_each_init(Vec::new, |wide, (o, h)| {
                    let n = o.len().min(h.len());
                    bf16::fill_via_f32(&mut o[..n], wide, |w| h[..n].convert_to_f32_slice(w));
                }),
        }
    }
}

/// An element type the CPU loader rebuilds into.
pub(crate) trait Element: Copy + Send + Sync + bytemuck::Zeroable + 'static {
    /// `src` rounded to nearest even into `dst` (lengths equal; a longer side's tail
    /// is left alone).
    fn round_from_f32(src: &[f32], dst: &mut [Self]);

    /// The destination as an [`Out`].
    // Only the candle loader hands buffers out this way.
    #[cfg_attr(not(feature = "candle"), allow(dead_code))]
    fn out(s: &mut [Self]) -> Out<'_>;

    /// Runs `fill` on f32 values for `out` and rounds them into it: `fill` writes
    /// `out` itself when it is f32, else `scratch` (resized to `out.len()`, reused
    /// across calls).
    fn fill_via_f32(out: &mut [Self], scratch: &mut Vec<f32>, fill: impl FnOnce(&mut [f32])) {
        scratch.resize(out.len(), 0.0);
        fill(scratch);
        Self::round_from_f32(scratch, out);
    }
}

impl Element for f32 {
    fn round_from_f32(src: &[f32], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        dst[..n].copy_from_slice(&src[..n]);
    }

    fn out(s: &mut [f32]) -> Out<'_> {
        Out::F32(s)
    }

    fn fill_via_f32(out: &mut [f32], _: &mut Vec<f32>, fill: impl FnOnce(&mut [f32])) {
        fill(out);
    }
}

impl Element for f16 {
    fn round_from_f32(src: &[f32], dst: &mut [f16]) {
        let n = src.len().min(dst.len());
        dst[..n].convert_from_f32_slice(&src[..n]);
    }

    fn out(s: &mut [f16]) -> Out<'_> {
        Out::F16(s)
    }
}

impl Element for bf16 {
    fn round_from_f32(src: &[f32], dst: &mut [bf16]) {
        round_bf16(src, dst);
    }

    fn out(s: &mut [bf16]) -> Out<'_> {
        Out::Bf16(s)
    }
}

/// `src` rounded into `dst` in parallel chunks (a large embedding is not one long
/// task while the other cores wait).
fn par_round<T: Element>(src: &[f32], dst: &mut [T]) {
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| T::round_from_f32(s, d));
}

/// f32 to bfloat16, round to nearest even, NaNs kept quiet with their high payload:
/// the bits of `bf16::from_f32` ([`round_bf16_scalar`]) without its branches, so the
/// loop vectorises (adding `0x7fff` plus the kept lowest bit carries into the kept
/// bits exactly when the dropped half is above a tie, or a tie with an odd kept part).
/// Compiled twice: for AVX2 (8 lanes, chosen at run time; `std` caches the CPU
/// check) and for the baseline target.
pub(crate) fn round_bf16(src: &[f32], dst: &mut [bf16]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { round_bf16_avx2(src, dst) };
        return;
    }
    round_bf16_lanes(src, dst);
}

/// [`round_bf16_lanes`] compiled for AVX2.
///
/// # Safety
///
/// The CPU must support AVX2 ([`round_bf16`] checks it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn round_bf16_avx2(src: &[f32], dst: &mut [bf16]) {
    round_bf16_lanes(src, dst);
}

/// The body of [`round_bf16`], inlined into each target's copy.
#[inline(always)]
fn round_bf16_lanes(src: &[f32], dst: &mut [bf16]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        let b = x.to_bits();
        let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
        let quiet = ((b >> 16) | 0x0040) as u16;
        let nan = (b & 0x7fff_ffff) > 0x7f80_0000;
        *d = bf16::from_bits(if nan { quiet } else { rounded });
    }
}

/// Scalar twin of [`round_bf16`]: `half`'s conversion, one value at a time (what
/// candle's `to_dtype(BF16)` does).
#[cfg_attr(not(test), allow(dead_code))] // the twin the fast path is tested against
pub(crate) fn round_bf16_scalar(src: &[f32]) -> Vec<bf16> {
    src.iter().map(|&x| bf16::from_f32(x)).collect()
}

/// f16 values copied as they would come back from a round trip through f32: the
/// bits unchanged except that a signalling NaN gets its quiet bit (`0x0200`), as both
/// `half`'s software path and F16C set it.
pub(crate) fn copy_f16(src: &[f16], dst: &mut [f16]) {
    for (d, s) in dst.iter_mut().zip(src) {
        let b = s.to_bits();
        let nan = (b & 0x7c00) == 0x7c00 && (b & 0x03ff) != 0;
        *d = f16::from_bits(if nan { b | 0x0200 } else { b });
    }
}

/// Scalar twin of [`copy_f16`]: widened to f32 and rounded back, one value at a time.
#[cfg_attr(not(test), allow(dead_code))] // the twin the fast path is tested against
pub(crate) fn copy_f16_scalar(src: &[f16]) -> Vec<f16> {
    src.iter().map(|h| f16::from_f32(h.to_f32())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    /// Random f32 bit patterns, biased towards the classes rounding gets wrong:
    /// ties, values near f16's and bf16's overflow and underflow, NaNs, infinities.
    fn tricky_f32s(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..len)
            .map(|_| {
                let b: u32 = rng.random();
                let bits = match rng.random_range(0..8) {
                    0 => b,                               // anything, NaNs included
                    1 => (b & 0xffff_0000) | 0x8000,      // a bf16 tie
                    2 => (b & 0xffff_e000) | 0x1000,      // an f16 tie (normal range)
                    3 => (b & 0x8000_0000) | 0x7f80_0000, // infinity
                    4 => (b & 0x807f_ffff) | 0x7f80_0000, // NaN (or infinity)
                    5 => (b & 0x807f_ffff) | (113 << 23), // f16 subnormal range
                    6 => (b & 0x807f_ffff) | (142 << 23), // near f16's largest finite
                    _ => f32::to_bits(rng.random_range(-4.0f32..4.0)),
                };
                f32::from_bits(bits)
            })
            .collect()
    }

    proptest! {
        /// Every bit-pattern class, odd lengths: the branchless bf16 rounding gives
        /// `half`'s bits.
        #[test]
        fn bf16_rounding_agrees_with_half(
            len in prop::sample::select(vec![0usize, 1, 65, 129, 383, 4099]),
            seed in any::<u64>(),
        ) {
            let src = tricky_f32s(len, seed);
            let mut fast = vec![bf16::ZERO; len];
            round_bf16(&src, &mut fast);
            let bits = |v: &[bf16]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&fast), bits(&round_bf16_scalar(&src)));
        }

        /// `half`'s slice conversion to f16 (F16C when present) gives its scalar bits,
        /// and so does the chunked parallel rounding of a destination.
        #[test]
        fn f16_slice_rounding_agrees_with_the_scalar(
            len in prop::sample::select(vec![0usize, 1, 65, 129, 383, 70_001]),
            seed in any::<u64>(),
        ) {
            let src = tricky_f32s(len, seed);
            let mut fast = vec![f16::ZERO; len];
            Out::F16(&mut fast).fill_from_f32(&src);
            let want: Vec<u16> = src.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
            prop_assert_eq!(fast.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want);
        }

        /// Every f16 bit pattern class, odd lengths, a misaligned start: f16 bytes
        /// into each destination give the bits of widening to f32 then rounding.
        #[test]
        fn f16_bytes_into_every_dtype_agree_with_the_round_trip(
            len in prop::sample::select(vec![0usize, 1, 65, 129, 383, 70_001]),
            offset in 0usize..=1,
            seed in any::<u64>(),
        ) {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let bytes: Vec<u8> = (0..2 * len + offset).map(|_| rng.random()).collect();
            let b = &bytes[offset..];
            let wide: Vec<f32> = b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect();
            let mut f32s = vec![0f32; len];
            Out::F32(&mut f32s).fill_from_f16_le(b);
            let bits32 = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits32(&f32s), bits32(&wide));
            let mut halves = vec![f16::ZERO; len];
            Out::F16(&mut halves).fill_from_f16_le(b);
            let want: Vec<u16> = wide.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
            prop_assert_eq!(halves.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want);
            let mut brains = vec![bf16::ZERO; len];
            Out::Bf16(&mut brains).fill_from_f16_le(b);
            let want: Vec<u16> = wide.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
            prop_assert_eq!(brains.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want);
        }
    }

    /// Every one of the 65,536 f16 patterns: the quietening copy is the round trip.
    #[test]
    fn f16_copy_agrees_with_the_round_trip_on_every_pattern() {
        let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        let mut fast = vec![f16::ZERO; all.len()];
        copy_f16(&all, &mut fast);
        let bits = |v: &[f16]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fast), bits(&copy_f16_scalar(&all)));
    }
}
