//! Dense tensors: [`Encoding::F16`] and [`Encoding::F32`], always resident
//! (embeddings, norms, the LM head), little-endian, row-major.

use half::f16;

use super::{Check, DeviceSource, EncodeTensor, Encoding, Source, TensorEncoding, f32_le};
use crate::checkpoint::manifest::{BlockEntry, Section};
use crate::dest::Out;
use crate::error::{QuantError, Result};
use crate::gpu::TensorJob;

/// Little-endian f16 values as f32 through [`Out::fill_from_f16_le`] (which also
/// copies them as f16 or rounds them to bf16; tested in [`crate::dest`] against one
/// value at a time): `half`'s slice conversion (F16C when the CPU has it, detected at
/// run time) in parallel chunks, so a large embedding is not one long task while the
/// other cores wait; bytes that are not 2-aligned (or a big-endian host) go one value
/// at a time.
pub(crate) fn widen_f16(b: &[u8]) -> Vec<f32> {
    let mut out = crate::buffer::zeroed_f32(b.len() / 2);
    Out::F32(&mut out).fill_from_f16_le(b);
    out
}

/// Element type of a dense tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseType {
    /// IEEE half.
    F16,
    /// f32.
    F32,
}

impl DenseType {
    fn width(self) -> usize {
        match self {
            DenseType::F16 => 2,
            DenseType::F32 => 4,
        }
    }
}

/// The view of a dense entry.
#[derive(Debug)]
pub(super) struct Dense {
    pub dtype: DenseType,
    pub data: Section,
}

impl TensorEncoding<'_> for Dense {
    fn name(&self) -> &'static str {
        match self.dtype {
            DenseType::F16 => "f16",
            DenseType::F32 => "f32",
        }
    }

    fn is_compressed(&self) -> bool {
        false
    }

    fn resident(&self) -> Vec<(Section, &'static str)> {
        vec![(self.data, "data")]
    }

    fn with_sections(&self, resident: &[Section], _blocks: Vec<BlockEntry>) -> Encoding {
        let data = resident.first().copied().unwrap_or(self.data);
        match self.dtype {
            DenseType::F16 => Encoding::F16 { data },
            DenseType::F32 => Encoding::F32 { data },
        }
    }

    fn validate(&self, t: &Check<'_>) -> Result<()> {
        t.section(&self.data, t.numel.checked_mul(self.dtype.width()), "data")
    }

    fn rebuild(&self, t: &Source<'_>) -> Result<Vec<f32>> {
        let b = t.section(&self.data, "data")?;
        Ok(match self.dtype {
            DenseType::F16 => widen_f16(b),
            DenseType::F32 => f32_le(b),
        })
    }

    fn rebuild_into(&self, t: &Source<'_>, out: Out<'_>) -> Result<()> {
        let b = t.section(&self.data, "data")?;
        // Validation fixed the section length at numel * width.
        if b.len() != out.len() * self.dtype.width() {
            return Err(QuantError::DimMismatch {
                what: "dense tensor output (elements)",
                expected: b.len() / self.dtype.width(),
                actual: out.len(),
            });
        }
        match (self.dtype, out) {
            (DenseType::F16, out) => out.fill_from_f16_le(b),
            (DenseType::F32, Out::F32(out)) => {
                for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            (DenseType::F32, out) => out.fill_from_f32(&f32_le(b)),
        }
        Ok(())
    }

    fn gpu_job(&self, t: &DeviceSource<'_>) -> Result<TensorJob> {
        let bytes = t.numel.saturating_mul(self.dtype.width() as u64);
        let offset = t.inside(&self.data, bytes, "data")?;
        Ok(match self.dtype {
            DenseType::F16 => TensorJob::F16 {
                offset,
                numel: t.numel,
            },
            DenseType::F32 => TensorJob::F32 {
                offset,
                numel: t.numel,
            },
        })
    }
}

/// A dense tensor to write: [`crate::checkpoint::CheckpointWriter::add_f16`] and
/// `add_f32`.
#[derive(Debug, Clone, Copy)]
pub struct DenseTensor<'a> {
    /// Dimensions, outermost first.
    pub shape: &'a [usize],
    /// Row-major values.
    pub data: &'a [f32],
    /// How they are stored.
    pub dtype: DenseType,
}

impl EncodeTensor for DenseTensor<'_> {
    fn dims(&self) -> (Vec<usize>, usize) {
        (self.shape.to_vec(), self.data.len())
    }

    fn encode(
        &self,
        name: &str,
        spill: &mut dyn FnMut(&[u8]) -> Result<Section>,
    ) -> Result<Encoding> {
        let mut bytes = Vec::with_capacity(self.data.len() * self.dtype.width());
        match self.dtype {
            DenseType::F16 => {
                for (i, &x) in self.data.iter().enumerate() {
                    let h = f16::from_f32(x);
                    // Values beyond f16's range are an error rather than infinities.
                    if !h.is_finite() {
                        return Err(QuantError::InvalidConfig {
                            field: "f16 tensor",
                            reason: format!(
                                "`{name}` value {x} at index {i} is not finite in f16; store it as f32"
                            ),
                        });
                    }
                    bytes.extend_from_slice(&h.to_le_bytes());
                }
            }
            DenseType::F32 => bytes.extend(self.data.iter().flat_map(|x| x.to_le_bytes())),
        }
        let data = spill(&bytes)?;
        Ok(match self.dtype {
            DenseType::F16 => Encoding::F16 { data },
            DenseType::F32 => Encoding::F32 { data },
        })
    }
}
