//! `octet weights repack`: re-encode resident f16 matrices (the token embedding) of a
//! `.octet` file as k-means palettes, keeping every other tensor (BitStack matrices,
//! scaled and nested palettes), its bytes and the global block order unchanged; then
//! optionally keep only the prefix of the largest budget within a size.
//!
//! Why: a budget's prefix holds every resident tensor. SmolLM2-135M's f16 embedding
//! alone is 56.7 MB, so even the smallest budget (73.8 MB from `octet weights stack`,
//! 90.6 MB from a fit-4 nested palette) cannot travel to a GPU host limited to
//! 64 MiB. A 4-bit palette of the embedding (14 MB) brings the smallest budget to
//! about 31 MB (BitStack) or 48 MB (nested palettes) while the compressed tensors,
//! which the GPU check is about, stay byte for byte what `octet weights stack` or
//! `octet weights palette` wrote.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use octet_quant::bitstack::BlockId;
use octet_quant::checkpoint::{BlockOrdering, Budget, BudgetLimit, CheckpointWriter, Reader};
use octet_quant::palette::{PaletteConfig, palettize};
use regex::Regex;

use super::size::{ByteSize, human_bytes};

/// Arguments of `octet weights repack`.
#[derive(Debug, Args)]
pub struct RepackArgs {
    /// The .octet file to read (complete: every section is checksummed).
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
    /// Write only the prefix of the largest budget within this size (a prefix loads
    /// every budget it holds exactly as the whole file does).
    #[arg(long, value_name = "SIZE")]
    cut: Option<ByteSize>,
}

/// What to re-encode: the regex and palette of [`RepackArgs`].
#[derive(Debug, Clone)]
pub struct RepackParams {
    /// Resident 2-D tensors whose name matches become palettes.
    pub palette: Regex,
    /// Their palette.
    pub config: PaletteConfig,
}

/// A repacked checkpoint, complete.
#[derive(Debug)]
pub struct Repacked {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// The tensors that became palettes.
    pub repacked: Vec<String>,
}

