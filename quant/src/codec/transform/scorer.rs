//! Per-query scorers of the transform codec.
//!
//! With `q' = P q` (dot, cosine) or `r = P (q - mu)` (L2) and component `j`
//! reconstructed as `yhat_j`, the true scores against the decoded vector are
//!
//! - dot: `q . mu + sum_j q'_j yhat_j`, because `P` is a full rotation;
//! - L2: `-sum_j (r_j - yhat_j)^2`.
//!
//! A uniform component reconstructs as `base_j + s_j c_j` (`base_j = lo_j + s_j / 2`),
//! so dot folds into `const + sum u_j c_j` with `u_j = q'_j s_j`, and L2 (with
//! `d_j = r_j - base_j`) into `const + sum (2 d_j s_j) c_j - s_j^2 c_j^2`. Zero-bit
//! components only move the constant. K-means components get a table of their
//! `2^b` possible contributions.
//!
//! The dot form is linear in the code's *bits* (bit `j` of component `j'`'s
//! code weighs `u 2^j`), so it is scored whatever widths the bytes mix, without
//! unpacking any component: with AVX-512 by [`MaskedWeights`] (one masked add per
//! sixteen bits), otherwise by [`ByteTables`] (one lookup per code byte).

use super::TransformCodec;
use super::kernels::{
    ByteTables, MaskedWeights, bit_weights, masked_weights_fast, quadratic_score, table_offsets,
    table_score,
};
use super::layout::Layout;
use super::quantizer::ComponentQuantizer;
use crate::codec::Scorer;
use crate::kernels::{dot_f32, quantize_i8};
use crate::metric::Metric;
use std::sync::OnceLock;

/// How the folded weights combine: which kernel a scorer runs.
#[derive(Debug)]
enum Terms {
    /// `sum u_t c_t`, as per-byte tables of the code's bits.
    Bytes(ByteTables),
    /// `sum u_t c_t`, as integer weights of the code's bits (dot and cosine with
    /// AVX-512 VNNI). [`Scorer::coarse`] uses one digit plane of the weights of
    /// the query rotated by the f16 slot rows, with its own constant
    /// ([`FoldedScorer::constant`]); [`Scorer::score`] three planes of the f32
    /// rotation, built on first use (a walk followed by a rescore tier never
    /// needs them), with theirs.
    Masked {
        coarse: MaskedWeights,
        /// The prepared query, kept for the precise weights.
        query: Vec<f32>,
        fine: OnceLock<(MaskedWeights, f32)>,
    },
    /// `sum u_t c_t + v_t c_t^2`.
    Quadratic(Vec<f32>, Vec<f32>),
    /// `sum tables[offsets[t] + c_t]`.
    Table(Vec<f32>, Vec<usize>),
}

/// The fast scorer: a constant plus the folded terms over the packed code.
#[derive(Debug)]
pub(super) struct FoldedScorer<'a> {
    codec: &'a TransformCodec,
    layout: &'a Layout,
    constant: f32,
    terms: Terms,
}

/// The query in codec space: `q'` for dot/cosine, `r` for L2, with the score's
/// constant from `mu` (dot only).
fn rotated_query(codec: &TransformCodec, query: &[f32], metric: Metric) -> (Vec<f32>, f32) {
    let q = metric.prepare_query(query);
    let pca = &codec.pca;
    let mut rotated = vec![0f32; pca.keep()];
    match metric {
        Metric::Dot | Metric::Cosine => {
            pca.rotate_into(&q, &mut rotated);
            (rotated, dot_f32(&q, pca.mean()))
        }
        Metric::L2 => {
            pca.transform_into(&q, &mut rotated);
            (rotated, 0.0)
        }
    }
}

