//! One generic check for every [`VectorCodec`], for codec tests to run under
//! proptest (the style guide's `roundtrip::<C>()` harness).
//!
//! Usage, for a codec fitted on (or independent of) `data`:
//!
//! ```ignore
//! let data = testing::synthetic(rows, dim, seed);
//! let codec = MyCodec::fit(&data, dim)?;
//! testing::check_codec(&codec, &data, 0.01);
//! ```

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::codec::{CodecSpec, VectorCodec};
use crate::metric::Metric;

/// `rows` x `dim` row-major values from `seed`: each dimension has its own centre in
/// [-1, 1] and spread in [0.05, 2], so dimensions differ in offset and scale the way
/// embedding dimensions do, and every value lies in [-3, 3].
pub(crate) fn synthetic(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centre: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..=1.0)).collect();
    let spread: Vec<f32> = (0..dim).map(|_| rng.random_range(0.05f32..=2.0)).collect();
    (0..rows * dim)
        .map(|i| centre[i % dim] + spread[i % dim] * rng.random_range(-1.0f32..=1.0))
        .collect()
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// The metric of `q` (already prepared) against `x`, in f64.
fn exact(metric: Metric, q: &[f32], x: &[f32]) -> f64 {
    let pairs = q.iter().zip(x).map(|(&a, &b)| (f64::from(a), f64::from(b)));
    match metric {
        Metric::Dot | Metric::Cosine => pairs.map(|(a, b)| a * b).sum(),
        Metric::L2 => -pairs.map(|(a, b)| (a - b) * (a - b)).sum::<f64>(),
    }
}

/// Checks `codec` against `data` (row-major rows of `codec.dim()` values) and panics
/// with the row, metric and numbers on the first failure:
///
/// 1. identity: its spec's name parses back to the same spec (the name a manifest
///    and a request use), and the spec gives its code length;
/// 2. the batch methods: `code_len` bytes per row, decoded values all finite, and a
///    wrong dimension, a NaN, a ragged code batch and a wrong-sized query are errors;
/// 3. round trip: every row satisfies
///    `|x - decode(encode(x))| <= max_rel_err * max(1, largest row norm of data)`
///    (relative to the data's scale, with a floor so tiny vectors are not held to a
///    relative bound the format cannot meet near zero);
/// 4. for dot, cosine and L2 and a few queries (rows of `data` and perturbed ones):
///    `scorer` matches `reference_scorer` and the exact metric of the prepared query
///    against the decoded vector, and `score_batch` matches `score`, all to 2e-5 of
///    the score's scale: `|q| * 3 s` for dot and cosine, `(|q| + 3 s)^2` for L2, with
///    `s` the larger of 1 and the largest row norm. That scale bounds the terms a
///    scorer may fold (offsets and level ranges lie within `2 s`), so the tolerance
///    covers f32 rounding of the sums and little else.
pub(crate) fn check_codec(codec: &dyn VectorCodec, data: &[f32], max_rel_err: f32) {
    let dim = codec.dim();
    assert!(dim > 0, "codec has dimension 0");
    assert!(
        !data.is_empty() && data.len().is_multiple_of(dim),
        "data must hold whole rows"
    );
    let rows = data.len() / dim;
    let len = codec.code_len();

    // 1. Identity.
    let spec = codec.spec();
    assert_eq!(
        spec.to_string().parse::<CodecSpec>().ok(),
        Some(spec),
        "spec {spec} does not parse back"
    );
    assert_eq!(
        codec.spec().code_len(dim),
        len,
        "spec {} and codec disagree on code length",
        codec.spec()
    );

    // 2. Batch methods.
    let codes = codec.encode(data).expect("encode a valid batch");
    assert_eq!(codes.len(), rows * len, "bytes per encoded batch");
    let decoded = codec.decode(&codes).expect("decode a valid batch");
    assert_eq!(decoded.len(), data.len(), "values per decoded batch");
    assert!(
        decoded.iter().all(|v| v.is_finite()),
        "decoded values must be finite"
    );
    assert!(codec.encode(&data[..dim - 1]).is_err() || dim == 1);
    let mut bad = data[..dim].to_vec();
    bad[dim / 2] = f32::NAN;
    assert!(codec.encode(&bad).is_err(), "NaN must be rejected");
    assert!(codec.decode(&codes[..len - 1]).is_err() || len == 1);
    assert!(
        codec
            .checked_scorer(&vec![0.0; dim + 1], Metric::Dot)
            .is_err()
    );
    assert!(codec.checked_scorer(&bad, Metric::Dot).is_err());

    // 3. Round trip.
    let scale = data.chunks_exact(dim).map(norm).fold(1.0f64, f64::max);
    for (r, (x, y)) in data
        .chunks_exact(dim)
        .zip(decoded.chunks_exact(dim))
        .enumerate()
    {
        let err = x
            .iter()
            .zip(y)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            err <= f64::from(max_rel_err) * scale,
            "{}: row {r} round-trip error {err} exceeds {max_rel_err} x {scale}",
            codec.spec()
        );
    }

    // 4. Scorers.
    let mut queries: Vec<Vec<f32>> = data
        .chunks_exact(dim)
        .take(2)
        .map(<[f32]>::to_vec)
        .collect();
    for j in 0..2 {
        let base = &data[(j * 7 + 3) % rows * dim..][..dim];
        let factor = if j == 0 { -1.5 } else { 0.75 };
        queries.push(
            base.iter()
                .enumerate()
                .map(|(i, v)| v * factor + 0.1 * (i % 3) as f32)
                .collect(),
        );
    }
    for metric in [Metric::Dot, Metric::Cosine, Metric::L2] {
        for q in &queries {
            let fast = codec.checked_scorer(q, metric).expect("valid query");
            let reference = codec.reference_scorer(q, metric);
            assert_eq!(fast.code_len(), len);
            assert_eq!(reference.code_len(), len);
            let prepared = metric.prepare_query(q);
            let tol = 2e-5
                * match metric {
                    Metric::Dot | Metric::Cosine => norm(&prepared) * 3.0 * scale,
                    Metric::L2 => (norm(&prepared) + 3.0 * scale).powi(2),
                };
            let mut batch = vec![0f32; rows];
            fast.score_batch(&codes, &mut batch);
            for r in 0..rows {
                let code = &codes[r * len..][..len];
                let (s, s_ref) = (fast.score(code), reference.score(code));
                let truth = exact(metric, &prepared, &decoded[r * dim..][..dim]);
                let ctx = format!("{} {metric} row {r}", codec.spec());
                assert!(
                    (f64::from(s) - f64::from(s_ref)).abs() <= tol,
                    "{ctx}: scorer {s} vs reference_scorer {s_ref}"
                );
                assert!(
                    (f64::from(s) - truth).abs() <= tol,
                    "{ctx}: scorer {s} vs exact score against the decoded vector {truth}"
                );
                assert!(
                    (f64::from(batch[r]) - f64::from(s)).abs() <= tol,
                    "{ctx}: score_batch {} vs score {s}",
                    batch[r]
                );
            }
        }
    }
}
