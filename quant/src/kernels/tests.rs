//! Fast kernels against their scalar twins on odd lengths.
//!
//! Both the dispatched kernel (AVX2 on a machine that has it) and the portable
//! fallback are checked, so the fallback is tested on x86-64 too.

use half::{bf16, f16};
use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

/// The odd lengths the style guide asks for, plus any length up to 400.
fn len() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1usize),
        Just(7),
        Just(65),
        Just(129),
        Just(383),
        0usize..400
    ]
}

fn floats(n: usize) -> impl Strategy<Value = Vec<f32>> {
    vec(-10.0f32..10.0, n)
}

/// Fast and scalar results agree to rounding: the tolerance is relative to the sum
/// of the absolute terms, which bounds any reordering error of an f32 sum.
fn assert_close(fast: f32, reference: f32, abs_terms: f32, what: &str) {
    let tol = 1e-5 * abs_terms + 1e-6;
    assert!(
        (fast - reference).abs() <= tol,
        "{what}: fast {fast} vs scalar {reference} (tolerance {tol})"
    );
}

fn abs_sum(terms: impl Iterator<Item = f32>) -> f32 {
    terms.map(f32::abs).sum()
}

/// One float8 format's fast kernels, twins and table.
struct Float8Kernels {
    name: &'static str,
    table: &'static [f32; 256],
    dot: fn(&[f32], &[u8]) -> f32,
    dot_twin: fn(&[f32], &[u8]) -> f32,
    l2: fn(&[f32], &[f32], &[u8]) -> f32,
    l2_twin: fn(&[f32], &[f32], &[u8]) -> f32,
}