impl<'a> FoldedScorer<'a> {
    pub(super) fn new(codec: &'a TransformCodec, query: &[f32], metric: Metric) -> Self {
        let l2 = metric == Metric::L2;
        let layout = &codec.layout;
        if !l2
            && masked_weights_fast()
            && let Some(affine) = codec.slot_affine.as_deref()
        {
            let q = metric.prepare_query(query);
            let mut q8 = vec![0i8; q.len()];
            let q_scale = quantize_i8(&q, &mut q8);
            let coords = codec.slot_rows.coords(&q8, q_scale);
            let (u, constant) = dot_terms(codec, affine, &q, &coords);
            return FoldedScorer {
                codec,
                layout,
                constant,
                terms: Terms::Masked {
                    // One digit plane: a third of the precise scorer's
                    // multiply-adds (see `octet bench` for what it costs in
                    // recall after the rescore).
                    coarse: MaskedWeights::one_plane(layout, &u),
                    query: q,
                    fine: OnceLock::new(),
                },
            };
        }
        // The query's coordinate on every slot's component, and the score's constant.
        let (coords, mut constant): (Vec<f32>, f32) = if l2 {
            let (rot, mut constant) = rotated_query(codec, query, metric);
            // Zero-bit components: constants of the score.
            for (j, q) in codec.quantizers.iter().enumerate() {
                if let ComponentQuantizer::Constant { value } = q {
                    constant -= (rot[j] - value).powi(2);
                }
            }
            (
                layout.order().iter().map(|&j| rot[j as usize]).collect(),
                constant,
            )
        } else {
            // Dot and cosine: only the components with bits need the rotation; the
            // mean and the zero-bit components fold into one direction.
            let q = metric.prepare_query(query);
            let dim = codec.pca.dim();
            let rows = codec.pca.components();
            let coords = layout
                .order()
                .iter()
                .map(|&j| dot_f32(&rows[j as usize * dim..][..dim], &q))
                .collect();
            (coords, dot_f32(&q, &codec.fixed_direction))
        };
        let slots = coords
            .iter()
            .zip(layout.order())
            .map(|(&x, &j)| (x, &codec.quantizers[j as usize]));
        let terms = if let Some(affine) = codec.slot_affine.as_deref() {
            let (mut u, mut v) = (Vec::with_capacity(layout.slots()), Vec::new());
            for ((x, _), &(base, s)) in slots.zip(affine) {
                if l2 {
                    let d = x - base;
                    constant -= d * d;
                    u.push(2.0 * d * s);
                    v.push(-s * s);
                } else {
                    constant += x * base;
                    u.push(x * s);
                }
            }
            if l2 {
                Terms::Quadratic(u, v)
            } else {
                Terms::Bytes(ByteTables::new(&bit_weights(layout, &u)))
            }
        } else {
            let offsets = table_offsets(layout);
            let mut tables = vec![0f32; offsets[offsets.len() - 1]];
            for ((t, (x, q)), &w) in slots.enumerate().zip(layout.widths()) {
                let table = &mut tables[offsets[t]..offsets[t + 1]];
                for (c, e) in table.iter_mut().enumerate() {
                    let level = q.decode(c as u8);
                    debug_assert!(c < 1 << w);
                    *e = if l2 { -(x - level).powi(2) } else { x * level };
                }
            }
            Terms::Table(tables, offsets)
        };
        FoldedScorer {
            codec,
            layout,
            constant,
            terms,
        }
    }
}

/// A dot or cosine score's linear weights `u_t = x_t s_t` and constant
/// `q . fixed + sum_t x_t base_t` from the slot coordinates `x` (all slots
/// uniform).
fn dot_terms(
    codec: &TransformCodec,
    affine: &[(f32, f32)],
    q: &[f32],
    coords: &[f32],
) -> (Vec<f32>, f32) {
    let u = coords
        .iter()
        .zip(affine)
        .map(|(&x, &(_, s))| x * s)
        .collect();
    // Left to right, in a register (a loop that also pushed to `u` kept it on
    // the stack).
    let constant = coords
        .iter()
        .zip(affine)
        .fold(dot_f32(q, &codec.fixed_direction), |c, (&x, &(base, _))| {
            c + x * base
        });
    (u, constant)
}

impl FoldedScorer<'_> {
    /// The precise integer weights and their constant, built on first use (`None`
    /// unless the terms are masked).
    fn fine(&self) -> Option<&(MaskedWeights, f32)> {
        let Terms::Masked { query, fine, .. } = &self.terms else {
            return None;
        };
        Some(fine.get_or_init(|| {
            let codec = self.codec;
            let coords: Vec<f32> = codec
                .layout
                .order()
                .iter()
                .map(|&j| dot_f32(codec.pca.component(j as usize), query))
                .collect();
            let affine = codec.slot_affine.as_deref().unwrap_or(&[]);
            let (u, constant) = dot_terms(codec, affine, query, &coords);
            (
                MaskedWeights::new(&bit_weights(&codec.layout, &u)),
                constant,
            )
        }))
    }

    /// How far the `i8` rotation can move the coarse score from the f32 one.
    /// With row `r = a R + e` (`|e_i| <= a / 2`) and query `q = b Q + d`
    /// (`|d_i| <= b / 2`), `r . q - a b (R . Q) = e . q + a R . d`, so a
    /// coordinate moves by at most `a |q|_1 / 2 + b a |R|_1 / 2`, plus the f32
    /// dot product's own rounding (`4 dim eps |q|`, rows of unit length); times
    /// what the coordinate can weigh in a score, `|base_t| + s_t (2^w_t - 1)`.
    fn rotation_bound(&self, query: &[f32]) -> f32 {
        let codec = self.codec;
        let rows = &codec.slot_rows;
        let dim = codec.pca.dim() as f32;
        let l1: f32 = query.iter().map(|x| x.abs()).sum();
        let q_scale = query.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0;
        let norm = query.iter().map(|x| x * x).sum::<f32>().sqrt();
        let float = 4.0 * dim * f32::EPSILON * norm;
        codec
            .layout
            .order()
            .iter()
            .zip(codec.layout.widths())
            .enumerate()
            .map(|(t, (&j, &w))| {
                let (base, s) = codec.quantizers[j as usize].affine().unwrap_or((0.0, 0.0));
                let coord = 0.5 * rows.scales[t] * l1 + 0.5 * q_scale * rows.l1[t] + float;
                // The product of the three factors rounds too (a few ulps).
                coord * (1.0 + 8.0 * f32::EPSILON) * (base.abs() + s * ((1u32 << w) - 1) as f32)
            })
            .sum()
    }
}

