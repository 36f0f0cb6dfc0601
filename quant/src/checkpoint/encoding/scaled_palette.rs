//! [`Encoding::ScaledPalette`]: one k-means table per tensor, a 6-bit scale and
//! offset code per block of `group_cols` weights of a row, and packed indices; one
//! resident section laid out as [`ScaledLayout`] says (the fitting lives in
//! [`crate::palette::scaled`]).
//!
//! Added after format version 1 shipped: a file holding one is written as version 2,
//! so a reader that predates it refuses the file by its header instead of by an
//! unknown manifest variant. Version-1 files holding one (written before the bump)
//! still read.

use super::nested_palette::f16s;
use super::{Check, DeviceSource, EncodeTensor, Encoding, Source, TensorEncoding};
use crate::checkpoint::manifest::{BlockEntry, Section};
use crate::dest::Out;
use crate::error::{QuantError, Result};
use crate::gpu::TensorJob;
use crate::palette::nested_decode::{NestedParts, decode_nested_out};
use crate::palette::{ScaledLayout, ScaledPalette};

/// The view of a scaled palette entry.
#[derive(Debug)]
pub(super) struct Scaled {
    pub bits: u8,
    pub group_cols: u32,
    pub data: Section,
}

impl Scaled {
    fn layout(&self, rows: usize, cols: usize) -> Option<ScaledLayout> {
        ScaledLayout::new(rows, cols, self.bits, self.group_cols as usize)
    }
}

impl TensorEncoding<'_> for Scaled {
    fn name(&self) -> &'static str {
        "scaled palette"
    }

    fn min_version(&self) -> u32 {
        2
    }

    fn resident(&self) -> Vec<(Section, &'static str)> {
        vec![(self.data, "scaled palette")]
    }

    fn with_sections(&self, resident: &[Section], _blocks: Vec<BlockEntry>) -> Encoding {
        Encoding::ScaledPalette {
            bits: self.bits,
            group_cols: self.group_cols,
            data: resident.first().copied().unwrap_or(self.data),
        }
    }

    fn validate(&self, t: &Check<'_>) -> Result<()> {
        let (rows, cols) = t.matrix()?;
        let (bits, group_cols) = (self.bits, self.group_cols);
        let layout = self
            .layout(rows, cols)
            .filter(|_| (group_cols as usize) <= cols.max(1));
        if layout.is_none() {
            return Err(t.error(format!(
                "tensor `{}`: scaled palette of {bits} bits, blocks of {group_cols} weights; expected 2..=8 bits and 1..={cols} weights",
                t.name
            )));
        }
        t.section(&self.data, layout.map(|x| x.len), "scaled palette")
    }

    fn rebuild(&self, t: &Source<'_>) -> Result<Vec<f32>> {
        let (rows, cols) = t.matrix();
        let b = t.section(&self.data, "scaled palette")?;
        let layout = self
            .layout(rows, cols)
            .ok_or_else(|| t.error(format!("tensor `{}`: bad scaled palette layout", t.name)))?;
        layout.decode(b)
    }

    /// In place through the nested palette kernel (a scaled palette is a nested one
    /// with no step): the bits of [`Scaled::rebuild`], tested for every fixture.
    fn rebuild_into(&self, t: &Source<'_>, out: Out<'_>) -> Result<()> {
        let (rows, cols) = t.matrix();
        let b = t.section(&self.data, "scaled palette")?;
        let layout = self
            .layout(rows, cols)
            .filter(|l| l.len == b.len())
            .ok_or_else(|| t.error(format!("tensor `{}`: bad scaled palette layout", t.name)))?;
        if out.len() != rows * cols {
            return Err(QuantError::DimMismatch {
                what: "scaled palette output (elements)",
                expected: rows * cols,
                actual: out.len(),
            });
        }
        let part = |(off, len): (usize, usize)| &b[off..off + len];
        let (table, params) = (f16s(part(layout.table)), f16s(part(layout.params)));
        let parts = NestedParts {
            table: &table,
            params: &params,
            codes: part(layout.codes),
            indices: part(layout.indices),
            planes: &[],
            rescale: None,
        };
        decode_nested_out(&layout, &parts, out);
        Ok(())
    }

    /// A nested palette with no step loaded: kernel `nested_palette_decode`.
    fn gpu_job(&self, t: &DeviceSource<'_>) -> Result<TensorJob> {
        let (rows, cols) = t.matrix()?;
        let l = self
            .layout(rows, cols)
            .ok_or_else(|| QuantError::InvalidConfig {
                field: "scaled palette layout",
                reason: format!(
                    "tensor `{}`: bits {}, blocks of {}",
                    t.name, self.bits, self.group_cols
                ),
            })?;
        let base = t.inside(&self.data, l.len as u64, "scaled palette")?;
        Ok(TensorJob::NestedPalette {
            rows,
            cols,
            bits: self.bits,
            group_cols: l.group_cols,
            table_offset: base + l.table.0 as u64,
            params_offset: base + l.params.0 as u64,
            codes_offset: base + l.codes.0 as u64,
            indices_offset: base + l.indices.0 as u64,
            plane_offsets: Vec::new(),
            rescale: None,
        })
    }
}

impl EncodeTensor for ScaledPalette {
    fn dims(&self) -> (Vec<usize>, usize) {
        let l = &self.layout;
        (vec![l.rows, l.cols], l.rows * l.cols)
    }

    fn encode(
        &self,
        name: &str,
        spill: &mut dyn FnMut(&[u8]) -> Result<Section>,
    ) -> Result<Encoding> {
        let l = &self.layout;
        if self.table.len() * 2 != l.table.1
            || self.params.len() * 2 != l.params.1
            || self.codes.len() != l.codes.1
            || self.indices.len() != l.indices.1
        {
            return Err(QuantError::InvalidConfig {
                field: "scaled palette",
                reason: format!(
                    "`{name}` table, parameter, code or index length does not match its layout"
                ),
            });
        }
        let group_cols = u32::try_from(l.group_cols).map_err(|_| QuantError::InvalidConfig {
            field: "group_cols",
            reason: format!("`{name}` block of {} weights exceeds u32", l.group_cols),
        })?;
        Ok(Encoding::ScaledPalette {
            bits: l.bits,
            group_cols,
            data: spill(&self.section_bytes())?,
        })
    }
}
