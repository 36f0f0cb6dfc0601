use super::*;
use rand::{Rng, SeedableRng};

fn weights(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..rows * cols)
        .map(|_| {
            let g: f32 = (0..3).map(|_| rng.random_range(-1.0f32..1.0)).sum();
            0.05 * g
        })
        .collect()
}

/// Blocks of 32 weights of varied range, as in real layers; with `heavy_tails`
/// every third block is cubed (heavy-tailed). Shared by the nested and rescaled
/// palettes' tests.
pub(super) fn blocky(rows: usize, cols: usize, seed: u64, heavy_tails: bool) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..rows * cols)
        .map(|i| {
            let s = 0.1 + (i / 32 % 7) as f32 * 0.3;
            let x: f32 = rng.random_range(-1.0f32..1.0) + rng.random_range(-1.0f32..1.0);
            if heavy_tails && i / 32 % 3 == 0 {
                s * x * x * x
            } else {
                s * x
            }
        })
        .collect()
}

/// Sum of squared differences.
pub(super) fn sq_err(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum()
}

/// Every step of `p` lowers the squared error to `w` of the decoded tensor by its
/// recorded gain (to 1e-3 of the error before it); `check(n)` runs at each prefix.
pub(super) fn assert_gains_exact(
    w: &[f32],
    p: &super::NestedPalette,
    mut check: impl FnMut(usize),
) {
    let mut prev = sq_err(w, &p.decode(0));
    for n in 1..=p.steps.len() {
        let got = sq_err(w, &p.decode(n));
        let gain = p.steps[n - 1].gain;
        let rel = (prev - got - gain).abs() / prev;
        assert!(rel < 1e-3, "step {n}: gain {gain} vs {}", prev - got);
        check(n);
        prev = got;
    }
}

fn f16_round(w: &[f32]) -> Vec<f32> {
    w.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

fn sse(a: &[f32], b: &[f32], cols: usize, imp: Option<&[f32]>) -> f64 {
    a.iter()
        .zip(b)
        .enumerate()
        .map(|(i, (x, y))| imp.map_or(1.0, |m| f64::from(m[i % cols])) * f64::from(x - y).powi(2))
        .sum()
}

/// Optimal weighted 1-D k-means cost over all `points` (value, weight), duplicates
/// kept as separate points: the plain O(k n^2) dynamic program over sorted points.
fn plain_kmeans_cost(points: &mut [(f64, f64)], k: usize) -> f64 {
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = points.len();
    let (mut sw, mut swx, mut swxx) = (vec![0.0; n + 1], vec![0.0; n + 1], vec![0.0; n + 1]);
    for (i, &(x, w)) in points.iter().enumerate() {
        sw[i + 1] = sw[i] + w;
        swx[i + 1] = swx[i] + w * x;
        swxx[i + 1] = swxx[i] + w * x * x;
    }
    let cost = |a: usize, b: usize| -> f64 {
        let w = sw[b] - sw[a];
        if w <= 0.0 {
            return 0.0;
        }
        let m = (swx[b] - swx[a]) / w;
        ((swxx[b] - swxx[a]) - 2.0 * m * (swx[b] - swx[a]) + m * m * w).max(0.0)
    };
    let mut dp: Vec<f64> = (0..=n).map(|i| cost(0, i)).collect();
    for _ in 1..k {
        // With c clusters the first i points cost min over the last cluster's start j.
        dp = (0..=n)
            .map(|i| (1..i).fold(dp[i], |best, j| best.min(dp[j] + cost(j, i))))
            .collect();
    }
    dp[n]
}

#[test]
fn tensors_with_few_distinct_values_are_reproduced_exactly() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for bits in 2u8..=8 {
        let k = 1usize << bits;
        let set: Vec<f32> = (0..k)
            .map(|i| (i as f32 - k as f32 / 2.0) * 0.125)
            .collect();
        let (rows, cols) = (13, 29);
        let w: Vec<f32> = (0..rows * cols)
            .map(|_| set[rng.random_range(0..k)])
            .collect();
        for group_rows in [None, Some(4)] {
            let p = palettize(&w, rows, cols, None, &PaletteConfig { bits, group_rows })
                .expect("palettize");
            assert_eq!(p.decode(), w, "bits {bits} groups {group_rows:?}");
        }
    }
}

