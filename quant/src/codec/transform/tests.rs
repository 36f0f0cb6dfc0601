//! Tests of the fitted transform codec on seeded synthetic correlated data.

use proptest::prelude::*;

use super::*;
use crate::pca::testdata::correlated;

const METRICS: [Metric; 3] = [Metric::Dot, Metric::Cosine, Metric::L2];

fn fit(
    n: usize,
    dim: usize,
    bytes: usize,
    q: ScalarQuantizer,
    seed: u64,
) -> (TransformCodec, Vec<f32>) {
    let data = correlated(n, dim, seed);
    let codec = TransformCodec::fit(&data, dim, bytes, q).expect("fit");
    (codec, data)
}

fn close(a: f32, b: f32, scale: f32) -> bool {
    (a - b).abs() <= 2e-4 * scale.max(1.0)
}

/// Fitting the uniform quantizers as the allocation asks for them gives the codec
/// that fitting every width up front gives: the same widths and quantizers.
#[test]
fn lazy_uniform_fit_equals_the_eager_fit() {
    for (dim, bytes, seed) in [
        (7, 5, 1),
        (65, 17, 2),
        (65, 60, 3),
        (129, 16, 4),
        (129, 120, 5),
    ] {
        let (codec, data) = fit(400, dim, bytes, ScalarQuantizer::Uniform, seed);
        let pca = Pca::fit(&data, dim, dim).expect("pca");
        let projected = pca.transform(&data).expect("transform");
        let (curves, mut fitted): (Vec<DistortionCurve>, Vec<Vec<ComponentQuantizer>>) = (0..dim)
            .map(|j| {
                SortedColumn::new(projected.iter().skip(j).step_by(dim).copied()).uniform_curve()
            })
            .unzip();
        let widths = allocate_bits(&curves, bytes * 8).expect("alloc");
        let eager: Vec<ComponentQuantizer> = fitted
            .iter_mut()
            .zip(&widths)
            .map(|(qs, &w)| qs[usize::from(w)].clone())
            .collect();
        assert_eq!(codec.widths(), widths, "dim {dim}, bytes {bytes}");
        assert_eq!(codec.quantizers(), &eager[..], "dim {dim}, bytes {bytes}");
    }
}

#[test]
fn allocation_spends_the_budget_exactly_in_ordered_blocks() {
    for (dim, bytes) in [(7, 1), (7, 5), (65, 17), (129, 40)] {
        for q in [ScalarQuantizer::Uniform, ScalarQuantizer::Kmeans] {
            let (codec, _) = fit(300, dim, bytes, q, dim as u64);
            assert_eq!(codec.code_len(), bytes);
            let widths = codec.widths();
            assert_eq!(
                widths.iter().map(|&w| usize::from(w)).sum::<usize>(),
                8 * bytes
            );
            let l = codec.layout();
            let slot_w = l.widths();
            let aligned_end = l.tail().start;
            assert!(slot_w[..aligned_end].windows(2).all(|p| p[0] >= p[1]));
            assert!(slot_w[aligned_end..].windows(2).all(|p| p[0] >= p[1]));
            // The allocation follows variance: the first component gets the most bits.
            assert_eq!(
                widths[0],
                *widths.iter().max().expect("non-empty"),
                "{widths:?}"
            );
        }
    }
}

#[test]
fn more_bytes_reconstruct_better() {
    let dim = 65;
    let data = correlated(500, dim, 4);
    let mut last = f64::INFINITY;
    for bytes in [4, 16, 33, 65] {
        let codec = TransformCodec::fit(&data, dim, bytes, ScalarQuantizer::Uniform).expect("fit");
        let decoded = codec
            .decode(&codec.encode(&data).expect("encode"))
            .expect("decode");
        let mse: f64 = data
            .iter()
            .zip(&decoded)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            / data.len() as f64;
        assert!(mse < last, "{bytes} bytes: {mse} >= {last}");
        last = mse;
    }
    // 8 bits on every component: close to exact.
    assert!(last < 1e-4, "{last}");
}

