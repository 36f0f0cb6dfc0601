//! Vector codecs: how an f32 vector becomes bytes, and how an f32 query is scored
//! against those bytes without decoding them first.
//!
//! A codec is fitted once (scales, PCA rotation, bit allocation) and then is a pure
//! function of its parameters, which serialize with serde so a collection manifest
//! can hold them. Scoring goes through a [`Scorer`] built once per query: it holds
//! whatever the query needs in codec space (a rotated query, per-dimension weights,
//! lookup tables), so the per-vector work is a tight loop over code bytes.
//!
//! Every fast scorer has a scalar reference twin, [`VectorCodec::reference_scorer`],
//! that property tests compare it against.

use std::fmt;

pub mod spec;
pub use spec::{CodecSpec, ElementSpec, ScalarQuantizer};

mod affine;
pub mod bfloat16;
pub mod element;
mod fit;
pub mod float16;
pub mod float32;
pub mod float8;
pub mod int8;
pub mod pca;
pub mod registry;
pub use registry::Codec;
mod lanes;
pub mod scaled_float8;
pub mod sign_bits;
#[cfg(test)]
pub(crate) mod testing;
pub mod transform;

use crate::error::{QuantError, Result, check_batch};
use crate::metric::Metric;

/// Scores one prepared query against codes of one codec.
///
/// Scores are "higher is better" true scores in the original space (see [`Metric`]):
/// a PCA codec adds `q . mu` back, an L2 scorer returns the negated squared distance.
pub trait Scorer: Send + Sync {
    /// Bytes per code this scorer reads.
    fn code_len(&self) -> usize;

    /// Score of the query against one code of exactly [`Scorer::code_len`] bytes.
    fn score(&self, code: &[u8]) -> f32;

    /// How far [`Scorer::score`] may stray from the exact score of the decoded
    /// vector beyond float rounding: zero unless the scorer rounds by design
    /// (the transform codec's `u16` byte tables).
    fn max_error(&self) -> f32 {
        0.0
    }

    /// A cheaper estimate of [`Scorer::score`] for steering a graph walk, whose
    /// candidates are scored again (by `score` or a rescore tier) before anyone
    /// sees them; within [`Scorer::coarse_error`] of `score`. By default `score`
    /// itself.
    fn coarse(&self, code: &[u8]) -> f32 {
        self.score(code)
    }

    /// How far [`Scorer::coarse`] may stray from [`Scorer::score`] beyond float
    /// rounding.
    fn coarse_error(&self) -> f32 {
        0.0
    }

    /// [`Scorer::coarse`] of the codes `codes[id * code_len..][..code_len]` for each
    /// `id` of `ids`, into `out` (as long as `ids`): a graph walk scores a node's
    /// unvisited neighbours in one call. Panics if a code lies outside `codes`.
    fn coarse_gather(&self, codes: &[u8], ids: &[u32], out: &mut [f32]) {
        let len = self.code_len();
        for (&id, o) in ids.iter().zip(out.iter_mut()) {
            *o = self.coarse(&codes[id as usize * len..][..len]);
        }
    }

    /// [`Scorer::coarse`] of consecutive codes; `out.len()` codes are read: the
    /// first pass of a flat scan ([`crate::scan::best_k`]).
    fn coarse_batch(&self, codes: &[u8], out: &mut [f32]) {
        let len = self.code_len();
        for (code, o) in codes.chunks_exact(len).zip(out.iter_mut()) {
            *o = self.coarse(code);
        }
    }

    /// Scores of the query against consecutive codes; `out.len()` codes are read.
    fn score_batch(&self, codes: &[u8], out: &mut [f32]) {
        let len = self.code_len();
        for (code, o) in codes.chunks_exact(len).zip(out.iter_mut()) {
            *o = self.score(code);
        }
    }
}

/// A fitted vector codec.
///
/// `encode_into` / `decode_into` / the scorers work on one vector and trust their
/// slice lengths (they are checked by the batch methods, which are what callers
/// holding user data should use).
pub trait VectorCodec: Send + Sync + fmt::Debug {
    /// The specification this codec was fitted from.
    fn spec(&self) -> CodecSpec;

    /// Dimension of the input vectors.
    fn dim(&self) -> usize;

    /// Bytes per encoded vector.
    fn code_len(&self) -> usize;

    /// Encodes one vector of [`VectorCodec::dim`] values into `code` ([`VectorCodec::code_len`] bytes).
    fn encode_into(&self, vector: &[f32], code: &mut [u8]);

    /// Decodes one code back to an approximation of the original vector.
    fn decode_into(&self, code: &[u8], out: &mut [f32]);

    /// The fast scorer for `query` (of [`VectorCodec::dim`] values) under `metric`.
    fn scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_>;

    /// The obviously-correct scalar twin of [`VectorCodec::scorer`].
    fn reference_scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_>;

    /// Encodes a batch of row-major vectors, checking dimension and finiteness.
    fn encode(&self, vectors: &[f32]) -> Result<Vec<u8>> {
        let dim = self.dim();
        let n = check_batch("batch of vectors", vectors, dim)?;
        let len = self.code_len();
        let mut codes = vec![0u8; n * len];
        use rayon::prelude::*;
        codes
            .par_chunks_mut(len.max(1))
            .zip(vectors.par_chunks(dim))
            .for_each(|(code, v)| self.encode_into(v, code));
        Ok(codes)
    }

    /// Decodes a batch of codes into row-major vectors.
    fn decode(&self, codes: &[u8]) -> Result<Vec<f32>> {
        let len = self.code_len();
        if len == 0 || !codes.len().is_multiple_of(len) {
            return Err(QuantError::DimMismatch {
                what: "batch of codes (bytes)",
                expected: len,
                actual: codes.len(),
            });
        }
        let dim = self.dim();
        let mut out = vec![0f32; codes.len() / len * dim];
        for (code, o) in codes.chunks_exact(len).zip(out.chunks_exact_mut(dim)) {
            self.decode_into(code, o);
        }
        Ok(out)
    }

    /// A scorer for a user-supplied query, after checking its dimension and values.
    fn checked_scorer(&self, query: &[f32], metric: Metric) -> Result<Box<dyn Scorer + '_>> {
        if query.len() != self.dim() {
            return Err(QuantError::DimMismatch {
                what: "query",
                expected: self.dim(),
                actual: query.len(),
            });
        }
        check_batch("query", query, self.dim())?;
        Ok(self.scorer(query, metric))
    }
}
