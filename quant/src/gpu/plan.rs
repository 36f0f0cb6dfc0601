//! What the device rebuild of one budget does, tensor by tensor, as offsets into the
//! file prefix: the host side of the GPU loader, kept free of CUDA so the CPU tests
//! (and [`super::emulate`]) exercise exactly the offsets the kernels receive.

use crate::checkpoint::manifest::BitStackBlockLayout;
use crate::checkpoint::{Budget, Encoding, Reader, Section};
use crate::error::{QuantError, Result};
use crate::palette::PaletteLayout;

/// One tensor's rebuild, with every offset absolute in the file (and so in the
/// device copy of the prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorJob {
    /// Resident f16 values: `numel` halves at `offset`.
    F16 {
        /// Byte offset of the values.
        offset: u64,
        /// Number of values.
        numel: u64,
    },
    /// Resident f32 values: `numel` floats at `offset`.
    F32 {
        /// Byte offset of the values.
        offset: u64,
        /// Number of values.
        numel: u64,
    },
    /// A BitStack matrix: kernel `bitstack_rebuild`.
    BitStack {
        /// Output rows.
        rows: usize,
        /// Input channels.
        cols: usize,
        /// Rank of every block.
        rank: usize,
        /// Byte offset of each loaded block's section, in level order.
        block_offsets: Vec<u64>,
        /// Offset of `u` inside a block section.
        u_off: u64,
        /// Offset of `vt` inside a block section.
        vt_off: u64,
        /// Byte offset of the `cols` f32 scales; `None` = all ones.
        scales_offset: Option<u64>,
    },
    /// A palette: kernel `palette_decode`.
    Palette {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// Bits per index.
        bits: u8,
        /// Rows per lookup table.
        group_rows: usize,
        /// Byte offset of the f16 tables.
        luts_offset: u64,
        /// Byte offset of the packed index rows.
        indices_offset: u64,
    },
}

/// A tensor's name, shape and job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTensor {
    /// Manifest name.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// How to rebuild it.
    pub job: TensorJob,
}

impl PlannedTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Plans the device rebuild of every tensor of `reader`'s manifest at `budget`.
///
/// First checksums every section the budget needs ([`Reader::verify`]): the device
/// reads raw bytes, so corruption must be caught on the host. Then checks that every
/// section lies inside the budget's prefix and has its layout's length, so a kernel
/// never reads past the copied bytes.
pub fn plan_budget(reader: &Reader<'_>, budget: &Budget) -> Result<Vec<PlannedTensor>> {
    reader.verify(budget)?;
    let m = reader.manifest();
    let prefix = budget.prefix_len.min(reader.available());
    let inside = |s: &Section, expected: u64, what: &str, name: &str| -> Result<u64> {
        if s.len != expected {
            return Err(QuantError::DimMismatch {
                what: "section length (bytes) for the device rebuild",
                expected: usize::try_from(expected).unwrap_or(usize::MAX),
                actual: usize::try_from(s.len).unwrap_or(usize::MAX),
            });
        }
        if s.end() > prefix {
            return Err(QuantError::InvalidConfig {
                field: "budget.prefix_len",
                reason: format!(
                    "tensor `{name}` {what} ends at {}, past the {prefix}-byte prefix",
                    s.end()
                ),
            });
        }
        Ok(s.offset)
    };
    let mut out = Vec::with_capacity(m.tensors.len());
    for (t, entry) in m.tensors.iter().enumerate() {
        let name = entry.name.as_str();
        let shape: Vec<usize> = entry.shape.iter().map(|&d| d as usize).collect();
        let numel = entry.numel();
        let matrix = || -> Result<(usize, usize)> {
            match shape.as_slice() {
                &[r, c] => Ok((r, c)),
                _ => Err(QuantError::InvalidConfig {
                    field: "shape",
                    reason: format!("tensor `{name}` must be 2-D, has shape {shape:?}"),
                }),
            }
        };
        let job = match &entry.encoding {
            Encoding::F16 { data } => TensorJob::F16 {
                offset: inside(data, numel.saturating_mul(2), "data", name)?,
                numel,
            },
            Encoding::F32 { data } => TensorJob::F32 {
                offset: inside(data, numel.saturating_mul(4), "data", name)?,
                numel,
            },
            Encoding::Palette {
                bits,
                group_rows,
                data,
            } => {
                let (rows, cols) = matrix()?;
                let layout = PaletteLayout::new(rows, cols, *bits, *group_rows as usize)
                    .ok_or_else(|| QuantError::InvalidConfig {
                        field: "palette layout",
                        reason: format!("tensor `{name}`: bits {bits}, group {group_rows}"),
                    })?;
                let base = inside(data, layout.len as u64, "palette", name)?;
                TensorJob::Palette {
                    rows,
                    cols,
                    bits: *bits,
                    group_rows: layout.group_rows,
                    luts_offset: base + layout.luts.0 as u64,
                    indices_offset: base + layout.indices.0 as u64,
                }
            }
            Encoding::ScaledPalette { .. } => {
                return Err(QuantError::InvalidConfig {
                    field: "encoding",
                    reason: format!(
                        "tensor `{name}` is a scaled palette, which the GPU loader does not rebuild yet; load it with the CPU loader (candle_load) and move the tensors"
                    ),
                });
            }
            Encoding::BitStack {
                rank,
                scales,
                blocks,
            } => {
                let (rows, cols) = matrix()?;
                let rank = *rank as usize;
                let layout = BitStackBlockLayout::new(rows, cols, rank).ok_or_else(|| {
                    QuantError::InvalidConfig {
                        field: "block layout",
                        reason: format!("tensor `{name}`: {rows} x {cols}, rank {rank}"),
                    }
                })?;
                let n = budget.blocks_per_matrix.get(t).copied().unwrap_or(0) as usize;
                if n == 0 || n > blocks.len() {
                    return Err(QuantError::InvalidConfig {
                        field: "budget.blocks_per_matrix",
                        reason: format!(
                            "tensor `{name}` has {} blocks, the budget asks for {n}",
                            blocks.len()
                        ),
                    });
                }
                let block_offsets = blocks[..n]
                    .iter()
                    .map(|b| inside(&b.section, layout.len as u64, "block", name))
                    .collect::<Result<Vec<u64>>>()?;
                let scales_offset = scales
                    .as_ref()
                    .map(|s| inside(s, cols as u64 * 4, "scales", name))
                    .transpose()?;
                TensorJob::BitStack {
                    rows,
                    cols,
                    rank,
                    block_offsets,
                    u_off: layout.u.0 as u64,
                    vt_off: layout.vt.0 as u64,
                    scales_offset,
                }
            }
        };
        out.push(PlannedTensor {
            name: entry.name.clone(),
            shape,
            job,
        });
    }
    Ok(out)
}