impl Scorer for FoldedScorer<'_> {
    fn code_len(&self) -> usize {
        self.layout.code_len()
    }

    fn max_error(&self) -> f32 {
        match &self.terms {
            Terms::Bytes(t) => t.max_error(),
            Terms::Masked { .. } => self.fine().map_or(0.0, |(m, _)| m.max_error()),
            _ => 0.0,
        }
    }

    #[inline]
    fn coarse(&self, code: &[u8]) -> f32 {
        match &self.terms {
            Terms::Masked { coarse, .. } => self.constant + coarse.score(code),
            _ => self.score(code),
        }
    }

    fn coarse_gather(&self, codes: &[u8], ids: &[u32], out: &mut [f32]) {
        match &self.terms {
            Terms::Masked { coarse, .. } => {
                coarse.score_gather(codes, ids, out);
                for o in out.iter_mut() {
                    *o += self.constant;
                }
            }
            _ => {
                let len = self.code_len();
                for (&id, o) in ids.iter().zip(out.iter_mut()) {
                    *o = self.coarse(&codes[id as usize * len..][..len]);
                }
            }
        }
    }

    fn coarse_batch(&self, codes: &[u8], out: &mut [f32]) {
        match &self.terms {
            Terms::Masked { coarse, .. } => {
                coarse.score_run(codes, out);
                for o in out.iter_mut() {
                    *o += self.constant;
                }
            }
            // Without masked weights the coarse score is the precise one.
            _ => self.score_batch(codes, out),
        }
    }

    fn coarse_error(&self) -> f32 {
        match &self.terms {
            Terms::Masked { coarse, query, .. } => {
                self.max_error() + coarse.max_error() + self.rotation_bound(query)
            }
            _ => 0.0,
        }
    }

    #[inline]
    fn score(&self, code: &[u8]) -> f32 {
        let l = self.layout;
        if let Some((fine, constant)) = self.fine() {
            return constant + fine.score(code);
        }
        self.constant
            + match &self.terms {
                Terms::Masked { .. } => 0.0,
                Terms::Bytes(t) => t.score(code),
                Terms::Quadratic(u, v) => quadratic_score(l, code, u, v),
                Terms::Table(t, o) => table_score(l, code, t, o),
            }
    }
}

/// The scalar twin of [`FoldedScorer`]: reads each component's code bit by bit, decodes it
/// through its quantizer and evaluates the score formula directly, with no folding.
#[derive(Debug)]
pub(super) struct DecodingScorer<'a> {
    codec: &'a TransformCodec,
    rotated: Vec<f32>,
    constant: f32,
    l2: bool,
}

impl<'a> DecodingScorer<'a> {
    pub(super) fn new(codec: &'a TransformCodec, query: &[f32], metric: Metric) -> Self {
        let (rotated, constant) = rotated_query(codec, query, metric);
        DecodingScorer {
            codec,
            rotated,
            constant,
            l2: metric == Metric::L2,
        }
    }
}

impl Scorer for DecodingScorer<'_> {
    fn code_len(&self) -> usize {
        self.codec.layout.code_len()
    }

    fn score(&self, code: &[u8]) -> f32 {
        let yhat = self.codec.decode_rotated_scalar(code);
        let sum: f32 = if self.l2 {
            -self
                .rotated
                .iter()
                .zip(&yhat)
                .map(|(r, y)| (r - y) * (r - y))
                .sum::<f32>()
        } else {
            self.rotated.iter().zip(&yhat).map(|(q, y)| q * y).sum()
        };
        self.constant + sum
    }
}
