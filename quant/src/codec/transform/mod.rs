//! Octet's transform codec: a PCA rotation keeping every component, then a bit budget
//! spread over the components by how much each bit removes of the error, one scalar
//! quantizer per component. Classic transform coding (Goyal, "Theoretical foundations
//! of transform coding", IEEE Signal Processing Magazine 2001).
//!
//! Fitting, on a sample:
//!
//! 1. PCA with all components ([`Pca`]); the sample is projected, `y = P (x - mu)`.
//! 2. For each component and each width `0..=8`, the quantizer is fitted and its mean
//!    squared error measured on the sample ([`quantizer`]): a distortion curve.
//! 3. `8 * bytes` bits are allocated greedily on those curves ([`alloc`]): high-variance
//!    components get 6-8 bits, the tail 1-2 or none.
//! 4. Components are laid out in aligned blocks of equal width ([`layout`]).
//!
//! Scoring folds the query into per-component weights or tables so the per-vector work
//! is a few block loops over the packed code ([`kernels`]); scores are true scores of
//! the query against the decoded vector (inner product with `q . mu` added back, or
//! negated squared distance). See `scorer.rs` for the algebra.

pub mod alloc;
pub mod auto;
pub mod kernels;
pub mod layout;
pub mod quantizer;
mod scorer;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{CodecSpec, ScalarQuantizer, Scorer, VectorCodec};
use crate::error::{QuantError, Result};
use crate::kernels::{dot_i8_rows, quantize_i8};
use crate::metric::Metric;
use crate::pca::Pca;
use alloc::{DistortionCurve, allocate_bits, allocate_bits_with};
use layout::Layout;
use quantizer::{ComponentQuantizer, SortedColumn, UniformLadder};
use scorer::{DecodingScorer, FoldedScorer};

/// Grids the k-means quantizer merges each component's sample onto before its dynamic
/// program, which bounds the work at `O(k G log G)` per component whatever the sample
/// size. The distortion curve (all 256 layers, for every component) uses the coarse
/// grid; the final fit at the allocated width the fine one. On the 20k MiniLM set the
/// coarse curve allocates the same bits as a fine one to within noise (squared error
/// 4.389e-3 vs 4.385e-3 per vector at 192 bytes) at a quarter of the time.
const KMEANS_CURVE_GRID: usize = 512;
/// Widths every uniform quantizer is fitted at before the bit allocation runs
/// (all components in parallel); wider ones are fitted as the allocation reaches
/// them. The 5- to 8-bit clip searches, with 32 to 256 cells, were 94% of the
/// fit's cell evaluations, for the few components that get that wide.
const EAGER_UNIFORM_BITS: u8 = 4;
const KMEANS_FIT_GRID: usize = 2048;

/// The fitted transform codec.
///
/// Serializes as its spec, the PCA and one quantizer per component; the layout is
/// rebuilt from the quantizers' widths, and deserializing checks every invariant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "TransformParams", into = "TransformParams")]
pub struct TransformCodec {
    bytes: usize,
    quantizer: ScalarQuantizer,
    pca: Pca,
    /// One per component, in PCA order.
    quantizers: Vec<ComponentQuantizer>,
    layout: Layout,
    /// `mu + sum_j value_j P_j` over the zero-bit components: a dot or cosine
    /// score's constant is the query's inner product with it, so a scorer rotates
    /// the query only onto the components that have bits (derived, not stored).
    fixed_direction: Vec<f32>,
    /// The rows of the components that have bits, in slot order, as `i8` with
    /// one scale per row: the graph walk's coarse scorer rotates an `i8` copy of
    /// the query with these, exact integer dot products on a quarter of the f32
    /// rows' bytes (derived, not stored).
    slot_rows: Box<SlotRowsI8>,
    /// Every slot's affine reconstruction `(base, step)` in slot order, `None`
    /// when a slot is not uniform (derived, not stored; what each query's folded
    /// weights are made of).
    slot_affine: Option<Box<[(f32, f32)]>>,
}

/// Rows as `i8` codes, `row ~ scale * code`, with what the rounding bound needs.
#[derive(Debug, Clone)]
struct SlotRowsI8 {
    codes: Vec<i8>,
    /// `max |row| / 127` per row.
    scales: Vec<f32>,
    /// `scale * sum |code|` per row: the rounded row's L1 norm.
    l1: Vec<f32>,
}

impl SlotRowsI8 {
    fn new<'r>(rows: impl Iterator<Item = &'r [f32]>) -> SlotRowsI8 {
        let (mut codes, mut scales, mut l1) = (Vec::new(), Vec::new(), Vec::new());
        for row in rows {
            let start = codes.len();
            codes.resize(start + row.len(), 0);
            let scale = quantize_i8(row, &mut codes[start..]);
            let sum: i32 = codes[start..].iter().map(|&c| i32::from(c).abs()).sum();
            scales.push(scale);
            l1.push(scale * sum as f32);
        }
        SlotRowsI8 { codes, scales, l1 }
    }

    fn len(&self) -> usize {
        self.scales.len()
    }

    /// The coordinate of an `i8` query (`query ~ q_scale * q8`) on every row.
    fn coords(&self, q8: &[i8], q_scale: f32) -> Vec<f32> {
        let mut dots = vec![0i32; self.len()];
        dot_i8_rows(q8, &self.codes, &mut dots);
        dots.iter()
            .zip(&self.scales)
            .map(|(&d, &s)| s * q_scale * d as f32)
            .collect()
    }
}

