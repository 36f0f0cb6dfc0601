//! How a tensor is stored: the [`Encoding`] enum that goes into the manifest, and one
//! file per encoding behind the [`TensorEncoding`] trait.
//!
//! | variant | file | resident sections | blocks | since |
//! |---|---|---|---|---|
//! | [`Encoding::F16`], [`Encoding::F32`] | `dense.rs` | the values | - | v1 |
//! | [`Encoding::BitStack`] | `bitstack.rs` | per-channel scales (optional) | one per level, in the global order | v1 |
//! | [`Encoding::Palette`] | `palette.rs` | tables then packed indices | - | v1 |
//! | [`Encoding::ScaledPalette`] | `scaled_palette.rs` | table, row parameters, block codes, indices | - | v2 |
//! | [`Encoding::NestedPalette`] | `nested_palette.rs` | a scaled palette base | one per extra bit (table, bit plane), in the global order | v3 |
//! | [`Encoding::RescaledNestedPalette`] | `nested_palette.rs` | a scaled palette base | one per extra bit (table, bit plane, block corrections), in the global order | v4 |
//! | [`Encoding::LeanNestedPalette`] | `nested_palette.rs` | a scaled palette base | one per extra bit (table, bit plane, block corrections where the step has them), in the global order | v5 |
//! | [`Encoding::MixedNestedPalette`] | `nested_palette.rs` | a scaled palette base | as v5, each correction of its own code width | v6 |
//!
//! Everything else in the checkpoint code (layout, validation, reading, budgets, the
//! GPU plan) and in `octet weights` (inspect, plan, repack) goes through the trait: it
//! knows sections, blocks and budgets, never a variant. Adding an encoding is a new
//! file implementing [`TensorEncoding`] (how it validates, rebuilds on the CPU,
//! which GPU job it runs, which format version it needs) and [`EncodeTensor`] (how the
//! writer lays it out), plus its variant and its arm in [`Encoding::view`] here.
//!
//! The enum's shape is part of the file format: rkyv archives a variant's fields
//! inline after its tag, so a variant's fields (names aside) and the variants' order
//! never change; new encodings are appended. An appended variant must also be no
//! larger than the largest existing one: the archived enum is as large as its
//! largest variant, and a larger one moves every older manifest's layout, so v1-v3
//! files stop reading (the committed fixtures' tests catch it). Put what does not
//! fit in a `Vec`, as [`Encoding::RescaledNestedPalette`] does with its resident
//! sections.

mod bitstack;
mod dense;
mod nested_palette;
mod palette;
mod scaled_palette;

use std::path::Path;

pub use bitstack::BitStackBlockLayout;
pub use dense::{DenseTensor, DenseType};
pub use nested_palette::NestedStepLayout;

pub(crate) use super::align_usize;
use super::manifest::{BlockEntry, Section};
use super::{ALIGN, format_err};
use crate::dest::Out;
use crate::error::{QuantError, Result};
use crate::gpu::TensorJob;

pub use variants::{ArchivedEncoding, Encoding};

