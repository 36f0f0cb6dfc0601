//! Principal component analysis: the rotation under the PCA codec and the transform
//! codec.
//!
//! Fitting forms the sample covariance in f64 (accumulated by faer's matrix product
//! over chunks of rows, so memory stays `O(dim^2)` whatever the sample size) and takes
//! its self-adjoint eigendecomposition. For the dimensions embeddings have (up to a
//! few thousand) this is faster and simpler than a thin SVD of the centred sample,
//! and f64 keeps the small eigenvalues of the tail accurate enough to allocate bits
//! by them. Dimensions above [`MAX_PCA_DIM`] are refused rather than attempted: the
//! `dim x dim` eigendecomposition would take minutes.
//!
//! Conventions (see DESIGN.md, "PCA and inner product"):
//! - [`Pca::transform`] centres: `y = P (x - mu)`.
//! - [`Pca::rotate_query`] does **not** centre: `q' = P q`. With every component kept,
//!   `q . x = q' . y + q . mu`, so an inner-product scorer adds `q . mu` back instead
//!   of centring the query (centring would change the ranking).
//!
//! Each component's sign is fixed (its largest-magnitude entry is positive, the first
//! such entry on ties) so that refitting on the same sample gives the same rotation.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Side};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{QuantError, Result, check_batch};
use crate::kernels::dot_f32;

/// The largest input dimension [`Pca::fit`] accepts.
pub const MAX_PCA_DIM: usize = 4096;

/// Rows per chunk when accumulating the covariance or projecting a batch: bounds the
/// centred copy of the input.
const COV_CHUNK_ROWS: usize = 2048;

/// A fitted PCA: mean, principal directions and their variances.
///
/// Serializes as its parameters; deserializing checks that the lengths agree, so a
/// corrupt manifest is an error rather than a panic later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "PcaParams", into = "PcaParams")]
pub struct Pca {
    dim: usize,
    keep: usize,
    mean: Vec<f32>,
    /// `keep x dim`, row-major: row `i` is the `i`-th principal direction (unit length).
    components: Vec<f32>,
    /// Variance of the sample along each kept component, descending.
    explained_variance: Vec<f64>,
    /// Total variance of the sample (trace of the covariance).
    total_variance: f64,
}

/// The serialized form of [`Pca`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PcaParams {
    dim: usize,
    keep: usize,
    mean: Vec<f32>,
    components: Vec<f32>,
    explained_variance: Vec<f64>,
    total_variance: f64,
}

impl From<Pca> for PcaParams {
    fn from(p: Pca) -> Self {
        PcaParams {
            dim: p.dim,
            keep: p.keep,
            mean: p.mean,
            components: p.components,
            explained_variance: p.explained_variance,
            total_variance: p.total_variance,
        }
    }
}

impl TryFrom<PcaParams> for Pca {
    type Error = QuantError;

    fn try_from(p: PcaParams) -> Result<Self> {
        let bad = |reason: String| QuantError::InvalidConfig {
            field: "pca parameters",
            reason,
        };
        if p.dim == 0 || p.keep == 0 || p.keep > p.dim {
            return Err(bad(format!(
                "keep must be in 1..=dim, got keep {} dim {}",
                p.keep, p.dim
            )));
        }
        if p.mean.len() != p.dim
            || p.components.len() != p.keep * p.dim
            || p.explained_variance.len() != p.keep
        {
            return Err(bad(format!(
                "lengths disagree with dim {} keep {}: mean {}, components {}, variances {}",
                p.dim,
                p.keep,
                p.mean.len(),
                p.components.len(),
                p.explained_variance.len()
            )));
        }
        if !(p.mean.iter().chain(&p.components).all(|v| v.is_finite())
            && p.explained_variance.iter().all(|v| v.is_finite()))
        {
            return Err(bad("non-finite value".into()));
        }
        Ok(Pca {
            dim: p.dim,
            keep: p.keep,
            mean: p.mean,
            components: p.components,
            explained_variance: p.explained_variance,
            total_variance: p.total_variance,
        })
    }
}

impl Pca {
    /// Fits a PCA keeping the `keep` highest-variance components of `sample`
    /// (row-major, `dim` values per row, at least two rows).
    pub fn fit(sample: &[f32], dim: usize, keep: usize) -> Result<Pca> {
        if dim > MAX_PCA_DIM {
            return Err(QuantError::InvalidConfig {
                field: "dim",
                reason: format!(
                    "PCA supports dimensions up to {MAX_PCA_DIM} (dense covariance \
                     eigendecomposition), got {dim}"
                ),
            });
        }
        let n = check_batch("PCA sample", sample, dim)?;
        if keep == 0 || keep > dim {
            return Err(QuantError::InvalidConfig {
                field: "pca dims",
                reason: format!("must be in 1..={dim} (the vector dimension), got {keep}"),
            });
        }
        if n < 2 {
            return Err(QuantError::NotEnoughSamples {
                what: "PCA",
                needed: 2,
                got: n,
            });
        }

        let mut mean = vec![0f64; dim];
        for row in sample.chunks_exact(dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += f64::from(v);
            }
        }
        for m in &mut mean {
            *m /= n as f64;
        }

