//! Exact weighted k-means in one dimension.
//!
//! In 1-D the optimal k-means clusters are contiguous runs of the sorted values, so
//! the optimum is a dynamic program over "the first `i` values in `c` clusters"
//! (Wang and Song, "Ckmeans.1d.dp", R Journal 2011). The cost of a run is read in
//! O(1) from prefix sums of `w`, `w x` and `w x^2`; the best split point is monotone
//! in `i`, so each layer is solved by divide and conquer in `O(n log n)`
//! (Grønlund et al., "Fast exact k-means, k-medians and Bregman divergence
//! clustering in 1D", 2017), `O(k n log n)` in all.
//!
//! Weighted points make this the histogram form that eDKM (arXiv 2309.00964) calls
//! *uniquification*: a bf16 tensor of a billion weights has at most 65,536 distinct
//! values, so cluster `(value, count)` pairs from [`histogram`] instead of the raw
//! weights; the result is exactly the k-means of the raw multiset. Weights may also
//! carry an importance (e.g. `count * mean(x^2)` of an input channel).
//!
//! Users: the LLM weight palettes (2^b centroids per tensor or group) and the
//! transform codec's per-component k-means quantizer.
//!
//! ```
//! use octet_quant::kmeans1d::{histogram, optimal_kmeans_1d};
//! let raw = [1.0f32, 1.0, 1.1, 5.0, 5.2, 9.0];
//! let (values, counts) = histogram(&raw);
//! let km = optimal_kmeans_1d(&values, &counts, 3).unwrap();
//! assert_eq!(km.centroids.len(), 3);
//! assert_eq!(km.assign(1.05), 0);
//! assert_eq!(km.assign(8.0), 2);
//! ```

use crate::error::{QuantError, Result};

/// An optimal 1-D clustering: centroids ascending, with the decision boundaries
/// between them.
#[derive(Debug, Clone, PartialEq)]
pub struct Kmeans1d {
    /// Cluster centres (weighted means), strictly ascending. There are
    /// `min(k, number of distinct values with positive weight)` of them.
    pub centroids: Vec<f64>,
    /// `centroids.len() - 1` thresholds: the midpoints between adjacent centroids.
    /// A value `x` belongs to cluster `i` when `boundaries[i-1] <= x < boundaries[i]`.
    pub boundaries: Vec<f64>,
    /// Total weight assigned to each cluster.
    pub cluster_weights: Vec<f64>,
    /// The weighted sum of squared distances to the nearest centroid (the k-means
    /// objective), recomputed directly from the clusters.
    pub cost: f64,
}

impl Kmeans1d {
    /// Index of the centroid nearest to `x` (the lower one on an exact tie).
    pub fn assign(&self, x: f64) -> usize {
        self.boundaries.partition_point(|&b| b <= x)
    }

    /// The centroid nearest to `x`.
    pub fn quantize(&self, x: f64) -> f64 {
        self.centroids[self.assign(x)]
    }
}

/// Sorted distinct values of `values` with their counts, as f64: the weighted input
/// to [`optimal_kmeans_1d`] that makes its run time independent of `values.len()`.
///
/// Non-finite values are kept (sorted by [`f32::total_cmp`]) so that the clustering
/// call reports them as an error rather than this one dropping them silently.
/// `-0.0` and `0.0` are merged.
pub fn histogram(values: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let mut sorted: Vec<f32> = values
        .iter()
        .map(|&v| if v == 0.0 { 0.0 } else { v })
        .collect();
    sorted.sort_unstable_by(f32::total_cmp);
    let mut uniq: Vec<f64> = Vec::new();
    let mut counts: Vec<f64> = Vec::new();
    let mut prev: Option<f32> = None;
    for v in sorted {
        if prev.is_some_and(|p| p.to_bits() == v.to_bits()) {
            if let Some(c) = counts.last_mut() {
                *c += 1.0;
            }
        } else {
            uniq.push(f64::from(v));
            counts.push(1.0);
            prev = Some(v);
        }
    }
    (uniq, counts)
}

