//! bfloat16: the top 16 bits of an f32 (8 significant bits, f32's exponent range),
//! rounded to nearest. Values so close to f32's maximum that rounding would overflow
//! saturate to the largest finite bf16.

use half::bf16;
use serde::{Deserialize, Serialize};

use crate::codec::lanes::{LaneKernels, LaneScorer, read_lanes, write_lanes};
use crate::codec::{CodecSpec, ElementSpec, Scorer, VectorCodec};
use crate::kernels;
use crate::metric::Metric;

/// Stores each value as a bf16, 2 bytes per value; the query stays f32.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bf16Codec {
    dim: usize,
}

const KERNELS: LaneKernels<bf16> = LaneKernels {
    dot: kernels::dot_bf16,
    l2sq: kernels::l2sq_bf16,
    dot_scalar: kernels::dot_bf16_scalar,
    l2sq_scalar: kernels::l2sq_bf16_scalar,
};

/// Rounds to the nearest bf16, saturating at the largest finite value.
fn encode(v: f32) -> bf16 {
    bf16::from_f32(v.clamp(bf16::MIN.to_f32(), bf16::MAX.to_f32()))
}

impl Bf16Codec {
    /// A codec for vectors of `dim` values (no fitting needed).
    pub fn new(dim: usize) -> Self {
        Bf16Codec { dim }
    }
}

impl VectorCodec for Bf16Codec {
    fn spec(&self) -> CodecSpec {
        CodecSpec::element(ElementSpec::Bf16)
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn code_len(&self) -> usize {
        self.dim * 2
    }

    fn encode_into(&self, vector: &[f32], code: &mut [u8]) {
        write_lanes(vector, code, encode);
    }

    fn decode_into(&self, code: &[u8], out: &mut [f32]) {
        read_lanes::<bf16>(code, out, bf16::to_f32);
    }

    fn scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_> {
        Box::new(LaneScorer::new(query, metric, KERNELS, true))
    }

    fn reference_scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_> {
        Box::new(LaneScorer::new(query, metric, KERNELS, false))
    }
}
