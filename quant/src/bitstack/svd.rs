//! Truncated SVD of the residual magnitude `|W'|`, returned as BitStack's balanced
//! factors `u = U_k sqrt(Sigma_k)` and `vt = sqrt(Sigma_k) V_k^T`.
//!
//! The randomized path follows Halko, Martinsson and Tropp, "Finding structure with
//! randomness" (2011), Algorithm 4.4 (randomized subspace iteration).

use faer::{Mat, MatRef};

use super::SvdMethod;
use crate::error::{QuantError, Result};

/// Balanced rank-`k` factors of `a` (`m x n`): `u` is `m x k` and `vt` is `k x n`,
/// both row-major f32. `seed` fixes the random test matrix of the randomized method.
pub(crate) fn balanced_factors(
    a: MatRef<'_, f32>,
    k: usize,
    method: SvdMethod,
    seed: u64,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (m, n) = a.shape();
    let k = k.min(m).min(n);
    match method {
        SvdMethod::Randomized {
            oversample,
            power_iters,
        } if k + oversample < m.min(n) => randomized(a, k, k + oversample, power_iters, seed),
        _ => exact(a, k),
    }
}

fn svd_failed(e: faer::linalg::svd::SvdError) -> QuantError {
    QuantError::Numerical {
        what: "BitStack truncated SVD",
        reason: format!("{e:?}"),
    }
}

fn exact(a: MatRef<'_, f32>, k: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let svd = a.thin_svd().map_err(svd_failed)?;
    let s: Vec<f32> = (0..k).map(|i| svd.S()[i]).collect();
    Ok(balance(svd.U(), &s, svd.V()))
}

/// Randomized subspace iteration with `l >= k` sampled directions.
fn randomized(
    a: MatRef<'_, f32>,
    k: usize,
    l: usize,
    power_iters: usize,
    seed: u64,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (m, n) = a.shape();
    let mut rng = SplitMix64(seed);
    // Uniform entries in [-1, 1): any distribution with independent zero-mean
    // entries spans the dominant subspace almost surely; Gaussian is not needed.
    let omega = Mat::<f32>::from_fn(n, l, |_, _| rng.next_unit());
    let mut q = orthonormal(&(a * &omega));
    for _ in 0..power_iters {
        let z = orthonormal(&(a.transpose() * &q));
        q = orthonormal(&(a * &z));
    }
    // B = Q^T A is l x n; its SVD gives A ~ (Q U_B) Sigma V^T.
    let b = q.transpose() * a;
    let svd = b.thin_svd().map_err(svd_failed)?;
    let u_full = &q * svd.U();
    let s: Vec<f32> = (0..k).map(|i| svd.S()[i]).collect();
    debug_assert!(m >= k && n >= k);
    Ok(balance(u_full.as_ref(), &s, svd.V()))
}

fn orthonormal(y: &Mat<f32>) -> Mat<f32> {
    y.qr().compute_thin_Q()
}

/// `u = U[:, :k] sqrt(s)`, `vt = sqrt(s) V[:, :k]^T`, row-major.
fn balance(u: MatRef<'_, f32>, s: &[f32], v: MatRef<'_, f32>) -> (Vec<f32>, Vec<f32>) {
    let k = s.len();
    let (m, n) = (u.nrows(), v.nrows());
    // Singular values are non-negative in exact arithmetic; clamp rounding noise.
    let root: Vec<f32> = s.iter().map(|x| x.max(0.0).sqrt()).collect();
    let mut uo = vec![0f32; m * k];
    for i in 0..m {
        for r in 0..k {
            uo[i * k + r] = u[(i, r)] * root[r];
        }
    }
    let mut vo = vec![0f32; k * n];
    for r in 0..k {
        for j in 0..n {
            vo[r * n + j] = v[(j, r)] * root[r];
        }
    }
    (uo, vo)
}

/// A tiny deterministic generator, so decompositions are reproducible without a
/// runtime dependency on `rand`.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1) from the top 24 bits.
    fn next_unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32) * (2.0 / 16_777_216.0) - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// `|| A - u vt ||_F^2`.
    fn residual(a: &Mat<f32>, u: &[f32], vt: &[f32], k: usize) -> f64 {
        let (m, n) = a.shape();
        let mut e = 0f64;
        for i in 0..m {
            for j in 0..n {
                let p: f32 = (0..k).map(|r| u[i * k + r] * vt[r * n + j]).sum();
                e += f64::from(a[(i, j)] - p).powi(2);
            }
        }
        e
    }

    #[test]
    fn randomized_matches_exact_on_a_magnitude_matrix() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (m, n, k) = (150, 97, 6);
        // |Gaussian-ish| with column scales: non-negative like |W'|.
        let col: Vec<f32> = (0..n).map(|_| rng.random_range(0.2f32..3.0)).collect();
        let a = Mat::<f32>::from_fn(m, n, |_, j| {
            let x: f32 = (0..4).map(|_| rng.random_range(-1.0f32..1.0)).sum();
            x.abs() * col[j]
        });
        let (ue, ve) = exact(a.as_ref(), k).expect("svd");
        let (ur, vr) = randomized(a.as_ref(), k, k + 8, 2, 1).expect("svd");
        let (ee, er) = (residual(&a, &ue, &ve, k), residual(&a, &ur, &vr, k));
        assert!(
            ee <= er * (1.0 + 1e-4),
            "exact {ee} worse than randomized {er}"
        );
        assert!(er <= ee * 1.01, "randomized {er} vs exact {ee}");
    }

    #[test]
    fn exact_recovers_a_low_rank_matrix() {
        let (m, n) = (9, 13);
        let a = Mat::<f32>::from_fn(m, n, |i, j| (i as f32 + 1.0) * (j as f32 + 2.0));
        let (u, vt) = balanced_factors(a.as_ref(), 1, SvdMethod::Exact, 0).expect("svd");
        assert!(residual(&a, &u, &vt, 1) < 1e-6 * 9.0 * 13.0);
    }
}
