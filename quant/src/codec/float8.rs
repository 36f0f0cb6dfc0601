//! float8 (OCP 8-bit floating point, as in NVIDIA's `cuda_fp8.h`): the E4M3 (FN)
//! and E5M2 formats, and the plain-cast codec that stores each value as one of them.
//!
//! Encoding uses the `float8` crate (round to nearest even, saturating at the
//! largest finite value). Decoding goes through a 256-entry f32 table per format,
//! built once ([`kernels::e4m3_table`]); the scoring kernels decode the same values
//! arithmetically with F16C (see `kernels::float8`).
//!
//! Facts of the formats (not of the crate's constants, which are off: its
//! `F8E4M3::MAX` says 416 and its `INFINITY` values are finite numbers):
//!
//! | format | largest finite | smallest normal | smallest subnormal | significant bits |
//! |---|---|---|---|---|
//! | E4M3 | 448 | 2^-6 | 2^-9 | 4 |
//! | E5M2 | 57344 | 2^-14 | 2^-16 | 3 |
//!
//! Non-finite bit patterns are never produced by the encoder (it saturates); they
//! decode to finite values so a damaged byte cannot turn a score into NaN (E4M3's
//! NaN patterns to +-480, E5M2's infinity and NaN patterns to 0; see
//! `kernels::float8`).

use float8::{F8E4M3, F8E5M2};
use serde::{Deserialize, Serialize};

use crate::codec::affine::{AffineScorer, Levels};
use crate::codec::{CodecSpec, ElementSpec, Scorer, VectorCodec};
use crate::kernels;
use crate::metric::Metric;

/// One of the two float8 formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Float8Format {
    /// 4 exponent bits, 3 mantissa bits, no infinities (the "FN" variant).
    E4m3,
    /// 5 exponent bits, 2 mantissa bits (IEEE-like, with infinities and NaNs).
    E5m2,
}

impl Float8Format {
    /// The largest finite value: 448 (E4M3) or 57344 (E5M2).
    pub const fn max_finite(self) -> f32 {
        match self {
            Float8Format::E4m3 => 448.0,
            Float8Format::E5m2 => 57344.0,
        }
    }

    /// The smallest positive normal value: 2^-6 (E4M3) or 2^-14 (E5M2).
    pub const fn min_normal(self) -> f32 {
        match self {
            Float8Format::E4m3 => 1.0 / 64.0,
            Float8Format::E5m2 => 1.0 / 16384.0,
        }
    }

    /// Rounds `x` to the nearest value of the format (ties to even), saturating at
    /// +-[`Float8Format::max_finite`]; returns the bit pattern. `x` must not be NaN.
    pub fn encode(self, x: f32) -> u8 {
        match self {
            Float8Format::E4m3 => F8E4M3::from_f32(x).to_bits(),
            Float8Format::E5m2 => F8E5M2::from_f32(x).to_bits(),
        }
    }

    /// The value of every bit pattern, built on first use.
    pub fn decode_table(self) -> &'static [f32; 256] {
        match self {
            Float8Format::E4m3 => kernels::e4m3_table(),
            Float8Format::E5m2 => kernels::e5m2_table(),
        }
    }

    /// The value of one bit pattern.
    pub fn decode(self, bits: u8) -> f32 {
        self.decode_table()[usize::from(bits)]
    }

    /// The plain-cast element type of this format.
    pub const fn element(self) -> ElementSpec {
        match self {
            Float8Format::E4m3 => ElementSpec::E4m3,
            Float8Format::E5m2 => ElementSpec::E5m2,
        }
    }

    /// The centred-and-scaled element type of this format.
    pub const fn scaled_element(self) -> ElementSpec {
        match self {
            Float8Format::E4m3 => ElementSpec::E4m3Scaled,
            Float8Format::E5m2 => ElementSpec::E5m2Scaled,
        }
    }
}

/// Each value cast to float8 as is, one byte per value. Values near zero lose
/// precision to subnormals (below 2^-6 for E4M3), values beyond the format's range
/// saturate; [`crate::codec::scaled_float8::ScaledFloat8Codec`] fits the range to the data instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Float8Codec {
    dim: usize,
    format: Float8Format,
}

impl Float8Codec {
    /// A plain-cast codec for vectors of `dim` values (no fitting needed).
    pub fn new(dim: usize, format: Float8Format) -> Self {
        Float8Codec { dim, format }
    }

    /// The float8 format.
    pub fn format(&self) -> Float8Format {
        self.format
    }
}

