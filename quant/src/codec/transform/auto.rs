//! `transform-auto`: the transform codec at the smallest of a few sizes that keeps a
//! search's candidates on the fitting sample.
//!
//! Real embeddings put most of their variance in a few hundred PCA components, and a
//! quarter of a byte per dimension then finds the same candidates as half a byte
//! while scanning half the bytes (on MiniLM, 96 bytes walk the graph ~1.2x faster
//! than 192 at the same recall). Data whose neighbourhoods are decided by isotropic
//! noise (clusters of white noise) needs the larger size. Which one a collection has
//! is measured, not guessed: rows held out of the sample query the rest, and a size is
//! kept when the exact top-[`CHECK_K`] of nearly every query is among the codec's
//! top `CHECK_K x oversampling`, the candidates a rescore tier re-ranks.

use super::{TransformCodec, TransformFitter};
use crate::codec::{ScalarQuantizer, VectorCodec};
use crate::error::Result;
use crate::eval::{self, codec_top_k, exact_top_k};
use crate::metric::Metric;

/// Results per held-out query the check looks for (a search's default k).
pub const CHECK_K: usize = 10;
/// Held-out sample rows used as queries (at most).
pub const CHECK_QUERIES: usize = 256;
/// Sample rows the held-out queries search (at most; drawn with the queries).
pub const CHECK_BASE: usize = 4096;
/// Fewest sample rows the check runs on; a smaller sample gets the largest size.
pub const CHECK_MIN_ROWS: usize = 1024;
/// The candidate recall a smaller size must reach to be kept.
pub const AUTO_MIN_RECALL: f64 = 0.99;

/// What the automatic fit decided (the store logs only the fitted codec's spec;
/// `examples/auto_check.rs` prints this).
#[derive(Debug, Clone, PartialEq)]
pub struct AutoReport {
    /// Each size tried, smallest first, with its candidate recall (`None`: the
    /// sample was too small to check, so the largest size was used unchecked).
    pub tried: Vec<(usize, Option<f64>)>,
    /// The size chosen.
    pub bytes: usize,
}

/// The byte sizes `transform-auto` tries for `dim` dimensions, smallest first:
/// a quarter and a half of a byte per dimension (deduplicated for tiny `dim`).
pub fn auto_sizes(dim: usize) -> Vec<usize> {
    let mut sizes = vec![(dim / 4).max(1), (dim / 2).max(1)];
    sizes.dedup();
    sizes
}

/// Fits the transform codec at each of [`auto_sizes`] in turn and keeps the first
/// whose [`candidate_recall`] on `sample` reaches [`AUTO_MIN_RECALL`], the largest
/// otherwise. `oversampling` is the candidates per result a search re-ranks (1 with
/// no rescore tier); `metric` the collection's (rows of a cosine collection are
/// already unit vectors).
pub fn fit_auto(
    sample: &[f32],
    dim: usize,
    quantizer: ScalarQuantizer,
    metric: Metric,
    oversampling: f32,
) -> Result<(TransformCodec, AutoReport)> {
    let sizes = auto_sizes(dim);
    let fitter = TransformFitter::new(sample, dim)?;
    let candidates = candidates_for(oversampling);
    let mut tried = Vec::new();
    for (i, &bytes) in sizes.iter().enumerate() {
        let codec = fitter.fit(bytes, quantizer)?;
        let last = i + 1 == sizes.len();
        let recall = if last {
            None
        } else {
            candidate_recall(&codec, sample, dim, metric, candidates)
        };
        tried.push((bytes, recall));
        if last || recall.is_some_and(|r| r >= AUTO_MIN_RECALL) {
            return Ok((codec, AutoReport { tried, bytes }));
        }
    }
    unreachable!("auto_sizes is never empty")
}

/// Candidates a search re-ranks for [`CHECK_K`] results at `oversampling`.
pub fn candidates_for(oversampling: f32) -> usize {
    let os = if oversampling.is_finite() {
        oversampling.max(1.0)
    } else {
        1.0
    };
    ((CHECK_K as f32 * os).ceil() as usize).max(CHECK_K)
}

