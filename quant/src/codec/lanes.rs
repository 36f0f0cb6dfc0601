//! Codes that are arrays of little-endian numbers (f32, f16, bf16), and the scorer the
//! plain float codecs share.
//!
//! On little-endian machines a code whose bytes are suitably aligned (always true for
//! codes in a `Vec<f32>`-sized allocation or a page-aligned memory map at a multiple
//! of the element size) is read in place; anything else is copied into a fresh
//! vector first, so a misaligned slice costs time, never correctness.

use std::borrow::Cow;
use std::mem::size_of;

use bytemuck::Pod;
use half::{bf16, f16};

use crate::codec::Scorer;
use crate::metric::Metric;

/// A number stored little-endian in a code.
pub(crate) trait Lane: Pod + Send + Sync {
    /// Reads one value from exactly `size_of::<Self>()` little-endian bytes.
    fn from_le(bytes: &[u8]) -> Self;
    /// Writes one value as little-endian bytes.
    fn write_le(self, out: &mut [u8]);
}

impl Lane for f32 {
    fn from_le(bytes: &[u8]) -> Self {
        f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }
    fn write_le(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
}

impl Lane for f16 {
    fn from_le(bytes: &[u8]) -> Self {
        f16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]]))
    }
    fn write_le(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_bits().to_le_bytes());
    }
}

impl Lane for bf16 {
    fn from_le(bytes: &[u8]) -> Self {
        bf16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]]))
    }
    fn write_le(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_bits().to_le_bytes());
    }
}

/// The values of a code, borrowed in place when possible.
pub(crate) fn lanes<T: Lane>(code: &[u8]) -> Cow<'_, [T]> {
    if cfg!(target_endian = "little")
        && let Ok(values) = bytemuck::try_cast_slice::<u8, T>(code)
    {
        return Cow::Borrowed(values);
    }
    Cow::Owned(code.chunks_exact(size_of::<T>()).map(T::from_le).collect())
}

/// Writes `values` converted by `cast` into `code`, little-endian.
pub(crate) fn write_lanes<T: Lane>(values: &[f32], code: &mut [u8], cast: impl Fn(f32) -> T) {
    for (out, &v) in code.chunks_exact_mut(size_of::<T>()).zip(values) {
        cast(v).write_le(out);
    }
}

/// Reads a code of `T` values into f32s.
pub(crate) fn read_lanes<T: Lane>(code: &[u8], out: &mut [f32], widen: impl Fn(T) -> f32) {
    for (o, &v) in out.iter_mut().zip(lanes::<T>(code).iter()) {
        *o = widen(v);
    }
}

/// The dot and L2 kernels for one lane type: the fast pair and the scalar twins.
#[derive(Clone, Copy)]
pub(crate) struct LaneKernels<T> {
    pub dot: fn(&[f32], &[T]) -> f32,
    pub l2sq: fn(&[f32], &[T]) -> f32,
    pub dot_scalar: fn(&[f32], &[T]) -> f32,
    pub l2sq_scalar: fn(&[f32], &[T]) -> f32,
}

/// Scores an f32 query against codes of `T` values: the inner product (cosine
/// normalises the query first) or the negated squared distance.
pub(crate) struct LaneScorer<T> {
    query: Vec<f32>,
    kernel: fn(&[f32], &[T]) -> f32,
    negate: bool,
}

impl<T: Lane> LaneScorer<T> {
    /// `fast` picks the dispatched kernels, otherwise the scalar twins.
    pub(crate) fn new(query: &[f32], metric: Metric, kernels: LaneKernels<T>, fast: bool) -> Self {
        let (kernel, negate) = match (metric, fast) {
            (Metric::Dot | Metric::Cosine, true) => (kernels.dot, false),
            (Metric::Dot | Metric::Cosine, false) => (kernels.dot_scalar, false),
            (Metric::L2, true) => (kernels.l2sq, true),
            (Metric::L2, false) => (kernels.l2sq_scalar, true),
        };
        LaneScorer {
            query: metric.prepare_query(query),
            kernel,
            negate,
        }
    }
}

impl<T: Lane> Scorer for LaneScorer<T> {
    fn code_len(&self) -> usize {
        self.query.len() * size_of::<T>()
    }

    fn score(&self, code: &[u8]) -> f32 {
        let s = (self.kernel)(&self.query, &lanes::<T>(code));
        if self.negate { -s } else { s }
    }
}
