//! The scalar quantizer of one transform-codec component, and how it is fitted.
//!
//! Two families, both measured on the component's sample so the allocator compares
//! real distortions rather than the `var * 4^-b` model:
//!
//! - **Uniform**: `2^b` equal cells over a clipped range `[lo, lo + 2^b step)`; values
//!   outside fall in the end cells; reconstruction at cell centres. The clip is chosen
//!   per width to minimise the sample's squared error (too narrow a range clips the
//!   tails, too wide wastes levels on them). The error of a candidate range is exact
//!   and costs `O(2^b log n)`: the sorted sample's prefix sums of `x` and `x^2` give
//!   each cell's error in closed form. Centres on an even grid let a scorer fold the
//!   whole component into one weight per code (`score = const + sum w_j c_j`).
//! - **K-means**: the `2^b` levels of the optimal 1-D k-means of the sample
//!   ([`crate::kmeans1d`]), the Lloyd-Max quantizer of the empirical distribution;
//!   scored through a per-query table.
//!
//! A component given zero bits is reconstructed as its sample mean.

use serde::{Deserialize, Serialize};

use super::alloc::{DistortionCurve, MAX_BITS};
use crate::error::Result;
use crate::kmeans1d::{optimal_kmeans_1d, optimal_kmeans_1d_costs};

/// The fitted quantizer of one component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ComponentQuantizer {
    /// Zero bits: the component is always reconstructed as `value`.
    Constant {
        /// The reconstruction (the sample mean of the component).
        value: f32,
    },
    /// `2^bits` cells of width `step` starting at `lo`; code `c` reconstructs as
    /// `lo + step * (c + 0.5)`.
    Uniform {
        /// Code width, `1..=8`.
        bits: u8,
        /// Lower edge of the first cell.
        lo: f32,
        /// Cell width, positive.
        step: f32,
    },
    /// Code `c` reconstructs as `levels[c]`; `levels` ascending, at most `2^bits` of
    /// them (fewer when the sample had fewer distinct values).
    Kmeans {
        /// Code width, `1..=8`.
        bits: u8,
        /// The reconstruction levels, ascending.
        levels: Vec<f32>,
    },
}

impl ComponentQuantizer {
    /// Code width in bits (0 for a constant).
    pub fn bits(&self) -> u8 {
        match self {
            ComponentQuantizer::Constant { .. } => 0,
            ComponentQuantizer::Uniform { bits, .. } | ComponentQuantizer::Kmeans { bits, .. } => {
                *bits
            }
        }
    }

    /// The code of value `y`.
    #[inline]
    pub fn encode(&self, y: f32) -> u8 {
        match self {
            ComponentQuantizer::Constant { .. } => 0,
            ComponentQuantizer::Uniform { bits, lo, step } => {
                let top = (1u32 << bits) - 1;
                // NaN and values below `lo` land in cell 0 (the `as` cast saturates).
                let c = ((y - lo) / step).floor().max(0.0) as u32;
                c.min(top) as u8
            }
            ComponentQuantizer::Kmeans { levels, .. } => {
                let i = levels.partition_point(|&l| l < y);
                if i == 0 {
                    0
                } else if i == levels.len() || y - levels[i - 1] < levels[i] - y {
                    (i - 1) as u8
                } else {
                    i as u8
                }
            }
        }
    }

    /// The reconstruction of code `c` (codes past the last k-means level read as it).
    #[inline]
    pub fn decode(&self, c: u8) -> f32 {
        match self {
            ComponentQuantizer::Constant { value } => *value,
            ComponentQuantizer::Uniform { lo, step, .. } => lo + step * (f32::from(c) + 0.5),
            ComponentQuantizer::Kmeans { levels, .. } => {
                levels[usize::from(c).min(levels.len() - 1)]
            }
        }
    }

    /// `(base, step)` of a uniform quantizer, whose code `c` reconstructs as
    /// `base + step * c`: what a scorer folds into per-component weights.
    pub fn affine(&self) -> Option<(f32, f32)> {
        match self {
            ComponentQuantizer::Uniform { lo, step, .. } => Some((lo + 0.5 * step, *step)),
            _ => None,
        }
    }

