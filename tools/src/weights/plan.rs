//! `octet weights plan FILE --budget 300MB | --device-memory 8GiB | --bits 3.5`:
//! which budget a limit selects, and what it gives each layer.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use octet_quant::checkpoint::Manifest;
use octet_quant::checkpoint::{Budget, MappedCheckpoint};
use serde::Serialize;

use super::inspect::{BudgetRow, budget_row, tensor_bytes};
use super::size::human_bytes;
use super::{BudgetArgs, ReserveArgs};

/// Arguments of `octet weights plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The .octet file.
    file: PathBuf,
    #[command(flatten)]
    budget: BudgetArgs,
    #[command(flatten)]
    reserve: ReserveArgs,
    /// List every tensor, not only layers.
    #[arg(long)]
    per_tensor: bool,
    /// Print a JSON report on stdout instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct PlanReport {
    file: PathBuf,
    limit: String,
    budget: BudgetRow,
    file_bytes: u64,
    /// Memory the loader's dense tensors take once rebuilt, as f32 and as f16.
    dense_f32_bytes: u64,
    dense_f16_bytes: u64,
    groups: Vec<GroupRow>,
}

#[derive(Debug, Serialize)]
struct GroupRow {
    /// `layer N`, `other`, or a tensor name with --per-tensor.
    name: String,
    weights: u64,
    bytes: u64,
    bits_per_weight: f64,
    /// Blocks loaded per BitStack matrix (min, max); none for resident/palette groups.
    blocks: Option<(u32, u32)>,
    /// Encodings present.
    encodings: Vec<&'static str>,
}

/// The layer a Hugging Face or GGUF tensor name belongs to.
fn group_of(name: &str) -> String {
    for prefix in ["model.layers.", "blk.", "layers.", "h.", "encoder.layer."] {
        if let Some(pos) = name.find(prefix) {
            let rest = &name[pos + prefix.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if !digits.is_empty() {
                return format!("layer {digits:>3}");
            }
        }
    }
    "other".to_owned()
}

fn groups(
    m: &Manifest,
    budget: &octet_quant::checkpoint::Budget,
    per_tensor: bool,
) -> Vec<GroupRow> {
    let mut out: BTreeMap<String, GroupRow> = BTreeMap::new();
    for (t, entry) in m.tensors.iter().enumerate() {
        let key = if per_tensor {
            entry.name.clone()
        } else {
            group_of(&entry.name)
        };
        let g = out.entry(key.clone()).or_insert_with(|| GroupRow {
            name: key,
            weights: 0,
            bytes: 0,
            bits_per_weight: 0.0,
            blocks: None,
            encodings: Vec::new(),
        });
        g.weights += entry.numel();
        g.bytes += tensor_bytes(m, budget, t);
        let e = entry.encoding.name();
        if !g.encodings.contains(&e) {
            g.encodings.push(e);
        }
        if entry.encoding.has_blocks() {
            let n = budget.blocks_per_matrix[t];
            g.blocks = Some(g.blocks.map_or((n, n), |(lo, hi)| (lo.min(n), hi.max(n))));
        }
    }
    let mut rows: Vec<GroupRow> = out.into_values().collect();
    for r in &mut rows {
        r.bits_per_weight = 8.0 * r.bytes as f64 / r.weights.max(1) as f64;
    }
    rows
}

/// Runs `octet weights plan`.
pub fn run(args: PlanArgs) -> Result<()> {
    let ckpt = MappedCheckpoint::open(&args.file)?;
    let reader = ckpt
        .reader()
        .with_context(|| format!("reading {}", args.file.display()))?;
    let limit = args.budget.limit(args.reserve, reader.manifest())?;
    let budget =
        Budget::fit(reader.manifest(), limit).with_context(|| format!("planning {limit:?}"))?;
    let m = reader.manifest();
    let report = PlanReport {
        file: args.file.clone(),
        limit: match args.budget.linear_bits {
            // The request as given, not the block count it became.
            Some(b) => format!("LinearBits({b})"),
            None => format!("{limit:?}"),
        },
        budget: budget_row(m, &budget),
        file_bytes: m.file_len,
        dense_f32_bytes: m.total_weights() * 4,
        dense_f16_bytes: m.total_weights() * 2,
        groups: groups(m, &budget, args.per_tensor),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let b = &report.budget;
    println!(
        "{} -> {} blocks, prefix {} of {} ({:.1}%), {:.3} bits/weight overall, {:.3} over compressed tensors",
        report.limit,
        b.blocks,
        human_bytes(b.prefix_bytes),
        human_bytes(report.file_bytes),
        100.0 * b.prefix_bytes as f64 / report.file_bytes.max(1) as f64,
        b.bits_per_weight,
        b.compressed_bits_per_weight
    );
    println!(
        "rebuilt dense tensors take {} as f32 ({} as f16) on the device",
        human_bytes(report.dense_f32_bytes),
        human_bytes(report.dense_f16_bytes)
    );
    let width = report
        .groups
        .iter()
        .map(|g| g.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "{:<width$} {:>12} {:>10} {:>8} {:>8}  encodings",
        "group", "weights", "bytes", "bits/w", "blocks"
    );
    for g in &report.groups {
        let blocks = g.blocks.map_or("-".to_owned(), |(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}..{hi}")
            }
        });
        println!(
            "{:<width$} {:>12} {:>10} {:>8.3} {:>8}  {}",
            g.name,
            g.weights,
            human_bytes(g.bytes),
            g.bits_per_weight,
            blocks,
            g.encodings.join(",")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_groups_from_names() {
        assert_eq!(group_of("model.layers.12.mlp.up_proj.weight"), "layer  12");
        assert_eq!(group_of("blk.3.attn_q.weight"), "layer   3");
        assert_eq!(group_of("model.embed_tokens.weight"), "other");
        assert_eq!(group_of("model.layers.x.weight"), "other");
    }
}