#[test]
fn uniquified_kmeans_equals_plain_kmeans_on_all_weights() {
    let (rows, cols) = (9, 14);
    let mut w = weights(rows, cols, 8);
    // Force heavy duplication so uniquification actually merges points.
    for (i, x) in w.iter_mut().enumerate() {
        if i % 3 == 0 {
            *x = 0.0625;
        }
    }
    let codes: Vec<u16> = w.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
    let rounded = f16_round(&w);
    let imp: Vec<f32> = (0..cols).map(|j| 0.5 + (j % 4) as f32).collect();
    for importance in [None, Some(imp.as_slice())] {
        let (distinct, values, hw) = group_histogram(&codes, cols, importance);
        assert!(distinct.len() < rows * cols);
        for k in [4usize, 8, 16] {
            let km = optimal_kmeans_1d(&values, &hw, k).expect("kmeans");
            let mut all: Vec<(f64, f64)> = rounded
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    (
                        f64::from(x),
                        importance.map_or(1.0, |m| f64::from(m[i % cols])),
                    )
                })
                .collect();
            let plain = plain_kmeans_cost(&mut all, k);
            assert!(
                (km.cost - plain).abs() <= 1e-9 * (1.0 + plain),
                "k {k}: {} vs {plain}",
                km.cost
            );
            // The palette's own error is that optimum, up to f16 rounding of centroids.
            let bits = k.trailing_zeros() as u8;
            let p = palettize(
                &w,
                rows,
                cols,
                importance,
                &PaletteConfig {
                    bits,
                    group_rows: None,
                },
            )
            .expect("palettize");
            let got = sse(&rounded, &p.decode(), cols, importance);
            assert!(
                got >= plain * (1.0 - 1e-9),
                "k {k}: palette {got} below optimum {plain}"
            );
            assert!(
                got <= plain * 1.01 + 1e-9,
                "k {k}: palette {got} vs optimum {plain}"
            );
        }
    }
}

#[test]
fn importance_pulls_centroids_toward_important_channels() {
    let (rows, cols) = (64, 48);
    let w = weights(rows, cols, 3);
    let imp: Vec<f32> = (0..cols).map(|j| if j < 8 { 50.0 } else { 0.1 }).collect();
    let cfg = PaletteConfig {
        bits: 3,
        group_rows: None,
    };
    let plain = palettize(&w, rows, cols, None, &cfg).expect("plain");
    let aware = palettize(&w, rows, cols, Some(&imp), &cfg).expect("aware");
    let r = f16_round(&w);
    let (ep, ea) = (
        sse(&r, &plain.decode(), cols, Some(&imp)),
        sse(&r, &aware.decode(), cols, Some(&imp)),
    );
    assert!(
        ea < ep,
        "importance-weighted error {ea} not below plain {ep}"
    );
}

#[test]
fn error_falls_with_bits_and_groups_and_section_round_trips() {
    let (rows, cols) = (37, 52);
    let w = weights(rows, cols, 4);
    let r = f16_round(&w);
    let mut prev = f64::INFINITY;
    for bits in 2u8..=8 {
        let p = palettize(
            &w,
            rows,
            cols,
            None,
            &PaletteConfig {
                bits,
                group_rows: None,
            },
        )
        .expect("palettize");
        let e = sse(&r, &p.decode(), cols, None);
        assert!(e < prev, "bits {bits}: {e} vs {prev}");
        prev = e;
        let want = f64::from(bits) + 16.0 * f64::from(1u32 << bits) / (rows * cols) as f64;
        // Each index row is padded to a whole byte: under 8 bits per row.
        assert!((p.bits_per_weight() - want).abs() < 8.0 / cols as f64);
    }
    let whole = palettize(
        &w,
        rows,
        cols,
        None,
        &PaletteConfig {
            bits: 3,
            group_rows: None,
        },
    )
    .expect("whole");
    let grouped = palettize(
        &w,
        rows,
        cols,
        None,
        &PaletteConfig {
            bits: 3,
            group_rows: Some(8),
        },
    )
    .expect("grouped");
    assert_eq!(grouped.layout.n_groups(), 5);
    assert!(sse(&r, &grouped.decode(), cols, None) <= sse(&r, &whole.decode(), cols, None));
    let section = grouped.section_bytes();
    assert_eq!(section.len(), grouped.layout.len);
    assert_eq!(
        grouped.layout.decode(&section).expect("decode"),
        grouped.decode()
    );
    assert!(grouped.layout.decode(&section[1..]).is_err());
}

#[test]
fn rejects_bad_input() {
    let ok = PaletteConfig {
        bits: 4,
        group_rows: None,
    };
    assert!(
        palettize(
            &[1.0; 6],
            2,
            3,
            None,
            &PaletteConfig {
                bits: 1,
                group_rows: None
            }
        )
        .is_err()
    );
    assert!(
        palettize(
            &[1.0; 6],
            2,
            3,
            None,
            &PaletteConfig {
                bits: 4,
                group_rows: Some(0)
            }
        )
        .is_err()
    );
    assert!(palettize(&[1.0; 6], 3, 3, None, &ok).is_err());
    assert!(palettize(&[1.0, 1e6, 0.0], 1, 3, None, &ok).is_err());
    assert!(palettize(&[1.0, 2.0, 0.0], 1, 3, Some(&[1.0, -1.0, 0.0]), &ok).is_err());
    let zero_imp = palettize(&[1.0, 2.0, 0.0], 1, 3, Some(&[0.0; 3]), &ok).expect("zeros");
    assert_eq!(zero_imp.decode(), vec![1.0, 2.0, 0.0]);
}
