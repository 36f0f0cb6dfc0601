//! `octet weights stack`: BitStack decomposition of every linear weight into a
//! budget-adaptive `.octet` checkpoint (DESIGN.md, "LLM weights", BitStack).
//!
//! Block ordering, `--ordering`:
//! - `proxy` (default): each block's importance is the squared Frobenius norm of the
//!   activation-scaled residual it removes, `||W'_before||^2 - ||W'_after||^2`
//!   (with calibration scales, that is the activation-weighted reconstruction error
//!   the block removes). Every matrix gets its first block, then blocks are taken
//!   greedily by importance per byte. Costs nothing beyond the decomposition.
//! - `ppl`: the reference's protocol. For each level `l >= 1`, every matrix is set to
//!   `l` blocks and the perplexity on the calibration sequences measured, then each
//!   matrix in turn gets block `l` and the perplexity drop is its score; blocks are
//!   then ordered level by level (block counts of any two matrices stay within one of
//!   each other), by score per byte within a level. `(n_iter - 1) x (matrices + 1)`
//!   perplexity evaluations: thousands of forward passes for a real model, so it uses
//!   only `--ppl-samples` sequences. Llama family only.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use clap::{Args, ValueEnum};
use octet_quant::bitstack::{
    BitStackConfig, BitStackMatrix, MatrixBlocks, OrderPolicy, RankPolicy, SvdMethod, decompose,
    global_order, score_levels_by_eval,
};
use octet_quant::checkpoint::{BlockOrdering, CheckpointWriter};
use rayon::prelude::*;
use serde::Serialize;

use super::inspect::{BudgetRow, budget_rows, print_budget_table};
use super::prepare::{Calibrated, WriteSummary, finish_to, prepare, spill_for};
use super::size::human_bytes;
use super::{CalibArgs, InputArgs, bar};

/// Arguments of `octet weights stack`.
#[derive(Debug, Args)]
pub struct StackArgs {
    #[command(flatten)]
    input: InputArgs,
    /// The .octet file to write.
    #[arg(long, short = 'o', value_name = "FILE.octet")]
    output: PathBuf,
    #[command(flatten)]
    calib: CalibArgs,
    /// Blocks per matrix (the reference uses 16).
    #[arg(long, default_value_t = 16)]
    n_iter: usize,
    /// Rank of each block's factors: `auto` picks k per matrix shape so factors cost at
    /// most a quarter of the sign bits (k <= 16), or a fixed K for every matrix.
    #[arg(long, default_value = "auto")]
    rank: RankArg,
    /// How blocks of different matrices are interleaved.
    #[arg(long, value_enum, default_value_t = Ordering::Proxy)]
    ordering: Ordering,
    /// Calibration sequences used by `--ordering ppl`.
    #[arg(long, default_value_t = 2)]
    ppl_samples: usize,
    /// Exact (full) SVD instead of the randomized one: slower, for checking.
    #[arg(long)]
    exact_svd: bool,
    /// Print a JSON report on stdout instead of tables.
    #[arg(long)]
    json: bool,
}

/// `--rank`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RankArg {
    /// Per-shape rule.
    Auto,
    /// The same k everywhere.
    Fixed(usize),
}

impl std::str::FromStr for RankArg {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(RankArg::Auto);
        }
        match s.parse::<usize>() {
            Ok(k) if k >= 1 => Ok(RankArg::Fixed(k)),
            _ => bail!("--rank `{s}`: expected `auto` or a positive integer"),
        }
    }
}

/// `--ordering`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Ordering {
    /// Activation-weighted reconstruction error removed per byte (fast).
    Proxy,
    /// Perplexity drop per block, the reference's protocol (slow).
    Ppl,
}

#[derive(Debug, Serialize)]
struct StackReport {
    #[serde(flatten)]
    summary: WriteSummary,
    n_iter: usize,
    ordering: &'static str,
    ordering_evaluations: usize,
    matrices: Vec<MatrixReport>,
    budgets: Vec<BudgetRow>,
}