    /// Checks the invariants `encode`/`decode` rely on (used after deserializing).
    pub fn validate(&self) -> std::result::Result<(), String> {
        match self {
            ComponentQuantizer::Constant { value } if !value.is_finite() => {
                Err(format!("constant {value} is not finite"))
            }
            ComponentQuantizer::Constant { .. } => Ok(()),
            ComponentQuantizer::Uniform { bits, lo, step } => {
                if *bits == 0 || *bits > MAX_BITS {
                    Err(format!("uniform width {bits} not in 1..={MAX_BITS}"))
                } else if !(lo.is_finite() && step.is_finite() && *step > 0.0) {
                    Err(format!(
                        "uniform lo {lo} / step {step} must be finite, step > 0"
                    ))
                } else {
                    Ok(())
                }
            }
            ComponentQuantizer::Kmeans { bits, levels } => {
                if *bits == 0 || *bits > MAX_BITS {
                    Err(format!("k-means width {bits} not in 1..={MAX_BITS}"))
                } else if levels.is_empty() || levels.len() > 1 << bits {
                    Err(format!("{} k-means levels for {bits} bits", levels.len()))
                } else if !levels.iter().all(|l| l.is_finite())
                    || !levels.windows(2).all(|w| w[0] <= w[1])
                {
                    Err("k-means levels must be finite and ascending".into())
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// One component's sample, sorted, with prefix sums for exact cell errors.
#[derive(Debug)]
pub struct SortedColumn {
    x: Vec<f64>,
    /// `cs[i] = sum x[..i]`, `cq[i] = sum x[..i]^2`.
    cs: Vec<f64>,
    cq: Vec<f64>,
    /// `grid[c]` = how many values lie below `x[0] + c * cell`: where a search for
    /// any position in cell `c` starts, so finding a cell edge's position reads a
    /// handful of values instead of a binary search over all of them.
    grid: Vec<u32>,
    cell: f64,
}

/// Cells of [`SortedColumn`]'s search grid (a few values per cell for the samples
/// codecs are fitted on).
const SEARCH_GRID: usize = 4096;

impl SortedColumn {
    /// Sorts `values` (finite, at least one) and builds the prefix sums.
    pub fn new(values: impl IntoIterator<Item = f32>) -> SortedColumn {
        let mut x: Vec<f64> = values.into_iter().map(f64::from).collect();
        x.sort_unstable_by(f64::total_cmp);
        let mut cs = Vec::with_capacity(x.len() + 1);
        let mut cq = Vec::with_capacity(x.len() + 1);
        let (mut s, mut q) = (0.0, 0.0);
        cs.push(0.0);
        cq.push(0.0);
        for &v in &x {
            s += v;
            q += v * v;
            cs.push(s);
            cq.push(q);
        }
        let (first, last) = (x.first().copied(), x.last().copied());
        let (grid, cell) = match (first, last) {
            (Some(first), Some(last)) if last > first => {
                let cell = (last - first) / SEARCH_GRID as f64;
                let grid = (0..=SEARCH_GRID)
                    .map(|c| x.partition_point(|&v| v < first + cell * c as f64) as u32)
                    .collect();
                (grid, cell)
            }
            _ => (Vec::new(), 0.0),
        };
        SortedColumn {
            x,
            cs,
            cq,
            grid,
            cell,
        }
    }

    /// How many values lie below `edge`: `x.partition_point(|v| v < edge)`, found
    /// from the grid.
    fn count_below(&self, edge: f64) -> usize {
        let Some(&first) = self.x.first() else {
            return 0;
        };
        if self.grid.is_empty() || edge.partial_cmp(&first) != Some(std::cmp::Ordering::Greater) {
            return self.x.partition_point(|&v| v < edge);
        }
        let c = ((edge - first) / self.cell) as usize;
        if c >= SEARCH_GRID {
            return self.x.partition_point(|&v| v < edge);
        }
        // Values below cell c's start are below the edge; values from cell c + 2's
        // start are not (rounding can put the edge in a neighbouring cell).
        let lo = self.grid[c.saturating_sub(1)] as usize;
        let hi = self.grid.get(c + 2).map_or(self.x.len(), |&h| h as usize);
        lo + self.x[lo..hi].partition_point(|&v| v < edge)
    }

    fn n(&self) -> f64 {
        self.x.len() as f64
    }

    fn mean(&self) -> f64 {
        self.cs[self.x.len()] / self.n()
    }

    /// Mean squared deviation from the mean: the distortion at zero bits.
    fn variance(&self) -> f64 {
        let m = self.mean();
        (self.cq[self.x.len()] / self.n() - m * m).max(0.0)
    }

    /// Squared error of points `a..b` reconstructed as `r`.
    fn run_error(&self, a: usize, b: usize, r: f64) -> f64 {
        let cnt = (b - a) as f64;
        let s = self.cs[b] - self.cs[a];
        let q = self.cq[b] - self.cq[a];
        (q - 2.0 * r * s + r * r * cnt).max(0.0)
    }

    /// Mean squared error of the uniform quantizer with `levels` cells from `lo` by `step`.
    fn uniform_mse(&self, levels: usize, lo: f64, step: f64) -> f64 {
        let mut total = 0.0;
        let mut a = 0;
        for k in 0..levels {
            let b = if k + 1 == levels {
                self.x.len()
            } else {
                let edge = lo + step * (k + 1) as f64;
                self.count_below(edge).max(a)
            };
            if b > a {
                total += self.run_error(a, b, lo + step * (k as f64 + 0.5));
            }
            a = b;
        }
        total / self.n()
    }

    /// The best uniform quantizer at `bits` (clip searched to minimise the error),
    /// with its mean squared error.
    pub fn fit_uniform(&self, bits: u8) -> (ComponentQuantizer, f64) {
        let levels = 1usize << bits;
        let (min, max) = (self.x[0], self.x[self.x.len() - 1]);
        let mean = self.mean();
        let sd = self.variance().sqrt();
        let scale = mean.abs().max(sd).max(f64::from(f32::MIN_POSITIVE));
        if max - min <= 1e-9 * scale {
            // (Nearly) constant component: one tiny cell centred on the value.
            let step = (1e-6 * scale) as f32;
            let lo = mean as f32 - step * (levels / 2) as f32 - 0.5 * step;
            let q = ComponentQuantizer::Uniform { bits, lo, step };
            return (q, self.variance());
        }
        let eval = |lo: f64, hi: f64| self.uniform_mse(levels, lo, (hi - lo) / levels as f64);

        // Coarse: ranges symmetric about the mean, half-widths on a geometric grid
        // from a tenth of a standard deviation to the farthest sample.
        let h_max = (max - mean).max(mean - min);
        let h_min = (0.1 * sd).min(h_max);
        const GRID: usize = 24;
        let ratio = (h_max / h_min).powf(1.0 / (GRID - 1) as f64);
        let (mut lo, mut hi, mut best) = (mean - h_max, mean + h_max, f64::INFINITY);
        let mut h = h_min;
        for _ in 0..GRID {
            let e = eval(mean - h, mean + h);
            if e < best {
                (lo, hi, best) = (mean - h, mean + h, e);
            }
            h *= ratio;
        }
        // Fine: move each edge on its own (skewed components want asymmetric clips),
        // halving the move whenever no move helps.
        let mut delta = 0.05 * (hi - lo);
        // Stop at moves of 0.1% of the range: the error is flat near its minimum.
        let tol = 1e-3 * (hi - lo);
        while delta > tol {
            let mut improved = false;
            for (cand_lo, cand_hi) in [
                (lo - delta, hi),
                (lo + delta, hi),
                (lo, hi - delta),
                (lo, hi + delta),
            ] {
                if cand_hi - cand_lo <= tol {
                    continue;
                }
                let e = eval(cand_lo, cand_hi);
                if e < best {
                    (lo, hi, best) = (cand_lo, cand_hi, e);
                    improved = true;
                }
            }
            if !improved {
                delta *= 0.5;
            }
        }
        let step = ((hi - lo) / levels as f64) as f32;
        let q = ComponentQuantizer::Uniform {
            bits,
            lo: lo as f32,
            step,
        };
        (q, best)
    }

    /// Distortion curve of the uniform quantizers, with the quantizer at each width.
    pub fn uniform_curve(&self) -> (DistortionCurve, Vec<ComponentQuantizer>) {
        let mut ladder = UniformLadder::new(self, MAX_BITS);
        let curve = std::array::from_fn(|b| ladder.distortion(b as u8));
        (curve, ladder.quantizers)
    }

    /// The column merged onto a fine grid of at most `cells` cells over its range:
    /// (cell mean, count) pairs and the squared error merging costs. Bounds the
    /// k-means dynamic program's size whatever the sample size, at an error far below
    /// that of 256 levels.
    fn gridded(&self, cells: usize) -> (Vec<f64>, Vec<f64>, f64) {
        let (min, max) = (self.x[0], self.x[self.x.len() - 1]);
        let width = (max - min) / cells as f64;
        let (mut values, mut weights) = (Vec::new(), Vec::new());
        let mut within = 0.0;
        let mut a = 0;
        while a < self.x.len() {
            let cell = if width > 0.0 {
                (((self.x[a] - min) / width) as usize).min(cells - 1)
            } else {
                0
            };
            let edge = min + width * (cell + 1) as f64;
            let b = if cell + 1 == cells || width <= 0.0 {
                self.x.len()
            } else {
                (a + self.x[a..].partition_point(|&v| v < edge)).max(a + 1)
            };
            let cnt = (b - a) as f64;
            let mean = (self.cs[b] - self.cs[a]) / cnt;
            within += self.run_error(a, b, mean);
            values.push(mean);
            weights.push(cnt);
            a = b;
        }
        (values, weights, within)
    }

    /// Distortion curve of optimal k-means with `2^b` levels, from one dynamic program.
    pub fn kmeans_curve(&self, grid_cells: usize) -> Result<DistortionCurve> {
        let (values, weights, within) = self.gridded(grid_cells);
        let costs = optimal_kmeans_1d_costs(&values, &weights, 1 << MAX_BITS)?;
        let n = self.n();
        Ok(std::array::from_fn(|b| (costs[(1 << b) - 1] + within) / n))
    }

    /// The optimal k-means quantizer at `bits` (or the mean at zero bits).
    pub fn fit_kmeans(&self, bits: u8, grid_cells: usize) -> Result<ComponentQuantizer> {
        if bits == 0 {
            return Ok(ComponentQuantizer::Constant {
                value: self.mean() as f32,
            });
        }
        let (values, weights, _) = self.gridded(grid_cells);
        let km = optimal_kmeans_1d(&values, &weights, 1 << bits)?;
        let mut levels: Vec<f32> = km.centroids.iter().map(|&c| c as f32).collect();
        levels.dedup();
        Ok(ComponentQuantizer::Kmeans { bits, levels })
    }
}

/// A column's uniform quantizers fitted width by width, as far as someone asks:
/// a bit allocation needs the 5- to 8-bit fits (the costly ones, with up to 256
/// cells) only for the few components that get near them.
#[derive(Debug)]
pub struct UniformLadder<'a> {
    column: &'a SortedColumn,
    /// Distortion at `0..curve.len()` bits, kept non-increasing.
    curve: Vec<f64>,
    /// The quantizer at each fitted width (a constant at zero bits).
    quantizers: Vec<ComponentQuantizer>,
}

impl<'a> UniformLadder<'a> {
    /// The ladder of `column` fitted up to `bits` (at most [`MAX_BITS`]).
    pub fn new(column: &'a SortedColumn, bits: u8) -> UniformLadder<'a> {
        let mut ladder = UniformLadder {
            column,
            curve: vec![column.variance()],
            quantizers: vec![ComponentQuantizer::Constant {
                value: column.mean() as f32,
            }],
        };
        ladder.distortion(bits);
        ladder
    }

    /// The distortion at `bits` (clamped to [`MAX_BITS`]), fitting the widths up
    /// to it first. A finer grid can always copy the coarser one's clip and do no
    /// worse, so the curve is kept non-increasing where the clip search landed
    /// slightly off.
    pub fn distortion(&mut self, bits: u8) -> f64 {
        let bits = usize::from(bits.min(MAX_BITS));
        while self.curve.len() <= bits {
            let (q, mse) = self.column.fit_uniform(self.curve.len() as u8);
            let last = self.curve[self.curve.len() - 1];
            self.curve.push(mse.min(last));
            self.quantizers.push(q);
        }
        self.curve[bits]
    }

    /// The distortion at `bits` without fitting anything: exact where fitted,
    /// beyond that the widest fitted one divided by 4 per further bit (the
    /// 6 dB per bit of a uniform quantizer), an estimate that only decides what
    /// to fit ahead, in parallel (see `TransformCodec::fit`).
    pub fn estimate(&self, bits: u8) -> f64 {
        let bits = usize::from(bits.min(MAX_BITS));
        let last = self.curve.len() - 1;
        match self.curve.get(bits) {
            Some(&d) => d,
            None => self.curve[last] / 4f64.powi((bits - last) as i32),
        }
    }

    /// The quantizer at `bits`, fitting it first if needed.
    pub fn into_quantizer(mut self, bits: u8) -> ComponentQuantizer {
        self.distortion(bits);
        self.quantizers.swap_remove(usize::from(bits.min(MAX_BITS)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pca::testdata::normal;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn the_search_grid_counts_exactly_what_a_binary_search_counts() {
        use rand::Rng;
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for n in [1usize, 2, 5, 100, 5000, 30_000] {
            // Skewed values with repeats, so that cells are uneven and some empty.
            let values: Vec<f32> = (0..n)
                .map(|_| {
                    let v: f32 = normal(&mut rng);
                    (v * v * v * 8.0).round() / 8.0
                })
                .collect();
            let col = SortedColumn::new(values.iter().copied());
            let (lo, hi) = (col.x[0], col.x[n - 1]);
            let mut edges: Vec<f64> = (0..2000)
                .map(|_| rng.random_range(lo - 1.0..hi + 1.0))
                .collect();
            edges.extend(col.x.iter().step_by(7).copied());
            edges.extend([lo, hi, f64::NEG_INFINITY, f64::INFINITY]);
            for e in edges {
                assert_eq!(
                    col.count_below(e),
                    col.x.partition_point(|&v| v < e),
                    "n {n}, edge {e}"
                );
            }
        }
    }

    fn gaussian(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| normal(&mut rng)).collect()
    }

    fn measured_mse(q: &ComponentQuantizer, xs: &[f32]) -> f64 {
        xs.iter()
            .map(|&x| f64::from(x - q.decode(q.encode(x))).powi(2))
            .sum::<f64>()
            / xs.len() as f64
    }

    #[test]
    fn uniform_fit_reports_its_true_error_and_near_textbook_clip() {
        let xs = gaussian(20_000, 1);
        let col = SortedColumn::new(xs.iter().copied());
        let (curve, qs) = col.uniform_curve();
        for b in 1..=8 {
            let mse = measured_mse(&qs[b], &xs);
            // Rounding at cell edges aside, the closed form is the encoder's error.
            assert!((mse - curve[b]).abs() <= 1e-3 * curve[b] + 1e-9, "b={b}");
        }
        // Optimal uniform quantizer of a unit Gaussian (Max 1960): 2 bits ~0.1188,
        // 3 bits ~0.03744.
        assert!((curve[2] - 0.1188).abs() < 0.006, "{}", curve[2]);
        assert!((curve[3] - 0.0374).abs() < 0.003, "{}", curve[3]);
        assert!(curve.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn kmeans_beats_uniform_and_matches_its_curve() {
        let xs = gaussian(5_000, 2);
        let col = SortedColumn::new(xs.iter().copied());
        let (uni, _) = col.uniform_curve();
        let km = col.kmeans_curve(4096).expect("curve");
        for b in 1..=6u8 {
            let q = col.fit_kmeans(b, 4096).expect("fit");
            let mse = measured_mse(&q, &xs);
            assert!(mse <= km[usize::from(b)] * (1.0 + 1e-6) + 1e-12, "b={b}");
            assert!(km[usize::from(b)] <= uni[usize::from(b)] * 1.001, "b={b}");
        }
        // Lloyd-Max for a unit Gaussian at 2 bits: ~0.1175.
        assert!((km[2] - 0.1175).abs() < 0.006);
    }

    #[test]
    fn constant_and_tiny_columns_do_not_break() {
        let col = SortedColumn::new([0.25f32; 10]);
        let (curve, qs) = col.uniform_curve();
        assert!(curve.iter().all(|&d| d == 0.0));
        for q in &qs[1..] {
            assert!(q.validate().is_ok());
            assert!((q.decode(q.encode(0.25)) - 0.25).abs() < 1e-5);
        }
        let two = SortedColumn::new([1.0f32, 3.0]);
        let km = two.fit_kmeans(3, 16).expect("fit");
        assert_eq!(
            km,
            ComponentQuantizer::Kmeans {
                bits: 3,
                levels: vec![1.0, 3.0]
            }
        );
        assert_eq!(km.decode(7), 3.0);
        assert_eq!(km.encode(1.9), 0);
        assert_eq!(km.encode(2.1), 1);
    }

    #[test]
    fn validate_rejects_broken_parameters() {
        let bad = [
            ComponentQuantizer::Uniform {
                bits: 9,
                lo: 0.0,
                step: 1.0,
            },
            ComponentQuantizer::Uniform {
                bits: 2,
                lo: 0.0,
                step: 0.0,
            },
            ComponentQuantizer::Kmeans {
                bits: 1,
                levels: vec![0.0, 1.0, 2.0],
            },
            ComponentQuantizer::Kmeans {
                bits: 2,
                levels: vec![],
            },
            ComponentQuantizer::Kmeans {
                bits: 2,
                levels: vec![1.0, 0.0],
            },
            ComponentQuantizer::Constant { value: f32::NAN },
        ];
        for q in bad {
            assert!(q.validate().is_err(), "{q:?}");
        }
    }
}
