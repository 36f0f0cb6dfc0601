//! The checkpoint manifest: what every tensor is, where its bytes are, and in which
//! order BitStack blocks are loaded.
//!
//! Serialized with rkyv 0.8 using its default format (little-endian, aligned
//! primitives, 32-bit relative pointers). Those defaults are part of the file format:
//! enabling rkyv's `big_endian`, `unaligned` or `pointer_width_*` features anywhere in
//! the workspace would change the bytes, and the committed v1 fixture test would fail.

use rkyv::{Archive, Deserialize, Serialize};

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

pub use super::encoding::{ArchivedEncoding, BitStackBlockLayout, Encoding};

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
