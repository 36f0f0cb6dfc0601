//! The exact baseline: each value stored as a little-endian f32.

use serde::{Deserialize, Serialize};

use crate::codec::lanes::{LaneKernels, LaneScorer, read_lanes, write_lanes};
use crate::codec::{CodecSpec, ElementSpec, Scorer, VectorCodec};
use crate::kernels;
use crate::metric::Metric;

/// Stores vectors unchanged, 4 bytes per value. Scores are exact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct F32Codec {
    dim: usize,
}

const KERNELS: LaneKernels<f32> = LaneKernels {
    dot: kernels::dot_f32,
    l2sq: kernels::l2sq_f32,
    dot_scalar: kernels::dot_f32_scalar,
    l2sq_scalar: kernels::l2sq_f32_scalar,
};

impl F32Codec {
    /// A codec for vectors of `dim` values (no fitting needed).
    pub fn new(dim: usize) -> Self {
        F32Codec { dim }
    }
}

impl VectorCodec for F32Codec {
    fn spec(&self) -> CodecSpec {
        CodecSpec::element(ElementSpec::F32)
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn code_len(&self) -> usize {
        self.dim * 4
    }

    fn encode_into(&self, vector: &[f32], code: &mut [u8]) {
        write_lanes(vector, code, |v| v);
    }

    fn decode_into(&self, code: &[u8], out: &mut [f32]) {
        read_lanes::<f32>(code, out, |v| v);
    }

    fn scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_> {
        Box::new(LaneScorer::new(query, metric, KERNELS, true))
    }

    fn reference_scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_> {
        Box::new(LaneScorer::new(query, metric, KERNELS, false))
    }
}