/// rkyv's derive leaves the fields of the resolver it generates for an enum with
/// named fields undocumented; this module confines the allowance to that enum, whose
/// own items are all documented.
mod variants {
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
        /// out as [`crate::palette::ScaledLayout`] says. Format version 2.
        ScaledPalette {
            /// Bits per index (2..=8).
            bits: u8,
            /// Weights per block along a row.
            group_cols: u32,
            /// Table, row parameters, block codes, then packed indices.
            data: Section,
        },
        /// A nested scaled palette (`shape = [rows, cols]`): a scaled palette base of
        /// `bits` bits, always loaded, and refinement steps loaded in the global
        /// order, step `l` raising the tensor to `bits + l + 1` bits. Format version 3.
        NestedPalette {
            /// Bits per index of the base (2..=8).
            bits: u8,
            /// Weights per block along a row.
            group_cols: u32,
            /// The base, laid out as [`crate::palette::ScaledLayout`] says.
            base: Section,
            /// Refinement steps in order, laid out as [`super::NestedStepLayout`]
            /// says; where each lies in the file follows the global order.
            steps: Vec<BlockEntry>,
        },
        /// A rescaled nested palette (`shape = [rows, cols]`): a nested palette whose
        /// every step also corrects the base's block scales and offsets for its
        /// width ([`crate::palette::rescaled`]). Format version 4.
        RescaledNestedPalette {
            /// Bits per index of the base (2..=8).
            bits: u8,
            /// Weights per block along a row.
            group_cols: u32,
            /// Bits of each block's correction code in every step (1..=8).
            rescale_bits: u8,
            /// The resident sections: the base, laid out as
            /// [`crate::palette::ScaledLayout`] says, then (a palette fitted above its
            /// base width) the base's own correction, used when no step is loaded,
            /// laid out as [`super::NestedStepLayout::base_rescale`] says. One
            /// vector rather than two fields keeps the archived enum no larger than
            /// before this variant (its size is part of every older file's layout).
            resident: Vec<Section>,
            /// Refinement steps in order, laid out as
            /// [`super::NestedStepLayout::rescaled`] says; where each lies in the
            /// file follows the global order.
            steps: Vec<BlockEntry>,
        },
        /// A rescaled nested palette some of whose steps carry no block correction
        /// and keep the last loaded step's ([`crate::palette::Corrections`]). The
        /// same fields as [`Encoding::RescaledNestedPalette`] (so the archived enum
        /// keeps its size); a step's section is laid out as
        /// [`super::NestedStepLayout::rescaled`] or, without a correction, as
        /// [`super::NestedStepLayout::new`], told apart by its length. Format
        /// version 5.
        LeanNestedPalette {
            /// Bits per index of the base (2..=8).
            bits: u8,
            /// Weights per block along a row.
            group_cols: u32,
            /// Bits of each block's correction code wherever there is one (1..=8).
            rescale_bits: u8,
            /// The base, then (a palette fitted above its base width) the base's own
            /// correction, as in [`Encoding::RescaledNestedPalette`].
            resident: Vec<Section>,
            /// Refinement steps in order; where each lies in the file follows the
            /// global order.
            steps: Vec<BlockEntry>,
        },
        /// A rescaled nested palette whose corrections have their own code widths
        /// (the steps above the fit width wider than those below, say): a step's
        /// section is laid out as [`super::NestedStepLayout::rescaled`] with its
        /// width or, with width 0, as [`super::NestedStepLayout::new`]; otherwise
        /// as [`Encoding::LeanNestedPalette`]. Format version 6.
        MixedNestedPalette {
            /// Bits per index of the base (2..=8).
            bits: u8,
            /// Weights per block along a row.
            group_cols: u32,
            /// The code width of every correction (0: none, else 1..=8): the
            /// base's own first, then one per step, so `steps.len() + 1` of them.
            rescale_bits: Vec<u8>,
            /// The base, then (`rescale_bits[0]` above 0) the base's own
            /// correction, as in [`Encoding::RescaledNestedPalette`].
            resident: Vec<Section>,
            /// Refinement steps in order; where each lies in the file follows the
            /// global order.
            steps: Vec<BlockEntry>,
        },
    }
}

impl Encoding {
    /// This entry's parameters as the implementation of its encoding.
    pub fn view(&self) -> Box<dyn TensorEncoding<'_> + '_> {
        match self {
            Encoding::F16 { data } => Box::new(dense::Dense {
                dtype: DenseType::F16,
                data: *data,
            }),
            Encoding::F32 { data } => Box::new(dense::Dense {
                dtype: DenseType::F32,
                data: *data,
            }),
            Encoding::BitStack {
                rank,
                scales,
                blocks,
            } => Box::new(bitstack::BitStack {
                rank: *rank,
                scales: *scales,
                blocks,
            }),
            Encoding::Palette {
                bits,
                group_rows,
                data,
            } => Box::new(palette::Palette {
                bits: *bits,
                group_rows: *group_rows,
                data: *data,
            }),
            Encoding::ScaledPalette {
                bits,
                group_cols,
                data,
            } => Box::new(scaled_palette::Scaled {
                bits: *bits,
                group_cols: *group_cols,
                data: *data,
            }),
            Encoding::NestedPalette {
                bits,
                group_cols,
                base,
                steps,
            } => Box::new(nested_palette::Nested {
                bits: *bits,
                group_cols: *group_cols,
                rescale_bits: None,
                widths: None,
                lean: false,
                base: *base,
                base_rescale: None,
                resident_count: 1,
                steps,
            }),
            Encoding::RescaledNestedPalette {
                bits,
                group_cols,
                rescale_bits,
                resident,
                steps,
            }
            | Encoding::LeanNestedPalette {
                bits,
                group_cols,
                rescale_bits,
                resident,
                steps,
            } => Box::new(nested_palette::Nested::rescaled(
                (*bits, *group_cols),
                Some(*rescale_bits),
                None,
                matches!(self, Encoding::LeanNestedPalette { .. }),
                resident,
                steps,
            )),
            Encoding::MixedNestedPalette {
                bits,
                group_cols,
                rescale_bits,
                resident,
                steps,
            } => Box::new(nested_palette::Nested::rescaled(
                (*bits, *group_cols),
                // The widest, as the family's; each step's own is in `widths`.
                rescale_bits.iter().copied().max(),
                Some(rescale_bits),
                true,
                resident,
                steps,
            )),
        }
    }

