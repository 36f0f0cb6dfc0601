//! Writing a checkpoint: tensors are spilled as they come, then laid out and written
//! in one sequential pass once the global block order is known.

use std::collections::HashSet;
use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::encoding::{DenseTensor, DenseType, EncodeTensor};
use super::header::Header;
use super::layout::{check_explicit, layout};
use super::manifest::{BlockEntry, Encoding, Manifest, MetaEntry, Section};
use super::{
    ALIGN, Budget, BudgetLimit, HEADER_LEN, MAX_DIMS, MAX_MANIFEST_BYTES, MAX_META_KEY,
    MAX_META_VALUE, MAX_METADATA, MAX_NAME_LEN, MAX_NUMEL, MAX_TENSORS, MIN_VERSION, Reader,
    align_u64,
};
use crate::bitstack::{BitStackMatrix, BlockId, MatrixBlocks, OrderPolicy, global_order};
use crate::error::{QuantError, Result};
use crate::palette::{NestedPalette, PaletteTensor, ScaledPalette};

/// How [`CheckpointWriter::finish`] orders BitStack blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockOrdering {
    /// Order by each block's stored importance proxy under this policy.
    Policy(OrderPolicy),
    /// A precomputed order (for example from perplexity scores,
    /// [`crate::bitstack::score_levels_by_eval`]): `matrix` indexes the BitStack
    /// tensors in the order they were added, as [`CheckpointWriter::bitstack_matrices`]
    /// lists them. Every block must appear once, each matrix's levels in order.
    Explicit(Vec<BlockId>),
}

impl Default for BlockOrdering {
    fn default() -> Self {
        BlockOrdering::Policy(OrderPolicy::default())
    }
}

/// Builds a `.octet` checkpoint.
///
/// Each `add_*` call encodes a tensor and appends its bytes to `spill` at once (a
/// temporary file for real models, memory for small ones), so the caller can drop the
/// tensor: memory holds only metadata. [`CheckpointWriter::finish`] computes the
/// global block order, lays the file out, and streams header, manifest and sections
/// to any [`Write`] in one sequential pass, re-checking each section's CRC as it is
/// copied. Disk use is twice the checkpoint (spill plus output); memory is one copy
/// buffer.
///
/// # File layout (format versions 1 to 4)
///
/// All integers little-endian.
///
/// | offset | bytes | field |
/// |---|---|---|
/// | 0 | 8 | magic `"OCTETWGT"` |
/// | 8 | 4 | format version (`u32`): 4 if a tensor is a rescaled nested palette, else 3 if one is a nested palette, else 2 if one is a scaled palette, else 1 |
/// | 12 | 4 | flags (`u32`, 0; a reader rejects unknown bits) |
/// | 16 | 8 | manifest offset (`u64`, always 64) |
/// | 24 | 8 | manifest length `L` (`u64`, at most 64 MiB) |
/// | 32 | 4 | CRC-32C of the manifest bytes (`u32`) |
/// | 36 | 4 | reserved (0) |
/// | 40 | 8 | data start `D` = `64 + L` rounded up to 64 (`u64`) |
/// | 48 | 8 | length of the complete file (`u64`) |
/// | 56 | 4 | reserved (0) |
/// | 60 | 4 | CRC-32C of bytes 0..60 (`u32`) |
/// | 64 | `L` | rkyv-archived [`Manifest`], zero padding up to `D` |
/// | `D` | | resident sections, in tensor order: f16/f32 data, BitStack scales, palettes |
/// | | | blocks (BitStack levels, nested palette steps), in the manifest's `block_order` |
///
/// Every section starts on a 64-byte boundary, with zero padding between sections;
/// its offset, length and CRC-32C are in the manifest. What a section holds is up to
/// its tensor's encoding ([`super::encoding`]): a BitStack block's section is laid out
/// as [`super::BitStackBlockLayout`], a palette's as [`crate::palette::PaletteLayout`]. `budget_table[j]` in the manifest is the prefix
/// length that holds the first `j` blocks.
#[derive(Debug)]
pub struct CheckpointWriter<S> {
    spill: S,
    spill_len: u64,
    /// Name, shape and encoding, its sections where they lie in the spill.
    tensors: Vec<(String, Vec<u64>, Encoding)>,
    names: HashSet<String>,
    metadata: Vec<MetaEntry>,
}