#[test]
fn scorer_equals_exact_score_against_decoded_vector() {
    for (dim, bytes) in [(7, 4), (65, 24), (129, 50)] {
        for q in [ScalarQuantizer::Uniform, ScalarQuantizer::Kmeans] {
            let (codec, data) = fit(400, dim, bytes, q, 7 + dim as u64);
            let codes = codec.encode(&data[..20 * dim]).expect("encode");
            let decoded = codec.decode(&codes).expect("decode");
            for metric in METRICS {
                for query in data.chunks_exact(dim).skip(100).take(3) {
                    let fast = codec.checked_scorer(query, metric).expect("scorer");
                    let slow = codec.reference_scorer(query, metric);
                    let pq = metric.prepare_query(query);
                    for (code, x) in codes.chunks_exact(bytes).zip(decoded.chunks_exact(dim)) {
                        let exact = metric.exact(&pq, x);
                        let scale = exact.abs() + 1.0;
                        assert!(
                            close(fast.score(code), exact, scale),
                            "{metric} {q:?}: {} vs {exact}",
                            fast.score(code)
                        );
                        assert!(
                            close(slow.score(code), exact, scale),
                            "{metric} {q:?}: {} vs {exact}",
                            slow.score(code)
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn serde_round_trip_gives_identical_codes_and_scores() {
    for q in [ScalarQuantizer::Uniform, ScalarQuantizer::Kmeans] {
        let (codec, data) = fit(300, 65, 20, q, 21);
        let json = serde_json::to_string(&codec).expect("serialize");
        let back: TransformCodec = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back.spec(), codec.spec());
        let a = codec.encode(&data).expect("encode");
        let b = back.encode(&data).expect("encode");
        assert_eq!(a, b);
        let query = &data[..65];
        let (sa, sb) = (
            codec.scorer(query, Metric::Dot),
            back.scorer(query, Metric::Dot),
        );
        for code in a.chunks_exact(20).take(50) {
            assert_eq!(sa.score(code), sb.score(code));
        }
    }
}

#[test]
fn corrupt_parameters_are_rejected_on_load() {
    let (codec, _) = fit(200, 7, 3, ScalarQuantizer::Uniform, 5);
    let json = serde_json::to_string(&codec).expect("serialize");
    let wrong_bytes = json.replacen("\"bytes\":3", "\"bytes\":4", 1);
    assert!(serde_json::from_str::<TransformCodec>(&wrong_bytes).is_err());
    let wrong_family = json.replacen("\"quantizer\":\"uniform\"", "\"quantizer\":\"kmeans\"", 1);
    assert!(serde_json::from_str::<TransformCodec>(&wrong_family).is_err());
}

#[test]
fn bad_configs_are_named_errors() {
    let dim = 7;
    let data = correlated(50, dim, 1);
    let fit = |d: &[f32], bytes| TransformCodec::fit(d, dim, bytes, ScalarQuantizer::Uniform);
    assert!(matches!(
        fit(&data, 8),
        Err(QuantError::InvalidConfig {
            field: "transform bytes",
            ..
        })
    ));
    assert!(matches!(
        fit(&data, 0),
        Err(QuantError::InvalidConfig { .. })
    ));
    assert!(matches!(
        fit(&data[..dim], 3),
        Err(QuantError::NotEnoughSamples { .. })
    ));
    assert!(matches!(
        fit(&data[..dim + 2], 3),
        Err(QuantError::DimMismatch { .. })
    ));
    let mut nan = data.clone();
    nan[3 * dim + 4] = f32::NAN;
    assert!(matches!(
        fit(&nan, 3),
        Err(QuantError::NonFinite { row: 3, col: 4, .. })
    ));
    let codec = fit(&data, 3).expect("fit");
    assert!(codec.checked_scorer(&data[..dim - 1], Metric::Dot).is_err());
    assert!(codec.encode(&data[..dim + 1]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn fast_scorer_matches_reference_on_random_codes(
        dim in prop::sample::select(vec![7usize, 65, 129]),
        frac in 0.05f64..=1.0,
        kmeans in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let bytes = ((frac * dim as f64) as usize).max(1);
        let q = if kmeans { ScalarQuantizer::Kmeans } else { ScalarQuantizer::Uniform };
        let (codec, data) = fit(200, dim, bytes, q, seed % 1000);
        let mut state = seed | 1;
        let codes: Vec<u8> = (0..bytes * 16)
            .map(|_| { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state as u8 })
            .collect();
        for metric in METRICS {
            let query = &data[dim..2 * dim];
            let fast = codec.scorer(query, metric);
            let slow = codec.reference_scorer(query, metric);
            let mut batch = vec![0f32; 16];
            fast.score_batch(&codes, &mut batch);
            let mut coarse = vec![0f32; 16];
            fast.coarse_batch(&codes, &mut coarse);
            for ((code, b), cb) in codes.chunks_exact(bytes).zip(&batch).zip(&coarse) {
                prop_assert_eq!(fast.coarse(code), *cb);
                let (f, s) = (fast.score(code), slow.score(code));
                // The byte tables round each entry to half a u16 step by design.
                let rounding = fast.max_error();
                prop_assert!(
                    (f - s).abs() <= rounding + 2e-4 * (s.abs() + 1.0),
                    "{metric}: {f} vs {s} (rounding bound {rounding})"
                );
                prop_assert_eq!(f, *b);
                // The walk's coarse estimate stays within its own bound.
                let (c, bound) = (fast.coarse(code), fast.coarse_error());
                prop_assert!(
                    (c - f).abs() <= bound + 2e-4 * (f.abs() + 1.0),
                    "{metric}: coarse {c} vs {f} (bound {bound})"
                );
            }
        }
    }
}

#[test]
fn passes_the_generic_codec_harness() {
    for (dim, bytes, q, max_rel_err) in [
        (7, 7, ScalarQuantizer::Uniform, 0.02),
        (65, 65, ScalarQuantizer::Kmeans, 0.02),
        (65, 20, ScalarQuantizer::Uniform, 0.5),
        (129, 48, ScalarQuantizer::Kmeans, 0.5),
    ] {
        let (codec, data) = fit(300, dim, bytes, q, 31 + dim as u64);
        crate::codec::testing::check_codec(&codec, &data, max_rel_err);
    }
}

#[test]
fn rank_deficient_sample_still_fits() {
    // 10 rows in 65 dimensions: 56 components have no variance at all.
    let dim = 65;
    let data = correlated(10, dim, 77);
    for q in [ScalarQuantizer::Uniform, ScalarQuantizer::Kmeans] {
        for bytes in [8, 65] {
            let codec = TransformCodec::fit(&data, dim, bytes, q).expect("fit");
            assert_eq!(codec.code_len(), bytes);
            crate::codec::testing::check_codec(&codec, &data, 0.1);
        }
    }
}