    /// The encoding's display name: `f16`, `f32`, `bitstack`, `palette`, `scaled palette`.
    pub fn name(&self) -> &'static str {
        self.view().name()
    }

    /// Whether the tensor is stored compressed (counted in compressed bits per weight).
    pub fn is_compressed(&self) -> bool {
        self.view().is_compressed()
    }

    /// Whether the tensor loads progressively, block by block in the global order.
    pub fn has_blocks(&self) -> bool {
        self.view().has_blocks()
    }

    /// Whether every budget must load at least one of its blocks (a BitStack tensor
    /// with none rebuilds as zero; a nested palette's base stands alone).
    pub fn needs_a_block(&self) -> bool {
        self.view().needs_a_block()
    }

    /// The oldest format version that can hold this encoding.
    pub fn min_version(&self) -> u32 {
        self.view().min_version()
    }

    /// The always-loaded sections, in file order, with the word errors name them by.
    pub fn resident(&self) -> Vec<(Section, &'static str)> {
        self.view().resident()
    }

    /// The blocks in level order (empty unless [`Encoding::has_blocks`]).
    pub fn blocks(&self) -> &[BlockEntry] {
        self.view().blocks()
    }

    /// Bytes of this tensor's sections loaded with its first `n_blocks` blocks.
    pub fn loaded_bytes(&self, n_blocks: usize) -> u64 {
        let resident: u64 = self.resident().iter().map(|(s, _)| s.len).sum();
        resident
            + self
                .blocks()
                .iter()
                .take(n_blocks)
                .map(|b| b.section.len)
                .sum::<u64>()
    }

    /// The same encoding with every section moved by `f`.
    pub(crate) fn map_sections(&self, mut f: impl FnMut(&Section) -> Section) -> Encoding {
        let v = self.view();
        let resident: Vec<Section> = v.resident().iter().map(|(s, _)| f(s)).collect();
        let blocks = self
            .blocks()
            .iter()
            .map(|b| BlockEntry {
                section: f(&b.section),
                importance: b.importance,
            })
            .collect();
        v.with_sections(&resident, blocks)
    }
}

/// Block count of an archived (not yet deserialized) encoding, to cap it before
/// anything is allocated. The one look at variants outside [`Encoding::view`]: the
/// archive is not deserialized yet, so there is no view; an encoding without blocks
/// needs nothing here.
pub(crate) fn archived_block_count(e: &ArchivedEncoding) -> usize {
    match e {
        ArchivedEncoding::BitStack { blocks, .. } => blocks.len(),
        ArchivedEncoding::NestedPalette { steps, .. } => steps.len(),
        ArchivedEncoding::RescaledNestedPalette { steps, .. } => steps.len(),
        ArchivedEncoding::LeanNestedPalette { steps, .. } => steps.len(),
        ArchivedEncoding::MixedNestedPalette { steps, .. } => steps.len(),
        ArchivedEncoding::F16 { .. }
        | ArchivedEncoding::F32 { .. }
        | ArchivedEncoding::Palette { .. }
        | ArchivedEncoding::ScaledPalette { .. } => 0,
    }
}

/// The length of the manifest's per-step list of correction widths
/// ([`Encoding::MixedNestedPalette`]), 0 for every other encoding: capped at one
/// more than the block cap before anything is deserialized.
pub(crate) fn archived_width_count(e: &ArchivedEncoding) -> usize {
    match e {
        ArchivedEncoding::MixedNestedPalette { rescale_bits, .. } => rescale_bits.len(),
        _ => 0,
    }
}

