//! `octet weights repack`: re-encode resident f16 matrices (the token embedding) of a
//! `.octet` file as k-means palettes, keeping every BitStack block, its bytes and the
//! global order unchanged.
//!
//! Why: a budget's prefix holds every resident tensor. SmolLM2-135M's f16 embedding
//! alone is 56.7 MB, so even the smallest budget (73.8 MB) cannot travel to a GPU
//! host limited to 64 MiB. A 4-bit palette of the embedding (14 MB) brings the
//! smallest budget to about 31 MB while the BitStack blocks, which the GPU check is
//! about, stay byte for byte what `octet weights stack` wrote.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use octet_quant::bitstack::BlockId;
use octet_quant::checkpoint::{BlockOrdering, Budget, BudgetLimit, CheckpointWriter, Reader};
use octet_quant::palette::{PaletteConfig, palettize};
use regex::Regex;

/// Arguments of `octet weights repack`.
#[derive(Debug, Args)]
pub struct RepackArgs {
    /// The .octet file to read.
    input: PathBuf,
    /// The .octet file to write.
    #[arg(long, short = 'o', value_name = "FILE.octet")]
    output: PathBuf,
    /// Resident 2-D tensors whose name matches this regex become palettes.
    #[arg(long, default_value = "embed_tokens")]
    palette: String,
    /// Bits per palette index.
    #[arg(long, default_value_t = 4)]
    bits: u8,
    /// Rows per palette lookup table.
    #[arg(long, default_value_t = 256)]
    group: usize,
}

/// Runs `octet weights repack`.
pub fn run(args: RepackArgs) -> Result<()> {
    let bytes =
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let reader = Reader::with_source(&bytes, &args.input)?;
    let full = Budget::fit(reader.manifest(), BudgetLimit::Full)?;
    reader.verify(&full)?;
    let m = reader.manifest();
    let re = Regex::new(&args.palette).context("--palette")?;
    let cfg = PaletteConfig {
        bits: args.bits,
        group_rows: Some(args.group),
    };
    let mut w = CheckpointWriter::in_memory();
    // Tensor index -> index among BitStack tensors, as the writer numbers matrices.
    let mut matrix_of = vec![u32::MAX; m.tensors.len()];
    let mut n_matrices = 0u32;
    let mut repacked = Vec::new();
    for (t, e) in m.tensors.iter().enumerate() {
        let dense = !e.encoding.is_compressed();
        if dense && e.shape.len() == 2 && re.is_match(&e.name) {
            let data = reader.rebuild_index(t, &full)?;
            let (rows, cols) = (e.shape[0] as usize, e.shape[1] as usize);
            let p = palettize(&data, rows, cols, None, &cfg)?;
            w.add_palette(&e.name, &p)?;
            repacked.push(e.name.clone());
            continue;
        }
        if !dense && !e.encoding.has_blocks() {
            bail!(
                "tensor `{}` is already a {}; repack reads BitStack files",
                e.name,
                e.encoding.name()
            );
        }
        // Everything else keeps its bytes: the BitStack blocks are what the GPU
        // check is about.
        w.add_copy(&reader, t)?;
        if e.encoding.has_blocks() {
            matrix_of[t] = n_matrices;
            n_matrices += 1;
        }
    }
    for meta in &m.metadata {
        w.add_metadata(&meta.key, &meta.value)?;
    }
    w.add_metadata(
        "octet.repack",
        &format!(
            "palette {} bits, {} rows per table: {}",
            args.bits,
            args.group,
            repacked.join(", ")
        ),
    )?;
    let order = m
        .block_order
        .iter()
        .map(|b| BlockId {
            matrix: matrix_of[b.tensor as usize],
            level: b.level,
        })
        .collect();
    let mut out = Vec::new();
    w.finish(&BlockOrdering::Explicit(order), &mut out)?;
    std::fs::write(&args.output, &out)
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!(
        "{}: {} bytes, {} tensor(s) as {}-bit palettes: {}",
        args.output.display(),
        out.len(),
        repacked.len(),
        args.bits,
        repacked.join(", ")
    );
    Ok(())
}