/// Exact weighted k-means of the points `values[i]` with weights `weights[i]` into at
/// most `k` clusters.
///
/// `values` may come in any order and may repeat (equal values are merged);
/// zero-weight points are ignored. When there are at most `k` distinct values with
/// positive weight, each gets its own centroid and the cost is 0. Errors on `k == 0`,
/// different lengths, non-finite values or weights, negative weights, or no positive
/// weight at all.
///
/// Time `O(k n log n)` for `n` distinct values, memory `O(k n)` (a `u32` split table
/// for recovering the clusters).
pub fn optimal_kmeans_1d(values: &[f64], weights: &[f64], k: usize) -> Result<Kmeans1d> {
    let pts = Points::new(values, weights, k, true)?;
    if pts.len() <= k {
        return Ok(pts.clusters(&(0..=pts.len()).collect::<Vec<_>>()));
    }
    let dp = Dp::new(&pts);
    let mut splits = vec![0u32; (k - 1) * pts.len()];
    let mut prev = dp.first_layer();
    let mut next = vec![0f64; pts.len() + 1];
    for c in 2..=k {
        let row = &mut splits[(c - 2) * pts.len()..(c - 1) * pts.len()];
        dp.layer(c, &prev, &mut next, Some(row));
        std::mem::swap(&mut prev, &mut next);
    }
    Ok(pts.clusters(&backtrack(&splits, pts.len(), k)))
}

/// The optimal k-means cost for every cluster count `1..=k_max` (entry `c - 1` is the
/// cost with `c` clusters), from one dynamic program: what a bit allocator needs to
/// compare widths without fitting each one. Same inputs and errors as
/// [`optimal_kmeans_1d`]; memory `O(n)`.
pub fn optimal_kmeans_1d_costs(values: &[f64], weights: &[f64], k_max: usize) -> Result<Vec<f64>> {
    let pts = Points::new(values, weights, k_max, true)?;
    let dp = Dp::new(&pts);
    let n = pts.len();
    let mut costs = Vec::with_capacity(k_max);
    let mut prev = dp.first_layer();
    costs.push(prev[n]);
    let mut next = vec![0f64; n + 1];
    for c in 2..=k_max.min(n) {
        dp.layer(c, &prev, &mut next, None);
        std::mem::swap(&mut prev, &mut next);
        costs.push(prev[n]);
    }
    costs.resize(k_max, 0.0);
    Ok(costs)
}

/// The scalar twin of [`optimal_kmeans_1d`]: the plain `O(k n^2)` dynamic program with
/// no divide and conquer, and no merging of equal values (so it also serves as
/// "k-means on the raw samples" when given every raw value with weight 1).
pub fn optimal_kmeans_1d_brute(values: &[f64], weights: &[f64], k: usize) -> Result<Kmeans1d> {
    let pts = Points::new(values, weights, k, false)?;
    let n = pts.len();
    if n <= k {
        return Ok(pts.clusters(&(0..=n).collect::<Vec<_>>()));
    }
    let mut cost = vec![vec![f64::INFINITY; n + 1]; k + 1];
    let mut split = vec![vec![0usize; n + 1]; k + 1];
    for (i, c1) in cost[1].iter_mut().enumerate().skip(1) {
        *c1 = pts.run_cost(0, i);
    }
    for c in 2..=k {
        for i in c..=n {
            for j in (c - 1)..i {
                let v = cost[c - 1][j] + pts.run_cost(j, i);
                if v < cost[c][i] {
                    cost[c][i] = v;
                    split[c][i] = j;
                }
            }
        }
    }
    let mut ends = vec![n];
    let mut i = n;
    for c in (2..=k).rev() {
        i = split[c][i];
        ends.push(i);
    }
    ends.push(0);
    ends.reverse();
    Ok(pts.clusters(&ends))
}

/// Validated, sorted points with prefix sums of `w`, `w x`, `w x^2` about their mean.
struct Points {
    x: Vec<f64>,
    w: Vec<f64>,
    /// Subtracted from `x` before the prefix sums, so run costs do not cancel.
    shift: f64,
    cw: Vec<f64>,
    cwx: Vec<f64>,
    cwxx: Vec<f64>,
}