impl CheckpointWriter<Cursor<Vec<u8>>> {
    /// A writer spilling to memory: for small models and tests.
    pub fn in_memory() -> Self {
        CheckpointWriter::new(Cursor::new(Vec::new()))
    }
}

fn spill_err(source: std::io::Error) -> QuantError {
    QuantError::Io {
        path: PathBuf::from("<checkpoint spill>"),
        source,
    }
}

fn out_err(source: std::io::Error) -> QuantError {
    QuantError::Io {
        path: PathBuf::from("<checkpoint output>"),
        source,
    }
}

fn invalid(field: &'static str, reason: String) -> QuantError {
    QuantError::InvalidConfig { field, reason }
}

impl<S: Read + Write + Seek> CheckpointWriter<S> {
    /// A writer spilling tensor bytes to `spill` (for example a `tempfile::tempfile()`).
    pub fn new(spill: S) -> Self {
        CheckpointWriter {
            spill,
            spill_len: 0,
            tensors: Vec::new(),
            names: HashSet::new(),
            metadata: Vec::new(),
        }
    }

    fn check_new(&self, name: &str, shape: &[usize], numel: usize) -> Result<Vec<u64>> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(invalid(
                "tensor name",
                format!(
                    "`{name}` has {} bytes, expected 1..={MAX_NAME_LEN}",
                    name.len()
                ),
            ));
        }
        if self.names.contains(name) {
            return Err(invalid(
                "tensor name",
                format!("`{name}` was already added"),
            ));
        }
        if self.tensors.len() >= MAX_TENSORS {
            return Err(invalid("tensors", format!("at most {MAX_TENSORS} tensors")));
        }
        if shape.is_empty() || shape.len() > MAX_DIMS {
            return Err(invalid(
                "shape",
                format!("`{name}` has {} dims, expected 1..={MAX_DIMS}", shape.len()),
            ));
        }
        let product = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if product != Some(numel) || numel as u64 > MAX_NUMEL {
            return Err(QuantError::DimMismatch {
                what: "tensor elements (product of the shape)",
                expected: product.unwrap_or(usize::MAX),
                actual: numel,
            });
        }
        Ok(shape.iter().map(|&d| d as u64).collect())
    }

    /// Appends `bytes` to the spill; the section says where they lie in it.
    fn spill(&mut self, bytes: &[u8]) -> Result<Section> {
        self.spill
            .seek(SeekFrom::Start(self.spill_len))
            .map_err(spill_err)?;
        self.spill.write_all(bytes).map_err(spill_err)?;
        let s = Section {
            offset: self.spill_len,
            len: bytes.len() as u64,
            crc32c: crc32c::crc32c(bytes),
        };
        self.spill_len += s.len;
        Ok(s)
    }

    fn push(&mut self, name: &str, shape: Vec<u64>, p: Encoding) {
        self.names.insert(name.to_string());
        self.tensors.push((name.to_string(), shape, p));
    }

    /// Adds a tensor in any encoding: checks its name and shape, then spills its
    /// sections as the encoding lays them out ([`EncodeTensor`]).
    pub fn add<T: EncodeTensor + ?Sized>(&mut self, name: &str, tensor: &T) -> Result<()> {
        let (shape, numel) = tensor.dims();
        let shape = self.check_new(name, &shape, numel)?;
        let encoding = tensor.encode(name, &mut |bytes| self.spill(bytes))?;
        self.push(name, shape, encoding);
        Ok(())
    }

    /// Adds an always-resident tensor stored as f16 (embeddings, norms, lm_head).
    /// Values beyond f16's range are an error rather than infinities.
    pub fn add_f16(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<()> {
        self.add(
            name,
            &DenseTensor {
                shape,
                data,
                dtype: DenseType::F16,
            },
        )
    }

    /// Adds an always-resident tensor stored as f32.
    pub fn add_f32(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<()> {
        self.add(
            name,
            &DenseTensor {
                shape,
                data,
                dtype: DenseType::F32,
            },
        )
    }

    /// Adds a BitStack matrix (`shape = [rows, cols]`) with all its blocks.
    pub fn add_bitstack(&mut self, name: &str, m: &BitStackMatrix) -> Result<()> {
        self.add(name, m)
    }

    /// Adds a palettized tensor (`shape = [rows, cols]`).
    pub fn add_palette(&mut self, name: &str, p: &PaletteTensor) -> Result<()> {
        self.add(name, p)
    }

    /// Adds a scaled palette (`shape = [rows, cols]`).
    pub fn add_scaled_palette(&mut self, name: &str, p: &ScaledPalette) -> Result<()> {
        self.add(name, p)
    }

    /// Adds a nested scaled palette (`shape = [rows, cols]`): its base is resident,
    /// its refinement steps are blocks with their gain as importance. Order them
    /// with [`OrderPolicy::Greedy`] and `min_levels: 0` so a budget may load the
    /// base alone.
    pub fn add_nested_palette(&mut self, name: &str, p: &NestedPalette) -> Result<()> {
        self.add(name, p)
    }

    /// Adds tensor `t` of `reader` unchanged: its sections are checksummed and copied
    /// byte for byte, its blocks keep their importance. [`BlockOrdering::Explicit`]
    /// then reproduces the source's block order.
    pub fn add_copy(&mut self, reader: &Reader<'_>, t: usize) -> Result<()> {
        let full = Budget::fit(reader.manifest(), BudgetLimit::Full)?;
        let src = reader.source(t, &full)?;
        let entry = &reader.manifest().tensors[t];
        let shape: Vec<usize> = entry.shape.iter().map(|&d| d as usize).collect();
        let numel = entry.numel() as usize;
        let shape = self.check_new(&entry.name, &shape, numel)?;
        let view = entry.encoding.view();
        let mut resident = Vec::new();
        for (s, what) in view.resident() {
            resident.push(self.spill(src.section(&s, what)?)?);
        }
        let mut blocks = Vec::with_capacity(view.blocks().len());
        for (level, b) in view.blocks().iter().enumerate() {
            blocks.push(BlockEntry {
                section: self.spill(src.section(&b.section, &format!("block {level}"))?)?,
                importance: b.importance,
            });
        }
        let encoding = view.with_sections(&resident, blocks);
        self.push(&entry.name, shape, encoding);
        Ok(())
    }

    /// Adds a metadata entry (model config, provenance).
    pub fn add_metadata(&mut self, key: &str, value: &str) -> Result<()> {
        if key.is_empty() || key.len() > MAX_META_KEY || value.len() > MAX_META_VALUE {
            return Err(invalid(
                "metadata",
                format!(
                    "key of {} bytes (1..={MAX_META_KEY}) and value of {} bytes (at most {MAX_META_VALUE})",
                    key.len(),
                    value.len()
                ),
            ));
        }
        if self.metadata.len() >= MAX_METADATA {
            return Err(invalid(
                "metadata",
                format!("at most {MAX_METADATA} entries"),
            ));
        }
        self.metadata.push(MetaEntry {
            key: key.into(),
            value: value.into(),
        });
        Ok(())
    }

    /// The BitStack tensors in the order they were added, with what the ordering sees:
    /// the input to a custom [`BlockOrdering::Explicit`] order.
    pub fn bitstack_matrices(&self) -> Vec<(String, MatrixBlocks)> {
        self.tensors
            .iter()
            .filter(|(_, _, e)| e.has_blocks())
            .map(|(name, _, e)| {
                let blocks = e.blocks();
                (
                    name.clone(),
                    MatrixBlocks {
                        bytes_per_block: blocks.first().map_or(0, |b| b.section.len),
                        importance: blocks.iter().map(|b| b.importance).collect(),
                    },
                )
            })
            .collect()
    }

    /// Orders the blocks, lays the file out and writes it to `out`. Returns the
    /// manifest that was written.
    pub fn finish<W: Write>(mut self, ordering: &BlockOrdering, out: W) -> Result<Manifest> {
        let matrices = self.bitstack_matrices();
        let tensor_of: Vec<usize> = self
            .tensors
            .iter()
            .enumerate()
            .filter(|(_, t)| t.2.has_blocks())
            .map(|(i, _)| i)
            .collect();
        let mbs: Vec<MatrixBlocks> = matrices.into_iter().map(|m| m.1).collect();
        let order = match ordering {
            BlockOrdering::Policy(p) => global_order(&mbs, *p)?,
            BlockOrdering::Explicit(o) => {
                check_explicit(o, &mbs)?;
                o.clone()
            }
        };
        // Section offsets relative to the data start, which depends on the manifest
        // length. rkyv archives fixed-width integers, so the length does not depend
        // on the offsets' values: measure with a zero start, then shift.
        let (placement, copies) = layout(&self.tensors, &self.metadata, &order, &tensor_of);
        let probe = archive(&placement.manifest(0))?;
        let data_start = align_u64((HEADER_LEN + probe.len()) as u64);
        let manifest = placement.manifest(data_start);
        let bytes = archive(&manifest)?;
        if bytes.len() != probe.len() || bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(invalid(
                "manifest",
                format!(
                    "archived length {} (probe {}), at most {MAX_MANIFEST_BYTES}",
                    bytes.len(),
                    probe.len()
                ),
            ));
        }
        let version = self
            .tensors
            .iter()
            .map(|t| t.2.min_version())
            .fold(MIN_VERSION, u32::max);
        let header = Header {
            version,
            manifest_len: bytes.len() as u64,
            manifest_crc: crc32c::crc32c(&bytes),
            data_start,
            file_len: manifest.file_len,
        };
        let mut out = Counting {
            inner: out,
            written: 0,
        };
        out.write_all(&header.encode()).map_err(out_err)?;
        out.write_all(&bytes).map_err(out_err)?;
        let mut buf = vec![0u8; 1 << 20];
        for (rel, s) in copies {
            out.pad_to(data_start + rel)?;
            self.copy_section(s, &mut out, &mut buf)?;
        }
        out.pad_to(manifest.file_len)?;
        out.inner.flush().map_err(out_err)?;
        Ok(manifest)
    }

    /// Copies one spilled payload to `out`, checking its CRC on the way.
    fn copy_section<W: Write>(
        &mut self,
        s: Section,
        out: &mut Counting<W>,
        buf: &mut [u8],
    ) -> Result<()> {
        self.spill
            .seek(SeekFrom::Start(s.offset))
            .map_err(spill_err)?;
        let mut left = s.len;
        let mut crc = 0u32;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            self.spill.read_exact(&mut buf[..n]).map_err(spill_err)?;
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            out.write_all(&buf[..n]).map_err(out_err)?;
            left -= n as u64;
        }
        if crc != s.crc32c {
            return Err(QuantError::Format {
                path: Path::new("<checkpoint spill>").to_path_buf(),
                reason: format!(
                    "spilled section at {} changed: crc32c {crc:#010x}, wrote {:#010x}",
                    s.offset, s.crc32c
                ),
            });
        }
        Ok(())
    }
}

fn archive(m: &Manifest) -> Result<rkyv::util::AlignedVec> {
    rkyv::to_bytes::<rkyv::rancor::Error>(m)
        .map_err(|e| invalid("manifest", format!("rkyv serialization failed: {e}")))
}

/// A writer that knows its position, to pad sections to their offsets.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Counting<W> {
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad_to(&mut self, offset: u64) -> Result<()> {
        const ZEROS: [u8; ALIGN] = [0; ALIGN];
        if offset < self.written {
            return Err(invalid(
                "layout",
                format!(
                    "section at {offset} overlaps bytes already written ({})",
                    self.written
                ),
            ));
        }
        while self.written < offset {
            let n = (offset - self.written).min(ALIGN as u64) as usize;
            self.write_all(&ZEROS[..n]).map_err(out_err)?;
        }
        Ok(())
    }
}
