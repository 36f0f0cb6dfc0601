//! The global block order: which matrix gets its next block first as the byte budget
//! grows.
//!
//! Blocks of one matrix always stay in level order (a block refines the residual of
//! the ones before it). Across matrices there are two policies:
//!
//! - [`OrderPolicy::Greedy`]: every matrix's first `min_levels` blocks come first
//!   (level by level), then repeatedly the candidate next block with the largest
//!   importance per byte. With importances that shrink level by level, as the
//!   Frobenius proxy does, this is the classic greedy for a separable
//!   error-versus-bytes trade-off.
//! - [`OrderPolicy::Balanced`]: the reference's constraint. Level by level: all
//!   matrices get block `l` before any gets block `l + 1`, so at every prefix any two
//!   matrices' block counts differ by at most one. Within a level, matrices are sorted
//!   by importance per byte (the reference sorts by perplexity alone).
//!
//! The reference scores blocks by perplexity; [`score_levels_by_eval`] runs that
//! protocol against any evaluator the caller plugs in.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::error::{QuantError, Result};

/// One matrix's blocks as the ordering sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixBlocks {
    /// Bytes one block of this matrix costs (all its blocks are the same size).
    pub bytes_per_block: u64,
    /// Importance of each level, in level order (higher = load sooner). Must not be
    /// NaN; infinities are allowed (a block that must come first).
    pub importance: Vec<f64>,
}

/// A block in the global order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockId {
    /// Index of the matrix in the slice given to [`global_order`].
    pub matrix: u32,
    /// Level of the block within its matrix (0 = coarsest).
    pub level: u32,
}

/// How blocks of different matrices interleave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderPolicy {
    /// `min_levels` levels of every matrix first, then largest importance per byte.
    Greedy {
        /// Levels every matrix gets before any matrix gets more (the reference keeps
        /// one: a matrix with no block rebuilds as zero).
        min_levels: usize,
    },
    /// Level by level, so block counts stay within one of each other.
    Balanced,
}

impl Default for OrderPolicy {
    fn default() -> Self {
        OrderPolicy::Greedy { min_levels: 1 }
    }
}