/// What one encoding does: everything the checkpoint code needs to know about it.
///
/// Implemented by a borrowed view of an [`Encoding`] variant's parameters (see
/// [`Encoding::view`]).
pub trait TensorEncoding<'a>: std::fmt::Debug {
    /// Display name (`inspect`, `plan`, error messages).
    fn name(&self) -> &'static str;

    /// Whether the tensor is stored compressed; dense tensors are not.
    fn is_compressed(&self) -> bool {
        true
    }

    /// Whether the tensor has blocks that load progressively in the global order.
    fn has_blocks(&self) -> bool {
        false
    }

    /// Whether every budget loads at least the first block (the manifest's
    /// `min_blocks` covers it); only meaningful with blocks.
    fn needs_a_block(&self) -> bool {
        self.has_blocks()
    }

    /// The oldest format version that can hold this encoding; the writer stamps the
    /// largest over all tensors. A new encoding bumps [`crate::checkpoint::VERSION`]
    /// and returns it here, so older readers refuse the file by its header instead
    /// of by an unknown manifest variant.
    fn min_version(&self) -> u32 {
        1
    }

    /// The sections every budget loads, in file order, each with the word errors
    /// name it by (`tensor `x` data`).
    fn resident(&self) -> Vec<(Section, &'static str)>;

    /// The blocks in level order (none unless [`TensorEncoding::has_blocks`]).
    fn blocks(&self) -> &'a [BlockEntry] {
        &[]
    }

    /// The same parameters with new sections: `resident` in the order of
    /// [`TensorEncoding::resident`], `blocks` in level order.
    fn with_sections(&self, resident: &[Section], blocks: Vec<BlockEntry>) -> Encoding;

    /// Checks the parameters against the shape and every section (placement and
    /// length); the caller then checks that resident sections do not overlap.
    fn validate(&self, t: &Check<'_>) -> Result<()>;

    /// Rebuilds the tensor as row-major f32 from the sections `t` reads.
    fn rebuild(&self, t: &Source<'_>) -> Result<Vec<f32>>;

    /// [`TensorEncoding::rebuild`] into `out` (exactly the tensor's element count),
    /// for the loader's one buffer per budget, each value rounded to nearest even
    /// when `out` holds f16 or bf16 ([`crate::dest`]): the same bits as
    /// rebuilding in f32 and converting. By default a rebuild and a conversion;
    /// encodings on the loader's hot path write in place.
    fn rebuild_into(&self, t: &Source<'_>, out: Out<'_>) -> Result<()> {
        let v = self.rebuild(t)?;
        if v.len() != out.len() {
            return Err(QuantError::DimMismatch {
                what: "rebuilt tensor (elements)",
                expected: out.len(),
                actual: v.len(),
            });
        }
        out.fill_from_f32(&v);
        Ok(())
    }

    /// The device job rebuilding this tensor (offsets absolute in the file prefix).
    /// By default the GPU loader refuses the tensor and points to the CPU loader.
    fn gpu_job(&self, t: &DeviceSource<'_>) -> Result<TensorJob> {
        Err(QuantError::InvalidConfig {
            field: "encoding",
            reason: format!(
                "tensor `{}` is a {}, which the GPU loader does not rebuild yet; load it with the CPU loader (candle_load) and move the tensors",
                t.name,
                self.name()
            ),
        })
    }
}

/// A tensor the writer can store: an encoding's in-memory form.
pub trait EncodeTensor {
    /// The tensor's shape and the number of values it holds (checked to agree).
    fn dims(&self) -> (Vec<usize>, usize);

    /// Validates the tensor and writes its sections through `spill`, which returns
    /// where each landed; returns the encoding describing them. `name` is for errors.
    fn encode(
        &self,
        name: &str,
        spill: &mut dyn FnMut(&[u8]) -> Result<Section>,
    ) -> Result<Encoding>;
}

/// A tensor entry being validated, with the file bounds its sections must lie in.
#[derive(Debug)]
pub struct Check<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Shape from the manifest.
    pub shape: &'a [u64],
    /// Elements (the shape's product, already checked).
    pub numel: usize,
    pub(crate) data_start: u64,
    pub(crate) file_len: u64,
    pub(crate) src: &'a Path,
}

