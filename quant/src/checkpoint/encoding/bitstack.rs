//! [`Encoding::BitStack`]: a matrix as residual blocks of packed signs and low-rank
//! f16 factors, loaded progressively (arXiv 2410.23918; DESIGN.md, "BitStack").
//!
//! Its optional per-input-channel scales are resident; each block is its own section,
//! placed in the file in the global importance order, laid out as
//! [`BitStackBlockLayout`] says. The arithmetic (decomposition, [`Rebuilder`]) lives in
//! [`crate::bitstack`]; this file owns the bytes.

use half::f16;

use super::{
    Check, DeviceSource, EncodeTensor, Encoding, Source, TensorEncoding, align_usize, f32_le,
};
use crate::bitstack::{BitStackBlock, BitStackMatrix, MAX_LEVELS, Rebuilder, sign_row_bytes};
use crate::checkpoint::manifest::{BlockEntry, Section};
use crate::error::{QuantError, Result};
use crate::gpu::TensorJob;

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

    /// `(signs, u, vt)` of a section of [`BitStackBlockLayout::len`] bytes, the
    /// factors widened to f32.
    ///
    /// # Panics
    /// If `section` is shorter than the layout.
    pub fn parse<'b>(&self, section: &'b [u8]) -> (&'b [u8], Vec<f32>, Vec<f32>) {
        let part = |(o, l): (usize, usize)| &section[o..o + l];
        (
            part(self.signs),
            f16_le(part(self.u)),
            f16_le(part(self.vt)),
        )
    }

    /// Writes `b` into `buf` ([`BitStackBlockLayout::len`] bytes, zero padding).
    fn write(&self, b: &BitStackBlock, buf: &mut [u8]) {
        buf.fill(0);
        buf[..self.signs.1].copy_from_slice(&b.signs);
        put_f16(&mut buf[self.u.0..self.u.0 + self.u.1], &b.u);
        put_f16(&mut buf[self.vt.0..self.vt.0 + self.vt.1], &b.vt);
    }
}

fn f16_le(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect()
}

fn put_f16(dst: &mut [u8], src: &[f16]) {
    for (c, v) in dst.chunks_exact_mut(2).zip(src) {
        c.copy_from_slice(&v.to_le_bytes());
    }
}

fn invalid(field: &'static str, reason: String) -> QuantError {
    QuantError::InvalidConfig { field, reason }
}

/// The view of a BitStack entry.
#[derive(Debug)]
pub(super) struct BitStack<'a> {
    pub rank: u32,
    pub scales: Option<Section>,
    pub blocks: &'a [BlockEntry],
}

