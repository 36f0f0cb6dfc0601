//! Reading a checkpoint from bytes: a whole file, a memory map of it, or only a
//! prefix long enough for the budget being loaded.

use std::path::{Path, PathBuf};

use half::f16;

use super::budget::{self, Budget};
use super::manifest::{BitStackBlockLayout, Encoding, Manifest, Section};
use super::{format_err, validate};
use crate::bitstack::Rebuilder;
use crate::error::{QuantError, Result};
use crate::palette::{PaletteLayout, ScaledLayout};

/// A parsed checkpoint over borrowed bytes.
///
/// Opening parses and validates the header and manifest only (every length capped
/// before allocation, every offset checked against the file length). Section bytes
/// are read, checksummed and decoded on demand by [`Reader::rebuild_tensor`], which
/// reads nothing at or beyond the budget's [`Budget::prefix_len`]; `bytes` may
/// therefore be just that prefix of the file.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    source: PathBuf,
    manifest: Manifest,
}

impl<'a> Reader<'a> {
    /// Parses `bytes`; errors name the source as `<bytes>`.
    pub fn new(bytes: &'a [u8]) -> Result<Reader<'a>> {
        Reader::with_source(bytes, "<bytes>")
    }

    /// Parses `bytes` read from `source` (named in every error).
    pub fn with_source(bytes: &'a [u8], source: impl AsRef<Path>) -> Result<Reader<'a>> {
        let source = source.as_ref().to_path_buf();
        let manifest = validate::parse(bytes, &source)?;
        Ok(Reader {
            bytes,
            source,
            manifest,
        })
    }

    /// The validated manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Bytes available to this reader (the file length, or less for a prefix).
    pub fn available(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The largest budget whose prefix fits in `limit_bytes`.
    pub fn plan(&self, limit_bytes: u64) -> Result<Budget> {
        budget::plan(&self.manifest, limit_bytes)
    }

    /// The largest budget of at most `bits` bits per weight.
    pub fn plan_bits(&self, bits: f64) -> Result<Budget> {
        budget::plan_bits(&self.manifest, bits)
    }

    /// The budget of the first `n_blocks` blocks of the global order.
    pub fn with_blocks(&self, n_blocks: usize) -> Result<Budget> {
        budget::with_blocks(&self.manifest, n_blocks)
    }

    /// Every block: the whole file.
    pub fn full(&self) -> Budget {
        budget::full(&self.manifest)
    }

    /// Rebuilds the tensor called `name` as row-major f32 under `budget`.
    pub fn rebuild_tensor(&self, name: &str, budget: &Budget) -> Result<Vec<f32>> {
        let t = self.manifest.tensor_index(name).ok_or_else(|| {
            format_err(
                &self.source,
                format!("no tensor named `{name}` in the manifest"),
            )
        })?;
        self.rebuild_index(t, budget)
    }

    /// Rebuilds tensor number `t` of the manifest as row-major f32 under `budget`.
    pub fn rebuild_index(&self, t: usize, budget: &Budget) -> Result<Vec<f32>> {
        let prefix = self.prefix(budget)?;
        let entry = self
            .manifest
            .tensors
            .get(t)
            .ok_or_else(|| QuantError::InvalidConfig {
                field: "tensor index",
                reason: format!("expected < {}, got {t}", self.manifest.tensors.len()),
            })?;
        let name = &entry.name;
        match &entry.encoding {
            Encoding::F16 { data } => {
                let b = self.section(prefix, data, || format!("tensor `{name}` data"))?;
                Ok(b.chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect())
            }
            Encoding::F32 { data } => {
                let b = self.section(prefix, data, || format!("tensor `{name}` data"))?;
                Ok(f32_le(b))
            }
            Encoding::Palette {
                bits,
                group_rows,
                data,
            } => {
                let (rows, cols) = (entry.shape[0] as usize, entry.shape[1] as usize);
                let b = self.section(prefix, data, || format!("tensor `{name}` palette"))?;
                // The manifest was validated, so the layout exists and matches `b`.
                let layout = PaletteLayout::new(rows, cols, *bits, *group_rows as usize)
                    .ok_or_else(|| {
                        format_err(&self.source, format!("tensor `{name}`: bad palette layout"))
                    })?;
                layout.decode(b)
            }
            Encoding::ScaledPalette {
                bits,
                group_cols,
                data,
            } => {
                let (rows, cols) = (entry.shape[0] as usize, entry.shape[1] as usize);
                let b = self.section(prefix, data, || format!("tensor `{name}` scaled palette"))?;
                let layout = ScaledLayout::new(rows, cols, *bits, *group_cols as usize)
                    .ok_or_else(|| {
                        format_err(
                            &self.source,
                            format!("tensor `{name}`: bad scaled palette layout"),
                        )
                    })?;
                layout.decode(b)
            }
            Encoding::BitStack {
                rank,
                scales,
                blocks,
            } => {
                let (rows, cols, rank) = (
                    entry.shape[0] as usize,
                    entry.shape[1] as usize,
                    *rank as usize,
                );
                let n = budget.blocks_per_matrix[t] as usize;
                if n > blocks.len() {
                    return Err(QuantError::InvalidConfig {
                        field: "budget.blocks_per_matrix",
                        reason: format!(
                            "tensor `{name}` has {} blocks, the budget asks for {n}",
                            blocks.len()
                        ),
                    });
                }
                let layout = BitStackBlockLayout::new(rows, cols, rank).ok_or_else(|| {
                    format_err(&self.source, format!("tensor `{name}`: bad block layout"))
                })?;
                let scales = match scales {
                    Some(s) => Some(f32_le(
                        self.section(prefix, s, || format!("tensor `{name}` scales"))?,
                    )),
                    None => None,
                };
                if n == 0 {
                    return Err(QuantError::InvalidConfig {
                        field: "budget.blocks_per_matrix",
                        reason: format!("the budget loads no block of BitStack tensor `{name}`"),
                    });
                }
                // Check every section is present before allocating the output: its
                // size then is bounded by the bytes given (at least 1 bit per weight).
                let sections = blocks[..n]
                    .iter()
                    .enumerate()
                    .map(|(level, b)| {
                        self.section(prefix, &b.section, || {
                            format!("tensor `{name}` block {level}")
                        })
                    })
                    .collect::<Result<Vec<&[u8]>>>()?;
                let mut r = Rebuilder::new(rows, cols, rank);
                for bytes in sections {
                    let part = |(o, l): (usize, usize)| &bytes[o..o + l];
                    let u = f16_le(part(layout.u));
                    let vt = f16_le(part(layout.vt));
                    r.add_block(part(layout.signs), &u, &vt)?;
                }
                r.finish(scales.as_deref())
            }
        }
    }

    /// Reads and checksums every section a budget needs, decoding nothing.
    pub fn verify(&self, budget: &Budget) -> Result<()> {
        let prefix = self.prefix(budget)?;
        for (t, entry) in self.manifest.tensors.iter().enumerate() {
            let name = &entry.name;
            match &entry.encoding {
                Encoding::F16 { data } | Encoding::F32 { data } => {
                    self.section(prefix, data, || format!("tensor `{name}` data"))?;
                }
                Encoding::Palette { data, .. } => {
                    self.section(prefix, data, || format!("tensor `{name}` palette"))?;
                }
                Encoding::ScaledPalette { data, .. } => {
                    self.section(prefix, data, || format!("tensor `{name}` scaled palette"))?;
                }
                Encoding::BitStack { scales, blocks, .. } => {
                    if let Some(s) = scales {
                        self.section(prefix, s, || format!("tensor `{name}` scales"))?;
                    }
                    let n = (budget.blocks_per_matrix[t] as usize).min(blocks.len());
                    for (level, b) in blocks[..n].iter().enumerate() {
                        self.section(prefix, &b.section, || {
                            format!("tensor `{name}` block {level}")
                        })?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The bytes below the budget's prefix length, after checking the budget belongs
    /// to this manifest and the prefix is available.
    fn prefix(&self, budget: &Budget) -> Result<&'a [u8]> {
        if budget.blocks_per_matrix.len() != self.manifest.tensors.len() {
            return Err(QuantError::DimMismatch {
                what: "budget.blocks_per_matrix (one per tensor)",
                expected: self.manifest.tensors.len(),
                actual: budget.blocks_per_matrix.len(),
            });
        }
        usize::try_from(budget.prefix_len)
            .ok()
            .and_then(|n| self.bytes.get(..n))
            .ok_or_else(|| {
                format_err(
                    &self.source,
                    format!(
                        "truncated: the budget needs a prefix of {} bytes, only {} available",
                        budget.prefix_len,
                        self.bytes.len()
                    ),
                )
            })
    }

    /// One section's bytes from `prefix`, checksummed.
    fn section<'p>(
        &self,
        prefix: &'p [u8],
        s: &Section,
        what: impl Fn() -> String,
    ) -> Result<&'p [u8]> {
        let range = usize::try_from(s.offset)
            .ok()
            .zip(usize::try_from(s.end()).ok())
            .filter(|&(_, end)| end <= prefix.len());
        let Some((start, end)) = range else {
            return Err(format_err(
                &self.source,
                format!(
                    "{}: section [{}, {}) lies beyond the {} bytes of the prefix",
                    what(),
                    s.offset,
                    s.end(),
                    prefix.len()
                ),
            ));
        };
        let b = &prefix[start..end];
        let crc = crc32c::crc32c(b);
        if crc != s.crc32c {
            return Err(format_err(
                &self.source,
                format!(
                    "{}: checksum mismatch: stored crc32c {:#010x}, computed {crc:#010x}",
                    what(),
                    s.crc32c
                ),
            ));
        }
        Ok(b)
    }
}

fn f32_le(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn f16_le(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect()
}
