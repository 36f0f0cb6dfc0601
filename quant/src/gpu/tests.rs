use proptest::prelude::*;
use rand::{Rng, SeedableRng};

use super::emulate;
use super::jobs::{TensorJob, device_jobs};
use crate::bitstack::{BitStackConfig, RankPolicy, decompose};
use crate::checkpoint::{BlockOrdering, Budget, BudgetLimit, CheckpointWriter, Reader};
use crate::palette::{JointFit, PaletteConfig, nest_rescaled_joint, nest_scaled, palettize};

fn draw(rng: &mut rand_chacha::ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// A checkpoint with every encoding: two BitStack matrices (one with scales), a
/// palette, an f16 and an f32 tensor.
fn checkpoint(rows: usize, cols: usize, rank: usize, bits: u8, group: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let cfg = BitStackConfig {
        n_iter: 3,
        rank: RankPolicy::Fixed(rank),
        ..Default::default()
    };
    let mut w = CheckpointWriter::in_memory();
    let a = draw(&mut rng, rows * cols);
    let scales: Vec<f32> = (0..cols).map(|j| 0.5 + (j % 11) as f32 / 7.0).collect();
    w.add_bitstack(
        "a",
        &decompose(&a, rows, cols, Some(&scales), &cfg).expect("decomposes"),
    )
    .expect("adds");
    let b = draw(&mut rng, cols * rows);
    w.add_bitstack(
        "b",
        &decompose(&b, cols, rows, None, &cfg).expect("decomposes"),
    )
    .expect("adds");
    let p = draw(&mut rng, rows * cols);
    let pal = palettize(
        &p,
        rows,
        cols,
        None,
        &PaletteConfig {
            bits,
            group_rows: Some(group),
        },
    )
    .expect("palettizes");
    w.add_palette("p", &pal).expect("adds");
    w.add_f16("h", &[cols], &draw(&mut rng, cols))
        .expect("adds");
    w.add_f32("f", &[rows, 3], &draw(&mut rng, rows * 3))
        .expect("adds");
    let mut bytes = Vec::new();
    w.finish(&BlockOrdering::default(), &mut bytes)
        .expect("writes");
    bytes
}

/// Every budget: the emulated kernels over only the budget's prefix equal the
/// reference rebuild (exactly for lookups and copies, to rounding for BitStack,
/// whose dot products are summed in another order).
fn check_all_budgets(bytes: &[u8]) -> Result<(), TestCaseError> {
    let full = Reader::new(bytes).expect("valid");
    let m = full.manifest();
    for n in m.min_blocks as usize..=m.block_order.len() {
        let budget = Budget::fit(full.manifest(), BudgetLimit::Blocks(n)).expect("budget");
        let prefix = &bytes[..budget.prefix_len as usize];
        let reader = Reader::new(prefix).expect("prefix parses");
        let jobs = device_jobs(&reader, &budget).expect("plans");
        for (t, planned) in jobs.iter().enumerate() {
            let want = reader.rebuild_index(t, &budget).expect("rebuilds");
            let got = emulate::rebuild(prefix, planned);
            prop_assert_eq!(got.len(), want.len());
            let exact = !matches!(planned.job, TensorJob::BitStack { .. });
            let scale = want.iter().fold(1f32, |a, x| a.max(x.abs()));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                if exact {
                    prop_assert_eq!(g.to_bits(), w.to_bits(), "{} [{}]", planned.name, i);
                } else {
                    prop_assert!(
                        (g - w).abs() <= 2e-5 * scale,
                        "{} [{}] at {} blocks: {} vs {}",
                        planned.name,
                        i,
                        n,
                        g,
                        w
                    );
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10))]
    #[test]
    fn emulated_kernels_match_the_cpu_rebuild(
        rows in prop::sample::select(vec![1usize, 7, 65, 129]),
        cols in prop::sample::select(vec![1usize, 7, 65, 129, 383]),
        rank in prop::sample::select(vec![1usize, 5, 16, 17, 40]),
        bits in 2u8..=8,
        group in prop::sample::select(vec![1usize, 3, 64, 1000]),
        seed in any::<u64>(),
    ) {
        let rank = rank.min(rows).min(cols);
        check_all_budgets(&checkpoint(rows, cols, rank, bits, group, seed))?;
    }
}

#[test]
fn jobs_refuse_a_budget_beyond_the_bytes() {
    let bytes = checkpoint(65, 40, 4, 3, 8, 7);
    let full = Reader::new(&bytes).expect("valid");
    let budget = Budget::fit(full.manifest(), BudgetLimit::Full).expect("full");
    // The manifest alone parses, but the sections are missing: checksums cannot be read.
    let reader = Reader::new(&bytes[..bytes.len() - 1]).expect("header and manifest");
    assert!(device_jobs(&reader, &budget).is_err());
    // A budget made for another manifest is refused.
    let other = checkpoint(7, 7, 1, 2, 1, 1);
    let other_budget = Budget::fit(
        Reader::new(&other).expect("valid").manifest(),
        BudgetLimit::Full,
    )
    .expect("full");
    let mut bad = other_budget.clone();
    bad.blocks_per_matrix.push(0);
    assert!(device_jobs(&full, &bad).is_err());
}

#[test]
fn job_offsets_are_aligned_and_inside_the_prefix() {
    let bytes = checkpoint(129, 65, 17, 5, 10, 3);
    let full = Reader::new(&bytes).expect("valid");
    let min = full.manifest().min_blocks as usize;
    let budget = Budget::fit(full.manifest(), BudgetLimit::Blocks(min)).expect("budget");
    let jobs = device_jobs(&full, &budget).expect("plans");
    for t in &jobs {
        if let TensorJob::BitStack {
            block_offsets,
            u_off,
            vt_off,
            scales_offset,
            ..
        } = &t.job
        {
            assert!(!block_offsets.is_empty());
            for o in block_offsets {
                assert_eq!(o % 64, 0, "{}", t.name);
                assert!(*o < budget.prefix_len);
            }
            assert_eq!(u_off % 64, 0);
            assert_eq!(vt_off % 64, 0);
            assert!(scales_offset.is_none_or(|s| s % 64 == 0));
        }
    }
}

#[test]
fn a_scaled_palette_is_a_nested_job_with_no_step() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let w = draw(&mut rng, 8 * 64);
    let p = crate::palette::palettize_scaled(&w, 8, 64, None, 4, 32).expect("fits");
    let mut wr = CheckpointWriter::in_memory();
    wr.add_scaled_palette("layers.0.q", &p).expect("adds");
    let mut bytes = Vec::new();
    wr.finish(&BlockOrdering::default(), &mut bytes)
        .expect("writes");
    let reader = Reader::new(&bytes).expect("valid");
    let full = Budget::fit(reader.manifest(), BudgetLimit::Full).expect("full");
    let jobs = device_jobs(&reader, &full).expect("plans");
    match &jobs[0].job {
        TensorJob::NestedPalette {
            plane_offsets,
            rescale,
            ..
        } => assert!(plane_offsets.is_empty() && rescale.is_none()),
        other => panic!("expected a nested palette job, got {other:?}"),
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&emulate::rebuild(&bytes, &jobs[0])), bits(&p.decode()));
}