#[derive(Debug, Serialize)]
struct MatrixReport {
    name: String,
    rows: usize,
    cols: usize,
    rank: usize,
    bytes_per_block: usize,
    /// ||W diag(s) - rebuild||_F / ||W diag(s)||_F after each level.
    relative_error: Vec<f64>,
}

/// Runs `octet weights stack`.
pub fn run(args: StackArgs) -> Result<()> {
    let cfg = BitStackConfig {
        n_iter: args.n_iter,
        rank: match args.rank {
            RankArg::Auto => RankPolicy::default(),
            RankArg::Fixed(k) => RankPolicy::Fixed(k),
        },
        svd: if args.exact_svd {
            SvdMethod::Exact
        } else {
            SvdMethod::default()
        },
        ..Default::default()
    };
    cfg.validate()?;
    if args.ordering == Ordering::Ppl && args.calib.no_calib {
        bail!(
            "--ordering ppl measures perplexity on the calibration text; it cannot be combined with --no-calib"
        );
    }
    let prep = prepare(&args.input, &args.calib, args.json, false)?;
    if !args.json {
        eprintln!(
            "{}: {} ({} tensors, {} to compress); scales: {}",
            args.input.input.display(),
            prep.model.arch.name(),
            prep.model.tensors.len(),
            prep.linears.len(),
            prep.scales_note
        );
    }
    if args.ordering == Ordering::Ppl && prep.calib.is_none() {
        bail!(
            "--ordering ppl needs a model octet can run (llama family): {}",
            prep.scales_note
        );
    }

    // Decompose in chunks of one matrix per thread, so memory holds the blocks but
    // never more than a few dense copies at once.
    let t_compress = Instant::now();
    let pb = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        bar(prep.linears.len() as u64, "decomposing")
    };
    let mut matrices: Vec<BitStackMatrix> = Vec::with_capacity(prep.linears.len());
    let threads = rayon::current_num_threads().max(1);
    for chunk in prep.linears.chunks(threads) {
        let done: Vec<BitStackMatrix> = chunk
            .par_iter()
            .map(|name| {
                let t = &prep.model.tensors[name];
                let (rows, cols) = (t.shape[0], t.shape[1]);
                let scales = prep.calib.as_ref().and_then(|c| c.stats.scales(name));
                decompose(&t.data, rows, cols, scales.as_deref(), &cfg)
                    .with_context(|| format!("decomposing `{name}`"))
            })
            .collect::<Result<_>>()?;
        matrices.extend(done);
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    let compress_s = t_compress.elapsed().as_secs_f64();

    let t_write = Instant::now();
    let mut writer = CheckpointWriter::new(spill_for(&args.output)?);
    let resident_f32 = prep.add_resident(&mut writer)?;
    for (name, m) in prep.linears.iter().zip(&matrices) {
        writer
            .add_bitstack(name, m)
            .with_context(|| format!("storing `{name}`"))?;
    }
    prep.add_metadata(&mut writer, "bitstack")?;
    writer.add_metadata(
        "bitstack.ordering",
        match args.ordering {
            Ordering::Proxy => "proxy",
            Ordering::Ppl => "ppl",
        },
    )?;
    let (ordering, evaluations) = match (args.ordering, &prep.calib) {
        (Ordering::Ppl, Some(c)) => {
            // Bytes per block as the file lays them out (64-byte aligned parts).
            let bytes: Vec<u64> = writer
                .bitstack_matrices()
                .iter()
                .map(|m| m.1.bytes_per_block)
                .collect();
            let (order, n) = ppl_ordering(
                c,
                &prep.linears,
                &matrices,
                &bytes,
                args.ppl_samples,
                args.json,
            )?;
            (BlockOrdering::Explicit(order), n)
        }
        _ => (BlockOrdering::Policy(OrderPolicy::default()), 0),
    };
    let manifest = finish_to(writer, &ordering, &args.output)?;
    let write_s = t_write.elapsed().as_secs_f64();

    let file_bytes = manifest.file_len;
    let budgets = budget_rows(&manifest, 9);
    let report = StackReport {
        summary: WriteSummary {
            output: args.output.clone(),
            file_bytes,
            compressed_tensors: matrices.len(),
            resident_tensors: prep.model.tensors.len() - matrices.len(),
            resident_f32,
            scales: prep.scales_note.clone(),
            read_s: prep.read_s,
            calib_s: prep.calib_s,
            compress_s,
            write_s,
        },
        n_iter: args.n_iter,
        ordering: match args.ordering {
            Ordering::Proxy => "proxy",
            Ordering::Ppl => "ppl",
        },
        ordering_evaluations: evaluations,
        matrices: prep
            .linears
            .iter()
            .zip(&matrices)
            .map(|(name, m)| MatrixReport {
                name: name.clone(),
                rows: m.rows,
                cols: m.cols,
                rank: m.rank,
                bytes_per_block: m.block_bytes(),
                relative_error: relative_errors(m),
            })
            .collect(),
        budgets,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "wrote {} ({}): {} BitStack matrices x {} blocks, {} resident tensors",
            args.output.display(),
            human_bytes(file_bytes),
            report.summary.compressed_tensors,
            args.n_iter,
            report.summary.resident_tensors
        );
        println!(
            "time: read {:.1}s, calibrate {:.1}s, decompose {:.1}s, order+write {:.1}s",
            prep.read_s, prep.calib_s, compress_s, write_s
        );
        print_budget_table(&report.budgets);
    }
    Ok(())
}

