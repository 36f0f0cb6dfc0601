//! A small checkpoint holding every encoding the GPU loader rebuilds, with odd shapes
//! (partial scale blocks, partial bytes, more than one thread block per row): what
//! `octet weights gpu-check --synthetic` loads at every budget, and what the tests of
//! `octet weights repack` repack. A real model's carried prefix holds only its first
//! refinement steps; this file holds every step of every kind of nested palette.

use anyhow::{Context, Result};
use octet_quant::bitstack::{BitStackConfig, OrderPolicy, RankPolicy, decompose};
use octet_quant::checkpoint::{BlockOrdering, CheckpointWriter};
use octet_quant::palette::{
    PaletteConfig, nest_rescaled_at, nest_scaled, palettize, palettize_scaled,
};

/// The f16 matrix of [`every_encoding`] that `repack` turns into a palette.
pub const EMBEDDING: &str = "model.embed_tokens.weight";

/// Deterministic irregular weights: a SplitMix64 stream in `[-1, 1)`, with a
/// magnitude that varies along the row so scale blocks differ.
fn weights(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..rows * cols)
        .map(|i| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
            u * (1.0 + (i % cols % 7) as f32 / 4.0)
        })
        .collect()
}

/// Writes the checkpoint: an f16 embedding and norm, an f32 vector, a palette, a
/// scaled palette, a nested (v3) palette of 2 to 5 bits, rescaled nested (v4)
/// palettes of 2 to 6 bits fitted at the base and above it (with the base's own
/// correction), and a BitStack matrix; steps in the greedy order with no minimum,
/// so the smallest budget loads no step.
pub fn every_encoding() -> Result<Vec<u8>> {
    let mut w = CheckpointWriter::in_memory();
    w.add_f16(EMBEDDING, &[67, 48], &weights(67, 48, 1))?;
    w.add_f16("model.norm.weight", &[48], &weights(1, 48, 2))?;
    w.add_f32("bias", &[65], &weights(1, 65, 3))?;
    let (r, c) = (67, 383);
    let cfg = PaletteConfig {
        bits: 3,
        group_rows: Some(16),
    };
    w.add_palette("palette", &palettize(&weights(r, c, 4), r, c, None, &cfg)?)?;
    let scaled = palettize_scaled(&weights(r, c, 5), r, c, None, 3, 32)?;
    w.add_scaled_palette("scaled", &scaled)?;
    w.add_nested_palette(
        "nested",
        &nest_scaled(&weights(r, c, 6), r, c, None, 2, 5, 32)?,
    )?;
    for (name, fit, seed) in [("rescaled", 2, 7), ("rescaled_fit4", 4, 8)] {
        let p = nest_rescaled_at(&weights(r, c, seed), r, c, None, 2, fit, 6, 32, 4)
            .with_context(|| format!("fitting `{name}`"))?;
        w.add_nested_palette(name, &p)?;
    }
    let bs = BitStackConfig {
        n_iter: 3,
        rank: RankPolicy::Fixed(4),
        ..BitStackConfig::default()
    };
    w.add_bitstack(
        "bitstack",
        &decompose(&weights(130, 129, 9), 130, 129, None, &bs)?,
    )?;
    w.add_metadata("octet.tool", "synthetic: every encoding")?;
    let mut out = Vec::new();
    w.finish(
        &BlockOrdering::Policy(OrderPolicy::Greedy { min_levels: 0 }),
        &mut out,
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use octet_quant::checkpoint::{Budget, BudgetLimit, Reader};
    use octet_quant::gpu::{TensorJob, device_jobs, emulate};
    use std::path::Path;

    /// What `gpu-check --synthetic` compares on the device, with the kernels' CPU
    /// twins in place of the device: every tensor at every budget, to the bit.
    #[test]
    fn emulated_device_rebuild_matches_the_cpu_at_every_budget() {
        let bytes = every_encoding().expect("synthetic file");
        let reader = Reader::new(&bytes).expect("reads");
        let m = reader.manifest();
        assert_eq!(reader.version(), 4);
        let kinds: std::collections::BTreeSet<&str> =
            m.tensors.iter().map(|t| t.encoding.name()).collect();
        assert_eq!(kinds.len(), 7, "{kinds:?}");
        for n in m.min_blocks as usize..=m.block_order.len() {
            let budget = Budget::fit(m, BudgetLimit::Blocks(n)).expect("budget");
            let prefix = budget
                .prefix_of(&bytes, Path::new("synthetic"))
                .expect("prefix");
            let r = Reader::new(prefix).expect("prefix reads");
            for job in device_jobs(&r, &budget).expect("jobs") {
                let cpu = r.rebuild_tensor(&job.name, &budget).expect("cpu");
                let dev = emulate::rebuild(prefix, &job);
                assert_eq!(cpu.len(), dev.len(), "{}", job.name);
                // Lookups and copies to the bit; BitStack to rounding (its dot
                // products are summed in another order).
                let exact = !matches!(job.job, TensorJob::BitStack { .. });
                let scale = cpu.iter().fold(1f32, |a, x| a.max(x.abs()));
                for (a, b) in cpu.iter().zip(&dev) {
                    assert!(
                        a.to_bits() == b.to_bits() || (!exact && (a - b).abs() <= 1e-5 * scale),
                        "{} at {n} blocks: {a} vs {b}",
                        job.name
                    );
                }
            }
        }
    }
}