impl<'a> TensorEncoding<'a> for BitStack<'a> {
    fn name(&self) -> &'static str {
        "bitstack"
    }

    fn has_blocks(&self) -> bool {
        true
    }

    fn resident(&self) -> Vec<(Section, &'static str)> {
        self.scales.iter().map(|s| (*s, "scales")).collect()
    }

    fn blocks(&self) -> &'a [BlockEntry] {
        self.blocks
    }

    fn with_sections(&self, resident: &[Section], blocks: Vec<BlockEntry>) -> Encoding {
        Encoding::BitStack {
            rank: self.rank,
            scales: self.scales.and(resident.first().copied()),
            blocks,
        }
    }

    fn validate(&self, t: &Check<'_>) -> Result<()> {
        let (rows, cols) = t.matrix()?;
        let rank = self.rank as usize;
        if rank == 0 || rank > rows.min(cols) || self.blocks.is_empty() {
            return Err(t.error(format!(
                "tensor `{}`: rank {rank} with {} blocks, expected rank 1..={} and at least one block",
                t.name,
                self.blocks.len(),
                rows.min(cols)
            )));
        }
        if let Some(s) = &self.scales {
            t.section(s, cols.checked_mul(4), "scales")?;
        }
        let layout = BitStackBlockLayout::new(rows, cols, rank);
        for (l, b) in self.blocks.iter().enumerate() {
            t.section(&b.section, layout.map(|x| x.len), &format!("block {l}"))?;
        }
        Ok(())
    }

    fn rebuild(&self, t: &Source<'_>) -> Result<Vec<f32>> {
        let ((rows, cols), rank, name) = (t.matrix(), self.rank as usize, t.name);
        let n = t.n_blocks;
        if n > self.blocks.len() {
            return Err(invalid(
                "budget.blocks_per_matrix",
                format!(
                    "tensor `{name}` has {} blocks, the budget asks for {n}",
                    self.blocks.len()
                ),
            ));
        }
        let layout = BitStackBlockLayout::new(rows, cols, rank)
            .ok_or_else(|| t.error(format!("tensor `{name}`: bad block layout")))?;
        let scales = match &self.scales {
            Some(s) => Some(f32_le(t.section(s, "scales")?)),
            None => None,
        };
        if n == 0 {
            return Err(invalid(
                "budget.blocks_per_matrix",
                format!("the budget loads no block of BitStack tensor `{name}`"),
            ));
        }
        // Check every section is present before allocating the output: its size then
        // is bounded by the bytes given (at least 1 bit per weight).
        let sections = self.blocks[..n]
            .iter()
            .enumerate()
            .map(|(level, b)| t.section(&b.section, &format!("block {level}")))
            .collect::<Result<Vec<&[u8]>>>()?;
        let mut r = Rebuilder::new(rows, cols, rank);
        for bytes in sections {
            let (signs, u, vt) = layout.parse(bytes);
            r.add_block(signs, &u, &vt)?;
        }
        r.finish(scales.as_deref())
    }

    fn gpu_job(&self, t: &DeviceSource<'_>) -> Result<TensorJob> {
        let (rows, cols) = t.matrix()?;
        let (rank, name) = (self.rank as usize, t.name);
        let layout = BitStackBlockLayout::new(rows, cols, rank).ok_or_else(|| {
            invalid(
                "block layout",
                format!("tensor `{name}`: {rows} x {cols}, rank {rank}"),
            )
        })?;
        let n = t.n_blocks;
        if n == 0 || n > self.blocks.len() {
            return Err(invalid(
                "budget.blocks_per_matrix",
                format!(
                    "tensor `{name}` has {} blocks, the budget asks for {n}",
                    self.blocks.len()
                ),
            ));
        }
        let block_offsets = self.blocks[..n]
            .iter()
            .map(|b| t.inside(&b.section, layout.len as u64, "block"))
            .collect::<Result<Vec<u64>>>()?;
        let scales_offset = self
            .scales
            .as_ref()
            .map(|s| t.inside(s, cols as u64 * 4, "scales"))
            .transpose()?;
        Ok(TensorJob::BitStack {
            rows,
            cols,
            rank,
            block_offsets,
            u_off: layout.u.0 as u64,
            vt_off: layout.vt.0 as u64,
            scales_offset,
        })
    }
}

impl EncodeTensor for BitStackMatrix {
    fn dims(&self) -> (Vec<usize>, usize) {
        (vec![self.rows, self.cols], self.rows * self.cols)
    }

    fn encode(
        &self,
        name: &str,
        spill: &mut dyn FnMut(&[u8]) -> Result<Section>,
    ) -> Result<Encoding> {
        let m = self;
        if m.blocks.is_empty() || m.blocks.len() > MAX_LEVELS {
            return Err(invalid(
                "blocks",
                format!(
                    "`{name}` has {} blocks, expected 1..={MAX_LEVELS}",
                    m.blocks.len()
                ),
            ));
        }
        let rank = u32::try_from(m.rank)
            .ok()
            .filter(|&r| r >= 1 && m.rank <= m.rows.min(m.cols))
            .ok_or_else(|| {
                invalid(
                    "rank",
                    format!("`{name}` rank {} outside 1..=min(rows, cols)", m.rank),
                )
            })?;
        let layout = BitStackBlockLayout::new(m.rows, m.cols, m.rank)
            .ok_or_else(|| invalid("shape", format!("`{name}` block size overflows")))?;
        let scales = match &m.scales {
            Some(s) => {
                crate::bitstack::check_scales(s, m.cols)?;
                let b: Vec<u8> = s.iter().flat_map(|x| x.to_le_bytes()).collect();
                Some(spill(&b)?)
            }
            None => None,
        };
        let mut blocks = Vec::with_capacity(m.blocks.len());
        let mut buf = vec![0u8; layout.len];
        for (level, b) in m.blocks.iter().enumerate() {
            if b.signs.len() != layout.signs.1
                || b.u.len() * 2 != layout.u.1
                || b.vt.len() * 2 != layout.vt.1
            {
                return Err(invalid(
                    "blocks",
                    format!(
                        "`{name}` block {level} has factor lengths that do not match {}x{} rank {}",
                        m.rows, m.cols, m.rank
                    ),
                ));
            }
            if b.importance.is_nan() {
                return Err(invalid(
                    "importance",
                    format!("`{name}` block {level} is NaN"),
                ));
            }
            layout.write(b, &mut buf);
            blocks.push(BlockEntry {
                section: spill(&buf)?,
                importance: b.importance,
            });
        }
        Ok(Encoding::BitStack {
            rank,
            scales,
            blocks,
        })
    }
}