impl Points {
    fn new(values: &[f64], weights: &[f64], k: usize, merge: bool) -> Result<Points> {
        if k == 0 {
            return Err(QuantError::InvalidConfig {
                field: "k (number of clusters)",
                reason: "must be >= 1".into(),
            });
        }
        if values.len() != weights.len() {
            return Err(QuantError::DimMismatch {
                what: "k-means weights (one per value)",
                expected: values.len(),
                actual: weights.len(),
            });
        }
        let mut pairs = Vec::with_capacity(values.len());
        for (i, (&x, &w)) in values.iter().zip(weights).enumerate() {
            if !x.is_finite() {
                return Err(QuantError::NonFinite {
                    row: i,
                    col: 0,
                    value: x as f32,
                });
            }
            if !(w.is_finite() && w >= 0.0) {
                return Err(QuantError::InvalidConfig {
                    field: "k-means weights",
                    reason: format!("weight {i} is {w}; weights must be finite and >= 0"),
                });
            }
            if w > 0.0 {
                pairs.push((x, w));
            }
        }
        if pairs.is_empty() {
            return Err(QuantError::NotEnoughSamples {
                what: "1-D k-means (points with positive weight)",
                needed: 1,
                got: 0,
            });
        }
        if !pairs.is_sorted_by(|a, b| a.0 <= b.0) {
            pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let mut x = Vec::with_capacity(pairs.len());
        let mut w: Vec<f64> = Vec::with_capacity(pairs.len());
        for (xi, wi) in pairs {
            match (merge, x.last(), w.last_mut()) {
                (true, Some(&last), Some(lw)) if last == xi => *lw += wi,
                _ => {
                    x.push(xi);
                    w.push(wi);
                }
            }
        }
        let total: f64 = w.iter().sum();
        let shift = x.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() / total;
        let n = x.len();
        let (mut cw, mut cwx, mut cwxx) = (vec![0.0; n + 1], vec![0.0; n + 1], vec![0.0; n + 1]);
        for i in 0..n {
            let d = x[i] - shift;
            cw[i + 1] = cw[i] + w[i];
            cwx[i + 1] = cwx[i] + w[i] * d;
            cwxx[i + 1] = cwxx[i] + w[i] * d * d;
        }
        Ok(Points {
            x,
            w,
            shift,
            cw,
            cwx,
            cwxx,
        })
    }

    fn len(&self) -> usize {
        self.x.len()
    }

    /// Weighted squared error of points `a..b` about their mean (`a < b`).
    #[inline]
    fn run_cost(&self, a: usize, b: usize) -> f64 {
        let w = self.cw[b] - self.cw[a];
        let s = self.cwx[b] - self.cwx[a];
        let q = self.cwxx[b] - self.cwxx[a];
        (q - s * s / w).max(0.0)
    }

    /// The clustering whose runs end at `ends` (`ends[0] == 0`, last `== len`).
    fn clusters(&self, ends: &[usize]) -> Kmeans1d {
        let mut centroids = Vec::with_capacity(ends.len() - 1);
        let mut cluster_weights = Vec::with_capacity(ends.len() - 1);
        let mut cost = 0.0;
        for run in ends.windows(2) {
            let (a, b) = (run[0], run[1]);
            let w = self.cw[b] - self.cw[a];
            let c = self.shift + (self.cwx[b] - self.cwx[a]) / w;
            // A mean of values in [x_a, x_{b-1}] lies in it; clamp away rounding.
            let c = c.clamp(self.x[a], self.x[b - 1]);
            cost += (a..b)
                .map(|i| self.w[i] * (self.x[i] - c).powi(2))
                .sum::<f64>();
            centroids.push(c);
            cluster_weights.push(w);
        }
        let boundaries = centroids.windows(2).map(|c| 0.5 * (c[0] + c[1])).collect();
        Kmeans1d {
            centroids,
            boundaries,
            cluster_weights,
            cost,
        }
    }
}

/// The divide-and-conquer layer solver over [`Points`].
struct Dp<'a> {
    pts: &'a Points,
}

impl<'a> Dp<'a> {
    fn new(pts: &'a Points) -> Self {
        Dp { pts }
    }

    /// `D_1[i]`: the cost of the first `i` points in one cluster.
    fn first_layer(&self) -> Vec<f64> {
        let n = self.pts.len();
        let mut d = vec![0f64; n + 1];
        for (i, di) in d.iter_mut().enumerate().skip(1) {
            *di = self.pts.run_cost(0, i);
        }
        d
    }

