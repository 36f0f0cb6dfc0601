//! [`Encoding::Palette`]: k-means lookup tables per group of rows and packed `b`-bit
//! indices, one resident section laid out as [`PaletteLayout`] says (eDKM, arXiv
//! 2309.00964; the clustering lives in [`crate::palette`]).

use super::{Check, DeviceSource, EncodeTensor, Encoding, Source, TensorEncoding};
use crate::checkpoint::manifest::{BlockEntry, Section};
use crate::error::{QuantError, Result};
use crate::gpu::TensorJob;
use crate::palette::{PaletteLayout, PaletteTensor};

/// The view of a palette entry.
#[derive(Debug)]
pub(super) struct Palette {
    pub bits: u8,
    pub group_rows: u32,
    pub data: Section,
}

impl Palette {
    fn layout(&self, rows: usize, cols: usize) -> Option<PaletteLayout> {
        PaletteLayout::new(rows, cols, self.bits, self.group_rows as usize)
    }
}

impl TensorEncoding<'_> for Palette {
    fn name(&self) -> &'static str {
        "palette"
    }

    fn resident(&self) -> Vec<(Section, &'static str)> {
        vec![(self.data, "palette")]
    }

    fn with_sections(&self, resident: &[Section], _blocks: Vec<BlockEntry>) -> Encoding {
        Encoding::Palette {
            bits: self.bits,
            group_rows: self.group_rows,
            data: resident.first().copied().unwrap_or(self.data),
        }
    }

    fn validate(&self, t: &Check<'_>) -> Result<()> {
        let (rows, cols) = t.matrix()?;
        let (bits, group_rows) = (self.bits, self.group_rows);
        let layout = self
            .layout(rows, cols)
            .filter(|_| (2..=8).contains(&bits) && (group_rows as usize) <= rows.max(1));
        if layout.is_none() {
            return Err(t.error(format!(
                "tensor `{}`: palette of {bits} bits, groups of {group_rows} rows; expected 2..=8 bits and 1..={rows} rows",
                t.name
            )));
        }
        t.section(&self.data, layout.map(|x| x.len), "palette")
    }

    fn rebuild(&self, t: &Source<'_>) -> Result<Vec<f32>> {
        let (rows, cols) = t.matrix();
        let b = t.section(&self.data, "palette")?;
        // The manifest was validated, so the layout exists and matches `b`.
        let layout = self
            .layout(rows, cols)
            .ok_or_else(|| t.error(format!("tensor `{}`: bad palette layout", t.name)))?;
        layout.decode(b)
    }

    fn gpu_job(&self, t: &DeviceSource<'_>) -> Result<TensorJob> {
        let (rows, cols) = t.matrix()?;
        let layout = self
            .layout(rows, cols)
            .ok_or_else(|| QuantError::InvalidConfig {
                field: "palette layout",
                reason: format!(
                    "tensor `{}`: bits {}, group {}",
                    t.name, self.bits, self.group_rows
                ),
            })?;
        let base = t.inside(&self.data, layout.len as u64, "palette")?;
        Ok(TensorJob::Palette {
            rows,
            cols,
            bits: self.bits,
            group_rows: layout.group_rows,
            luts_offset: base + layout.luts.0 as u64,
            indices_offset: base + layout.indices.0 as u64,
        })
    }
}

impl EncodeTensor for PaletteTensor {
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
        if self.luts.len() * 2 != l.luts.1 || self.indices.len() != l.indices.1 {
            return Err(QuantError::InvalidConfig {
                field: "palette",
                reason: format!("`{name}` table or index length does not match its layout"),
            });
        }
        let group_rows = u32::try_from(l.group_rows).map_err(|_| QuantError::InvalidConfig {
            field: "group_rows",
            reason: format!("`{name}` group of {} rows exceeds u32", l.group_rows),
        })?;
        Ok(Encoding::Palette {
            bits: l.bits,
            group_rows,
            data: spill(&self.section_bytes())?,
        })
    }
}