fn float8_kernels() -> [Float8Kernels; 2] {
    [
        Float8Kernels {
            name: "e4m3",
            table: e4m3_table(),
            dot: dot_e4m3,
            dot_twin: dot_e4m3_scalar,
            l2: l2sq_e4m3,
            l2_twin: l2sq_e4m3_scalar,
        },
        Float8Kernels {
            name: "e5m2",
            table: e5m2_table(),
            dot: dot_e5m2,
            dot_twin: dot_e5m2_scalar,
            l2: l2sq_e5m2,
            l2_twin: l2sq_e5m2_scalar,
        },
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn f32_kernels_match_twins((a, b) in len().prop_flat_map(|n| (floats(n), floats(n)))) {
        let dot_terms = abs_sum(a.iter().zip(&b).map(|(x, y)| x * y));
        let l2_terms = abs_sum(a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)));
        let reference = dot_f32_scalar(&a, &b);
        assert_close(dot_f32(&a, &b), reference, dot_terms, "dot_f32");
        assert_close(portable::dot_f32(&a, &b), reference, dot_terms, "portable dot_f32");
        let reference = l2sq_f32_scalar(&a, &b);
        assert_close(l2sq_f32(&a, &b), reference, l2_terms, "l2sq_f32");
        assert_close(portable::l2sq_f32(&a, &b), reference, l2_terms, "portable l2sq_f32");
    }

    #[test]
    fn half_kernels_match_twins((q, x) in len().prop_flat_map(|n| (floats(n), floats(n)))) {
        let h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
        let b: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        let hx: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
        let bx: Vec<f32> = b.iter().map(|v| v.to_f32()).collect();
        for (name, xs) in [("f16", &hx), ("bf16", &bx)] {
            let dot_terms = abs_sum(q.iter().zip(xs).map(|(a, c)| a * c));
            let l2_terms = abs_sum(q.iter().zip(xs).map(|(a, c)| (a - c) * (a - c)));
            let (fast_dot, port_dot, ref_dot, fast_l2, port_l2, ref_l2) = if name == "f16" {
                (dot_f16(&q, &h), portable::dot_f16(&q, &h), dot_f16_scalar(&q, &h),
                 l2sq_f16(&q, &h), portable::l2sq_f16(&q, &h), l2sq_f16_scalar(&q, &h))
            } else {
                (dot_bf16(&q, &b), portable::dot_bf16(&q, &b), dot_bf16_scalar(&q, &b),
                 l2sq_bf16(&q, &b), portable::l2sq_bf16(&q, &b), l2sq_bf16_scalar(&q, &b))
            };
            // The twin must agree with f32 arithmetic on the widened values.
            assert_close(ref_dot, dot_f32_scalar(&q, xs), dot_terms, name);
            assert_close(fast_dot, ref_dot, dot_terms, name);
            assert_close(port_dot, ref_dot, dot_terms, name);
            assert_close(fast_l2, ref_l2, l2_terms, name);
            assert_close(port_l2, ref_l2, l2_terms, name);
        }
    }

    #[test]
    fn i8_dot_matches_twin(
        (a, b) in (0usize..300).prop_flat_map(|n| (vec(any::<i8>(), n), vec(any::<i8>(), n)))
    ) {
        let reference = dot_i8_scalar(&a, &b);
        prop_assert_eq!(i64::from(dot_i8(&a, &b)), reference);
        prop_assert_eq!(i64::from(portable::dot_i8(&a, &b)), reference);
        // Each x86 kernel the CPU runs, whichever `dot_i8` dispatches to.
        #[cfg(target_arch = "x86_64")]
        {
            if cpu_level().avx2_fma_f16c {
                // SAFETY: AVX2 was detected; the lengths are equal.
                prop_assert_eq!(i64::from(unsafe { super::avx2::dot_i8(&a, &b) }), reference);
            }
            if cpu_level().avx512_vnni {
                // SAFETY: AVX-512 F, BW and VNNI were detected; the lengths are equal.
                prop_assert_eq!(i64::from(unsafe { super::avx512::dot_i8(&a, &b) }), reference);
            }
        }
    }

    #[test]
    fn i8_rows_match_twin(
        (q, rows) in (0usize..200, 0usize..11).prop_flat_map(|(n, r)| {
            (vec(any::<i8>(), n), vec(any::<i8>(), n * r))
        })
    ) {
        let count = if q.is_empty() { rows.len() } else { rows.len() / q.len() };
        let expect: Vec<i64> = if q.is_empty() {
            vec![0; count]
        } else {
            rows.chunks_exact(q.len()).map(|row| dot_i8_scalar(&q, row)).collect()
        };
        let mut out = vec![i32::MAX; count];
        dot_i8_rows(&q, &rows, &mut out);
        prop_assert_eq!(out.iter().map(|&v| i64::from(v)).collect::<Vec<_>>(), expect);
    }

    #[test]
    fn i8_gather_matches_twin(
        (q, rows, ids) in (0usize..200, 1usize..11).prop_flat_map(|(n, r)| {
            (vec(any::<i8>(), n), vec(any::<i8>(), n * r), vec(0..r as u32, 0..13))
        })
    ) {
        let expect: Vec<i64> = ids
            .iter()
            .map(|&id| if q.is_empty() { 0 } else { dot_i8_scalar(&q, &rows[id as usize * q.len()..][..q.len()]) })
            .collect();
        let mut out = vec![i32::MAX; ids.len()];
        dot_i8_gather(&q, &rows, &ids, &mut out);
        prop_assert_eq!(out.iter().map(|&v| i64::from(v)).collect::<Vec<_>>(), expect);
    }

    #[test]
    fn lookup_matches_twin(
        table in vec(any::<f32>(), 0..40),
        idx in vec(any::<u8>(), 0..100),
    ) {
        let mut fast = vec![f32::NAN; idx.len()];
        let mut twin = vec![1.0f32; idx.len()];
        lookup_f32(&table, &idx, &mut fast);
        lookup_f32_scalar(&table, &idx, &mut twin);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&fast), bits(&twin));
        // Small indices too, so most lanes hit the table.
        let small: Vec<u8> = idx.iter().map(|&i| i % 20).collect();
        lookup_f32(&table, &small, &mut fast);
        lookup_f32_scalar(&table, &small, &mut twin);
        prop_assert_eq!(bits(&fast), bits(&twin));
    }

    #[test]
    fn all_finite_is_every_value_finite(
        x in vec(prop_oneof![any::<f32>(), Just(f32::NAN), Just(f32::INFINITY), Just(-0.0f32)], 0..50)
    ) {
        prop_assert_eq!(all_finite(&x), x.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn quantize_i8_rounds_as_round_does(x in vec(-1e3f32..1e3, 0..64)) {
        let mut out = vec![0i8; x.len()];
        let step = quantize_i8(&x, &mut out);
        let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let inv = if max > 0.0 { 127.0 / max } else { 0.0 };
        prop_assert_eq!(step, max / 127.0);
        for (&o, &v) in out.iter().zip(&x) {
            prop_assert_eq!(o, (v * inv).round().clamp(-127.0, 127.0) as i8);
        }
    }

    #[test]
    fn u8_kernels_match_twins(
        (w, a, c) in len().prop_flat_map(|n| (floats(n), vec(-50.0f32..300.0, n), vec(any::<u8>(), n)))
    ) {
        let dot_terms = abs_sum(w.iter().zip(&c).map(|(x, &y)| x * f32::from(y)));
        let l2_terms = abs_sum(w.iter().zip(&a).zip(&c).map(|((wi, ai), &ci)| {
            wi * (ai - f32::from(ci)) * (ai - f32::from(ci))
        }));
        let reference = dot_u8_scalar(&w, &c);
        assert_close(dot_u8(&w, &c), reference, dot_terms, "dot_u8");
        assert_close(portable::dot_u8(&w, &c), reference, dot_terms, "portable dot_u8");
        let reference = l2sq_u8_scalar(&w, &a, &c);
        assert_close(l2sq_u8(&w, &a, &c), reference, l2_terms, "l2sq_u8");
        assert_close(portable::l2sq_u8(&w, &a, &c), reference, l2_terms, "portable l2sq_u8");
    }

    #[test]
    fn lut8_kernels_match_twins(
        (w, a, c) in len().prop_flat_map(|n| (floats(n), floats(n), vec(any::<u8>(), n))),
        entries in vec(-100.0f32..100.0, 256),
    ) {
        let mut table = [0f32; 256];
        table.copy_from_slice(&entries);
        let dot_terms = abs_sum(w.iter().zip(&c).map(|(x, &y)| x * table[usize::from(y)]));
        let l2_terms = abs_sum(w.iter().zip(&a).zip(&c).map(|((wi, ai), &ci)| {
            let d = ai - table[usize::from(ci)];
            wi * d * d
        }));
        let reference = dot_lut8_scalar(&w, &table, &c);
        assert_close(dot_lut8(&w, &table, &c), reference, dot_terms, "dot_lut8");
        assert_close(portable::dot_lut8(&w, &table, &c), reference, dot_terms, "portable dot_lut8");
        let reference = l2sq_lut8_scalar(&w, &a, &table, &c);
        assert_close(l2sq_lut8(&w, &a, &table, &c), reference, l2_terms, "l2sq_lut8");
        assert_close(portable::l2sq_lut8(&w, &a, &table, &c), reference, l2_terms, "portable l2sq_lut8");
    }

    #[test]
    fn float8_kernels_match_twins(
        (w, a, c) in len().prop_flat_map(|n| (floats(n), floats(n), vec(any::<u8>(), n))),
    ) {
        for Float8Kernels { name, table, dot, dot_twin, l2, l2_twin } in float8_kernels() {
            let dot_terms = abs_sum(w.iter().zip(&c).map(|(x, &y)| x * table[usize::from(y)]));
            let l2_terms = abs_sum(w.iter().zip(&a).zip(&c).map(|((wi, ai), &ci)| {
                let d = ai - table[usize::from(ci)];
                wi * d * d
            }));
            assert_close(dot(&w, &c), dot_twin(&w, &c), dot_terms, name);
            assert_close(l2(&w, &a, &c), l2_twin(&w, &a, &c), l2_terms, name);
        }
    }

    #[test]
    fn b1_kernels_match_twins(
        (w, bits, other) in len().prop_flat_map(|n| {
            (floats(n), vec(any::<u8>(), n.div_ceil(8)), vec(any::<u8>(), n.div_ceil(8)))
        })
    ) {
        let terms = abs_sum(w.iter().copied());
        let reference = dot_b1_scalar(&w, &bits);
        assert_close(dot_b1(&w, &bits), reference, terms, "dot_b1");
        assert_close(portable::dot_b1(&w, &bits), reference, terms, "portable dot_b1");
        let table = b1_table(&w);
        assert_close(dot_b1_table(&table, &bits), dot_b1_scalar(&w, &bits), terms, "dot_b1_table");
        let reference = hamming_scalar(&bits, &other);
        prop_assert_eq!(hamming(&bits, &other), reference);
        prop_assert_eq!(portable::hamming(&bits, &other), reference);
    }
}

#[test]
fn scalar_twins_compute_their_definitions() {
    // Small hand-checked cases: the twins are the definitions everything else is
    // tested against, so they get their own fixed answers.
    assert_eq!(dot_f32_scalar(&[1.0, 2.0, 3.0], &[4.0, -5.0, 6.0]), 12.0);
    assert_eq!(l2sq_f32_scalar(&[1.0, 2.0], &[4.0, -2.0]), 25.0);
    assert_eq!(dot_u8_scalar(&[0.5, -1.0], &[4, 255]), -253.0);
    assert_eq!(l2sq_u8_scalar(&[2.0, 1.0], &[1.0, 0.0], &[3, 1]), 9.0);
    let mut table = [0f32; 256];
    table[7] = 1.5;
    table[200] = -2.0;
    assert_eq!(dot_lut8_scalar(&[2.0, 3.0], &table, &[7, 200]), -3.0);
    assert_eq!(
        l2sq_lut8_scalar(&[1.0, 4.0], &[0.0, 0.0], &table, &[7, 200]),
        18.25
    );
    // Bits 0 and 9 set, everything else clear: +1 -2 -3 ... -9 +10.
    let w: Vec<f32> = (1..=10).map(|v| v as f32).collect();
    assert_eq!(
        dot_b1_scalar(&w, &[0b0000_0001, 0b0000_0010]),
        1.0 + 10.0 - 44.0
    );
    assert_eq!(hamming_scalar(&[0xFF, 0x0F], &[0x0F, 0x0F]), 4);
}

#[test]
#[should_panic(expected = "dot_f32: slice lengths differ")]
fn fast_kernels_reject_unequal_lengths() {
    dot_f32(&[1.0, 2.0], &[1.0]);
}

#[test]
fn detection_is_cached() {
    assert_eq!(cpu_level(), cpu_level());
}

#[test]
fn float8_fast_decode_matches_the_table_on_every_byte() {
    // Equal terms sum exactly, so any difference is a decoding difference; the
    // lengths cover the 16-value SIMD blocks and the scalar tail.
    for Float8Kernels { table, dot, .. } in float8_kernels() {
        for b in 0..=u8::MAX {
            let expected = table[usize::from(b)];
            for n in [8, 16, 17, 32] {
                let sum = dot(&vec![1.0; n], &vec![b; n]);
                assert_eq!(sum, n as f32 * expected, "byte {b:#04x}, {n} values");
            }
        }
    }
    assert_eq!(e4m3_table()[0x7E], 448.0);
    assert_eq!(e4m3_table()[0x7F], 480.0);
    assert_eq!(e4m3_table()[0xFF], -480.0);
    assert_eq!(e5m2_table()[0x7C], 0.0);
    assert_eq!(e5m2_table()[0x7B], 57344.0);
}

#[test]
fn b1_table_ignores_padding_bits() {
    // 11 dimensions: the last byte has 5 padding bits, which must not count.
    let w: Vec<f32> = (1..=11).map(|v| v as f32).collect();
    let table = b1_table(&w);
    assert_eq!(table.len(), 2 * 256);
    let clean = [0b1010_0101, 0b0000_0110];
    let padded = [0b1010_0101, 0b1111_1110];
    let expected = dot_b1_scalar(&w, &clean);
    assert_eq!(dot_b1_table(&table, &clean), expected);
    assert_eq!(dot_b1_table(&table, &padded), expected);
}

#[test]
fn i8_dot_extremes_at_the_longest_length_fit() {
    let a = vec![i8::MIN; DOT_I8_MAX_LEN];
    let b = vec![i8::MIN; DOT_I8_MAX_LEN];
    assert_eq!(i64::from(dot_i8(&a, &b)), dot_i8_scalar(&a, &b));
    let c = vec![i8::MAX; DOT_I8_MAX_LEN];
    assert_eq!(i64::from(dot_i8(&a, &c)), dot_i8_scalar(&a, &c));
}
