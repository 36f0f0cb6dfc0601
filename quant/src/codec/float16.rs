//! IEEE half precision: each value rounded to the nearest f16 (11 significant bits).
//! Values beyond the format's range (+-65504) saturate to its largest finite value
//! rather than become infinite, so a stored code can never make a score NaN.

use half::f16;
use serde::{Deserialize, Serialize};

use crate::codec::lanes::{LaneKernels, LaneScorer, read_lanes, write_lanes};
use crate::codec::{CodecSpec, ElementSpec, Scorer, VectorCodec};
use crate::kernels;
use crate::metric::Metric;

/// Stores each value as an f16, 2 bytes per value; the query stays f32.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct F16Codec {
    dim: usize,
}

const KERNELS: LaneKernels<f16> = LaneKernels {
    dot: kernels::dot_f16,
    l2sq: kernels::l2sq_f16,
    dot_scalar: kernels::dot_f16_scalar,
    l2sq_scalar: kernels::l2sq_f16_scalar,
};

/// Rounds to the nearest f16, saturating at the largest finite value.
fn encode(v: f32) -> f16 {
    f16::from_f32(v.clamp(f16::MIN.to_f32(), f16::MAX.to_f32()))
}

impl F16Codec {
    /// A codec for vectors of `dim` values (no fitting needed).
    pub fn new(dim: usize) -> Self {
        F16Codec { dim }
    }
}

impl VectorCodec for F16Codec {
    fn spec(&self) -> CodecSpec {
        CodecSpec::element(ElementSpec::F16)
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
        read_lanes::<f16>(code, out, f16::to_f32);
    }

    fn scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_> {
        Box::new(LaneScorer::new(query, metric, KERNELS, true))
    }

    fn reference_scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_> {
        Box::new(LaneScorer::new(query, metric, KERNELS, false))
    }
}