/// The serialized form of [`TransformCodec`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TransformParams {
    bytes: usize,
    quantizer: ScalarQuantizer,
    pca: Pca,
    quantizers: Vec<ComponentQuantizer>,
}

impl From<TransformCodec> for TransformParams {
    fn from(c: TransformCodec) -> Self {
        TransformParams {
            bytes: c.bytes,
            quantizer: c.quantizer,
            pca: c.pca,
            quantizers: c.quantizers,
        }
    }
}

impl TryFrom<TransformParams> for TransformCodec {
    type Error = QuantError;

    fn try_from(p: TransformParams) -> Result<Self> {
        let bad = |reason: String| QuantError::InvalidConfig {
            field: "transform codec parameters",
            reason,
        };
        let dim = p.pca.dim();
        if p.pca.keep() != dim {
            return Err(bad(format!(
                "the PCA keeps {} of {dim} components",
                p.pca.keep()
            )));
        }
        if p.quantizers.len() != dim {
            return Err(bad(format!(
                "{} quantizers for {dim} components",
                p.quantizers.len()
            )));
        }
        for (j, q) in p.quantizers.iter().enumerate() {
            q.validate()
                .map_err(|e| bad(format!("component {j}: {e}")))?;
            let family_ok = match q {
                ComponentQuantizer::Constant { .. } => true,
                ComponentQuantizer::Uniform { .. } => p.quantizer == ScalarQuantizer::Uniform,
                ComponentQuantizer::Kmeans { .. } => p.quantizer == ScalarQuantizer::Kmeans,
            };
            if !family_ok {
                return Err(bad(format!(
                    "component {j} is not a {:?} quantizer",
                    p.quantizer
                )));
            }
        }
        let widths: Vec<u8> = p.quantizers.iter().map(ComponentQuantizer::bits).collect();
        let layout = Layout::new(&widths);
        if layout.code_len() != p.bytes {
            return Err(bad(format!(
                "widths sum to {} bytes, the spec says {}",
                layout.code_len(),
                p.bytes
            )));
        }
        let mut fixed_direction = p.pca.mean().to_vec();
        for (q, row) in p
            .quantizers
            .iter()
            .zip(p.pca.components().chunks_exact(dim))
        {
            if let ComponentQuantizer::Constant { value } = q {
                for (f, &x) in fixed_direction.iter_mut().zip(row) {
                    *f += value * x;
                }
            }
        }
        let slot_rows = Box::new(SlotRowsI8::new(
            layout.order().iter().map(|&j| p.pca.component(j as usize)),
        ));
        let slot_affine = layout
            .order()
            .iter()
            .map(|&j| p.quantizers[j as usize].affine())
            .collect();
        Ok(TransformCodec {
            bytes: p.bytes,
            quantizer: p.quantizer,
            pca: p.pca,
            quantizers: p.quantizers,
            layout,
            fixed_direction,
            slot_rows,
            slot_affine,
        })
    }
}

/// The part of a transform fit that does not depend on the byte budget: the PCA and
/// the sample's projected components, each sorted. [`TransformFitter::fit`] then
/// allocates a budget over them, so fitting several sizes (`transform-auto`) rotates
/// the sample once.
pub(crate) struct TransformFitter {
    dim: usize,
    pca: Pca,
    columns: Vec<SortedColumn>,
}

impl TransformFitter {
    /// Fits the PCA on `sample` and sorts each projected component.
    pub(crate) fn new(sample: &[f32], dim: usize) -> Result<TransformFitter> {
        let pca = Pca::fit(sample, dim, dim)?;
        let projected = pca.transform(sample)?;
        let columns: Vec<SortedColumn> = (0..dim)
            .into_par_iter()
            .map(|j| SortedColumn::new(projected.iter().skip(j).step_by(dim).copied()))
            .collect();
        Ok(TransformFitter { dim, pca, columns })
    }

