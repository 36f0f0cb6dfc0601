//! Every element codec through the generic harness under proptest, plus the error
//! paths, serde round trips and parameter validation of [`ElementCodec`].

use proptest::prelude::*;

use super::*;
use crate::codec::testing::{check_codec, synthetic};

/// Round-trip bounds, relative to `max(1, largest row norm)` (see `check_codec`),
/// derived from each format on `synthetic` data (every value in [-3, 3]):
fn round_trip_bound(spec: ElementSpec) -> f32 {
    match spec {
        ElementSpec::F32 => 0.0,
        // Relative rounding error 2^-11 and 2^-8 per value.
        ElementSpec::F16 => 5e-4,
        ElementSpec::Bf16 => 4e-3,
        // 2^-4 relative per normal value, plus at most 2^-10 absolute per subnormal.
        ElementSpec::E4m3 => 0.075,
        // 2^-3 relative per value.
        ElementSpec::E5m2 => 0.13,
        // The plain bounds applied to |x - mean|, which is at most twice the scale.
        ElementSpec::E4m3Scaled => 0.13,
        ElementSpec::E5m2Scaled => 0.26,
        // Half a step per value, a step is at most 4/255, over at most 129 dimensions.
        ElementSpec::I8 => 0.1,
        // |x - sign * mean|x|| <= |x| + |decoded|, each at most the scale.
        ElementSpec::B1 => 2.0,
    }
}

fn dims() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(7), Just(65), Just(129)]
}

macro_rules! harness_proptest {
    ($($name:ident => $spec:expr),* $(,)?) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(16))]
            $(
                #[test]
                fn $name(dim in dims(), rows in 1usize..20, seed in any::<u64>()) {
                    let data = synthetic(rows, dim, seed);
                    let codec = ElementCodec::fit($spec, &data, dim).expect("fit");
                    prop_assert_eq!(codec.element(), $spec);
                    check_codec(&codec, &data, round_trip_bound($spec));
                }
            )*
        }
    };
}

harness_proptest! {
    f32_passes_harness => ElementSpec::F32,
    f16_passes_harness => ElementSpec::F16,
    bf16_passes_harness => ElementSpec::Bf16,
    e4m3_passes_harness => ElementSpec::E4m3,
    e5m2_passes_harness => ElementSpec::E5m2,
    e4m3_scaled_passes_harness => ElementSpec::E4m3Scaled,
    e5m2_scaled_passes_harness => ElementSpec::E5m2Scaled,
    i8_passes_harness => ElementSpec::I8,
    b1_passes_harness => ElementSpec::B1,
}

#[test]
fn fitted_params_survive_serde_and_give_identical_codes() {
    let dim = 65;
    let data = synthetic(40, dim, 7);
    for spec in ElementSpec::ALL {
        let codec = ElementCodec::fit(spec, &data, dim).expect("fit");
        let json = serde_json::to_string(&codec).expect("serialize");
        let back: ElementCodec = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, codec, "{json}");
        assert_eq!(
            back.encode(&data).expect("encode"),
            codec.encode(&data).expect("encode"),
            "{spec:?}"
        );
    }
}

#[test]
fn fit_needs_a_sample_only_when_it_fits_something() {
    for spec in ElementSpec::ALL {
        let fitted = ElementCodec::fit(spec, &[], 5);
        match spec {
            ElementSpec::E4m3Scaled
            | ElementSpec::E5m2Scaled
            | ElementSpec::I8
            | ElementSpec::B1 => {
                assert!(
                    matches!(
                        fitted,
                        Err(QuantError::NotEnoughSamples {
                            needed: 1,
                            got: 0,
                            ..
                        })
                    ),
                    "{spec:?}: {fitted:?}"
                );
            }
            _ => assert_eq!(fitted.expect("plain cast").dim(), 5),
        }
    }
}

