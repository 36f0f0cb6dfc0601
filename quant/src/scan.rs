//! Flat scans: the best `k` codes by a scorer's precise score, found by scoring
//! every code with its cheaper coarse estimate first ([`Scorer::coarse`]) and
//! only the most promising ones precisely.
//!
//! The candidates are taken best coarse score first. Once `k` precise scores are
//! in hand and at least `RESCORE_FLOOR x k` candidates were scored, the scan
//! stops at the first candidate whose coarse score plus a margin falls below the
//! `k`-th precise score: no later candidate can beat it unless its coarse score
//! strays further than the margin. The margin is the smaller of
//! [`Scorer::coarse_error`] (a worst-case bound: with it the result is exactly the
//! precise scan's) and `MARGIN_FACTOR` times the largest coarse error seen among
//! the candidates scored so far (the bound is loose by an order of magnitude for
//! the transform codec's one-plane weights; on the MiniLM development set the
//! observed margin returned the precise scan's exact top-k for every query, see
//! `octet advise`).
//!
//! Scorers whose coarse score is the precise one ([`Scorer::coarse_error`] 0)
//! are scored once per code.

use std::cmp::Ordering;

use crate::codec::Scorer;

/// Candidates scored precisely before the scan may stop, as a multiple of `k`.
const RESCORE_FLOOR: usize = 2;

/// The observed margin as a multiple of the largest coarse error seen.
const MARGIN_FACTOR: f32 = 2.0;

/// Relative float rounding allowed between a coarse and a precise score beyond
/// [`Scorer::coarse_error`].
const ROUNDING: f32 = 2e-4;

/// How a scan bounds the coarse score's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Margin {
    /// The smaller of the scorer's worst-case bound and twice the largest error
    /// seen (the default).
    Observed,
    /// The scorer's worst-case bound alone: the precise scan's result exactly,
    /// usually after scoring many more candidates precisely.
    Proven,
}

/// One result of a scan: a code's index (or id) and its precise score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Index of the code in the scanned codes.
    pub id: u32,
    /// Its precise score ([`Scorer::score`]).
    pub score: f32,
}

/// Best first: higher score, then the lower id (as [`crate::eval::top_k`]).
fn better(a: &Hit, b: &Hit) -> Ordering {
    b.score.total_cmp(&a.score).then(a.id.cmp(&b.id))
}

/// The best `k` of `ids` (every code of `codes` when `None`) by `scorer`'s
/// precise score, best first (ties to the lower id). `codes` holds consecutive
/// codes of [`Scorer::code_len`] bytes. Panics if an id lies outside `codes`.
pub fn best_k(
    scorer: &dyn Scorer,
    codes: &[u8],
    ids: Option<&[u32]>,
    k: usize,
    margin: Margin,
) -> Vec<Hit> {
    let len = scorer.code_len();
    let n = ids.map_or(codes.len() / len.max(1), <[u32]>::len);
    if k == 0 || n == 0 || len == 0 {
        return Vec::new();
    }
    let id_of = |i: usize| ids.map_or(i as u32, |ids| ids[i]);
    let code = |id: u32| &codes[id as usize * len..][..len];
    let bound = scorer.coarse_error();
    // Where the coarse score is the precise one, a single pass scores every code
    // and the best `k` are selected; otherwise that pass is the coarse one.
    let exact = bound == 0.0;
    let mut scores = vec![0f32; n];
    match (ids, exact) {
        (None, true) => scorer.score_batch(codes, &mut scores),
        (Some(ids), true) => {
            for (&id, s) in ids.iter().zip(scores.iter_mut()) {
                *s = scorer.score(code(id));
            }
        }
        (None, false) => scorer.coarse_batch(codes, &mut scores),
        (Some(ids), false) => scorer.coarse_gather(codes, ids, &mut scores),
    }
    let mut order: Vec<Hit> = scores
        .iter()
        .enumerate()
        .map(|(i, &score)| Hit {
            id: id_of(i),
            score,
        })
        .collect();
    if exact {
        select_best(&mut order, k);
        return order;
    }
    // Candidates by coarse score; sorted a slice at a time, as the scan needs them.
    let floor = RESCORE_FLOOR.saturating_mul(k).min(n);
    let mut best: Vec<Hit> = Vec::with_capacity(k + 1);
    let mut seen_error = 0f32;
    let mut sorted = 0;
    let mut chunk = (floor + 16).min(n);
    let mut done = 0;
    'scan: while done < n {
        if done == sorted {
            let rest = &mut order[sorted..];
            let take = chunk.min(rest.len());
            if take < rest.len() {
                rest.select_nth_unstable_by(take - 1, better);
            }
            rest[..take].sort_unstable_by(better);
            sorted += take;
            chunk = chunk.saturating_mul(2);
        }
        for cand in &order[done..sorted] {
            if best.len() == k && done >= floor {
                let margin = match margin {
                    Margin::Observed => bound.min(MARGIN_FACTOR * seen_error),
                    Margin::Proven => bound,
                };
                // Float rounding of the two sums, as the codecs' tests allow it.
                let kth = best[k - 1].score;
                if cand.score + margin + ROUNDING * (kth.abs() + 1.0) < kth {
                    break 'scan;
                }
            }
            let hit = Hit {
                id: cand.id,
                score: scorer.score(code(cand.id)),
            };
            seen_error = seen_error.max((hit.score - cand.score).abs());
            let at = best.partition_point(|b| better(b, &hit) == Ordering::Less);
            if at < k {
                best.insert(at, hit);
                best.truncate(k);
            }
            done += 1;
        }
    }
    best
}