        let cov = covariance(sample, dim, &mean);
        let total_variance: f64 = (0..dim).map(|i| cov[(i, i)]).sum();
        let eig = cov
            .self_adjoint_eigen(Side::Lower)
            .map_err(|e| QuantError::Numerical {
                what: "PCA covariance eigendecomposition",
                reason: format!("{e:?}"),
            })?;
        let vectors = eig.U();
        let values = eig.S().column_vector();

        // faer returns eigenvalues in nondecreasing order: walk them from the top.
        let mut components = Vec::with_capacity(keep * dim);
        let mut explained_variance = Vec::with_capacity(keep);
        for rank in 0..keep {
            let col = dim - 1 - rank;
            explained_variance.push(values[col].max(0.0));
            let start = components.len();
            components.extend((0..dim).map(|r| vectors[(r, col)] as f32));
            fix_sign(&mut components[start..]);
        }
        let mean = mean.into_iter().map(|m| m as f32).collect();
        Ok(Pca {
            dim,
            keep,
            mean,
            components,
            explained_variance,
            total_variance,
        })
    }

    /// Input dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of components kept (the output dimension).
    pub fn keep(&self) -> usize {
        self.keep
    }

    /// The sample mean `mu`.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// The principal directions, `keep x dim` row-major, by explained variance descending.
    pub fn components(&self) -> &[f32] {
        &self.components
    }

    /// The `i`-th principal direction (`dim` values, unit length).
    pub fn component(&self, i: usize) -> &[f32] {
        &self.components[i * self.dim..(i + 1) * self.dim]
    }

    /// Sample variance along each kept component, descending.
    pub fn explained_variance(&self) -> &[f64] {
        &self.explained_variance
    }

    /// Total variance of the sample over all dimensions.
    pub fn total_variance(&self) -> f64 {
        self.total_variance
    }

    /// Fraction of the total variance each kept component explains.
    pub fn explained_variance_ratio(&self) -> Vec<f64> {
        let total = self.total_variance;
        self.explained_variance
            .iter()
            .map(|v| if total > 0.0 { v / total } else { 0.0 })
            .collect()
    }

    /// `P (x - mu)` for one vector: `x` has [`Pca::dim`] values, `out` [`Pca::keep`].
    pub fn transform_into(&self, x: &[f32], out: &mut [f32]) {
        let centred: Vec<f32> = x.iter().zip(&self.mean).map(|(a, m)| a - m).collect();
        self.rotate_into(&centred, out);
    }

    /// `P q` for one vector, not centred: the query side of an inner product.
    pub fn rotate_into(&self, q: &[f32], out: &mut [f32]) {
        for (o, row) in out.iter_mut().zip(self.components.chunks_exact(self.dim)) {
            *o = dot_f32(row, q);
        }
    }

    /// `mu + P^T y` for one vector: `y` has [`Pca::keep`] values, `out` [`Pca::dim`].
    /// The exact inverse of [`Pca::transform_into`] when every component is kept.
    pub fn inverse_transform_into(&self, y: &[f32], out: &mut [f32]) {
        out.copy_from_slice(&self.mean);
        for (&yi, row) in y.iter().zip(self.components.chunks_exact(self.dim)) {
            for (o, &p) in out.iter_mut().zip(row) {
                *o += yi * p;
            }
        }
    }

    /// `P (x - mu)` for a batch of row-major vectors: `keep` values per row.
    ///
    /// Runs as a matrix product (faer), so values may differ from
    /// [`Pca::transform_into`] in the last bits; codecs encode through
    /// `transform_into` so that a vector's code never depends on its batch.
    pub fn transform(&self, x: &[f32]) -> Result<Vec<f32>> {
        let n = check_batch("PCA input", x, self.dim)?;
        let mut out = vec![0f32; n * self.keep];
        let p = MatRef::from_row_major_slice(&self.components, self.keep, self.dim);
        let mut centred = Vec::with_capacity(COV_CHUNK_ROWS.min(n) * self.dim);
        for (xs, os) in x
            .chunks(COV_CHUNK_ROWS * self.dim)
            .zip(out.chunks_mut(COV_CHUNK_ROWS * self.keep))
        {
            let rows = xs.len() / self.dim;
            centred.clear();
            for row in xs.chunks_exact(self.dim) {
                centred.extend(row.iter().zip(&self.mean).map(|(a, m)| a - m));
            }
            matmul(
                MatMut::from_row_major_slice_mut(os, rows, self.keep),
                Accum::Replace,
                MatRef::from_row_major_slice(&centred, rows, self.dim),
                p.transpose(),
                1.0f32,
                faer::get_global_parallelism(),
            );
        }
        Ok(out)
    }

    /// `mu + P^T y` for a batch of row-major projected vectors (`keep` values per row).
    pub fn inverse_transform(&self, y: &[f32]) -> Result<Vec<f32>> {
        let n = check_batch("PCA projected input", y, self.keep)?;
        let mut out = vec![0f32; n * self.dim];
        out.par_chunks_mut(self.dim)
            .zip(y.par_chunks(self.keep))
            .for_each(|(o, row)| self.inverse_transform_into(row, o));
        Ok(out)
    }

    /// `P q` (not centred) for one query, checked: see the module docs for why the
    /// query side of an inner product is not centred.
    pub fn rotate_query(&self, q: &[f32]) -> Result<Vec<f32>> {
        if q.len() != self.dim {
            return Err(QuantError::DimMismatch {
                what: "query",
                expected: self.dim,
                actual: q.len(),
            });
        }
        check_batch("query", q, self.dim)?;
        let mut out = vec![0f32; self.keep];
        self.rotate_into(q, &mut out);
        Ok(out)
    }
}