/// The fraction of the exact top-[`CHECK_K`] neighbours that `codec`'s scores put
/// among their top `candidates`, over held-out rows of `sample` querying (at most
/// [`CHECK_BASE`] of) the rest; `None` when the sample has fewer than
/// [`CHECK_MIN_ROWS`] rows (or `dim` is 0). Deterministic: the rows are drawn by
/// [`eval::seeded_shuffle`].
pub fn candidate_recall(
    codec: &dyn VectorCodec,
    sample: &[f32],
    dim: usize,
    metric: Metric,
    candidates: usize,
) -> Option<f64> {
    let n = sample.len().checked_div(dim)?;
    if n < CHECK_MIN_ROWS {
        return None;
    }
    // Queries and base rows are drawn at random (seeded: the same sample always
    // gets the same answer), not by stride: a stride can alias with the order
    // rows arrived in and query one cluster only.
    let mut order: Vec<usize> = (0..n).collect();
    eval::seeded_shuffle(&mut order, 0x6f_6374_6574);
    let queries = CHECK_QUERIES.min(n / 8);
    let (query_ids, rest) = order.split_at(queries);
    let base = &rest[..rest.len().min(CHECK_BASE)];
    let gather = |rows: &[usize]| -> Vec<f32> {
        rows.iter()
            .flat_map(|&i| metric.prepare_query(&sample[i * dim..][..dim]))
            .collect()
    };
    let base_rows = gather(base);
    let query_rows = gather(query_ids);
    let codes = codec.encode(&base_rows).ok()?;
    let k = CHECK_K.min(base.len());
    let candidates = candidates.clamp(k, base.len());
    let truth = exact_top_k(&base_rows, &query_rows, dim, metric, k);
    let found = codec_top_k(codec, &codes, &query_rows, metric, candidates);
    Some(eval::candidate_recall(&found, &truth, k, candidates))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// `n` unit rows of `dim` values whose variance sits in `rank` directions, plus
    /// a little isotropic noise: the shape of real embeddings' spectra.
    fn low_rank(n: usize, dim: usize, rank: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let basis: Vec<f32> = (0..rank * dim)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let mut rows = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let mut v = vec![0.0f32; dim];
            for (r, b) in basis.chunks_exact(dim).enumerate() {
                let c = rng.random_range(-1.0f32..1.0) / (1.0 + r as f32);
                v.iter_mut().zip(b).for_each(|(x, &y)| *x += c * y);
            }
            v.iter_mut()
                .for_each(|x| *x += rng.random_range(-0.01f32..0.01));
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            rows.extend(v.iter().map(|x| x / norm));
        }
        rows
    }

    /// Eight clusters of white noise: neighbourhoods no PCA component explains.
    fn noise_clusters(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let centres: Vec<f32> = (0..8 * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        (0..n)
            .flat_map(|i| {
                let c = &centres[(i % 8) * dim..][..dim];
                c.iter()
                    .map(|x| x + rng.random_range(-0.3f32..0.3))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn sizes_are_a_quarter_and_a_half_byte_per_dimension() {
        assert_eq!(auto_sizes(384), vec![96, 192]);
        assert_eq!(auto_sizes(6), vec![1, 3]);
        assert_eq!(auto_sizes(2), vec![1]);
        assert_eq!(auto_sizes(1), vec![1]);
        assert_eq!(candidates_for(4.0), 40);
        assert_eq!(candidates_for(1.5), 15);
        assert_eq!(candidates_for(0.5), 10);
        assert_eq!(candidates_for(f32::NAN), 10);
    }

    #[test]
    fn low_rank_data_keeps_the_small_size() {
        let dim = 64;
        let sample = low_rank(3000, dim, 6, 1);
        let (codec, report) =
            fit_auto(&sample, dim, ScalarQuantizer::Uniform, Metric::Cosine, 4.0).expect("fit");
        assert_eq!(report.bytes, 16, "{report:?}");
        assert_eq!(codec.code_len(), 16);
        assert_eq!(report.tried.len(), 1, "{report:?}");
        assert!(
            report.tried[0].1.is_some_and(|r| r >= AUTO_MIN_RECALL),
            "{report:?}"
        );
        // The same codec as a plain fit at that size: the shared PCA changes nothing.
        let plain = TransformCodec::fit(&sample, dim, 16, ScalarQuantizer::Uniform).expect("fit");
        let rows = &sample[..50 * dim];
        assert_eq!(
            codec.encode(rows).expect("encode"),
            plain.encode(rows).expect("encode")
        );
    }

    #[test]
    fn white_noise_clusters_fall_back_to_the_large_size() {
        let dim = 24;
        let sample = noise_clusters(2000, dim, 2);
        let (codec, report) =
            fit_auto(&sample, dim, ScalarQuantizer::Uniform, Metric::L2, 4.0).expect("fit");
        assert_eq!(report.bytes, 12, "{report:?}");
        assert_eq!(codec.code_len(), 12);
        let small = report.tried[0];
        assert_eq!(small.0, 6);
        assert!(small.1.is_some_and(|r| r < AUTO_MIN_RECALL), "{report:?}");
    }

    #[test]
    fn without_a_rescore_tier_the_check_asks_for_more() {
        // With 40 candidates per 10 results the small size passes; with 10 (no
        // rescore tier) the codec alone must rank the top 10, and it cannot.
        let dim = 64;
        let sample = low_rank(3000, dim, 12, 3);
        let fitter = TransformFitter::new(&sample, dim).expect("fit");
        let small = fitter.fit(16, ScalarQuantizer::Uniform).expect("fit");
        let wide = candidate_recall(&small, &sample, dim, Metric::Cosine, 40).expect("checked");
        let narrow = candidate_recall(&small, &sample, dim, Metric::Cosine, 10).expect("checked");
        assert!(narrow < wide, "{narrow} vs {wide}");
        let (_, report) =
            fit_auto(&sample, dim, ScalarQuantizer::Uniform, Metric::Cosine, 1.0).expect("fit");
        assert_eq!(report.bytes, 32, "{report:?}");
    }

    #[test]
    fn a_small_sample_gets_the_large_size_unchecked() {
        let dim = 16;
        let sample = low_rank(CHECK_MIN_ROWS - 1, dim, 3, 4);
        let (codec, report) =
            fit_auto(&sample, dim, ScalarQuantizer::Kmeans, Metric::Dot, 4.0).expect("fit");
        assert_eq!(report.tried, vec![(4, None), (8, None)]);
        assert_eq!((report.bytes, codec.code_len()), (8, 8));
    }

    #[test]
    fn bad_samples_are_refused_as_a_plain_fit_refuses_them() {
        let dim = 8;
        let mut sample = low_rank(1200, dim, 3, 5);
        sample[17] = f32::NAN;
        let err = fit_auto(&sample, dim, ScalarQuantizer::Uniform, Metric::L2, 4.0)
            .expect_err("NaN in the sample");
        let plain = TransformCodec::fit(&sample, dim, 4, ScalarQuantizer::Uniform)
            .expect_err("NaN in the sample");
        assert_eq!(err.to_string(), plain.to_string());
        assert!(
            fit_auto(
                &sample[..dim],
                dim,
                ScalarQuantizer::Uniform,
                Metric::L2,
                4.0
            )
            .is_err()
        );
    }
}
