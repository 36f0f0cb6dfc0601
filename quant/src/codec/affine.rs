//! The scorer shared by codes that decode per dimension as
//! `x_i = offset_i + step_i * level(c_i)`: int8 (`level` is the byte itself), plain
//! float8 (`offset = 0`, `step = 1`, `level` the float8 value) and scaled float8.
//!
//! The affine map is folded into the prepared query once, so the per-code loop is a
//! single kernel over the code bytes:
//!
//! - inner product: `q . x = sum_i q_i offset_i + sum_i (q_i step_i) level(c_i)`,
//!   a constant plus `sum w_i level(c_i)`;
//! - squared distance: `(q_i - x_i)^2 = step_i^2 ((q_i - offset_i) / step_i - level(c_i))^2`,
//!   so `|q - x|^2 = sum w_i (a_i - level(c_i))^2` with `w_i = step_i^2`. A dimension
//!   whose `step_i^2` is zero or subnormal (a constant dimension in the fit) decodes to
//!   `offset_i` and goes into the constant instead, avoiding a division by ~0.

use crate::codec::Scorer;
use crate::codec::float8::Float8Format;
use crate::kernels;
use crate::metric::Metric;

/// How a byte becomes a level.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Levels {
    /// The byte's value, 0..=255.
    Integer,
    /// The byte's value as a float8 of this format.
    Float8(Float8Format),
}

type DotKernel = fn(&[f32], &[u8]) -> f32;
type L2Kernel = fn(&[f32], &[f32], &[u8]) -> f32;

impl Levels {
    /// `sum w_i level(c_i)`: the dispatched kernel, or its scalar twin.
    fn dot_kernel(self, fast: bool) -> DotKernel {
        match (self, fast) {
            (Levels::Integer, true) => kernels::dot_u8,
            (Levels::Integer, false) => kernels::dot_u8_scalar,
            (Levels::Float8(Float8Format::E4m3), true) => kernels::dot_e4m3,
            (Levels::Float8(Float8Format::E4m3), false) => kernels::dot_e4m3_scalar,
            (Levels::Float8(Float8Format::E5m2), true) => kernels::dot_e5m2,
            (Levels::Float8(Float8Format::E5m2), false) => kernels::dot_e5m2_scalar,
        }
    }

    /// `sum w_i (a_i - level(c_i))^2`: the dispatched kernel, or its scalar twin.
    fn l2_kernel(self, fast: bool) -> L2Kernel {
        match (self, fast) {
            (Levels::Integer, true) => kernels::l2sq_u8,
            (Levels::Integer, false) => kernels::l2sq_u8_scalar,
            (Levels::Float8(Float8Format::E4m3), true) => kernels::l2sq_e4m3,
            (Levels::Float8(Float8Format::E4m3), false) => kernels::l2sq_e4m3_scalar,
            (Levels::Float8(Float8Format::E5m2), true) => kernels::l2sq_e5m2,
            (Levels::Float8(Float8Format::E5m2), false) => kernels::l2sq_e5m2_scalar,
        }
    }
}

/// The query folded into per-dimension weights, with the kernel chosen once.
enum Prepared {
    Dot {
        w: Vec<f32>,
        kernel: DotKernel,
    },
    L2 {
        w: Vec<f32>,
        a: Vec<f32>,
        kernel: L2Kernel,
    },
}

/// Scores a query against affine codes; see the module docs for the algebra.
pub(crate) struct AffineScorer {
    prepared: Prepared,
    constant: f32,
}

impl AffineScorer {
    /// Folds `query` into weights. `offset` and `step` of `None` mean 0 and 1 in
    /// every dimension. `fast` picks the dispatched kernels, otherwise the scalar twins.
    pub(crate) fn new(
        query: &[f32],
        metric: Metric,
        offset: Option<&[f32]>,
        step: Option<&[f32]>,
        levels: Levels,
        fast: bool,
    ) -> Self {
        let offset_at = |i: usize| offset.map_or(0.0, |o| o[i]);
        let step_at = |i: usize| step.map_or(1.0, |s| s[i]);
        let q = metric.prepare_query(query);
        let (prepared, constant) = match metric {
            Metric::Dot | Metric::Cosine => {
                let w = match step {
                    Some(s) => q.iter().zip(s).map(|(x, s)| x * s).collect(),
                    None => q.clone(),
                };
                let constant = offset.map_or(0.0, |o| {
                    if fast {
                        kernels::dot_f32(&q, o)
                    } else {
                        kernels::dot_f32_scalar(&q, o)
                    }
                });
                let kernel = levels.dot_kernel(fast);
                (Prepared::Dot { w, kernel }, constant)
            }
            Metric::L2 => {
                let mut w = vec![0.0f32; q.len()];
                let mut a = vec![0.0f32; q.len()];
                let mut constant = 0.0f32;
                for i in 0..q.len() {
                    let s = step_at(i);
                    let centred = q[i] - offset_at(i);
                    if (s * s).is_normal() {
                        w[i] = s * s;
                        a[i] = centred / s;
                    } else {
                        constant += centred * centred;
                    }
                }
                let kernel = levels.l2_kernel(fast);
                (Prepared::L2 { w, a, kernel }, constant)
            }
        };
        AffineScorer { prepared, constant }
    }
}

impl Scorer for AffineScorer {
    fn code_len(&self) -> usize {
        match &self.prepared {
            Prepared::Dot { w, .. } | Prepared::L2 { w, .. } => w.len(),
        }
    }

    fn score(&self, code: &[u8]) -> f32 {
        match &self.prepared {
            Prepared::Dot { w, kernel } => self.constant + kernel(w, code),
            Prepared::L2 { w, a, kernel } => -(self.constant + kernel(w, a, code)),
        }
    }
}