/// Sample covariance (divided by `n - 1`) of row-major `sample` about `mean`, in f64.
fn covariance(sample: &[f32], dim: usize, mean: &[f64]) -> Mat<f64> {
    let n = sample.len() / dim;
    let mut cov = Mat::<f64>::zeros(dim, dim);
    let mut chunk = Vec::with_capacity(COV_CHUNK_ROWS.min(n) * dim);
    for rows in sample.chunks(COV_CHUNK_ROWS * dim) {
        chunk.clear();
        for row in rows.chunks_exact(dim) {
            chunk.extend(row.iter().zip(mean).map(|(&v, m)| f64::from(v) - m));
        }
        let a = MatRef::from_row_major_slice(&chunk, rows.len() / dim, dim);
        matmul(
            cov.as_mut(),
            Accum::Add,
            a.transpose(),
            a,
            1.0 / (n as f64 - 1.0),
            faer::get_global_parallelism(),
        );
    }
    cov
}

/// Makes the largest-magnitude entry of `v` positive (the first one on ties).
fn fix_sign(v: &mut [f32]) {
    let mut best = 0usize;
    for (i, x) in v.iter().enumerate() {
        if x.abs() > v[best].abs() {
            best = i;
        }
    }
    if v.get(best).is_some_and(|&x| x < 0.0) {
        v.iter_mut().for_each(|x| *x = -*x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testdata::correlated;

    #[test]
    fn components_are_orthonormal_and_sorted() {
        let dim = 65;
        let data = correlated(600, dim, 3);
        let pca = Pca::fit(&data, dim, dim).expect("fit");
        for i in 0..dim {
            for j in 0..dim {
                let d = dot_f32(pca.component(i), pca.component(j));
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((d - want).abs() < 1e-4, "({i},{j}) = {d}");
            }
        }
        let ev = pca.explained_variance();
        assert!(ev.windows(2).all(|w| w[0] >= w[1]));
        let sum: f64 = ev.iter().sum();
        assert!((sum - pca.total_variance()).abs() < 1e-6 * sum.max(1.0));
    }

    #[test]
    fn full_rotation_round_trips_and_preserves_inner_products() {
        let dim = 7;
        let data = correlated(300, dim, 11);
        let pca = Pca::fit(&data, dim, dim).expect("fit");
        let y = pca.transform(&data).expect("transform");
        let back = pca.inverse_transform(&y).expect("inverse");
        for (a, b) in data.iter().zip(&back) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        // q . x = (P q) . (P (x - mu)) + q . mu: the query is not centred.
        let q = &data[dim..2 * dim];
        let qr = pca.rotate_query(q).expect("rotate");
        let qmu = dot_f32(q, pca.mean());
        for (x, yx) in data.chunks_exact(dim).zip(y.chunks_exact(dim)).take(20) {
            let exact = dot_f32(q, x);
            let via = dot_f32(&qr, yx) + qmu;
            assert!((exact - via).abs() < 1e-4 * exact.abs().max(1.0));
        }
    }

    #[test]
    fn explained_variance_matches_projected_sample() {
        let dim = 129;
        let data = correlated(400, dim, 5);
        let pca = Pca::fit(&data, dim, 10).expect("fit");
        let y = pca.transform(&data).expect("transform");
        let n = (data.len() / dim) as f64;
        for (c, &ev) in pca.explained_variance().iter().enumerate() {
            let var: f64 = y
                .chunks_exact(10)
                .map(|r| f64::from(r[c]) * f64::from(r[c]))
                .sum::<f64>()
                / (n - 1.0);
            assert!(
                (var - ev).abs() < 1e-3 * ev.max(1e-6),
                "component {c}: {var} vs {ev}"
            );
        }
    }

    #[test]
    fn refits_are_identical_and_serde_round_trips() {
        let dim = 65;
        let data = correlated(200, dim, 9);
        let a = Pca::fit(&data, dim, 20).expect("fit");
        let b = Pca::fit(&data, dim, 20).expect("fit");
        assert!(a == b, "refit differs");
        for i in 0..20 {
            let c = a.component(i);
            let big = c
                .iter()
                .fold(0f32, |m, v| if v.abs() > m.abs() { *v } else { m });
            assert!(big > 0.0);
        }
        let json = serde_json::to_string(&a).expect("serialize");
        let back: Pca = serde_json::from_str(&json).expect("deserialize");
        // serde_json may round the last bit of an f64; the f32 rotation is exact.
        assert!(a.mean() == back.mean() && a.components() == back.components());
        assert!(
            a.explained_variance()
                .iter()
                .zip(back.explained_variance())
                .all(|(x, y)| (x - y).abs() <= 1e-15 * x.abs())
        );
        let corrupt = json.replacen("\"keep\":20", "\"keep\":21", 1);
        assert!(serde_json::from_str::<Pca>(&corrupt).is_err());
    }

    #[test]
    fn bad_inputs_are_named_errors() {
        let dim = 7;
        let data = correlated(10, dim, 1);
        assert!(matches!(
            Pca::fit(&data[..dim], dim, 3),
            Err(QuantError::NotEnoughSamples {
                needed: 2,
                got: 1,
                ..
            })
        ));
        assert!(matches!(
            Pca::fit(&data, dim, 8),
            Err(QuantError::InvalidConfig {
                field: "pca dims",
                ..
            })
        ));
        assert!(matches!(
            Pca::fit(&data, dim, 0),
            Err(QuantError::InvalidConfig { .. })
        ));
        assert!(matches!(
            Pca::fit(&data[..dim * 2 + 1], dim, 3),
            Err(QuantError::DimMismatch { .. })
        ));
        let mut nan = data.clone();
        nan[dim + 2] = f32::NAN;
        assert!(matches!(
            Pca::fit(&nan, dim, 3),
            Err(QuantError::NonFinite { row: 1, col: 2, .. })
        ));
        let pca = Pca::fit(&data, dim, 3).expect("fit");
        assert!(pca.rotate_query(&data[..dim - 1]).is_err());
        assert!(pca.transform(&data[..dim + 1]).is_err());
    }
}

/// Seeded synthetic data for the unit tests of PCA and the codecs built on it.
#[cfg(test)]
pub(crate) mod testdata {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A standard normal draw (Box-Muller; `rand_distr` is not a dependency).
    pub fn normal(rng: &mut ChaCha8Rng) -> f32 {
        let u1: f32 = rng.random::<f32>().max(1e-12);
        let u2: f32 = rng.random();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }

    /// `n` rows of `dim` correlated values: a random mix of latent factors whose
    /// scales decay like real embeddings' spectra, plus an offset mean.
    pub fn correlated(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mix: Vec<f32> = (0..dim * dim).map(|_| normal(&mut rng)).collect();
        let scale: Vec<f32> = (0..dim).map(|k| 1.0 / (1.0 + k as f32).powf(0.8)).collect();
        let offset: Vec<f32> = (0..dim).map(|_| 0.3 * normal(&mut rng)).collect();
        let mut out = Vec::with_capacity(n * dim);
        let mut z = vec![0f32; dim];
        for _ in 0..n {
            for (zk, s) in z.iter_mut().zip(&scale) {
                *zk = s * normal(&mut rng);
            }
            for (j, off) in offset.iter().enumerate() {
                let row = &mix[j * dim..(j + 1) * dim];
                let v: f32 = row.iter().zip(&z).map(|(a, b)| a * b).sum();
                out.push(off + v / (dim as f32).sqrt());
            }
        }
        out
    }
}