/// Relative error of the scaled matrix after each level, from the importances: the
/// proxy is exactly the drop in squared residual norm.
fn relative_errors(m: &BitStackMatrix) -> Vec<f64> {
    let total = m.scaled_norm_sq.max(f64::MIN_POSITIVE);
    let mut left = m.scaled_norm_sq;
    m.blocks
        .iter()
        .map(|b| {
            left -= b.importance;
            (left.max(0.0) / total).sqrt()
        })
        .collect()
}

/// The reference's perplexity-based block order (see the module docs).
fn ppl_ordering(
    c: &Calibrated,
    names: &[String],
    matrices: &[BitStackMatrix],
    bytes_per_block: &[u64],
    samples: usize,
    quiet: bool,
) -> Result<(Vec<octet_quant::bitstack::BlockId>, usize)> {
    if samples == 0 {
        bail!("--ppl-samples must be at least 1");
    }
    let seqs = &c.seqs[..samples.min(c.seqs.len())];
    let levels: Vec<usize> = matrices.iter().map(|m| m.blocks.len()).collect();
    let max_levels = levels.iter().copied().max().unwrap_or(0);
    let total_evals = max_levels.saturating_sub(1) * (matrices.len() + 1);
    let pb = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        bar(total_evals as u64, "perplexity ordering")
    };
    let Some(forward) = &c.forward else {
        bail!("the perplexity block order (--order ppl) runs llama-family models only");
    };
    let mut forward = forward.clone();
    let mut current = vec![usize::MAX; matrices.len()];
    let mut evals = 0usize;
    let mut eval = |counts: &[usize]| -> Result<f64> {
        evals += 1;
        pb.inc(1);
        for (m, (&want, have)) in counts.iter().zip(current.iter_mut()).enumerate() {
            if want != *have {
                let w = matrices[m].rebuild(want)?;
                let t = Tensor::from_vec(w, (matrices[m].rows, matrices[m].cols), &Device::Cpu)?;
                forward.set_linear(&names[m], t)?;
                *have = want;
            }
        }
        let mut nll = 0.0;
        for s in seqs {
            nll += forward.mean_nll(s)?;
        }
        Ok((nll / seqs.len() as f64).exp())
    };
    let scores = score_levels_by_eval(&levels, &mut eval);
    pb.finish_and_clear();
    let scores = scores.context("perplexity-based ordering")?;
    let mbs: Vec<MatrixBlocks> = bytes_per_block
        .iter()
        .zip(scores)
        .map(|(&bytes_per_block, importance)| MatrixBlocks {
            bytes_per_block,
            importance,
        })
        .collect();
    Ok((global_order(&mbs, OrderPolicy::Balanced)?, evals))
}
