//! The `.octet` checkpoint: one file holding a budget-adaptive model.
//!
//! A fixed 64-byte header (layout table on [`CheckpointWriter`]), an rkyv
//! [`Manifest`], then 64-byte-aligned sections: first everything that is always
//! loaded (f16/f32 tensors, BitStack scales, palettes), then every BitStack block in
//! the global importance order ([`crate::bitstack::order`]). Any byte budget is
//! therefore one contiguous prefix of the file: the loader maps the file (or reads
//! only a prefix of it) and rebuilds each tensor from bytes below
//! [`Budget::prefix_len`].
//!
//! Every section carries a CRC-32C checked when it is read; the header and the
//! manifest carry their own. Every length in the header and manifest is capped and
//! checked against the file before anything is allocated, and all errors are
//! [`QuantError::Format`] naming the field and the expected value.
//!
//! ```
//! use octet_quant::bitstack::{decompose, BitStackConfig};
//! use octet_quant::checkpoint::{BlockOrdering, Budget, BudgetLimit, CheckpointWriter, Reader};
//!
//! let (rows, cols) = (16, 24);
//! let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0).collect();
//! let cfg = BitStackConfig { n_iter: 4, ..Default::default() };
//! let mut writer = CheckpointWriter::in_memory();
//! writer.add_f16("embed", &[4, 6], &[0.5; 24])?;
//! writer.add_bitstack("proj", &decompose(&w, rows, cols, None, &cfg)?)?;
//! let mut file = Vec::new();
//! writer.finish(&BlockOrdering::default(), &mut file)?;
//!
//! let reader = Reader::new(&file)?;
//! let budget = Budget::fit(reader.manifest(), BudgetLimit::Bytes(file.len() as u64 * 3 / 4))?;
//! // Only the first `prefix_len` bytes are needed to rebuild at this budget.
//! let prefix = Reader::new(&file[..budget.prefix_len as usize])?;
//! let proj = prefix.rebuild_tensor("proj", &budget)?;
//! assert_eq!(proj.len(), rows * cols);
//! # Ok::<(), octet_quant::QuantError>(())
//! ```

pub mod budget;
pub mod encoding;
mod header;
mod layout;
pub mod manifest;
pub mod mapped;
pub mod reader;
mod validate;
pub mod writer;

pub use budget::{Budget, BudgetLimit};
pub use encoding::{BitStackBlockLayout, EncodeTensor, NestedStepLayout, TensorEncoding};
pub use manifest::{BlockEntry, BlockRef, Encoding, Manifest, MetaEntry, Section, TensorEntry};
pub use mapped::MappedCheckpoint;
pub use reader::Reader;
pub use writer::{BlockOrdering, CheckpointWriter};

#[doc(hidden)]
pub use header::reseal;

use std::path::Path;

use crate::error::QuantError;

/// The first eight bytes of every checkpoint.
pub const MAGIC: [u8; 8] = *b"OCTETWGT";
/// The newest format version this code reads and writes. A file is written at the
/// oldest version that can hold all its encodings
/// ([`TensorEncoding::min_version`]): version 6 when it holds a rescaled nested
/// palette with corrections of several widths, version 5 when it holds a lean rescaled
/// nested palette, version 4 when it holds a rescaled nested
/// palette, version 3 when it holds a nested palette,
/// version 2 when it holds a scaled palette, version 1 otherwise, so files stay
/// readable by the oldest reader that knows all their encodings.
/// The table of versions and encodings is `docs/checkpoint-format.md`.
pub const VERSION: u32 = 6;
/// The oldest format version this code reads.
///
/// A version-1 file holding a scaled palette is accepted too: the release that
/// introduced scaled palettes wrote them without bumping the version, and its files
/// are otherwise valid.
pub const MIN_VERSION: u32 = 1;
/// Alignment of the manifest end and of every section.
pub const ALIGN: usize = 64;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 64;

/// The longest manifest a reader accepts.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;
/// The most tensors a checkpoint may hold.
pub const MAX_TENSORS: usize = 1 << 16;
/// The longest tensor name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;
/// The most dimensions a tensor may have.
pub const MAX_DIMS: usize = 8;
/// The most elements one tensor may have.
pub const MAX_NUMEL: u64 = 1 << 40;
/// The most metadata entries.
pub const MAX_METADATA: usize = 4096;
/// The longest metadata key, in bytes.
pub const MAX_META_KEY: usize = 256;
/// The longest metadata value, in bytes.
pub const MAX_META_VALUE: usize = 1 << 20;

/// `x` rounded up to a multiple of [`ALIGN`] (saturating).
pub(crate) fn align_u64(x: u64) -> u64 {
    x.saturating_add(ALIGN as u64 - 1) / ALIGN as u64 * ALIGN as u64
}

/// `x` rounded up to a multiple of [`ALIGN`]; `None` on overflow. Section layouts
/// ([`crate::palette::PaletteLayout`], [`BitStackBlockLayout`]) align their parts with it.
pub(crate) fn align_usize(x: usize) -> Option<usize> {
    Some(x.checked_add(ALIGN - 1)? / ALIGN * ALIGN)
}

/// A [`QuantError::Format`] for `source`.
pub(crate) fn format_err(source: &Path, reason: impl Into<String>) -> QuantError {
    QuantError::Format {
        path: source.to_path_buf(),
        reason: reason.into(),
    }
}

/// Opens `bytes` as a checkpoint and, when that succeeds, plans budgets and rebuilds
/// every tensor at the smallest and the full budget, ignoring errors. The body of the
/// cargo-fuzz target `checkpoint_manifest` and of the unit tests that stand in for
/// it: whatever the bytes, it must return without panicking or allocating more than a
/// small multiple of `bytes.len()`.
#[doc(hidden)]
pub fn fuzz_one(bytes: &[u8]) {
    let Ok(reader) = Reader::new(bytes) else {
        return;
    };
    let m = reader.manifest();
    let _ = Budget::fit(m, BudgetLimit::Bytes(bytes.len() as u64));
    let _ = Budget::fit(m, BudgetLimit::BitsPerWeight(2.0));
    let budgets: Vec<Budget> = [
        BudgetLimit::Full,
        BudgetLimit::Blocks(m.min_blocks as usize),
    ]
    .into_iter()
    .filter_map(|l| Budget::fit(m, l).ok())
    .collect();
    for b in &budgets {
        let _ = reader.verify(b);
        for t in 0..m.tensors.len() {
            let _ = reader.rebuild_index(t, b);
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
