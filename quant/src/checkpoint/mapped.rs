//! A `.octet` file opened by memory map, and the budgets it can be loaded at.
//!
//! Nothing here needs candle: `octet weights inspect`, `plan` and `export` work from
//! a [`MappedCheckpoint`] and a [`super::BudgetLimit`] ([`Budget::fit`]); the tensor construction on top of it
//! is [`crate::candle_load`] (CPU) and the GPU loader. A budget is one contiguous
//! prefix of the file ([`MappedCheckpoint::prefix`]): one read, one transfer.
//!
//! ```no_run
//! use octet_quant::checkpoint::{Budget, BudgetLimit, MappedCheckpoint};
//!
//! let ckpt = MappedCheckpoint::open("smollm2.octet")?;
//! let budget = Budget::fit(ckpt.reader()?.manifest(), BudgetLimit::Bytes(60_000_000))?;
//! let reader = ckpt.prefix_reader(&budget)?; // reads no byte past the prefix
//! let w = reader.rebuild_tensor("model.layers.0.mlp.up_proj.weight", &budget)?;
//! # Ok::<(), octet_quant::QuantError>(())
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::{Budget, Reader};
use crate::error::{QuantError, Result};

/// A read-only memory map of a `.octet` file: the one place the loader is unsafe.
#[derive(Debug)]
pub struct MappedCheckpoint {
    map: Mmap,
    path: PathBuf,
}

impl MappedCheckpoint {
    /// Maps the file at `path` read-only. Nothing is read until a reader is opened
    /// (the header and manifest) or a budget loaded (its prefix).
    pub fn open(path: impl AsRef<Path>) -> Result<MappedCheckpoint> {
        let path = path.as_ref().to_path_buf();
        let io = |source| QuantError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        // SAFETY: the map is read-only and private to this struct, which hands out
        // only shared `&[u8]` borrows tied to its lifetime. The remaining hazard of any
        // file map is another process truncating or rewriting the file while it is
        // mapped (a truncation faults with SIGBUS, a rewrite changes bytes under us).
        // Checkpoints are written once to a new file and never modified in place, and
        // every section read through the map is CRC-checked, so a concurrent rewrite
        // shows up as a checksum error rather than silent corruption. This is the same
        // contract candle's own `MmapedSafetensors` relies on.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Ok(MappedCheckpoint { map, path })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The mapped bytes (the whole file).
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// A reader over the whole map: parses and validates the header and manifest.
    pub fn reader(&self) -> Result<Reader<'_>> {
        Reader::with_source(&self.map, &self.path)
    }

    /// The file's first [`Budget::prefix_len`] bytes: everything `budget` reads. Asks
    /// the kernel to read them ahead in one sequential pass.
    pub fn prefix(&self, budget: &Budget) -> Result<&[u8]> {
        let prefix = budget.prefix_of(&self.map, &self.path)?;
        #[cfg(unix)]
        {
            // Advice only: a kernel that refuses it changes nothing but speed, so the
            // result is ignored.
            let _ = self
                .map
                .advise_range(memmap2::Advice::WillNeed, 0, prefix.len());
        }
        Ok(prefix)
    }

    /// A reader over only the budget's prefix, so no byte past it can be touched.
    pub fn prefix_reader(&self, budget: &Budget) -> Result<Reader<'_>> {
        Reader::with_source(self.prefix(budget)?, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitstack::{BitStackConfig, RankPolicy, decompose};
    use crate::checkpoint::{BlockOrdering, BudgetLimit, CheckpointWriter};

    #[test]
    fn a_prefix_reader_needs_only_the_prefix() {
        let (rows, cols) = (24, 40);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 1013) as f32 / 1013.0 - 0.5)
            .collect();
        let cfg = BitStackConfig {
            n_iter: 5,
            rank: RankPolicy::Fixed(2),
            ..Default::default()
        };
        let mut writer = CheckpointWriter::in_memory();
        writer
            .add_bitstack(
                "a",
                &decompose(&w, rows, cols, None, &cfg).expect("decomposes"),
            )
            .expect("adds");
        let mut bytes = Vec::new();
        writer
            .finish(&BlockOrdering::default(), &mut bytes)
            .expect("writes");
        let dir = tempdir();
        let path = dir.join("m.octet");
        std::fs::write(&path, &bytes).expect("temp file");
        let ckpt = MappedCheckpoint::open(&path).expect("maps");
        let budget = Budget::fit(
            ckpt.reader().expect("reader").manifest(),
            BudgetLimit::Blocks(2),
        )
        .expect("plans");
        assert!(budget.prefix_len < bytes.len() as u64);
        let reader = ckpt.prefix_reader(&budget).expect("prefix parses");
        assert_eq!(reader.available(), budget.prefix_len);
        let full = ckpt.reader().expect("parses");
        assert_eq!(
            reader.rebuild_tensor("a", &budget).expect("rebuilds"),
            full.rebuild_tensor("a", &budget).expect("rebuilds")
        );
        // A budget bigger than the bytes at hand is refused, not read past.
        let err = budget
            .prefix_of(&bytes[..budget.prefix_len as usize - 1], &path)
            .expect_err("short");
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(matches!(
            Budget::fit(
                ckpt.reader().expect("reader").manifest(),
                BudgetLimit::BitsPerWeight(f64::NAN)
            ),
            Err(QuantError::InvalidConfig { .. })
        ));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("octet-mapped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}