/// Scaled palettes and nested ones of every kind: plain (v3), rescaled fitted at
/// the base width, rescaled fitted above it (whose base carries its own
/// correction), and lean (v5: the steps whose bit of `seed` is set carry no
/// correction), beside an f16 tensor; the last two with `upper`-bit corrections
/// above their fit width (v6 where that differs from `rescale`).
#[allow(clippy::too_many_arguments)]
fn palette_checkpoint(
    rows: usize,
    cols: usize,
    group: usize,
    base: u8,
    top: u8,
    fit: u8,
    rescale: u8,
    upper: u8,
    seed: u64,
) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let group = group.min(cols);
    let mut w = CheckpointWriter::in_memory();
    let m = draw(&mut rng, rows * cols);
    let s = crate::palette::palettize_scaled(&m, rows, cols, None, base, group).expect("fits");
    w.add_scaled_palette("s", &s).expect("adds");
    let m = draw(&mut rng, rows * cols);
    let n = nest_scaled(&m, rows, cols, None, base, top, group).expect("nests");
    w.add_nested_palette("n", &n).expect("adds");
    let nest = |m: &[f32], fit: u8, upper: Option<u8>| {
        let joint = JointFit {
            upper_rescale_bits: upper.into(),
            ..JointFit::default()
        };
        nest_rescaled_joint(m, rows, cols, None, base, fit, top, group, rescale, joint)
            .expect("nests")
    };
    for (name, f, u) in [("r", base, None), ("q", fit, Some(upper))] {
        let m = draw(&mut rng, rows * cols);
        w.add_nested_palette(name, &nest(&m, f, u)).expect("adds");
    }
    let m = draw(&mut rng, rows * cols);
    let mut p = nest(&m, fit, Some(upper));
    for (i, step) in p.steps.iter_mut().enumerate() {
        if seed >> i & 1 == 1 {
            step.rescale = None;
        }
    }
    w.add_nested_palette("l", &p).expect("adds");
    w.add_f16("h", &[cols], &draw(&mut rng, cols))
        .expect("adds");
    let mut bytes = Vec::new();
    w.finish(&BlockOrdering::default(), &mut bytes)
        .expect("writes");
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    /// The twin of `nested_palette_decode` over only each budget's prefix gives the
    /// CPU rebuild's bits, at every budget (every prefix of every nested palette).
    #[test]
    fn emulated_nested_palette_kernel_matches_the_cpu_rebuild_at_every_budget(
        rows in prop::sample::select(vec![1usize, 7, 33]),
        cols in prop::sample::select(vec![1usize, 7, 65, 129]),
        group in prop::sample::select(vec![1usize, 5, 32, 1000]),
        base in 2u8..=4,
        extra in 0u8..=4,
        fit_at in 0u8..=3,
        rescale in 1u8..=4,
        upper in 1u8..=4,
        seed in any::<u64>(),
    ) {
        let top = base + extra;
        let fit = base + fit_at.min(extra);
        let file = palette_checkpoint(rows, cols, group, base, top, fit, rescale, upper, seed);
        check_all_budgets(&file)?;
    }
}