impl Check<'_> {
    /// A format error naming the file.
    pub fn error(&self, reason: impl Into<String>) -> QuantError {
        format_err(self.src, reason)
    }

    /// `(rows, cols)`, or an error for a tensor that is not 2-D.
    pub fn matrix(&self) -> Result<(usize, usize)> {
        match self.shape {
            [r, c] => Ok((*r as usize, *c as usize)),
            _ => Err(self.error(format!(
                "tensor `{}`: shape {:?}, expected 2 dims",
                self.name, self.shape
            ))),
        }
    }

    /// Checks that `s` is aligned, starts after the manifest, ends in the file, and
    /// has length `want` (`None`: a layout that overflowed). `what` names the part.
    pub fn section(&self, s: &Section, want: Option<usize>, what: &str) -> Result<()> {
        let what = || format!("tensor `{}` {what}", self.name);
        let end = s.offset.checked_add(s.len);
        if !s.offset.is_multiple_of(ALIGN as u64)
            || s.offset < self.data_start
            || end.is_none_or(|e| e > self.file_len)
        {
            return Err(self.error(format!(
                "{}: section at {} of {} bytes, expected a multiple of {ALIGN} within [{}, {})",
                what(),
                s.offset,
                s.len,
                self.data_start,
                self.file_len
            )));
        }
        if want.map(|w| w as u64) != Some(s.len) {
            let want = want.map_or("a length that fits in memory".to_string(), |w| {
                w.to_string()
            });
            return Err(self.error(format!(
                "{}: section length {}, expected {want}",
                what(),
                s.len
            )));
        }
        Ok(())
    }
}

/// A tensor being rebuilt: its name, shape, how many blocks the budget loads, and
/// checksummed access to the sections below the budget's prefix.
#[derive(Debug)]
pub struct Source<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Shape from the (validated) manifest.
    pub shape: &'a [u64],
    /// Blocks the budget loads of this tensor.
    pub n_blocks: usize,
    pub(crate) prefix: &'a [u8],
    pub(crate) src: &'a Path,
}

impl<'a> Source<'a> {
    /// The bytes of `s`, checked to lie below the prefix and checksummed; `what`
    /// names the part in errors.
    pub fn section(&self, s: &Section, what: &str) -> Result<&'a [u8]> {
        let what = || format!("tensor `{}` {what}", self.name);
        let range = usize::try_from(s.offset)
            .ok()
            .zip(usize::try_from(s.end()).ok())
            .filter(|&(_, end)| end <= self.prefix.len());
        let Some((start, end)) = range else {
            return Err(self.error(format!(
                "{}: section [{}, {}) lies beyond the {} bytes of the prefix",
                what(),
                s.offset,
                s.end(),
                self.prefix.len()
            )));
        };
        let b = &self.prefix[start..end];
        let crc = crc32c::crc32c(b);
        if crc != s.crc32c {
            return Err(self.error(format!(
                "{}: checksum mismatch: stored crc32c {:#010x}, computed {crc:#010x}",
                what(),
                s.crc32c
            )));
        }
        Ok(b)
    }

    /// `(rows, cols)` of a validated 2-D tensor.
    pub fn matrix(&self) -> (usize, usize) {
        (
            self.shape.first().copied().unwrap_or(0) as usize,
            self.shape.get(1).copied().unwrap_or(1) as usize,
        )
    }

    /// A format error naming the file.
    pub fn error(&self, reason: impl Into<String>) -> QuantError {
        format_err(self.src, reason)
    }
}

/// A tensor being planned for the device: offsets must lie inside the prefix the
/// device receives.
#[derive(Debug)]
pub struct DeviceSource<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Shape.
    pub shape: &'a [usize],
    /// Elements.
    pub numel: u64,
    /// Blocks the budget loads of this tensor.
    pub n_blocks: usize,
    /// Bytes the device holds: the budget's prefix.
    pub prefix: u64,
}

impl DeviceSource<'_> {
    /// `(rows, cols)`, or an error for a tensor that is not 2-D.
    pub fn matrix(&self) -> Result<(usize, usize)> {
        match self.shape {
            &[r, c] => Ok((r, c)),
            _ => Err(QuantError::InvalidConfig {
                field: "shape",
                reason: format!(
                    "tensor `{}` must be 2-D, has shape {:?}",
                    self.name, self.shape
                ),
            }),
        }
    }

    /// The offset of `s` after checking it has `expected` bytes and ends inside the
    /// prefix, so a kernel never reads past the copied bytes.
    pub fn inside(&self, s: &Section, expected: u64, what: &str) -> Result<u64> {
        if s.len != expected {
            return Err(QuantError::DimMismatch {
                what: "section length (bytes) for the device rebuild",
                expected: usize::try_from(expected).unwrap_or(usize::MAX),
                actual: usize::try_from(s.len).unwrap_or(usize::MAX),
            });
        }
        if s.end() > self.prefix {
            return Err(QuantError::InvalidConfig {
                field: "budget.prefix_len",
                reason: format!(
                    "tensor `{}` {what} ends at {}, past the {}-byte prefix",
                    self.name,
                    s.end(),
                    self.prefix
                ),
            });
        }
        Ok(s.offset)
    }
}

/// Little-endian f32 values.
pub(crate) fn f32_le(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
