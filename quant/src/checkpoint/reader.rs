//! Reading a checkpoint from bytes: a whole file, a memory map of it, or only a
//! prefix long enough for the budget being loaded.

use std::path::{Path, PathBuf};

use super::budget::Budget;
use super::encoding::Source;
use super::manifest::Manifest;
use super::{format_err, validate};
use crate::dest::Out;
use crate::error::{QuantError, Result};

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
    version: u32,
}

impl<'a> Reader<'a> {
    /// Parses `bytes`; errors name the source as `<bytes>`.
    pub fn new(bytes: &'a [u8]) -> Result<Reader<'a>> {
        Reader::with_source(bytes, "<bytes>")
    }

    /// Parses `bytes` read from `source` (named in every error).
    pub fn with_source(bytes: &'a [u8], source: impl AsRef<Path>) -> Result<Reader<'a>> {
        let source = source.as_ref().to_path_buf();
        let (manifest, version) = validate::parse(bytes, &source)?;
        Ok(Reader {
            bytes,
            source,
            manifest,
            version,
        })
    }

    /// The validated manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The file's format version (from its header).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Bytes available to this reader (the file length, or less for a prefix).
    pub fn available(&self) -> u64 {
        self.bytes.len() as u64
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
        let src = self.source(t, budget)?;
        self.manifest.tensors[t].encoding.view().rebuild(&src)
    }

    /// [`Reader::rebuild_index`] into `out`, which must hold exactly the tensor's
    /// elements (the loader's one buffer per budget): `&mut [f32]`, or f16 / bf16
    /// slices (through [`Out`]) that get each f32 value rounded to nearest even.
    pub fn rebuild_index_into<'o>(
        &self,
        t: usize,
        budget: &Budget,
        out: impl Into<Out<'o>>,
    ) -> Result<()> {
        let src = self.source(t, budget)?;
        self.manifest.tensors[t]
            .encoding
            .view()
            .rebuild_into(&src, out.into())
    }

    /// Reads and checksums every section a budget needs, decoding nothing.
    pub fn verify(&self, budget: &Budget) -> Result<()> {
        for (t, entry) in self.manifest.tensors.iter().enumerate() {
            let src = self.source(t, budget)?;
            for (s, what) in entry.encoding.resident() {
                src.section(&s, what)?;
            }
            for (level, b) in entry
                .encoding
                .blocks()
                .iter()
                .take(src.n_blocks)
                .enumerate()
            {
                src.section(&b.section, &format!("block {level}"))?;
            }
        }
        Ok(())
    }

    /// Tensor `t` as its encoding sees it under `budget`: the bytes below the
    /// budget's prefix and how many of its blocks the budget loads.
    pub(crate) fn source(&self, t: usize, budget: &Budget) -> Result<Source<'_>> {
        let prefix = self.prefix(budget)?;
        let entry = self
            .manifest
            .tensors
            .get(t)
            .ok_or_else(|| QuantError::InvalidConfig {
                field: "tensor index",
                reason: format!("expected < {}, got {t}", self.manifest.tensors.len()),
            })?;
        Ok(Source {
            name: &entry.name,
            shape: &entry.shape,
            n_blocks: budget.blocks_per_matrix[t] as usize,
            prefix,
            src: &self.source,
        })
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
        budget.prefix_of(self.bytes, &self.source)
    }
}
