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
use half::f16;
use octet_quant::bitstack::{BitStackBlock, BitStackMatrix, BlockId};
use octet_quant::checkpoint::manifest::BitStackBlockLayout;
use octet_quant::checkpoint::{BlockOrdering, CheckpointWriter, Encoding, Reader, Section};
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

fn section<'a>(bytes: &'a [u8], s: &Section) -> Result<&'a [u8]> {
    let (a, b) = (usize::try_from(s.offset)?, usize::try_from(s.end())?);
    bytes
        .get(a..b)
        .with_context(|| format!("section [{a}, {b}) beyond the file"))
}

fn f16s(b: &[u8]) -> Vec<f16> {
    b.chunks_exact(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// Runs `octet weights repack`.
pub fn run(args: RepackArgs) -> Result<()> {
    let bytes =
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let reader = Reader::with_source(&bytes, &args.input)?;
    let full = reader.full();
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
        let shape: Vec<usize> = e.shape.iter().map(|&d| d as usize).collect();
        match &e.encoding {
            Encoding::F16 { .. } | Encoding::F32 { .. } => {
                let data = reader.rebuild_index(t, &full)?;
                if shape.len() == 2 && re.is_match(&e.name) {
                    let p = palettize(&data, shape[0], shape[1], None, &cfg)?;
                    w.add_palette(&e.name, &p)?;
                    repacked.push(e.name.clone());
                } else if matches!(e.encoding, Encoding::F16 { .. }) {
                    w.add_f16(&e.name, &shape, &data)?;
                } else {
                    w.add_f32(&e.name, &shape, &data)?;
                }
            }
            Encoding::Palette { .. } | Encoding::ScaledPalette { .. } => {
                bail!(
                    "tensor `{}` is already a palette; repack reads BitStack files",
                    e.name
                );
            }
            Encoding::BitStack {
                rank,
                scales,
                blocks,
            } => {
                let (rows, cols, rank) = (shape[0], shape[1], *rank as usize);
                let layout = BitStackBlockLayout::new(rows, cols, rank)
                    .with_context(|| format!("`{}`: block layout", e.name))?;
                let scales = scales
                    .as_ref()
                    .map(|s| -> Result<Vec<f32>> {
                        Ok(section(&bytes, s)?
                            .chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect())
                    })
                    .transpose()?;
                let blocks = blocks
                    .iter()
                    .map(|b| -> Result<BitStackBlock> {
                        let s = section(&bytes, &b.section)?;
                        let part = |(o, l): (usize, usize)| &s[o..o + l];
                        Ok(BitStackBlock {
                            signs: part(layout.signs).to_vec(),
                            u: f16s(part(layout.u)),
                            vt: f16s(part(layout.vt)),
                            importance: b.importance,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let matrix = BitStackMatrix {
                    rows,
                    cols,
                    rank,
                    scales,
                    blocks,
                    // Not stored in the file; only used for relative errors while decomposing.
                    scaled_norm_sq: 0.0,
                };
                w.add_bitstack(&e.name, &matrix)?;
                matrix_of[t] = n_matrices;
                n_matrices += 1;
            }
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