#[test]
fn fit_rejects_bad_samples_for_every_spec() {
    for spec in ElementSpec::ALL {
        let ragged = ElementCodec::fit(spec, &[1.0; 7], 3);
        assert!(matches!(
            ragged,
            Err(QuantError::DimMismatch {
                expected: 3,
                actual: 7,
                ..
            })
        ));
        let nan = ElementCodec::fit(spec, &[1.0, 2.0, f32::NAN, 4.0], 2);
        assert!(
            matches!(nan, Err(QuantError::NonFinite { row: 1, col: 0, .. })),
            "{nan:?}"
        );
        let no_dim = ElementCodec::fit(spec, &[], 0);
        assert!(matches!(
            no_dim,
            Err(QuantError::InvalidConfig { field: "dim", .. })
        ));
    }
}

#[test]
fn batch_methods_report_nan_and_length_errors() {
    // 9 dimensions: every codec's code is more than one byte, so a ragged batch exists.
    let dim = 9;
    let data = synthetic(4, dim, 3);
    for spec in ElementSpec::ALL {
        let codec = ElementCodec::fit(spec, &data, dim).expect("fit");
        let mut bad = data.clone();
        bad[2 * dim + 5] = f32::INFINITY;
        assert!(matches!(
            codec.encode(&bad),
            Err(QuantError::NonFinite { row: 2, col: 5, .. })
        ));
        assert!(matches!(
            codec.encode(&data[..dim + 1]),
            Err(QuantError::DimMismatch {
                expected: 9,
                actual: 10,
                ..
            })
        ));
        let codes = codec.encode(&data).expect("encode");
        let ragged = codec.decode(&codes[..codes.len() - 1]);
        assert!(
            matches!(ragged, Err(QuantError::DimMismatch { .. })),
            "{spec:?}"
        );
        assert!(matches!(
            codec.checked_scorer(&data[..dim - 1], Metric::L2),
            Err(QuantError::DimMismatch {
                what: "query",
                expected: 9,
                actual: 8
            })
        ));
        let mut query = data[..dim].to_vec();
        query[3] = f32::NAN;
        assert!(matches!(
            codec.checked_scorer(&query, Metric::Cosine),
            Err(QuantError::NonFinite { row: 0, col: 3, .. })
        ));
    }
}

#[test]
fn damaged_params_are_rejected_on_load() {
    let cases = [
        r#"{"codec":"i8","min":[0.0,1.0],"step":[0.1]}"#,
        r#"{"codec":"i8","min":[0.0],"step":[-0.1]}"#,
        r#"{"codec":"i8","min":[],"step":[]}"#,
        r#"{"codec":"scaled-float8","format":"e4m3","mean":[0.0],"step":[1.0]}"#,
        r#"{"codec":"scaled-float8","format":"e4m3","mean":[0.0],"scale":[-1.0]}"#,
        r#"{"codec":"scaled-float8","format":"e3m4","mean":[0.0],"scale":[1.0]}"#,
        r#"{"codec":"b1","scale":[1.0,-2.0]}"#,
        r#"{"codec":"b2","scale":[1.0]}"#,
    ];
    for json in cases {
        assert!(
            serde_json::from_str::<ElementCodec>(json).is_err(),
            "{json}"
        );
    }
    let ok: ElementCodec =
        serde_json::from_str(r#"{"codec":"float8","dim":3,"format":"e5m2"}"#).expect("valid");
    assert_eq!(ok.spec(), CodecSpec::element(ElementSpec::E5m2));
    assert_eq!(ok.code_len(), 3);
}

#[test]
fn kinds_and_specs_match_for_every_element() {
    let data = synthetic(3, 9, 1);
    let names = [
        "f32",
        "f16",
        "bf16",
        "e4m3",
        "e5m2",
        "e4m3-scaled",
        "e5m2-scaled",
        "i8",
        "b1",
    ];
    for (spec, name) in ElementSpec::ALL.into_iter().zip(names) {
        let codec = ElementCodec::fit(spec, &data, 9).expect("fit");
        assert_eq!(codec.spec(), CodecSpec::element(spec));
        assert_eq!(codec.spec().to_string(), name, "{spec:?}");
        assert_eq!(codec.code_len(), spec.code_len(9));
    }
}
