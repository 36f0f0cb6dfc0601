//! Choosing what to recommend from a sweep.

use std::io::Write;

use serde::Serialize;

use super::RESCORE_DEPTHS;
use super::sweep::Sweep;

/// One codec used alone.
#[derive(Debug, Clone, Serialize)]
pub struct Standalone {
    pub codec: String,
    pub bytes_per_vector: usize,
    pub recall: f64,
}

/// A compact candidate tier in memory, rescored from a larger tier on disk.
#[derive(Debug, Clone, Serialize)]
pub struct TwoTier {
    pub candidate_codec: String,
    pub candidate_bytes: usize,
    pub rescore_depth: usize,
    pub rescore_codec: String,
    pub rescore_bytes: usize,
    /// recall@k measured end to end: top-R by the candidate tier, reordered by the rescore tier.
    pub recall: f64,
}

/// The answer of `octet advise`.
#[derive(Debug, Clone, Serialize)]
pub struct Recommendation {
    pub target_recall: f64,
    /// Smallest codec whose flat recall@k reaches the target alone.
    pub standalone: Option<Standalone>,
    /// Smallest in-memory tier that reaches the target with rescoring, when it is
    /// smaller than the standalone choice.
    pub two_tier: Option<TwoTier>,
}

impl Recommendation {
    pub fn choose(sweep: &Sweep, target: f64) -> Recommendation {
        let mut order: Vec<usize> = (0..sweep.results.len()).collect();
        order.sort_by_key(|&i| sweep.results[i].bytes_per_vector);

        let standalone = order
            .iter()
            .map(|&i| &sweep.results[i])
            .filter(|r| r.recall >= target)
            .min_by(|a, b| {
                a.bytes_per_vector
                    .cmp(&b.bytes_per_vector)
                    .then(b.recall.total_cmp(&a.recall))
            })
            .map(|r| Standalone {
                codec: r.codec.clone(),
                bytes_per_vector: r.bytes_per_vector,
                recall: r.recall,
            });
        let limit = standalone
            .as_ref()
            .map_or(usize::MAX, |s| s.bytes_per_vector);

        let mut two_tier = None;
        'search: for &c in order
            .iter()
            .filter(|&&i| sweep.results[i].bytes_per_vector < limit)
        {
            for (depth_idx, &r) in RESCORE_DEPTHS.iter().enumerate() {
                // The candidates must hold the true neighbours before any rescoring can find them.
                if sweep.results[c].candidate_recall[depth_idx].1 < target {
                    continue;
                }
                for &t in order.iter().filter(|&&t| {
                    sweep.results[t].bytes_per_vector > sweep.results[c].bytes_per_vector
                }) {
                    let recall = sweep.two_tier_recall(&sweep.measured[c], r, &sweep.measured[t]);
                    if recall >= target {
                        two_tier = Some(TwoTier {
                            candidate_codec: sweep.results[c].codec.clone(),
                            candidate_bytes: sweep.results[c].bytes_per_vector,
                            rescore_depth: r,
                            rescore_codec: sweep.results[t].codec.clone(),
                            rescore_bytes: sweep.results[t].bytes_per_vector,
                            recall,
                        });
                        break 'search;
                    }
                }
            }
        }
        Recommendation {
            target_recall: target,
            standalone,
            two_tier,
        }
    }

    pub fn print(&self, out: &mut impl Write, sweep: &Sweep) -> std::io::Result<()> {
        let k = sweep.k;
        let f32_bytes = 4 * sweep.dim;
        writeln!(out, "Target recall@{k} >= {}:", self.target_recall)?;
        match &self.standalone {
            Some(s) => writeln!(
                out,
                "  alone:     {} at {} bytes/vector ({:.1}x smaller than f32), recall@{k} {:.4}",
                s.codec,
                s.bytes_per_vector,
                f32_bytes as f64 / s.bytes_per_vector as f64,
                s.recall
            )?,
            None => writeln!(
                out,
                "  alone:     no measured codec reaches the target on its own"
            )?,
        }
        match &self.two_tier {
            Some(t) => writeln!(
                out,
                "  two tiers: {} in memory at {} bytes/vector ({:.1}x smaller than f32), top-{} rescored \
                 from {} on disk ({} bytes/vector): recall@{k} {:.4}",
                t.candidate_codec,
                t.candidate_bytes,
                f32_bytes as f64 / t.candidate_bytes as f64,
                t.rescore_depth,
                t.rescore_codec,
                t.rescore_bytes,
                t.recall
            ),
            None => writeln!(
                out,
                "  two tiers: no smaller candidate tier reaches the target with rescoring"
            ),
        }
    }
}