/// Candidate next block of one matrix in the greedy phase.
#[derive(Debug, PartialEq)]
struct Candidate {
    per_byte: f64,
    matrix: usize,
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // Max-heap on importance per byte; ties go to the lower matrix index so the
        // order is deterministic.
        self.per_byte
            .total_cmp(&other.per_byte)
            .then_with(|| other.matrix.cmp(&self.matrix))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn per_byte(m: &MatrixBlocks, level: usize) -> f64 {
    m.importance[level] / m.bytes_per_block.max(1) as f64
}

/// The global order of every block of `matrices` under `policy`.
pub fn global_order(matrices: &[MatrixBlocks], policy: OrderPolicy) -> Result<Vec<BlockId>> {
    if u32::try_from(matrices.len()).is_err() {
        return Err(QuantError::InvalidConfig {
            field: "matrices",
            reason: format!("at most {} matrices, got {}", u32::MAX, matrices.len()),
        });
    }
    for (i, m) in matrices.iter().enumerate() {
        if let Some(l) = m.importance.iter().position(|x| x.is_nan()) {
            return Err(QuantError::InvalidConfig {
                field: "importance",
                reason: format!("matrix {i} level {l} is NaN"),
            });
        }
        if m.importance.len() > super::MAX_LEVELS {
            return Err(QuantError::InvalidConfig {
                field: "importance",
                reason: format!(
                    "matrix {i} has {} levels, at most {} allowed",
                    m.importance.len(),
                    super::MAX_LEVELS
                ),
            });
        }
    }
    let max_levels = matrices
        .iter()
        .map(|m| m.importance.len())
        .max()
        .unwrap_or(0);
    let level_major = match policy {
        OrderPolicy::Greedy { min_levels } => min_levels.min(max_levels),
        OrderPolicy::Balanced => max_levels,
    };
    let total = matrices.iter().map(|m| m.importance.len()).sum();
    let mut order = Vec::with_capacity(total);
    let id = |matrix: usize, level: usize| BlockId {
        // Both fit: matrices.len() was checked above, levels are <= MAX_LEVELS.
        matrix: matrix as u32,
        level: level as u32,
    };
    for level in 0..level_major {
        let mut at: Vec<usize> = (0..matrices.len())
            .filter(|&i| matrices[i].importance.len() > level)
            .collect();
        at.sort_by(|&a, &b| {
            per_byte(&matrices[b], level)
                .total_cmp(&per_byte(&matrices[a], level))
                .then(a.cmp(&b))
        });
        order.extend(at.into_iter().map(|m| id(m, level)));
    }
    let mut next: Vec<usize> = matrices
        .iter()
        .map(|m| level_major.min(m.importance.len()))
        .collect();
    let mut heap: BinaryHeap<Candidate> = (0..matrices.len())
        .filter(|&i| next[i] < matrices[i].importance.len())
        .map(|i| Candidate {
            per_byte: per_byte(&matrices[i], next[i]),
            matrix: i,
        })
        .collect();
    while let Some(Candidate { matrix, .. }) = heap.pop() {
        order.push(id(matrix, next[matrix]));
        next[matrix] += 1;
        if next[matrix] < matrices[matrix].importance.len() {
            heap.push(Candidate {
                per_byte: per_byte(&matrices[matrix], next[matrix]),
                matrix,
            });
        }
    }
    debug_assert_eq!(order.len(), total);
    Ok(order)
}

/// Values measured at one level end (every matrix with its first `level + 1`
/// blocks), for [`seam_order`]: what each of some matrices' block `level` would
/// cost if it were unloaded (the tail of its level) and what each matrix's block
/// `level + 1` gains if loaded, in one currency (say perplexity moved) per byte
/// of the block or not, as long as `tail` and `head` agree.
#[derive(Debug, Clone, PartialEq)]
pub struct Seam {
    /// The level whose end the values are measured at.
    pub level: u32,
    /// `(matrix, value)`: what unloading the matrix's block `level` costs.
    pub tail: Vec<(u32, f64)>,
    /// `(matrix, value)`: what loading the matrix's block `level + 1` gains.
    pub head: Vec<(u32, f64)>,
}

/// A level-by-level order (as [`OrderPolicy::Balanced`] gives it) with each
/// level end opened up: the blocks of level `l` that `seams` name in a tail, and
/// as many bytes of level `l + 1`'s first blocks, are reordered among themselves
/// by value per byte, so a block of the next level that gains more than a late
/// block of this one costs comes before it. Each matrix's blocks stay in level
/// order (a block of level `l + 1` waits for its own level-`l` block), and every
/// other block keeps its place. At the old level end the prefix then holds the
/// zone's most valuable bytes instead of all of level `l`.
///
/// A tail block that an earlier seam already moved (it headed that seam) stays
/// where it went. Errors if `balanced` is not level by level, a seam names a
/// level, a matrix or a value (NaN) that does not fit, or two seams share a level.
pub fn seam_order(
    balanced: &[BlockId],
    matrices: &[MatrixBlocks],
    seams: &[Seam],
) -> Result<Vec<BlockId>> {
    let bad = |reason: String| QuantError::InvalidConfig {
        field: "seams",
        reason,
    };
    if balanced.windows(2).any(|w| w[1].level < w[0].level) {
        return Err(bad("the order to open is not level by level".into()));
    }
    let max_level = balanced.iter().map(|b| b.level + 1).max().unwrap_or(0) as usize;
    let mut runs: Vec<Vec<BlockId>> = vec![Vec::new(); max_level];
    for b in balanced {
        runs[b.level as usize].push(*b);
    }
    let bytes = |b: &BlockId| {
        matrices
            .get(b.matrix as usize)
            .map_or(1, |m| m.bytes_per_block.max(1))
    };
    // For each level, the zone after it (between it and the next level).
    let mut zones: Vec<Vec<BlockId>> = vec![Vec::new(); max_level];
    let mut seen = vec![false; max_level];
    for seam in seams {
        let l = seam.level as usize;
        if l + 1 >= max_level || seen[l] {
            return Err(bad(format!(
                "a seam at level {l}: expected one per level below {}",
                max_level.saturating_sub(1)
            )));
        }
        seen[l] = true;
        let mut value = std::collections::HashMap::new();
        for &(m, v) in &seam.tail {
            value.insert(
                BlockId {
                    matrix: m,
                    level: seam.level,
                },
                v,
            );
        }
        for &(m, v) in &seam.head {
            value.insert(
                BlockId {
                    matrix: m,
                    level: seam.level + 1,
                },
                v,
            );
        }
        if let Some((b, v)) = value.iter().find(|(_, v)| v.is_nan()) {
            return Err(bad(format!(
                "matrix {} level {} is NaN ({v})",
                b.matrix, b.level
            )));
        }
        if let Some(&(m, _)) = seam
            .tail
            .iter()
            .chain(&seam.head)
            .find(|t| t.0 as usize >= matrices.len())
        {
            return Err(bad(format!(
                "the seam at level {l} names matrix {m}, only {} exist",
                matrices.len()
            )));
        }
        // The tail: the named blocks of level l still in its run.
        let (tail, core): (Vec<BlockId>, Vec<BlockId>) = runs[l]
            .iter()
            .partition(|b| seam.tail.iter().any(|t| t.0 == b.matrix));
        runs[l] = core;
        // The head: as many bytes of level l + 1's first valued blocks.
        let want: u64 = tail.iter().map(bytes).sum();
        let mut got = 0u64;
        let mut head = Vec::new();
        let mut rest = Vec::new();
        for b in std::mem::take(&mut runs[l + 1]) {
            if got < want && value.contains_key(&b) {
                got += bytes(&b);
                head.push(b);
            } else {
                rest.push(b);
            }
        }
        runs[l + 1] = rest;
        let mut zone: Vec<BlockId> = tail.into_iter().chain(head).collect();
        let per_byte = |b: &BlockId| value[b] / bytes(b) as f64;
        zone.sort_by(|a, b| per_byte(b).total_cmp(&per_byte(a)));
        // A matrix's level l + 1 block waits for its level l block.
        let lower: std::collections::HashSet<u32> = zone
            .iter()
            .filter(|b| b.level as usize == l)
            .map(|b| b.matrix)
            .collect();
        let mut waiting = std::collections::HashMap::new();
        let mut emitted = std::collections::HashSet::new();
        for b in zone {
            if b.level as usize == l + 1
                && lower.contains(&b.matrix)
                && !emitted.contains(&b.matrix)
            {
                waiting.insert(b.matrix, b);
                continue;
            }
            zones[l].push(b);
            if b.level as usize == l {
                emitted.insert(b.matrix);
                if let Some(w) = waiting.remove(&b.matrix) {
                    zones[l].push(w);
                }
            }
        }
    }
    Ok(runs
        .into_iter()
        .zip(zones)
        .flat_map(|(run, zone)| run.into_iter().chain(zone))
        .collect())
}

/// Scores every block by the reference's perplexity protocol, through `eval`.
///
/// `levels[m]` is the number of blocks matrix `m` has. `eval(counts)` must return the
/// perplexity (lower is better) of the model with `counts[m]` blocks loaded in matrix
/// `m`. For each level `l >= 1`, every matrix is set to `l` blocks (one baseline
/// evaluation), then each matrix in turn gets block `l` on top (one evaluation each);
/// block `(m, l)` scores `baseline - perplexity`. Level 0 scores `+inf`: the
/// reference never drops a matrix's first block.
///
/// Cost: `(L - 1) * (M + 1)` evaluations for `M` matrices of `L` levels (a 30-layer
/// model with 7 linears per layer and 16 levels: 3,165 forward passes over the
/// calibration set), which is why the default ordering uses the Frobenius proxy
/// stored in each block instead. A NaN perplexity counts as `+inf`. The first error
/// `eval` returns, of whatever type, is returned as it is.
pub fn score_levels_by_eval<F, E>(
    levels: &[usize],
    mut eval: F,
) -> std::result::Result<Vec<Vec<f64>>, E>
where
    F: FnMut(&[usize]) -> std::result::Result<f64, E>,
{
    let max_levels = levels.iter().copied().max().unwrap_or(0);
    let mut scores: Vec<Vec<f64>> = levels
        .iter()
        .map(|&n| {
            let mut s = vec![0.0; n];
            if let Some(first) = s.first_mut() {
                *first = f64::INFINITY;
            }
            s
        })
        .collect();
    let ppl = |x: f64| if x.is_nan() { f64::INFINITY } else { x };
    let mut counts = vec![0usize; levels.len()];
    for level in 1..max_levels {
        for (c, &n) in counts.iter_mut().zip(levels) {
            *c = level.min(n);
        }
        let baseline = ppl(eval(&counts)?);
        for (m, score) in scores.iter_mut().enumerate() {
            let Some(slot) = score.get_mut(level) else {
                continue;
            };
            counts[m] = level + 1;
            let p = ppl(eval(&counts)?);
            counts[m] = level;
            // inf - inf: neither configuration is measurable, so no gain is credited.
            *slot = if baseline == p { 0.0 } else { baseline - p };
        }
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(bytes: u64, imp: &[f64]) -> MatrixBlocks {
        MatrixBlocks {
            bytes_per_block: bytes,
            importance: imp.to_vec(),
        }
    }

    fn ids(v: &[(u32, u32)]) -> Vec<BlockId> {
        v.iter()
            .map(|&(matrix, level)| BlockId { matrix, level })
            .collect()
    }

    #[test]
    fn greedy_takes_largest_reduction_per_byte_after_the_minimum() {
        let m = [mb(10, &[100.0, 50.0, 1.0]), mb(20, &[100.0, 60.0, 40.0])];
        let got = global_order(&m, OrderPolicy::default()).expect("order");
        // Level 0 by per-byte (10 vs 5), then 5.0, 3.0, 2.0, 0.1 per byte.
        assert_eq!(got, ids(&[(0, 0), (1, 0), (0, 1), (1, 1), (1, 2), (0, 2)]));
    }

    #[test]
    fn greedy_keeps_level_order_even_when_a_later_level_scores_higher() {
        let m = [mb(1, &[1.0, 9.0]), mb(1, &[5.0, 4.0])];
        let got = global_order(&m, OrderPolicy::Greedy { min_levels: 0 }).expect("order");
        assert_eq!(got, ids(&[(1, 0), (1, 1), (0, 0), (0, 1)]));
    }

    #[test]
    fn balanced_keeps_counts_within_one() {
        let m = [
            mb(4, &[9.0, 8.0, 7.0, 6.0]),
            mb(4, &[1.0, 0.5]),
            mb(8, &[3.0, 2.0, 1.0]),
        ];
        let got = global_order(&m, OrderPolicy::Balanced).expect("order");
        assert_eq!(got.len(), 9);
        let mut counts = [0usize; 3];
        for b in &got {
            assert_eq!(b.level as usize, counts[b.matrix as usize]);
            counts[b.matrix as usize] += 1;
            let live: Vec<usize> = (0..3)
                .filter(|&i| counts[i] < m[i].importance.len())
                .map(|i| counts[i])
                .collect();
            if let (Some(lo), Some(hi)) = (live.iter().min(), counts.iter().max()) {
                assert!(hi - lo <= 1, "{counts:?}");
            }
        }
    }

    fn seam(level: u32, tail: &[(u32, f64)], head: &[(u32, f64)]) -> Seam {
        Seam {
            level,
            tail: tail.to_vec(),
            head: head.to_vec(),
        }
    }

    #[test]
    fn a_seam_lets_a_valuable_next_level_block_pass_a_late_one() {
        let m = [mb(1, &[3.0, 1.0]), mb(1, &[2.0, 1.0]), mb(1, &[1.0, 1.0])];
        let balanced = global_order(&m, OrderPolicy::Balanced).expect("order");
        assert_eq!(
            balanced,
            ids(&[(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)])
        );
        // Unloading matrix 2's first block costs 1; matrix 0's second gains 5.
        let got = seam_order(
            &balanced,
            &m,
            &[seam(0, &[(2, 1.0)], &[(0, 5.0), (1, 0.5)])],
        )
        .expect("seams");
        assert_eq!(got, ids(&[(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (2, 1)]));
        // Worth less than the tail: nothing moves.
        let got = seam_order(&balanced, &m, &[seam(0, &[(2, 1.0)], &[(0, 0.5)])]).expect("seams");
        assert_eq!(got, balanced);
    }

    #[test]
    fn a_seam_compares_value_per_byte_and_keeps_each_matrix_in_level_order() {
        // Matrix 1's blocks are 4x the bytes: its second block's 8 is 2 per byte,
        // below matrix 0's tail cost of 3 per byte.
        let m = [mb(1, &[1.0, 1.0]), mb(4, &[1.0, 1.0])];
        let balanced = ids(&[(1, 0), (0, 0), (1, 1), (0, 1)]);
        let got = seam_order(&balanced, &m, &[seam(0, &[(0, 3.0)], &[(1, 8.0)])]).expect("seams");
        assert_eq!(got, balanced);
        // Matrix 0's own next block is worth more than its tail block costs: it
        // still waits for it.
        let got = seam_order(&balanced, &m, &[seam(0, &[(0, 1.0)], &[(0, 50.0)])]).expect("seams");
        assert_eq!(got, ids(&[(1, 0), (0, 0), (0, 1), (1, 1)]));
    }

    #[test]
    fn seams_that_do_not_fit_are_refused() {
        let m = [mb(1, &[1.0, 1.0]), mb(1, &[1.0, 1.0])];
        let balanced = global_order(&m, OrderPolicy::Balanced).expect("order");
        let refused = |s: &[Seam]| seam_order(&balanced, &m, s).is_err();
        assert!(
            refused(&[seam(1, &[(0, 1.0)], &[])]),
            "no level 2 to open into"
        );
        assert!(refused(&[seam(0, &[(2, 1.0)], &[])]), "no matrix 2");
        assert!(refused(&[seam(0, &[(0, f64::NAN)], &[])]));
        assert!(refused(&[seam(0, &[], &[]), seam(0, &[], &[])]));
        let greedy = ids(&[(0, 0), (0, 1), (1, 0), (1, 1)]);
        assert!(seam_order(&greedy, &m, &[]).is_err(), "not level by level");
    }

    proptest::proptest! {
        #[test]
        fn seam_orders_are_valid_and_move_only_their_zones(
            levels in proptest::collection::vec(1usize..5, 1..8),
            bytes in proptest::collection::vec(1u64..5, 8),
            values in proptest::collection::vec(0.0f64..10.0, 64),
            share in 0usize..4,
        ) {
            let m: Vec<MatrixBlocks> = levels
                .iter()
                .zip(&bytes)
                .enumerate()
                .map(|(i, (&n, &b))| mb(b, &values[i * 5..i * 5 + n]))
                .collect();
            let balanced = global_order(&m, OrderPolicy::Balanced).expect("order");
            let max_level = levels.iter().copied().max().unwrap_or(0) as u32;
            let mut k = 40;
            let mut v = || { k = (k + 7) % 64; values[k] };
            let seams: Vec<Seam> = (0..max_level.saturating_sub(1))
                .map(|l| {
                    let at = |lv: u32| -> Vec<u32> {
                        (0..m.len() as u32)
                            .filter(|&i| m[i as usize].importance.len() as u32 > lv)
                            .collect()
                    };
                    Seam {
                        level: l,
                        tail: at(l).into_iter().filter(|i| (*i as usize) % 4 < share).map(|i| (i, v())).collect(),
                        head: at(l + 1).into_iter().map(|i| (i, v())).collect(),
                    }
                })
                .collect();
            let got = seam_order(&balanced, &m, &seams).expect("seams");
            // Every block once, each matrix's in level order.
            let mut next = vec![0usize; m.len()];
            for b in &got {
                proptest::prop_assert_eq!(b.level as usize, next[b.matrix as usize]);
                next[b.matrix as usize] += 1;
            }
            proptest::prop_assert!(next.iter().zip(&m).all(|(&n, mb)| n == mb.importance.len()));
            // Blocks outside every zone keep their relative order.
            let zone = |b: &BlockId| seams.iter().any(|s| {
                (b.level == s.level && s.tail.iter().any(|t| t.0 == b.matrix))
                    || (b.level == s.level + 1)
            });
            let fixed = |o: &[BlockId]| o.iter().filter(|b| !zone(b)).copied().collect::<Vec<_>>();
            proptest::prop_assert_eq!(fixed(&got), fixed(&balanced));
        }
    }

    #[test]
    fn nan_importance_is_rejected() {
        let m = [mb(1, &[1.0, f64::NAN])];
        assert!(global_order(&m, OrderPolicy::default()).is_err());
    }

    #[test]
    fn eval_protocol_scores_the_gain_of_each_block() {
        // A fake model whose perplexity is 100 / (1 + weighted block count): matrix 1
        // matters twice as much as matrix 0.
        let mut calls = 0;
        let scores = score_levels_by_eval(&[3, 3], |c| {
            calls += 1;
            Ok::<_, QuantError>(100.0 / (1.0 + c[0] as f64 + 2.0 * c[1] as f64))
        })
        .expect("scores");
        assert_eq!(calls, 2 * 3);
        assert!(scores[0][0].is_infinite() && scores[1][0].is_infinite());
        for l in 1..3 {
            assert!(
                scores[1][l] > scores[0][l] && scores[0][l] > 0.0,
                "{scores:?}"
            );
        }
        let order = global_order(
            &[mb(1, &scores[0]), mb(1, &scores[1])],
            OrderPolicy::Balanced,
        )
        .expect("order");
        assert_eq!(
            order[2],
            BlockId {
                matrix: 1,
                level: 1
            }
        );
    }
}