    /// `D_c[i] = min_{c-1 <= j < i} D_{c-1}[j] + cost(j, i)` for every `i >= c`,
    /// recording the best `j` (the leftmost on ties) in `split[i - 1]`.
    fn layer(&self, c: usize, prev: &[f64], next: &mut [f64], mut split: Option<&mut [u32]>) {
        let n = self.pts.len();
        next[..c].fill(f64::INFINITY);
        // Explicit stack of (i range, j range): recursion depth would be log n anyway.
        let mut stack = vec![(c, n, c - 1, n - 1)];
        while let Some((ilo, ihi, jlo, jhi)) = stack.pop() {
            if ilo > ihi {
                continue;
            }
            let i = (ilo + ihi) / 2;
            let mut best = f64::INFINITY;
            let mut arg = jlo;
            let top = jhi.min(i - 1);
            for (j, &p) in prev.iter().enumerate().take(top + 1).skip(jlo) {
                let v = p + self.pts.run_cost(j, i);
                if v < best {
                    best = v;
                    arg = j;
                }
            }
            next[i] = best;
            if let Some(s) = split.as_deref_mut() {
                s[i - 1] = arg as u32;
            }
            if i > ilo {
                stack.push((ilo, i - 1, jlo, arg));
            }
            stack.push((i + 1, ihi, arg, jhi));
        }
    }
}

