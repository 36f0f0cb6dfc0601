//! What the device rebuild of one budget does, tensor by tensor, as offsets into the
//! file prefix: the host side of the GPU loader, kept free of CUDA so the CPU tests
//! (and [`super::emulate`]) exercise exactly the offsets the kernels receive.

use crate::checkpoint::encoding::DeviceSource;
use crate::checkpoint::{Budget, Reader};
use crate::error::Result;

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
    /// A scaled palette, or a nested one with its loaded refinement steps (a scaled
    /// palette is a nested one with none): kernel `nested_palette_decode`.
    NestedPalette {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// Bits per base index.
        bits: u8,
        /// Weights per block along a row.
        group_cols: usize,
        /// Byte offset of the f16 table looked up: the last loaded step's
        /// (`2^(bits + steps)` entries), or the base's with no step.
        table_offset: u64,
        /// Byte offset of the `rows` f16 pairs `[d, m]`.
        params_offset: u64,
        /// Byte offset of the packed 6-bit block scale and offset codes.
        codes_offset: u64,
        /// Byte offset of the packed base index rows.
        indices_offset: u64,
        /// Byte offset of each loaded step's bit plane, in step order.
        plane_offsets: Vec<u64>,
        /// The block correction applied: the last loaded step's, or the base's own
        /// with no step loaded; `None` for palettes without corrections.
        rescale: Option<RescaleJob>,
    },
}

/// Where one per-block correction of a rescaled nested palette lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RescaleJob {
    /// Bits per block code.
    pub bits: u8,
    /// Byte offset of the `2^bits` f16 pairs `[f, g]`.
    pub entries_offset: u64,
    /// Byte offset of the packed code rows.
    pub codes_offset: u64,
}

/// A tensor's name, shape and job (each encoding makes its own:
/// [`crate::checkpoint::TensorEncoding::gpu_job`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTensor {
    /// Manifest name.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// How to rebuild it.
    pub job: TensorJob,
}

impl DeviceTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The device rebuild job of every tensor of `reader`'s manifest at `budget`.
///
/// First checksums every section the budget needs ([`Reader::verify`]): the device
/// reads raw bytes, so corruption must be caught on the host. Then checks that every
/// section lies inside the budget's prefix and has its layout's length, so a kernel
/// never reads past the copied bytes.
pub fn device_jobs(reader: &Reader<'_>, budget: &Budget) -> Result<Vec<DeviceTensor>> {
    reader.verify(budget)?;
    let m = reader.manifest();
    let prefix = budget.prefix_len.min(reader.available());
    let mut out = Vec::with_capacity(m.tensors.len());
    for (t, entry) in m.tensors.iter().enumerate() {
        let shape: Vec<usize> = entry.shape.iter().map(|&d| d as usize).collect();
        let job = entry.encoding.view().gpu_job(&DeviceSource {
            name: &entry.name,
            shape: &shape,
            numel: entry.numel(),
            n_blocks: budget.blocks_per_matrix.get(t).copied().unwrap_or(0) as usize,
            prefix,
        })?;
        out.push(DeviceTensor {
            name: entry.name.clone(),
            shape,
            job,
        });
    }
    Ok(out)
}
