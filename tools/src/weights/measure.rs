//! `octet weights measure FILE --reference MODEL`: for budgets across the table, the
//! time the loader takes as a ratio to reading the same bytes, and the
//! reconstruction error of the compressed tensors against the original model.
//!
//! Both timings run with the file in the page cache (one untimed read first), so
//! the ratio is the loader's own cost (checksums, decoding, rebuilding, tensor
//! creation) relative to a plain `read` of the prefix; cold-cache loads add the
//! same disk time to both. Each is the median of `--repeat` runs, read and load
//! alternating. `--bits` picks the budgets by bits per weight over the compressed
//! tensors (as `sweep` does), between the smallest budget and the full file.
//! `--dtype` picks the element type loaded (f32 by default; f16 and bf16 are rebuilt
//! straight into 2-byte tensors, half the memory to materialise).

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device};
use clap::Args;
use octet_quant::checkpoint::{Budget, BudgetLimit, MappedCheckpoint};
use serde::Serialize;

use super::export::ExportDtype;
use super::inspect::{budget_row, budgets_within, is_compressed};
use super::size::human_bytes;

/// Arguments of `octet weights measure`.
#[derive(Debug, Args)]
pub struct MeasureArgs {
    /// The .octet file.
    file: PathBuf,
    /// The model the file was made from, for reconstruction errors.
    #[arg(long, value_name = "MODEL")]
    reference: Option<PathBuf>,
    /// Budgets measured (evenly spaced block counts, smallest to full); ignored
    /// with --bits.
    #[arg(long, default_value_t = 9)]
    rows: usize,
    /// Budgets measured: the smallest, the largest at or below each of these bits
    /// per weight over the compressed tensors, then the full file.
    #[arg(long, value_delimiter = ',', value_name = "BITS")]
    bits: Vec<f64>,
    /// Timed repetitions per budget (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Element type of the loaded tensors.
    #[arg(long, value_enum, default_value_t = ExportDtype::F32)]
    dtype: ExportDtype,
    /// Print a JSON report on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Row {
    blocks: usize,
    /// Element type loaded.
    dtype: &'static str,
    prefix_bytes: u64,
    bits_per_weight: f64,
    compressed_bits_per_weight: f64,
    /// Median over the repetitions.
    read_s: f64,
    /// Median over the repetitions.
    load_s: f64,
    load_over_read: f64,
    /// Fastest load over the repetitions.
    load_min_s: f64,
    /// sqrt(sum ||W - W_hat||^2 / sum ||W||^2) over the compressed tensors.
    relative_error: Option<f64>,
    /// Mean over compressed tensors of ||W - W_hat|| / ||W||.
    mean_tensor_relative_error: Option<f64>,
}

fn read_prefix(file: &PathBuf, len: u64) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; usize::try_from(len).context("prefix does not fit in memory")?];
    File::open(file)
        .and_then(|mut f| f.read_exact(&mut buf))
        .with_context(|| format!("reading {} bytes of {}", len, file.display()))?;
    Ok(buf)
}

