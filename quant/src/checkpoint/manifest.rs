//! The checkpoint manifest: what every tensor is, where its bytes are, and in which
//! order BitStack blocks are loaded.
//!
//! Serialized with rkyv 0.8 using its default format (little-endian, aligned
//! primitives, 32-bit relative pointers). Those defaults are part of the file format:
//! enabling rkyv's `big_endian`, `unaligned` or `pointer_width_*` features anywhere in
//! the workspace would change the bytes, and the committed v1 fixture test would fail.

use rkyv::{Archive, Deserialize, Serialize};

use super::ALIGN;
use crate::bitstack::sign_row_bytes;

/// A byte range of the file with its CRC-32C.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    /// Absolute offset in the file, a multiple of 64.
    pub offset: u64,
    /// Length in bytes (no trailing padding).
    pub len: u64,
    /// CRC-32C (Castagnoli) of the section's bytes.
    pub crc32c: u32,
}

impl Section {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

/// One BitStack block: its bytes and the importance it was ordered by.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct BlockEntry {
    /// The block's bytes, laid out as [`BitStackBlockLayout`] says.
    pub section: Section,
    /// The importance proxy the writer ordered by (see
    /// [`crate::bitstack::BitStackBlock::importance`]).
    pub importance: f64,
}

pub use encoding::{ArchivedEncoding, Encoding};

/// rkyv's derive leaves the fields of the resolver it generates for an enum with
/// named fields undocumented; this module confines the allowance to that enum, whose
/// own items are all documented.
mod encoding {
    #![allow(missing_docs)]
    use super::{BlockEntry, Section};
    use rkyv::{Archive, Deserialize, Serialize};

    /// How a tensor is stored.
    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub enum Encoding {
        /// Always-resident IEEE half floats, little-endian, row-major.
        F16 {
            /// The values.
            data: Section,
        },
        /// Always-resident f32, little-endian, row-major.
        F32 {
            /// The values.
            data: Section,
        },
        /// A BitStack matrix (`shape = [rows, cols]`).
        BitStack {
            /// Rank of every block's factors.
            rank: u32,
            /// Per-input-channel scales, `cols` f32 little-endian; `None` = all ones.
            scales: Option<Section>,
            /// Blocks in level order; where each lies in the file follows the global order.
            blocks: Vec<BlockEntry>,
        },
        /// A k-means palette (`shape = [rows, cols]`), laid out as
        /// [`crate::palette::PaletteLayout`] says.
        Palette {
            /// Bits per index (2..=8): each group has `2^bits` centroids.
            bits: u8,
            /// Output channels (rows) per group sharing one lookup table.
            group_rows: u32,
            /// Lookup tables then packed indices.
            data: Section,
        },
        /// A scaled palette (`shape = [rows, cols]`): one table for the tensor, a
        /// scale and offset code per block of `group_cols` weights of a row, laid
        /// out as [`crate::palette::ScaledLayout`] says.
        ScaledPalette {
            /// Bits per index (2..=8).
            bits: u8,
            /// Weights per block along a row.
            group_cols: u32,
            /// Table, row parameters, block codes, then packed indices.
            data: Section,
        },
    }
}

/// One tensor.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TensorEntry {
    /// The tensor's name (Hugging Face naming for models read from safetensors).
    pub name: String,
    /// Dimensions, outermost first.
    pub shape: Vec<u64>,
    /// How it is stored.
    pub encoding: Encoding,
}

impl TensorEntry {
    /// Number of elements (saturating: the reader rejects overflowing shapes).
    pub fn numel(&self) -> u64 {
        self.shape.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }
}

/// A block in the global order: tensor index and level.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRef {
    /// Index into [`Manifest::tensors`] (a BitStack tensor).
    pub tensor: u32,
    /// Level within that tensor.
    pub level: u32,
}

/// A free-form key/value pair (model config, tokenizer name, provenance).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MetaEntry {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// Everything about the file except the header and the section bytes.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Tensors in file order of their resident sections.
    pub tensors: Vec<TensorEntry>,
    /// Every BitStack block, most important first. Blocks of one tensor appear in
    /// level order, and their sections follow this order in the file.
    pub block_order: Vec<BlockRef>,
    /// `budget_table[j]` is the file prefix length that holds the header, manifest,
    /// all resident sections and the first `j` blocks of `block_order`
    /// (`len = block_order.len() + 1`).
    pub budget_table: Vec<u64>,
    /// Blocks every budget includes: the shortest prefix of `block_order` in which
    /// every BitStack tensor has at least one block (a tensor with none would
    /// rebuild as zero).
    pub min_blocks: u32,
    /// Offset of the first section.
    pub data_start: u64,
    /// Length of the complete file.
    pub file_len: u64,
    /// Free-form metadata.
    pub metadata: Vec<MetaEntry>,
}

impl Manifest {
    /// Index of the tensor called `name`.
    pub fn tensor_index(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }

    /// Total number of weights over all tensors.
    pub fn total_weights(&self) -> u64 {
        self.tensors
            .iter()
            .fold(0u64, |a, t| a.saturating_add(t.numel()))
    }
}

/// Where the parts of one BitStack block lie inside its section (offsets relative to
/// the section start, each part 64-byte aligned so a device copy can use it in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitStackBlockLayout {
    /// Packed signs: `rows * ceil(cols / 8)` bytes (see
    /// [`crate::bitstack::BitStackBlock::signs`] for the bit order).
    pub signs: (usize, usize),
    /// `u`: `rows x rank` f16 little-endian, row-major.
    pub u: (usize, usize),
    /// `vt`: `rank x cols` f16 little-endian, row-major.
    pub vt: (usize, usize),
    /// Section length.
    pub len: usize,
}

impl BitStackBlockLayout {
    /// The layout of a `rows x cols` block of rank `rank`, as `(offset, len)` pairs;
    /// `None` if a size overflows `usize`.
    pub fn new(rows: usize, cols: usize, rank: usize) -> Option<BitStackBlockLayout> {
        let s_len = rows.checked_mul(sign_row_bytes(cols))?;
        let u_off = align_usize(s_len)?;
        let u_len = rows.checked_mul(rank)?.checked_mul(2)?;
        let vt_off = align_usize(u_off.checked_add(u_len)?)?;
        let vt_len = rank.checked_mul(cols)?.checked_mul(2)?;
        Some(BitStackBlockLayout {
            signs: (0, s_len),
            u: (u_off, u_len),
            vt: (vt_off, vt_len),
            len: vt_off.checked_add(vt_len)?,
        })
    }
}

/// `x` rounded up to a multiple of [`ALIGN`].
pub(crate) fn align_usize(x: usize) -> Option<usize> {
    Some(x.checked_add(ALIGN - 1)? / ALIGN * ALIGN)
}