impl VectorCodec for Float8Codec {
    fn spec(&self) -> CodecSpec {
        CodecSpec::element(self.format.element())
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn code_len(&self) -> usize {
        self.dim
    }

    fn encode_into(&self, vector: &[f32], code: &mut [u8]) {
        for (c, &v) in code.iter_mut().zip(vector) {
            *c = self.format.encode(v);
        }
    }

    fn decode_into(&self, code: &[u8], out: &mut [f32]) {
        let table = self.format.decode_table();
        for (o, &c) in out.iter_mut().zip(code) {
            *o = table[usize::from(c)];
        }
    }

    fn scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_> {
        let levels = Levels::Float8(self.format);
        Box::new(AffineScorer::new(query, metric, None, None, levels, true))
    }

    fn reference_scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_> {
        let levels = Levels::Float8(self.format);
        Box::new(AffineScorer::new(query, metric, None, None, levels, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::check_batch;

    #[test]
    fn e4m3_edges() {
        let f = Float8Format::E4m3;
        // The format's largest finite value is 448 (0x7E), whatever the crate's MAX says.
        assert_eq!(f.encode(448.0), 0x7E);
        assert_eq!(f.decode(0x7E), 448.0);
        assert_eq!(f.encode(-448.0), 0xFE);
        assert_eq!(f.decode(0xFE), -448.0);
        // Above the range saturates instead of becoming NaN (0x7F).
        for big in [449.0, 464.0, 500.0, 1e9, f32::MAX] {
            assert_eq!(f.encode(big), 0x7E, "{big}");
            assert_eq!(f.encode(-big), 0xFE, "{big}");
        }
        // Subnormals: the smallest is 2^-9; exact multiples of it round-trip.
        let tiny = 2f32.powi(-9);
        assert_eq!(f.encode(tiny), 0x01);
        assert_eq!(f.decode(0x01), tiny);
        assert_eq!(f.decode(f.encode(3.0 * tiny)), 3.0 * tiny);
        assert_eq!(f.decode(0x07), 7.0 * tiny, "largest subnormal");
        assert_eq!(f.decode(0x08), f.min_normal(), "smallest normal");
        // Half the smallest subnormal ties to even (zero); a bit more rounds up.
        assert_eq!(f.decode(f.encode(0.5 * tiny)), 0.0);
        assert_eq!(f.decode(f.encode(0.6 * tiny)), tiny);
        assert_eq!(f.decode(f.encode(1e-30)), 0.0);
        // Three significant bits: 1.0625 ties to 1.0, 1.07 rounds to 1.125.
        assert_eq!(f.decode(f.encode(1.0625)), 1.0);
        assert_eq!(f.decode(f.encode(1.07)), 1.125);
    }

    #[test]
    fn e5m2_edges() {
        let f = Float8Format::E5m2;
        assert_eq!(f.encode(57344.0), 0x7B);
        assert_eq!(f.decode(0x7B), 57344.0);
        assert_eq!(f.decode(f.encode(-57344.0)), -57344.0);
        for big in [60000.0, 61440.0, 1e9, f32::MAX] {
            assert_eq!(f.decode(f.encode(big)), 57344.0, "{big}");
            assert_eq!(f.decode(f.encode(-big)), -57344.0, "{big}");
        }
        let tiny = 2f32.powi(-16);
        assert_eq!(f.encode(tiny), 0x01);
        assert_eq!(f.decode(0x01), tiny);
        assert_eq!(f.decode(0x04), f.min_normal());
    }

    #[test]
    fn tables_are_finite_monotonic_and_invert_the_encoder() {
        for f in [Float8Format::E4m3, Float8Format::E5m2] {
            let table = f.decode_table();
            assert!(table.iter().all(|v| v.is_finite()));
            // Positive patterns up to the largest finite are strictly increasing, and
            // negative patterns mirror them.
            let top = usize::from(f.encode(f.max_finite()));
            assert!(table[..=top].windows(2).all(|w| w[0] < w[1]), "{f:?}");
            for b in 0..=top {
                assert_eq!(table[b | 0x80], -table[b]);
                // Every finite value encodes back to its own pattern.
                assert_eq!(usize::from(f.encode(table[b])), b, "{f:?} {b:#x}");
            }
            assert_eq!(table[top], f.max_finite());
        }
        // Non-finite patterns decode finite (never produced by the encoder).
        assert_eq!(Float8Format::E4m3.decode(0x7F), 480.0);
        assert_eq!(Float8Format::E5m2.decode(0x7C), 0.0);
        assert_eq!(Float8Format::E5m2.decode(0xFE), 0.0);
    }

    #[test]
    fn codec_round_trips_representable_values_exactly() {
        let codec = Float8Codec::new(5, Float8Format::E4m3);
        let v = [448.0, -448.0, 2f32.powi(-9), 0.0, 1.5];
        check_batch("test vector", &v, 5).expect("finite");
        let code = codec.encode(&v).expect("encode");
        assert_eq!(code, [0x7E, 0xFE, 0x01, 0x00, 0x3C]);
        assert_eq!(codec.decode(&code).expect("decode"), v);
        let saturated = codec
            .encode(&[1000.0, -1000.0, 0.0, 0.0, 0.0])
            .expect("encode");
        assert_eq!(&saturated[..2], &[0x7E, 0xFE]);
    }
}