/// Keeps the best `k` of `hits`, best first.
fn select_best(hits: &mut Vec<Hit>, k: usize) {
    if k < hits.len() {
        hits.select_nth_unstable_by(k - 1, better);
        hits.truncate(k);
    }
    hits.sort_unstable_by(better);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{CodecSpec, VectorCodec};
    use crate::metric::Metric;
    use proptest::prelude::*;

    /// Unit-length rows with a few dominant directions, like sentence embeddings.
    fn rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        };
        let dirs: Vec<f32> = (0..4 * dim).map(|_| next()).collect();
        let mut out = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let mix: Vec<f32> = (0..4).map(|_| next() * 3.0).collect();
            let mut v: Vec<f32> = (0..dim)
                .map(|j| next() * 0.3 + (0..4).map(|d| mix[d] * dirs[d * dim + j]).sum::<f32>())
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            v.iter_mut().for_each(|x| *x /= norm);
            out.extend(v);
        }
        out
    }

    /// The precise scan: every code scored, all sorted best first, the first `k`.
    fn precise(scorer: &dyn Scorer, codes: &[u8], ids: &[u32], k: usize) -> Vec<Hit> {
        let len = scorer.code_len();
        let mut hits: Vec<Hit> = ids
            .iter()
            .map(|&id| Hit {
                id,
                score: scorer.score(&codes[id as usize * len..][..len]),
            })
            .collect();
        hits.sort_by(better);
        hits.truncate(k);
        hits
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        /// With the proven margin a scan is the precise scan, for every codec
        /// (a coarse transform scorer and ones whose coarse score is exact), over
        /// all codes and over a subset of ids in any order.
        #[test]
        fn proven_scan_is_the_precise_scan(
            spec in prop::sample::select(vec!["transform24", "transform48", "i8", "f32"]),
            k in 1usize..40,
            seed in any::<u64>(),
        ) {
            let (n, dim) = (300, 48);
            let data = rows(n, dim, seed % 997);
            let spec: CodecSpec = spec.parse().expect("spec");
            let codec = spec.fit(&data, dim).expect("fit");
            let codes = codec.encode(&data).expect("encode");
            let all: Vec<u32> = (0..n as u32).collect();
            let subset: Vec<u32> = all.iter().rev().copied().filter(|i| i % 3 != 1).collect();
            for q in 0..3 {
                let scorer = codec.scorer(&data[q * dim..][..dim], Metric::Cosine);
                let want = precise(scorer.as_ref(), &codes, &all, k);
                prop_assert_eq!(&best_k(scorer.as_ref(), &codes, None, k, Margin::Proven), &want);
                prop_assert_eq!(
                    best_k(scorer.as_ref(), &codes, Some(&subset), k, Margin::Proven),
                    precise(scorer.as_ref(), &codes, &subset, k)
                );
                // The observed margin scores precisely what it returns.
                let observed = best_k(scorer.as_ref(), &codes, None, k, Margin::Observed);
                prop_assert_eq!(observed.len(), k.min(n));
                for h in &observed {
                    prop_assert_eq!(h.score, scorer.score(&codes[h.id as usize * codec.code_len()..][..codec.code_len()]));
                }
                prop_assert!(observed.windows(2).all(|w| better(&w[0], &w[1]) == Ordering::Less));
            }
        }
    }

    #[test]
    fn empty_inputs_give_no_hits() {
        let data = rows(20, 8, 3);
        let codec = "i8"
            .parse::<CodecSpec>()
            .expect("spec")
            .fit(&data, 8)
            .expect("fit");
        let codes = codec.encode(&data).expect("encode");
        let scorer = codec.scorer(&data[..8], Metric::Dot);
        assert!(best_k(scorer.as_ref(), &codes, None, 0, Margin::Observed).is_empty());
        assert!(best_k(scorer.as_ref(), &codes, Some(&[]), 5, Margin::Observed).is_empty());
        assert_eq!(
            best_k(scorer.as_ref(), &codes, None, 50, Margin::Observed).len(),
            20
        );
    }
}