/// Cluster end positions from the split table of layers `2..=k`.
fn backtrack(splits: &[u32], n: usize, k: usize) -> Vec<usize> {
    let mut ends = vec![n];
    let mut i = n;
    for c in (2..=k).rev() {
        i = splits[(c - 2) * n + i - 1] as usize;
        ends.push(i);
    }
    ends.push(0);
    ends.reverse();
    ends
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    /// The objective of `km` recomputed by nearest-centroid assignment.
    fn objective(km: &Kmeans1d, values: &[f64], weights: &[f64]) -> f64 {
        values
            .iter()
            .zip(weights)
            .map(|(&x, &w)| w * (x - km.quantize(x)).powi(2))
            .sum()
    }

    #[test]
    fn small_example() {
        let km = optimal_kmeans_1d(&[1.0, 2.0, 10.0, 11.0, 12.0], &[1.0; 5], 2).expect("fit");
        assert_eq!(km.centroids, vec![1.5, 11.0]);
        assert_eq!(km.cluster_weights, vec![2.0, 3.0]);
        assert!(close(km.cost, 0.5 + 2.0));
        assert_eq!(km.boundaries, vec![6.25]);
        assert_eq!(km.assign(6.0), 0);
        assert_eq!(km.assign(6.25), 1);
    }

    #[test]
    fn fewer_values_than_clusters_and_zero_weights() {
        let km = optimal_kmeans_1d(&[3.0, 1.0, 3.0, 7.0], &[1.0, 2.0, 1.0, 0.0], 4).expect("fit");
        // 7.0 has zero weight and the two 3.0s merge: two distinct points remain.
        assert_eq!(km.centroids, vec![1.0, 3.0]);
        assert_eq!(km.cluster_weights, vec![2.0, 2.0]);
        assert_eq!(km.cost, 0.0);
        let one = optimal_kmeans_1d(&[5.0], &[1.0], 3).expect("fit");
        assert_eq!(one.centroids, vec![5.0]);
        assert!(one.boundaries.is_empty());
        assert_eq!(one.assign(-100.0), 0);
    }

    #[test]
    fn bad_inputs_are_named_errors() {
        assert!(matches!(
            optimal_kmeans_1d(&[1.0], &[1.0], 0),
            Err(QuantError::InvalidConfig { .. })
        ));
        assert!(matches!(
            optimal_kmeans_1d(&[1.0, 2.0], &[1.0], 1),
            Err(QuantError::DimMismatch { .. })
        ));
        assert!(matches!(
            optimal_kmeans_1d(&[1.0, f64::NAN], &[1.0, 1.0], 1),
            Err(QuantError::NonFinite { row: 1, .. })
        ));
        assert!(optimal_kmeans_1d(&[1.0, 2.0], &[1.0, -1.0], 1).is_err());
        assert!(matches!(
            optimal_kmeans_1d(&[1.0, 2.0], &[0.0, 0.0], 1),
            Err(QuantError::NotEnoughSamples { .. })
        ));
        let (v, w) = histogram(&[1.0, f32::INFINITY]);
        assert!(optimal_kmeans_1d(&v, &w, 1).is_err());
    }

    #[test]
    fn histogram_sorts_and_counts() {
        let (v, w) = histogram(&[2.0, -1.0, 2.0, 0.0, -0.0, 2.0]);
        assert_eq!(v, vec![-1.0, 0.0, 2.0]);
        assert_eq!(w, vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn histogram_form_equals_kmeans_on_raw_samples() {
        // Few distinct values, many repeats: the eDKM setting.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let raw: Vec<f32> = (0..400)
            .map(|_| (rng.random_range(-20i32..20) as f32) * 0.25)
            .collect();
        let (values, counts) = histogram(&raw);
        let raw64: Vec<f64> = raw.iter().map(|&v| f64::from(v)).collect();
        let ones = vec![1.0; raw.len()];
        for k in [1, 2, 3, 5, 8, 16] {
            let hist = optimal_kmeans_1d(&values, &counts, k).expect("fit");
            let full = optimal_kmeans_1d_brute(&raw64, &ones, k).expect("fit");
            assert!(
                close(hist.cost, full.cost),
                "k={k}: {} vs {}",
                hist.cost,
                full.cost
            );
            assert!(close(hist.cost, objective(&hist, &raw64, &ones)));
            // Lloyd's algorithm from any start never beats the optimum.
            for seed in 0..5 {
                let lloyd = lloyd(&raw64, k, seed);
                assert!(
                    hist.cost <= lloyd + 1e-9,
                    "k={k}: lloyd {lloyd} < {}",
                    hist.cost
                );
            }
        }
    }

    /// Plain Lloyd iterations from a random start, for comparison.
    fn lloyd(x: &[f64], k: usize, seed: u64) -> f64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut c: Vec<f64> = (0..k).map(|_| x[rng.random_range(0..x.len())]).collect();
        for _ in 0..100 {
            let mut sum = vec![0.0; k];
            let mut cnt = vec![0.0; k];
            for &v in x {
                let j = nearest(&c, v);
                sum[j] += v;
                cnt[j] += 1.0;
            }
            for j in 0..k {
                if cnt[j] > 0.0 {
                    c[j] = sum[j] / cnt[j];
                }
            }
        }
        x.iter().map(|&v| (v - c[nearest(&c, v)]).powi(2)).sum()
    }

    fn nearest(c: &[f64], v: f64) -> usize {
        (0..c.len())
            .min_by(|&a, &b| (v - c[a]).abs().total_cmp(&(v - c[b]).abs()))
            .unwrap_or(0)
    }

    #[test]
    fn cost_curve_matches_each_fit() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let x: Vec<f64> = (0..129)
            .map(|_| rng.random::<f64>().powi(3) * 10.0)
            .collect();
        let w: Vec<f64> = (0..129).map(|_| rng.random::<f64>()).collect();
        let curve = optimal_kmeans_1d_costs(&x, &w, 140).expect("costs");
        assert_eq!(curve.len(), 140);
        assert!(curve.windows(2).all(|p| p[1] <= p[0] + 1e-12));
        for k in [1, 2, 7, 16, 65, 129, 140] {
            let fit = optimal_kmeans_1d(&x, &w, k).expect("fit");
            assert!(
                close(curve[k - 1], fit.cost),
                "k={k}: {} vs {}",
                curve[k - 1],
                fit.cost
            );
        }
    }

    proptest! {
        #[test]
        fn fast_matches_brute_force(
            pts in prop::collection::vec((-1000i32..1000, 0u8..5), 1..60),
            k in 1usize..12,
        ) {
            let values: Vec<f64> = pts.iter().map(|p| f64::from(p.0) * 0.01).collect();
            let weights: Vec<f64> = pts.iter().map(|p| f64::from(p.1) * 0.5).collect();
            prop_assume!(weights.iter().any(|&w| w > 0.0));
            let fast = optimal_kmeans_1d(&values, &weights, k).expect("fast");
            let brute = optimal_kmeans_1d_brute(&values, &weights, k).expect("brute");
            prop_assert!(close(fast.cost, brute.cost), "{} vs {}", fast.cost, brute.cost);
            prop_assert!(close(fast.cost, objective(&fast, &values, &weights)));
            prop_assert!(fast.centroids.len() <= k);
            prop_assert!(fast.centroids.windows(2).all(|c| c[0] < c[1]));
            let total: f64 = weights.iter().sum();
            prop_assert!(close(fast.cluster_weights.iter().sum::<f64>(), total));
        }
    }
}
