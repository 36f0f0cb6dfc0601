//! `octet weights inspect FILE`: what a `.octet` checkpoint holds and its budget
//! table.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use octet_quant::checkpoint::MappedCheckpoint;
use octet_quant::checkpoint::{Budget, BudgetLimit, Manifest};
use serde::Serialize;

use super::size::human_bytes;

/// Arguments of `octet weights inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The .octet file.
    file: PathBuf,
    /// Rows of the budget table (evenly spaced block counts, smallest to full).
    #[arg(long, default_value_t = 11)]
    rows: usize,
    /// Print a JSON report on stdout instead of tables.
    #[arg(long)]
    json: bool,
}

/// One row of a budget table.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetRow {
    /// Blocks of the global order loaded.
    pub blocks: usize,
    /// File prefix needed.
    pub prefix_bytes: u64,
    /// Section bits per weight over every tensor (resident ones included).
    pub bits_per_weight: f64,
    /// Bits per weight over the compressed tensors only (BitStack scales and blocks,
    /// palettes).
    pub compressed_bits_per_weight: f64,
    /// Fewest blocks any BitStack matrix has at this budget.
    pub min_blocks_per_matrix: u32,
    /// Most blocks any BitStack matrix has at this budget.
    pub max_blocks_per_matrix: u32,
}

/// Bytes of tensor `t`'s sections a budget loads.
pub fn tensor_bytes(m: &Manifest, budget: &Budget, t: usize) -> u64 {
    let n = budget.blocks_per_matrix.get(t).copied().unwrap_or(0) as usize;
    m.tensors[t].encoding.loaded_bytes(n)
}

/// Whether tensor `t` is stored compressed (BitStack or palette).
pub fn is_compressed(m: &Manifest, t: usize) -> bool {
    m.tensors[t].encoding.is_compressed()
}

/// The table row of `budget`.
pub fn budget_row(m: &Manifest, budget: &Budget) -> BudgetRow {
    let (mut bytes, mut weights) = (0u64, 0u64);
    let (mut lo, mut hi) = (u32::MAX, 0u32);
    for t in 0..m.tensors.len() {
        if is_compressed(m, t) {
            bytes += tensor_bytes(m, budget, t);
            weights += m.tensors[t].numel();
        }
        if m.tensors[t].encoding.has_blocks() {
            lo = lo.min(budget.blocks_per_matrix[t]);
            hi = hi.max(budget.blocks_per_matrix[t]);
        }
    }
    BudgetRow {
        blocks: budget.n_blocks,
        prefix_bytes: budget.prefix_len,
        bits_per_weight: budget.bits_per_weight,
        compressed_bits_per_weight: 8.0 * bytes as f64 / weights.max(1) as f64,
        min_blocks_per_matrix: if lo == u32::MAX { 0 } else { lo },
        max_blocks_per_matrix: hi,
    }
}

/// Bits per weight over the compressed tensors of `m`'s first `n` blocks.
fn linear_bits_at(m: &Manifest, n: usize) -> Result<f64> {
    Ok(budget_row(m, &Budget::fit(m, BudgetLimit::Blocks(n))?).compressed_bits_per_weight)
}

/// The largest budget of `m` at or below `target` bits per weight over the
/// compressed tensors, or `Err` with the smallest budget's bits when even that is
/// above it.
pub fn budget_within(m: &Manifest, target: f64) -> Result<std::result::Result<Budget, f64>> {
    let (lo, hi) = (m.min_blocks as usize, m.block_order.len());
    let smallest = linear_bits_at(m, lo)?;
    if smallest > target {
        return Ok(Err(smallest));
    }
    // Bits over the linears grow with the block count: the most blocks within target.
    let (mut a, mut b) = (lo, hi);
    while a < b {
        let mid = (a + b).div_ceil(2);
        if linear_bits_at(m, mid)? <= target {
            a = mid;
        } else {
            b = mid - 1;
        }
    }
    Ok(Ok(Budget::fit(m, BudgetLimit::Blocks(a))?))
}

/// The largest budget of `m` at or below each target in bits per weight over the
/// compressed tensors; targets below the smallest budget, and targets that land on
/// a budget an earlier one already gave, are skipped with a note.
pub fn budgets_within(m: &Manifest, targets: &[f64], label: &str) -> Result<Vec<Budget>> {
    let mut out = Vec::new();
    for &target in targets {
        let budget = match budget_within(m, target)? {
            Ok(b) => b,
            Err(smallest) => {
                eprintln!(
                    "{label}: {target} bits/weight is below the smallest budget ({smallest:.3}); skipped"
                );
                continue;
            }
        };
        // A file's whole length (or one step) can answer several targets: measure it once.
        if out.iter().any(|b: &Budget| b.n_blocks == budget.n_blocks) {
            eprintln!(
                "{label}: {target} bits/weight is the same budget ({} blocks) as an earlier target; measured once",
                budget.n_blocks
            );
            continue;
        }
        out.push(budget);
    }
    Ok(out)
}

/// `rows` budgets evenly spaced in block count, from the smallest to the full file.
pub fn budget_rows(m: &Manifest, rows: usize) -> Vec<BudgetRow> {
    let (lo, hi) = (m.min_blocks as usize, m.block_order.len());
    let rows = rows.max(2);
    let mut counts: Vec<usize> = (0..rows).map(|k| lo + (hi - lo) * k / (rows - 1)).collect();
    counts.dedup();
    counts
        .into_iter()
        .filter_map(|n| Budget::fit(m, BudgetLimit::Blocks(n)).ok())
        .map(|b| budget_row(m, &b))
        .collect()
}