    /// The codec at `bytes` bytes per vector with `quantizer` levels.
    pub(crate) fn fit(&self, bytes: usize, quantizer: ScalarQuantizer) -> Result<TransformCodec> {
        let (dim, columns) = (self.dim, &self.columns);
        CodecSpec::Transform { bytes, quantizer }.validate(dim)?;
        let quantizers: Vec<ComponentQuantizer> = match quantizer {
            ScalarQuantizer::Uniform => {
                // Every width up to EAGER_UNIFORM_BITS in parallel; wider ones as
                // the allocation reaches them. Which those are is predicted first,
                // by an allocation over the fitted widths extended at 6 dB per
                // bit, and the widths up to one past the prediction are fitted in
                // parallel: the exact allocation then seldom fits one itself, on
                // one thread (at 192 bytes for MiniLM it had been a serial 0.2 s
                // of the seal). Only what is fitted when changes: the exact
                // allocation reads exact distortions either way.
                let mut ladders: Vec<UniformLadder> = columns
                    .par_iter()
                    .map(|c| UniformLadder::new(c, EAGER_UNIFORM_BITS))
                    .collect();
                let predicted = allocate_bits_with(dim, bytes * 8, |j, b| ladders[j].estimate(b))?;
                ladders
                    .par_iter_mut()
                    .zip(&predicted)
                    .filter(|(_, w)| **w >= EAGER_UNIFORM_BITS)
                    .for_each(|(l, &w)| {
                        l.distortion(w.saturating_add(1));
                    });
                let widths = allocate_bits_with(dim, bytes * 8, |j, b| ladders[j].distortion(b))?;
                ladders
                    .into_iter()
                    .zip(&widths)
                    .map(|(l, &w)| l.into_quantizer(w))
                    .collect()
            }
            ScalarQuantizer::Kmeans => {
                let curves = columns
                    .par_iter()
                    .map(|c| c.kmeans_curve(KMEANS_CURVE_GRID))
                    .collect::<Result<Vec<DistortionCurve>>>()?;
                let widths = allocate_bits(&curves, bytes * 8)?;
                columns
                    .par_iter()
                    .zip(&widths)
                    .map(|(c, &w)| c.fit_kmeans(w, KMEANS_FIT_GRID))
                    .collect::<Result<_>>()?
            }
        };
        TransformCodec::try_from(TransformParams {
            bytes,
            quantizer,
            pca: self.pca.clone(),
            quantizers,
        })
    }
}

impl TransformCodec {
    /// Fits the codec on `sample` (row-major, `dim` values per row) for `bytes` bytes
    /// per vector with the given per-component quantizer.
    ///
    /// Errors: `bytes` outside `1..=dim`, fewer than two rows, a non-finite value, or a
    /// dimension above [`crate::pca::MAX_PCA_DIM`].
    pub fn fit(
        sample: &[f32],
        dim: usize,
        bytes: usize,
        quantizer: ScalarQuantizer,
    ) -> Result<TransformCodec> {
        CodecSpec::Transform { bytes, quantizer }.validate(dim)?;
        TransformFitter::new(sample, dim)?.fit(bytes, quantizer)
    }

    /// The PCA rotation (all components kept).
    pub fn pca(&self) -> &Pca {
        &self.pca
    }

    /// The quantizer of each component, in PCA order.
    pub fn quantizers(&self) -> &[ComponentQuantizer] {
        &self.quantizers
    }

    /// Bits given to each component, in PCA order.
    pub fn widths(&self) -> Vec<u8> {
        self.quantizers
            .iter()
            .map(ComponentQuantizer::bits)
            .collect()
    }

    /// Where each component's code sits in a code.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The rotated reconstruction `yhat` (one value per component) of `code`, read bit
    /// by bit: the decoding every scorer is checked against.
    fn decode_rotated_scalar(&self, code: &[u8]) -> Vec<f32> {
        let mut y: Vec<f32> = self.quantizers.iter().map(|q| q.decode(0)).collect();
        for (t, &j) in self.layout.order().iter().enumerate() {
            let j = j as usize;
            y[j] = self.quantizers[j].decode(self.layout.read_scalar(code, t));
        }
        y
    }
}

impl VectorCodec for TransformCodec {
    fn spec(&self) -> CodecSpec {
        CodecSpec::Transform {
            bytes: self.bytes,
            quantizer: self.quantizer,
        }
    }

    fn dim(&self) -> usize {
        self.pca.dim()
    }

    fn code_len(&self) -> usize {
        self.layout.code_len()
    }

    fn encode_into(&self, vector: &[f32], code: &mut [u8]) {
        let mut y = vec![0f32; self.pca.keep()];
        self.pca.transform_into(vector, &mut y);
        let slot_codes: Vec<u8> = self
            .layout
            .order()
            .iter()
            .map(|&j| self.quantizers[j as usize].encode(y[j as usize]))
            .collect();
        self.layout.pack(&slot_codes, code);
    }

    fn decode_into(&self, code: &[u8], out: &mut [f32]) {
        let mut y: Vec<f32> = self.quantizers.iter().map(|q| q.decode(0)).collect();
        for (t, &j) in self.layout.order().iter().enumerate() {
            y[j as usize] = self.quantizers[j as usize].decode(self.layout.read(code, t));
        }
        self.pca.inverse_transform_into(&y, out);
    }

    fn scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_> {
        Box::new(FoldedScorer::new(self, query, metric))
    }

    fn reference_scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_> {
        Box::new(DecodingScorer::new(self, query, metric))
    }
}

#[cfg(test)]
mod tests;