/// The median of `v` (the mean of the middle two for an even count); `v` is sorted.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// Runs `octet weights measure`.
pub fn run(args: MeasureArgs) -> Result<()> {
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let reference = match &args.reference {
        Some(p) => Some(super::read_model(p)?),
        None => None,
    };
    let ckpt = MappedCheckpoint::open(&args.file)?;
    let reader = ckpt
        .reader()
        .with_context(|| format!("reading {}", args.file.display()))?;
    let m = reader.manifest().clone();
    drop(reader);
    let compressed: Vec<usize> = (0..m.tensors.len())
        .filter(|&t| is_compressed(&m, t))
        .collect();
    if let Some(model) = &reference {
        for &t in &compressed {
            let e = &m.tensors[t];
            let r = model
                .tensors
                .get(&e.name)
                .with_context(|| format!("the reference has no tensor `{}`", e.name))?;
            if r.shape
                .iter()
                .map(|&d| d as u64)
                .ne(e.shape.iter().copied())
            {
                bail!(
                    "tensor `{}`: reference shape {:?}, checkpoint {:?}",
                    e.name,
                    r.shape,
                    e.shape
                );
            }
        }
    }
    let _ = read_prefix(&args.file, m.file_len)?; // warm the page cache
    let (lo, hi) = (m.min_blocks as usize, m.block_order.len());
    let mut counts: Vec<usize> = if args.bits.is_empty() {
        let n_rows = args.rows.max(2);
        (0..n_rows)
            .map(|k| lo + (hi - lo) * k / (n_rows - 1))
            .collect()
    } else {
        let mut c = vec![lo];
        c.extend(
            budgets_within(&m, &args.bits, "measure")?
                .iter()
                .map(|b| b.n_blocks),
        );
        c.push(hi);
        c
    };
    counts.sort_unstable();
    counts.dedup();
    let mut rows = Vec::new();
    for n in counts {
        let budget = Budget::fit(&m, BudgetLimit::Blocks(n))?;
        let (mut reads, mut loads) = (Vec::new(), Vec::new());
        let mut loaded = None;
        for _ in 0..args.repeat {
            drop(loaded.take()); // free the last load's tensors before timing again
            let t = Instant::now();
            let bytes = read_prefix(&args.file, budget.prefix_len)?;
            reads.push(t.elapsed().as_secs_f64());
            drop(bytes);
            let t = Instant::now();
            let ck = MappedCheckpoint::open(&args.file)?;
            let l = ck.load_as(BudgetLimit::Blocks(n), &Device::Cpu, args.dtype.candle())?;
            loads.push(t.elapsed().as_secs_f64());
            loaded = Some(l);
        }
        let (read_s, load_s) = (median(&mut reads), median(&mut loads));
        let load_min_s = loads.iter().copied().fold(f64::INFINITY, f64::min);
        let (relative_error, mean_tensor_relative_error) = match (&reference, loaded) {
            (Some(model), Some(l)) => {
                let (mut num, mut den, mut mean) = (0f64, 0f64, 0f64);
                for &t in &compressed {
                    let name = &m.tensors[t].name;
                    let got: Vec<f32> = l.tensors[name]
                        .flatten_all()?
                        .to_dtype(DType::F32)?
                        .to_vec1()?;
                    let want = &model.tensors[name].data;
                    let (mut a, mut b) = (0f64, 0f64);
                    for (x, y) in got.iter().zip(want) {
                        a += f64::from(x - y).powi(2);
                        b += f64::from(*y).powi(2);
                    }
                    num += a;
                    den += b;
                    mean += (a / b.max(f64::MIN_POSITIVE)).sqrt();
                }
                (
                    Some((num / den.max(f64::MIN_POSITIVE)).sqrt()),
                    Some(mean / compressed.len().max(1) as f64),
                )
            }
            _ => (None, None),
        };
        let r = budget_row(&m, &budget);
        rows.push(Row {
            blocks: n,
            dtype: args.dtype.name(),
            prefix_bytes: budget.prefix_len,
            bits_per_weight: r.bits_per_weight,
            compressed_bits_per_weight: r.compressed_bits_per_weight,
            read_s,
            load_s,
            load_over_read: load_s / read_s.max(1e-9),
            load_min_s,
            relative_error,
            mean_tensor_relative_error,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:>7} {:>10} {:>12} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "blocks",
        "prefix",
        "bytes",
        "bits/w",
        "bits/w*",
        "read ms",
        "load ms",
        "load/read",
        "rel.err",
        "mean.err"
    );
    let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.4}"));
    for r in &rows {
        println!(
            "{:>7} {:>10} {:>12} {:>8.3} {:>8.3} {:>9.1} {:>9.1} {:>9.2} {:>9} {:>9}",
            r.blocks,
            human_bytes(r.prefix_bytes),
            r.prefix_bytes,
            r.bits_per_weight,
            r.compressed_bits_per_weight,
            1e3 * r.read_s,
            1e3 * r.load_s,
            r.load_over_read,
            opt(r.relative_error),
            opt(r.mean_tensor_relative_error)
        );
    }
    println!(
        "bits/w: over every tensor; bits/w*: over the compressed tensors (the linears). Medians of {} runs.",
        args.repeat
    );
    println!(
        "read: open + read(2) of the prefix into a new buffer, page cache warm; load: map + checksum + rebuild every tensor as {} candle tensors on the CPU ({} threads)",
        args.dtype.name(),
        rayon::current_num_threads()
    );
    println!(
        "rel.err: ||W - W_hat||_F / ||W||_F over all compressed tensors; mean.err: mean of it per tensor"
    );
    Ok(())
}