/// Re-encodes the matching resident tensors of the complete checkpoint `bytes` (read
/// from `source`) and copies every other tensor's sections byte for byte, its blocks
/// in the source's global order.
pub fn repack(bytes: &[u8], source: &Path, p: &RepackParams) -> Result<Repacked> {
    let reader = Reader::with_source(bytes, source)?;
    let full = Budget::fit(reader.manifest(), BudgetLimit::Full)?;
    reader.verify(&full)?;
    let m = reader.manifest();
    let mut w = CheckpointWriter::in_memory();
    // Tensor index -> index among the tensors with blocks (BitStack matrices, nested
    // palettes), as the writer numbers them for an explicit order.
    let mut matrix_of = vec![u32::MAX; m.tensors.len()];
    let mut n_matrices = 0u32;
    let mut repacked = Vec::new();
    for (t, e) in m.tensors.iter().enumerate() {
        let dense = !e.encoding.is_compressed();
        if dense && e.shape.len() == 2 && p.palette.is_match(&e.name) {
            let data = reader.rebuild_index(t, &full)?;
            let (rows, cols) = (e.shape[0] as usize, e.shape[1] as usize);
            let pal = palettize(&data, rows, cols, None, &p.config)
                .with_context(|| format!("palettizing `{}` of {}", e.name, source.display()))?;
            w.add_palette(&e.name, &pal)?;
            repacked.push(e.name.clone());
            continue;
        }
        // Everything else keeps its bytes: the compressed tensors are what the GPU
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
            p.config.bits,
            p.config.group_rows.unwrap_or(0),
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
    Ok(Repacked {
        bytes: out,
        repacked,
    })
}

/// Runs `octet weights repack`.
pub fn run(args: RepackArgs) -> Result<()> {
    let bytes =
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let params = RepackParams {
        palette: Regex::new(&args.palette).context("--palette")?,
        config: PaletteConfig {
            bits: args.bits,
            group_rows: Some(args.group),
        },
    };
    let r = repack(&bytes, &args.input, &params)?;
    let reader = Reader::with_source(&r.bytes, &args.output)?;
    let m = reader.manifest();
    let smallest = Budget::fit(m, BudgetLimit::Blocks(m.min_blocks as usize))?;
    let written = match args.cut {
        Some(limit) => {
            let budget = Budget::fit(m, BudgetLimit::Bytes(limit.0))
                .with_context(|| format!("--cut {limit}"))?;
            println!(
                "cut to the budget of {} blocks of {} (largest within {limit}): budgets \
                 from {} ({} bytes, smallest) to {} bytes load from it",
                budget.n_blocks,
                m.block_order.len(),
                human_bytes(smallest.prefix_len),
                smallest.prefix_len,
                budget.prefix_len
            );
            budget.prefix_of(&r.bytes, &args.output)?
        }
        None => &r.bytes[..],
    };
    std::fs::write(&args.output, written)
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!(
        "{}: {} bytes (complete file {} bytes, smallest budget {} bytes), {} tensor(s) as \
         {}-bit palettes: {}",
        args.output.display(),
        written.len(),
        r.bytes.len(),
        smallest.prefix_len,
        r.repacked.len(),
        args.bits,
        r.repacked.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::synthetic::{EMBEDDING, every_encoding};
    use octet_quant::checkpoint::Section;

    #[test]
    fn repack_keeps_nested_palettes_byte_for_byte_at_every_budget() {
        let before = every_encoding().expect("synthetic file");
        let params = RepackParams {
            palette: Regex::new("embed_tokens").expect("regex"),
            config: PaletteConfig {
                bits: 4,
                group_rows: Some(16),
            },
        };
        let src = Path::new("synthetic.octet");
        let after = repack(&before, src, &params).expect("repack");
        assert_eq!(after.repacked, [EMBEDDING]);
        let (a, b) = (
            Reader::new(&before).expect("before"),
            Reader::new(&after.bytes).expect("after"),
        );
        let (ma, mb) = (a.manifest(), b.manifest());
        assert_eq!(ma.tensors.len(), mb.tensors.len());
        assert!(mb.file_len < ma.file_len, "the embedding shrank");
        // The same global order, block for block (tensor indices are unchanged:
        // repack keeps the tensor order).
        assert_eq!(ma.block_order, mb.block_order);
        assert_eq!(ma.min_blocks, mb.min_blocks);
        for (ea, eb) in ma.tensors.iter().zip(&mb.tensors) {
            assert_eq!(ea.name, eb.name);
            assert_eq!(ea.shape, eb.shape);
            if ea.name == EMBEDDING {
                assert_eq!(eb.encoding.name(), "palette");
                continue;
            }
            assert_eq!(ea.encoding.name(), eb.encoding.name(), "{}", ea.name);
            // Sections hold absolute file offsets.
            let bytes_of = |file: &'_ [u8], s: &Section| -> Vec<u8> {
                file[s.offset as usize..(s.offset + s.len) as usize].to_vec()
            };
            let (ra, rb) = (ea.encoding.resident(), eb.encoding.resident());
            assert_eq!(ra.len(), rb.len(), "{}", ea.name);
            for ((x, what), (y, _)) in ra.iter().zip(&rb) {
                assert_eq!(
                    bytes_of(&before, x),
                    bytes_of(&after.bytes, y),
                    "{} {what}",
                    ea.name
                );
            }
            let (ba, bb) = (ea.encoding.blocks(), eb.encoding.blocks());
            assert_eq!(ba.len(), bb.len(), "{}", ea.name);
            for (x, y) in ba.iter().zip(bb) {
                assert_eq!(x.importance, y.importance);
                assert_eq!(
                    bytes_of(&before, &x.section),
                    bytes_of(&after.bytes, &y.section),
                    "{} block",
                    ea.name
                );
            }
        }
        // Every budget rebuilds every kept tensor to the bit, from the prefix alone.
        for n in ma.min_blocks as usize..=ma.block_order.len() {
            let ba = Budget::fit(ma, BudgetLimit::Blocks(n)).expect("budget");
            let bb = Budget::fit(mb, BudgetLimit::Blocks(n)).expect("budget");
            assert_eq!(ba.blocks_per_matrix, bb.blocks_per_matrix);
            let pa = Reader::new(ba.prefix_of(&before, src).expect("prefix")).expect("a");
            let pb = Reader::new(bb.prefix_of(&after.bytes, src).expect("prefix")).expect("b");
            for e in ma.tensors.iter().filter(|e| e.name != EMBEDDING) {
                let x = pa.rebuild_tensor(&e.name, &ba).expect("a");
                let y = pb.rebuild_tensor(&e.name, &bb).expect("b");
                assert!(
                    x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
                    "{} at {n} blocks",
                    e.name
                );
            }
        }
        // The embedding is the 4-bit palette of the f16 values.
        let full_a = Budget::fit(ma, BudgetLimit::Full).expect("full");
        let full_b = Budget::fit(mb, BudgetLimit::Full).expect("full");
        let x = a.rebuild_tensor(EMBEDDING, &full_a).expect("a");
        let y = b.rebuild_tensor(EMBEDDING, &full_b).expect("b");
        let err = x
            .iter()
            .zip(&y)
            .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(err > 0.0 && err < 0.5, "{err}");
    }
}
