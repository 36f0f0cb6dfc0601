//! Ground truth and recall: exact f32 top-k by brute force, and how much of it a
//! search over codes finds. Used by `octet advise`, the store's harnesses and tests.

use rayon::prelude::*;

use crate::codec::VectorCodec;
use crate::metric::Metric;
use crate::scan::{Margin, best_k};

/// Indices of the `k` highest `scores`, best first; ties go to the lower index so
/// results are deterministic.
pub fn top_k(scores: &[f32], k: usize) -> Vec<u32> {
    let k = k.min(scores.len());
    let mut idx: Vec<u32> = (0..scores.len() as u32).collect();
    let better = |a: &u32, b: &u32| {
        scores[*b as usize]
            .total_cmp(&scores[*a as usize])
            .then(a.cmp(b))
    };
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, better);
        idx.truncate(k);
    }
    idx.sort_unstable_by(better);
    idx.truncate(k);
    idx
}

/// Exact top-`k` base rows for every query (rows of `dim` values), by brute force
/// in f32. For cosine, both sides are expected to be unit length already.
pub fn exact_top_k(
    base: &[f32],
    queries: &[f32],
    dim: usize,
    metric: Metric,
    k: usize,
) -> Vec<Vec<u32>> {
    queries
        .par_chunks(dim)
        .map(|q| {
            let scores: Vec<f32> = base.chunks_exact(dim).map(|x| metric.exact(q, x)).collect();
            top_k(&scores, k)
        })
        .collect()
}

/// Top-`k` base rows for every query by a flat scan over `codes` with `codec`'s
/// scorer ([`crate::scan::best_k`]: coarse scores first where the scorer has them,
/// then precise scores for the candidates that can still make the top `k`).
pub fn codec_top_k(
    codec: &dyn VectorCodec,
    codes: &[u8],
    queries: &[f32],
    metric: Metric,
    k: usize,
) -> Vec<Vec<u32>> {
    queries
        .par_chunks(codec.dim())
        .map(|q| {
            let scorer = codec.scorer(q, metric);
            best_k(scorer.as_ref(), codes, None, k, Margin::Observed)
                .into_iter()
                .map(|h| h.id)
                .collect()
        })
        .collect()
}

/// Mean over queries of |first `k` of `found` ∩ first `k` of `truth`| / k.
pub fn recall_at(found: &[Vec<u32>], truth: &[Vec<u32>], k: usize) -> f64 {
    candidate_recall(found, truth, k, k)
}

/// Mean over queries of the fraction of the true top-`k` that lies inside the first
/// `r` candidates of `found`: how often a rescore of `r` candidates can recover the
/// exact top-`k`.
pub fn candidate_recall(found: &[Vec<u32>], truth: &[Vec<u32>], k: usize, r: usize) -> f64 {
    if truth.is_empty() || k == 0 {
        return 0.0;
    }
    let total: usize = found
        .iter()
        .zip(truth)
        .map(|(f, t)| {
            let cands = &f[..r.min(f.len())];
            t.iter().take(k).filter(|id| cands.contains(id)).count()
        })
        .sum();
    total as f64 / (truth.len() * k) as f64
}

/// Shuffles `items` in place by Fisher-Yates driven by SplitMix64 (Steele et al.
/// 2014) from `seed`: a fixed, dependency-free permutation, so samples drawn with it
/// (and what is fitted or checked on them) are reproducible.
pub fn seeded_shuffle(items: &mut [usize], seed: u64) {
    let mut state = seed;
    for i in (1..items.len()).rev() {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        items.swap(i, (z % (i as u64 + 1)) as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_shuffles_are_permutations_fixed_by_their_seed() {
        let shuffled = |seed| {
            let mut v: Vec<usize> = (0..100).collect();
            seeded_shuffle(&mut v, seed);
            v
        };
        let a = shuffled(7);
        assert_eq!(a, shuffled(7));
        assert_ne!(a, shuffled(8));
        assert_ne!(a, (0..100).collect::<Vec<_>>());
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn top_k_is_sorted_and_breaks_ties_by_index() {
        let s = [0.5, 0.9, 0.1, 0.9, 0.3];
        assert_eq!(top_k(&s, 3), vec![1, 3, 0]);
        assert_eq!(top_k(&s, 10), vec![1, 3, 0, 4, 2]);
        assert!(top_k(&s, 0).is_empty());
    }

    #[test]
    fn recall_counts_overlap() {
        let truth = vec![vec![1, 2, 3, 4]];
        let found = vec![vec![2, 9, 1, 8, 3]];
        assert_eq!(recall_at(&found, &truth, 2), 0.5);
        assert_eq!(candidate_recall(&found, &truth, 2, 3), 1.0);
        assert_eq!(candidate_recall(&found, &truth, 4, 5), 0.75);
    }
}