/// Prints a budget table on stdout.
pub fn print_budget_table(rows: &[BudgetRow]) {
    println!(
        "{:>8} {:>12} {:>10} {:>9} {:>16}",
        "blocks", "prefix", "bits/w", "bits/w*", "blocks/matrix"
    );
    for r in rows {
        println!(
            "{:>8} {:>12} {:>10.3} {:>9.3} {:>16}",
            r.blocks,
            human_bytes(r.prefix_bytes),
            r.bits_per_weight,
            r.compressed_bits_per_weight,
            format!("{}..{}", r.min_blocks_per_matrix, r.max_blocks_per_matrix)
        );
    }
    println!(
        "bits/w: over all weights (resident f16 tensors included); bits/w*: over the compressed tensors only"
    );
}

#[derive(Debug, Serialize)]
struct InspectReport {
    file: PathBuf,
    format_version: u32,
    file_bytes: u64,
    data_start: u64,
    total_weights: u64,
    tensors_by_encoding: BTreeMap<&'static str, EncodingCount>,
    block_count: usize,
    min_blocks: u32,
    metadata: BTreeMap<String, String>,
    budgets: Vec<BudgetRow>,
}

#[derive(Debug, Default, Serialize)]
struct EncodingCount {
    tensors: usize,
    weights: u64,
    /// Bytes at the full budget.
    bytes: u64,
}

/// Runs `octet weights inspect`.
pub fn run(args: InspectArgs) -> Result<()> {
    let ckpt = MappedCheckpoint::open(&args.file)?;
    let reader = ckpt
        .reader()
        .with_context(|| format!("reading {}", args.file.display()))?;
    let m = reader.manifest();
    let full = Budget::fit(reader.manifest(), BudgetLimit::Full)?;
    let mut by_enc: BTreeMap<&'static str, EncodingCount> = BTreeMap::new();
    for (t, entry) in m.tensors.iter().enumerate() {
        let c = by_enc.entry(entry.encoding.name()).or_default();
        c.tensors += 1;
        c.weights += entry.numel();
        c.bytes += tensor_bytes(m, &full, t);
    }
    let report = InspectReport {
        file: args.file.clone(),
        format_version: reader.version(),
        file_bytes: m.file_len,
        data_start: m.data_start,
        total_weights: m.total_weights(),
        tensors_by_encoding: by_enc,
        block_count: m.block_order.len(),
        min_blocks: m.min_blocks,
        metadata: m
            .metadata
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect(),
        budgets: budget_rows(m, args.rows),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{}: octet checkpoint v{}, {} ({} weights), header+manifest {}",
        args.file.display(),
        report.format_version,
        human_bytes(report.file_bytes),
        report.total_weights,
        human_bytes(report.data_start)
    );
    // The encoding column as wide as its longest name.
    let w = report
        .tensors_by_encoding
        .keys()
        .map(|k| k.len())
        .fold("encoding".len(), usize::max);
    println!(
        "{:<w$} {:>8} {:>14} {:>12} {:>8}",
        "encoding", "tensors", "weights", "bytes", "bits/w"
    );
    for (k, c) in &report.tensors_by_encoding {
        println!(
            "{:<w$} {:>8} {:>14} {:>12} {:>8.3}",
            k,
            c.tensors,
            c.weights,
            human_bytes(c.bytes),
            8.0 * c.bytes as f64 / c.weights.max(1) as f64
        );
    }
    for (k, v) in &report.metadata {
        let v = if v.chars().count() > 100 {
            format!("{}...", v.chars().take(100).collect::<String>())
        } else {
            v.clone()
        };
        println!("{k}: {v}");
    }
    if report.block_count > 0 {
        println!(
            "{} blocks (BitStack levels, refinement steps) in global order; every budget loads at least {}",
            report.block_count, report.min_blocks
        );
        print_budget_table(&report.budgets);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use octet_quant::checkpoint::Reader;

    use super::*;

    /// The committed v4 fixture: targets below its smallest budget are skipped,
    /// each other target gets the largest budget within it, once.
    #[test]
    fn each_budget_within_the_targets_is_measured_once() {
        let bytes = include_bytes!("../../../quant/src/checkpoint/fixtures/v4.octet");
        let reader = Reader::new(bytes).expect("fixture reads");
        let m = reader.manifest();
        let (lo, hi) = (m.min_blocks as usize, m.block_order.len());
        let bits = |n: usize| {
            let b = Budget::fit(m, BudgetLimit::Blocks(n)).expect("budget");
            budget_row(m, &b).compressed_bits_per_weight
        };
        let (smallest, full) = (bits(lo), bits(hi));
        assert!(smallest < full);
        let targets = [smallest - 0.5, smallest, full, full + 1.0, full + 2.0];
        let got: Vec<usize> = budgets_within(m, &targets, "fixture")
            .expect("budgets")
            .iter()
            .map(|b| b.n_blocks)
            .collect();
        assert_eq!(got, vec![lo, hi]);
        for b in budgets_within(m, &[(smallest + full) / 2.0], "fixture").expect("budgets") {
            assert!(bits(b.n_blocks) <= (smallest + full) / 2.0);
            assert!(b.n_blocks == hi || bits(b.n_blocks + 1) > (smallest + full) / 2.0);
        }
    }
}
