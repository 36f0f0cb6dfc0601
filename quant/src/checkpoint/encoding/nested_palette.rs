//! [`Encoding::NestedPalette`]: a scaled palette base (resident) and refinement steps
//! (blocks in the global order), each adding one bit per weight, so a budget that
//! loads `n` steps of a tensor reads a `bits + n`-bit palette (Any-Precision LLM's
//! nesting; the fitting lives in [`crate::palette::nested`]).
//!
//! The base section is laid out exactly as [`ScaledLayout`] (its table is the one
//! used with no step loaded); step `l` (0-based) is laid out as [`NestedStepLayout`]
//! for `bits + l + 1` bits. Format version 3: older readers refuse the file by its
//! header.
//!
//! [`Encoding::RescaledNestedPalette`] (format version 4) is the same with every
//! step also carrying a per-block correction of the base's block scales and offsets
//! ([`crate::palette::rescaled`]): the step section gains the correction table
//! (`2^rescale_bits` pairs of f16) and the packed codes, laid out by
//! [`NestedStepLayout::rescaled`]; only the last loaded step's correction applies.
//!
//! [`Encoding::LeanNestedPalette`] (format version 5) lets a step of a rescaled
//! palette carry no correction ([`crate::palette::Corrections::WherePaying`]): its
//! section is then laid out by [`NestedStepLayout::new`] (strictly shorter than the
//! rescaled layout, so the length tells them apart), and the correction that
//! applies is the last loaded step's that has one (none: the base's block
//! parameters as stored; the base's own correction serves only the base alone).

use half::f16;

use super::{Check, DeviceSource, EncodeTensor, Encoding, Source, TensorEncoding, align_usize};
use crate::checkpoint::manifest::{BlockEntry, Section};
use crate::dest::Out;
use crate::error::{QuantError, Result};
use crate::gpu::{RescaleJob, TensorJob};
use crate::palette::nested::{MAX_BITS, NestedPalette, plane_row_bytes};
use crate::palette::nested_decode::{NestedParts, decode_nested_out};
use crate::palette::rescaled::{MAX_RESCALE_BITS, RescaleView};
use crate::palette::{ScaledLayout, index_row_bytes};

/// Where the parts of one refinement step lie in its section (offsets relative to
/// the section start, each part 64-byte aligned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NestedStepLayout {
    /// The refined table: `2^bits` f16 little-endian, ascending.
    pub table: (usize, usize),
    /// The bit plane: `rows * ceil(cols / 8)` bytes, bit `j % 8` (LSB first) of byte
    /// `j / 8` of a row chooses child `2i + 1` of the weight's previous level `i`.
    pub plane: (usize, usize),
    /// Version 4 only (empty otherwise): the correction table, `2^rescale_bits`
    /// pairs `[f, g]` of f16 little-endian.
    pub entries: (usize, usize),
    /// Version 4 only (empty otherwise): per row `ceil(cols / group_cols)` codes of
    /// `rescale_bits` bits, packed LSB-first, `rows * ceil(blocks * rescale_bits / 8)`
    /// bytes.
    pub codes: (usize, usize),
    /// Section length.
    pub len: usize,
}

impl NestedStepLayout {
    /// The layout of a step of a `rows x cols` tensor reaching `bits` bits (3..=8);
    /// `None` if out of range or a size overflows.
    pub fn new(rows: usize, cols: usize, bits: u8) -> Option<NestedStepLayout> {
        if !(3..=MAX_BITS).contains(&bits) {
            return None;
        }
        let table_len = 2usize << bits;
        let plane_off = align_usize(table_len)?;
        let plane_len = rows.checked_mul(plane_row_bytes(cols))?;
        let len = plane_off.checked_add(plane_len)?;
        Some(NestedStepLayout {
            table: (0, table_len),
            plane: (plane_off, plane_len),
            entries: (len, 0),
            codes: (len, 0),
            len,
        })
    }

    /// The layout of a rescaled step (version 4): [`NestedStepLayout::new`], then
    /// the correction table and the codes, each 64-byte aligned; `None` if a
    /// parameter is out of range (`rescale_bits` outside 1..=8, `group_cols` 0) or a
    /// size overflows.
    pub fn rescaled(
        rows: usize,
        cols: usize,
        bits: u8,
        group_cols: usize,
        rescale_bits: u8,
    ) -> Option<NestedStepLayout> {
        let plain = Self::new(rows, cols, bits)?;
        Self::with_rescale(plain, rows, cols, group_cols, rescale_bits)
    }

    /// The layout of a base correction section: the correction table and codes of
    /// [`NestedStepLayout::rescaled`] alone (`table` and `plane` empty).
    pub fn base_rescale(
        rows: usize,
        cols: usize,
        group_cols: usize,
        rescale_bits: u8,
    ) -> Option<NestedStepLayout> {
        let empty = NestedStepLayout {
            table: (0, 0),
            plane: (0, 0),
            entries: (0, 0),
            codes: (0, 0),
            len: 0,
        };
        Self::with_rescale(empty, rows, cols, group_cols, rescale_bits)
    }

    fn with_rescale(
        plain: NestedStepLayout,
        rows: usize,
        cols: usize,
        group_cols: usize,
        rescale_bits: u8,
    ) -> Option<NestedStepLayout> {
        if !(1..=MAX_RESCALE_BITS).contains(&rescale_bits) || group_cols == 0 {
            return None;
        }
        let entries_off = align_usize(plain.len)?;
        let entries_len = 4usize << rescale_bits;
        let codes_off = align_usize(entries_off.checked_add(entries_len)?)?;
        let codes_len = rows.checked_mul(
            cols.div_ceil(group_cols)
                .checked_mul(usize::from(rescale_bits))?
                .div_ceil(8),
        )?;
        Some(NestedStepLayout {
            entries: (entries_off, entries_len),
            codes: (codes_off, codes_len),
            len: codes_off.checked_add(codes_len)?,
            ..plain
        })
    }

    /// The layout of step reaching `bits` bits, rescaled when `rescale_bits` is set.
    fn of(
        rows: usize,
        cols: usize,
        bits: u8,
        group_cols: usize,
        rescale_bits: Option<u8>,
    ) -> Option<NestedStepLayout> {
        match rescale_bits {
            None => Self::new(rows, cols, bits),
            Some(rb) => Self::rescaled(rows, cols, bits, group_cols, rb),
        }
    }
}

/// The view of a nested palette entry.
#[derive(Debug)]
pub(super) struct Nested<'a> {
    pub bits: u8,
    pub group_cols: u32,
    /// `Some` for [`Encoding::RescaledNestedPalette`] and
    /// [`Encoding::LeanNestedPalette`].
    pub rescale_bits: Option<u8>,
    /// [`Encoding::MixedNestedPalette`]: the code width of every correction, the
    /// base's then each step's (0: none).
    pub widths: Option<&'a [u8]>,
    /// [`Encoding::LeanNestedPalette`] and [`Encoding::MixedNestedPalette`]: a step
    /// may carry no correction.
    pub lean: bool,
    pub base: Section,
    /// The base's own correction (rescaled palettes fitted above the base width).
    pub base_rescale: Option<Section>,
    /// Resident sections the manifest lists (1, or 2 with a base correction).
    pub resident_count: usize,
    pub steps: &'a [BlockEntry],
}

impl<'a> Nested<'a> {
    /// The view of a rescaled (v4), lean (v5) or mixed (v6) entry: `(bits,
    /// group_cols)`, the resident sections as the manifest lists them (validation
    /// refuses any count but 1 or 2 before a section is used).
    pub(super) fn rescaled(
        (bits, group_cols): (u8, u32),
        rescale_bits: Option<u8>,
        widths: Option<&'a [u8]>,
        lean: bool,
        resident: &[Section],
        steps: &'a [BlockEntry],
    ) -> Nested<'a> {
        Nested {
            bits,
            group_cols,
            rescale_bits,
            widths,
            lean,
            base: resident.first().copied().unwrap_or(Section {
                offset: 0,
                len: 0,
                crc32c: 0,
            }),
            base_rescale: resident.get(1).copied(),
            resident_count: resident.len(),
            steps,
        }
    }

    /// Refuses a budget that asks tensor `name` for more than its `steps`.
    fn check_steps(&self, name: &str, n: usize) -> Result<()> {
        if n > self.steps.len() {
            return Err(QuantError::InvalidConfig {
                field: "budget.blocks_per_matrix",
                reason: format!(
                    "tensor `{name}` has {} refinement steps, the budget asks for {n}",
                    self.steps.len()
                ),
            });
        }
        Ok(())
    }

    /// The code width of the base's own correction.
    fn base_rescale_bits(&self) -> Option<u8> {
        match self.widths {
            Some(w) => w.first().copied().filter(|&b| b > 0),
            None => self.rescale_bits,
        }
    }

    /// The code width of step `l`'s correction, whose section is laid out by `sl`;
    /// `None` where it carries none.
    fn step_rescale_bits(&self, l: usize, sl: &NestedStepLayout) -> Option<u8> {
        match self.widths {
            Some(w) => w.get(l + 1).copied().filter(|&b| b > 0),
            None => self.rescale_bits.filter(|_| sl.entries.1 > 0),
        }
    }

    /// Step `l`'s layouts: the encoding's own and (a lean palette) the plain one of
    /// a step without a correction; `None` where out of range or overflowing. A
    /// palette of mixed widths has one: its width says which.
    fn step_layouts(
        &self,
        rows: usize,
        cols: usize,
        l: usize,
    ) -> (Option<NestedStepLayout>, Option<NestedStepLayout>) {
        let Some(bits) = u8::try_from(l)
            .ok()
            .and_then(|l| self.bits.checked_add(l)?.checked_add(1))
        else {
            return (None, None);
        };
        let gc = self.group_cols as usize;
        if let Some(w) = self.widths {
            let own = match w.get(l + 1) {
                Some(0) => NestedStepLayout::new(rows, cols, bits),
                Some(&rb) => NestedStepLayout::rescaled(rows, cols, bits, gc, rb),
                None => None,
            };
            return (own, None);
        }
        let own = NestedStepLayout::of(rows, cols, bits, gc, self.rescale_bits);
        let plain = self
            .lean
            .then(|| NestedStepLayout::new(rows, cols, bits))
            .flatten();
        (own, plain)
    }

    /// The layout of step `l` of a `rows x cols` tensor whose section is `len`
    /// bytes: the encoding's own, or (a lean palette) the plain one of a step that
    /// carries no correction; `None` if neither has that length.
    fn step_layout(
        &self,
        rows: usize,
        cols: usize,
        l: usize,
        len: u64,
    ) -> Option<NestedStepLayout> {
        let (own, plain) = self.step_layouts(rows, cols, l);
        [own, plain]
            .into_iter()
            .flatten()
            .find(|x| x.len as u64 == len)
    }

    /// The length step `l`'s section should have, in words, for an error.
    fn step_want(&self, rows: usize, cols: usize, l: usize) -> String {
        match self.step_layouts(rows, cols, l) {
            (Some(o), Some(p)) => format!("{} (with a correction) or {} (without)", o.len, p.len),
            (Some(o), None) => o.len.to_string(),
            _ => "a valid layout".into(),
        }
    }
}

/// A rescaled nested palette's manifest entry: [`Encoding::LeanNestedPalette`]
/// (version 5) when some step carries no correction, else
/// [`Encoding::RescaledNestedPalette`] (version 4); the fields are the same.
fn rescaled_variant(
    lean: bool,
    bits: u8,
    group_cols: u32,
    rescale_bits: u8,
    resident: Vec<Section>,
    steps: Vec<BlockEntry>,
) -> Encoding {
    match lean {
        false => Encoding::RescaledNestedPalette {
            bits,
            group_cols,
            rescale_bits,
            resident,
            steps,
        },
        true => Encoding::LeanNestedPalette {
            bits,
            group_cols,
            rescale_bits,
            resident,
            steps,
        },
    }
}

/// A correction's parts in `bytes` laid out by `sl`, as decoding applies them.
fn rescale_view<'b>(bytes: &'b [u8], sl: &NestedStepLayout, bits: u8) -> RescaleView<'b> {
    let e = f16s(&bytes[sl.entries.0..sl.entries.0 + sl.entries.1]);
    RescaleView {
        bits,
        entries: e.chunks_exact(2).map(|p| [p[0], p[1]]).collect(),
        codes: &bytes[sl.codes.0..sl.codes.0 + sl.codes.1],
    }
}

pub(super) fn f16s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect()
}

impl<'a> TensorEncoding<'a> for Nested<'a> {
    fn name(&self) -> &'static str {
        if self.widths.is_some() {
            return "mixed rescaled nested palette";
        }
        match (self.rescale_bits, self.lean) {
            (None, _) => "nested palette",
            (Some(_), false) => "rescaled nested palette",
            (Some(_), true) => "lean rescaled nested palette",
        }
    }

    fn has_blocks(&self) -> bool {
        true
    }

    fn needs_a_block(&self) -> bool {
        // The base alone is a complete tensor.
        false
    }

    fn min_version(&self) -> u32 {
        if self.widths.is_some() {
            return 6;
        }
        match (self.rescale_bits, self.lean) {
            (None, _) => 3,
            (Some(_), false) => 4,
            (Some(_), true) => 5,
        }
    }

    fn resident(&self) -> Vec<(Section, &'static str)> {
        let mut out = vec![(self.base, "nested palette base")];
        if let Some(s) = self.base_rescale {
            out.push((s, "nested palette base correction"));
        }
        out
    }

    fn blocks(&self) -> &'a [BlockEntry] {
        self.steps
    }

    fn with_sections(&self, resident: &[Section], blocks: Vec<BlockEntry>) -> Encoding {
        let base = resident.first().copied().unwrap_or(self.base);
        let resident: Vec<Section> = std::iter::once(base)
            .chain(
                self.base_rescale
                    .map(|s| resident.get(1).copied().unwrap_or(s)),
            )
            .collect();
        if let Some(w) = self.widths {
            return Encoding::MixedNestedPalette {
                bits: self.bits,
                group_cols: self.group_cols,
                rescale_bits: w.to_vec(),
                resident,
                steps: blocks,
            };
        }
        match self.rescale_bits {
            None => Encoding::NestedPalette {
                bits: self.bits,
                group_cols: self.group_cols,
                base,
                steps: blocks,
            },
            Some(rescale_bits) => rescaled_variant(
                self.lean,
                self.bits,
                self.group_cols,
                rescale_bits,
                resident,
                blocks,
            ),
        }
    }

    fn validate(&self, t: &Check<'_>) -> Result<()> {
        let (rows, cols) = t.matrix()?;
        let (bits, group_cols, n) = (self.bits, self.group_cols, self.steps.len());
        let layout = ScaledLayout::new(rows, cols, bits, group_cols as usize)
            .filter(|_| (group_cols as usize) <= cols.max(1));
        if layout.is_none() || usize::from(bits) + n > usize::from(MAX_BITS) {
            return Err(t.error(format!(
                "tensor `{}`: nested palette of {bits} bits with {n} steps, blocks of {group_cols} weights; expected 2..=8 bits, at most 8 bits with the steps, and 1..={cols} weights",
                t.name
            )));
        }
        if let Some(w) = self.widths {
            if w.len() != n + 1 || w.iter().any(|&b| b > MAX_RESCALE_BITS) {
                return Err(t.error(format!(
                    "tensor `{}`: mixed rescaled nested palette with correction widths {w:?}; expected {} of them (the base's, then each step's), each 0 (none) to {MAX_RESCALE_BITS}",
                    t.name,
                    n + 1
                )));
            }
            if (w[0] > 0) != self.base_rescale.is_some() {
                return Err(t.error(format!(
                    "tensor `{}`: mixed rescaled nested palette with a {}-bit base correction and {} resident sections; expected a second resident section exactly when the base's width is above 0",
                    t.name, w[0], self.resident_count
                )));
            }
        } else if let Some(rb) = self
            .rescale_bits
            .filter(|b| !(1..=MAX_RESCALE_BITS).contains(b))
        {
            return Err(t.error(format!(
                "tensor `{}`: rescaled nested palette with {rb}-bit block corrections; expected 1..={MAX_RESCALE_BITS}",
                t.name
            )));
        }
        if !(1..=2).contains(&self.resident_count) {
            return Err(t.error(format!(
                "tensor `{}`: rescaled nested palette with {} resident sections; expected the base and at most a base correction",
                t.name, self.resident_count
            )));
        }
        t.section(&self.base, layout.map(|x| x.len), "nested palette base")?;
        if let (Some(s), Some(rb)) = (&self.base_rescale, self.base_rescale_bits()) {
            let want =
                NestedStepLayout::base_rescale(rows, cols, group_cols as usize, rb).map(|x| x.len);
            t.section(s, want, "nested palette base correction")?;
        }
        for (l, s) in self.steps.iter().enumerate() {
            let what = format!("refinement step {l}");
            match self.step_layout(rows, cols, l, s.section.len) {
                Some(sl) => t.section(&s.section, Some(sl.len), &what)?,
                None => {
                    return Err(t.error(format!(
                        "tensor `{}` {what}: {} bytes, expected {}",
                        t.name,
                        s.section.len,
                        self.step_want(rows, cols, l)
                    )));
                }
            }
        }
        Ok(())
    }

    fn rebuild(&self, t: &Source<'_>) -> Result<Vec<f32>> {
        let (rows, cols) = t.matrix();
        let mut out = crate::buffer::zeroed_f32(rows * cols);
        self.rebuild_into(t, Out::F32(&mut out))?;
        Ok(out)
    }

    fn rebuild_into(&self, t: &Source<'_>, out: Out<'_>) -> Result<()> {
        let ((rows, cols), name, n) = (t.matrix(), t.name, t.n_blocks);
        if out.len() != rows * cols {
            return Err(QuantError::DimMismatch {
                what: "nested palette output (elements)",
                expected: rows * cols,
                actual: out.len(),
            });
        }
        self.check_steps(name, n)?;
        let layout = ScaledLayout::new(rows, cols, self.bits, self.group_cols as usize)
            .ok_or_else(|| t.error(format!("tensor `{name}`: bad nested palette layout")))?;
        let base = t.section(&self.base, "nested palette base")?;
        if base.len() != layout.len {
            return Err(t.error(format!(
                "tensor `{name}` nested palette base: {} bytes, expected {}",
                base.len(),
                layout.len
            )));
        }
        // Every section is present and checksummed before anything is allocated.
        let mut planes = Vec::with_capacity(n);
        let mut table = f16s(&base[layout.table.0..layout.table.0 + layout.table.1]);
        let mut rescale = None;
        // The base correction is resident: checked at every budget, used with no step.
        if let (Some(s), Some(rb)) = (&self.base_rescale, self.base_rescale_bits()) {
            let what = "nested palette base correction";
            let bytes = t.section(s, what)?;
            let sl = NestedStepLayout::base_rescale(rows, cols, self.group_cols as usize, rb)
                .filter(|x| x.len == bytes.len())
                .ok_or_else(|| t.error(format!("tensor `{name}` {what}: bad layout")))?;
            if n == 0 {
                rescale = Some(rescale_view(bytes, &sl, rb));
            }
        }
        for (l, s) in self.steps[..n].iter().enumerate() {
            let what = format!("refinement step {l}");
            let bytes = t.section(&s.section, &what)?;
            let sl = self
                .step_layout(rows, cols, l, bytes.len() as u64)
                .ok_or_else(|| t.error(format!("tensor `{name}` {what}: bad layout")))?;
            if l + 1 == n {
                table = f16s(&bytes[sl.table.0..sl.table.0 + sl.table.1]);
            }
            // The last loaded correction applies; a step without one keeps it.
            if let Some(bits) = self.step_rescale_bits(l, &sl) {
                rescale = Some(rescale_view(bytes, &sl, bits));
            }
            planes.push(&bytes[sl.plane.0..sl.plane.0 + sl.plane.1]);
        }
        let params = f16s(&base[layout.params.0..layout.params.0 + layout.params.1]);
        let parts = NestedParts {
            table: &table,
            params: &params,
            codes: &base[layout.codes.0..layout.codes.0 + layout.codes.1],
            indices: &base[layout.indices.0..layout.indices.0 + layout.indices.1],
            planes: &planes,
            rescale: rescale.as_ref(),
        };
        decode_nested_out(&layout, &parts, out);
        Ok(())
    }

    /// Kernel `nested_palette_decode`: the base's indices widened by every loaded
    /// step's plane, the last loaded table and correction (the base's own with no
    /// step), as [`Nested::rebuild`] picks them.
    fn gpu_job(&self, t: &DeviceSource<'_>) -> Result<TensorJob> {
        let ((rows, cols), name, n) = (t.matrix()?, t.name, t.n_blocks);
        let gc = self.group_cols as usize;
        let bad = |what: &str| QuantError::InvalidConfig {
            field: "nested palette layout",
            reason: format!("tensor `{name}` {what}: bad layout"),
        };
        self.check_steps(name, n)?;
        let l = ScaledLayout::new(rows, cols, self.bits, gc)
            .ok_or_else(|| bad("nested palette base"))?;
        let base = t.inside(&self.base, l.len as u64, "nested palette base")?;
        let mut table_offset = base + l.table.0 as u64;
        let mut rescale = None;
        if let (Some(s), Some(rb)) = (&self.base_rescale, self.base_rescale_bits()) {
            let what = "nested palette base correction";
            let sl = NestedStepLayout::base_rescale(rows, cols, gc, rb).ok_or_else(|| bad(what))?;
            let off = t.inside(s, sl.len as u64, what)?;
            if n == 0 {
                rescale = Some(RescaleJob {
                    bits: rb,
                    entries_offset: off + sl.entries.0 as u64,
                    codes_offset: off + sl.codes.0 as u64,
                });
            }
        }
        let mut plane_offsets = Vec::with_capacity(n);
        for (k, s) in self.steps[..n].iter().enumerate() {
            let what = format!("refinement step {k}");
            let sl = self
                .step_layout(rows, cols, k, s.section.len)
                .ok_or_else(|| bad(&what))?;
            let off = t.inside(&s.section, sl.len as u64, &what)?;
            plane_offsets.push(off + sl.plane.0 as u64);
            if k + 1 == n {
                table_offset = off + sl.table.0 as u64;
            }
            // The last loaded correction applies; a step without one keeps it.
            if let Some(bits) = self.step_rescale_bits(k, &sl) {
                rescale = Some(RescaleJob {
                    bits,
                    entries_offset: off + sl.entries.0 as u64,
                    codes_offset: off + sl.codes.0 as u64,
                });
            }
        }
        Ok(TensorJob::NestedPalette {
            rows,
            cols,
            bits: self.bits,
            group_cols: gc,
            table_offset,
            params_offset: base + l.params.0 as u64,
            codes_offset: base + l.codes.0 as u64,
            indices_offset: base + l.indices.0 as u64,
            plane_offsets,
            rescale,
        })
    }
}

/// A `sl.len`-byte buffer with `r`'s correction table and codes where `sl` puts
/// them (the rest zero); `None` if their lengths do not match `sl`.
fn rescale_bytes(r: &crate::palette::Rescale, sl: &NestedStepLayout) -> Option<Vec<u8>> {
    if r.entries.len() * 4 != sl.entries.1 || r.codes.len() != sl.codes.1 {
        return None;
    }
    let mut buf = vec![0u8; sl.len];
    for (c, e) in buf[sl.entries.0..sl.entries.0 + sl.entries.1]
        .chunks_exact_mut(4)
        .zip(&r.entries)
    {
        c[..2].copy_from_slice(&e[0].to_le_bytes());
        c[2..].copy_from_slice(&e[1].to_le_bytes());
    }
    buf[sl.codes.0..sl.codes.0 + sl.codes.1].copy_from_slice(&r.codes);
    Some(buf)
}

impl EncodeTensor for NestedPalette {
    fn dims(&self) -> (Vec<usize>, usize) {
        let l = &self.base.layout;
        (vec![l.rows, l.cols], l.rows * l.cols)
    }

    fn encode(
        &self,
        name: &str,
        spill: &mut dyn FnMut(&[u8]) -> Result<Section>,
    ) -> Result<Encoding> {
        let l = &self.base.layout;
        let invalid = |reason: String| QuantError::InvalidConfig {
            field: "nested palette",
            reason: format!("`{name}`: {reason}"),
        };
        if self.base.table.len() * 2 != l.table.1
            || self.base.params.len() * 2 != l.params.1
            || self.base.codes.len() != l.codes.1
            || self.base.indices.len() != l.indices.1
            || self.base.indices.len() != l.rows * index_row_bytes(l.cols, l.bits)
        {
            return Err(invalid(
                "base table, parameter, code or index length does not match its layout".into(),
            ));
        }
        if usize::from(l.bits) + self.steps.len() > usize::from(MAX_BITS) {
            return Err(invalid(format!(
                "{} bits with {} steps exceeds {MAX_BITS} bits",
                l.bits,
                self.steps.len()
            )));
        }
        let group_cols = u32::try_from(l.group_cols)
            .map_err(|_| invalid(format!("block of {} weights exceeds u32", l.group_cols)))?;
        // Every correction's code width (0: none), the base's first. Corrections of
        // one width are version 4 (lean, where a step has none: version 5); of
        // several, version 6.
        let widths: Vec<u8> = std::iter::once(self.base_rescale.as_ref())
            .chain(self.steps.iter().map(|s| s.rescale.as_ref()))
            .map(|r| r.map_or(0, |r| r.bits))
            .collect();
        let rescale_bits = widths.iter().copied().find(|&b| b > 0);
        let mixed = widths.iter().any(|&b| b > 0 && Some(b) != rescale_bits);
        let lean = rescale_bits.is_some() && self.steps.iter().any(|s| s.rescale.is_none());
        let base = spill(&self.base.section_bytes())?;
        let base_rescale = match &self.base_rescale {
            None => None,
            Some(r) => {
                let sl = NestedStepLayout::base_rescale(l.rows, l.cols, l.group_cols, r.bits)
                    .ok_or_else(|| invalid("base correction: bad or overflowing layout".into()))?;
                Some(spill(&rescale_bytes(r, &sl).ok_or_else(|| {
                    invalid(format!(
                        "base correction: {} entries or {} code bytes do not match {}-bit codes",
                        r.entries.len(),
                        r.codes.len(),
                        r.bits
                    ))
                })?)?)
            }
        };
        let mut steps = Vec::with_capacity(self.steps.len());
        for (i, s) in self.steps.iter().enumerate() {
            let bits = l.bits + i as u8 + 1;
            let step_bits = s.rescale.as_ref().map(|r| r.bits);
            let sl = NestedStepLayout::of(l.rows, l.cols, bits, l.group_cols, step_bits)
                .ok_or_else(|| invalid(format!("step {i}: bad or overflowing layout")))?;
            if s.table.len() * 2 != sl.table.1 || s.plane.len() != sl.plane.1 {
                return Err(invalid(format!(
                    "step {i}: table of {} or plane of {} bytes does not match {bits} bits",
                    s.table.len(),
                    s.plane.len()
                )));
            }
            if s.gain.is_nan() {
                return Err(invalid(format!("step {i}: gain is NaN")));
            }
            let mut buf = vec![0u8; sl.len];
            for (c, v) in buf[..sl.table.1].chunks_exact_mut(2).zip(&s.table) {
                c.copy_from_slice(&v.to_le_bytes());
            }
            buf[sl.plane.0..sl.plane.0 + sl.plane.1].copy_from_slice(&s.plane);
            if let Some(r) = &s.rescale {
                let parts = rescale_bytes(r, &sl).ok_or_else(|| {
                    invalid(format!(
                        "step {i}: {} corrections or {} code bytes do not match {}-bit codes",
                        r.entries.len(),
                        r.codes.len(),
                        r.bits
                    ))
                })?;
                buf[sl.entries.0..].copy_from_slice(&parts[sl.entries.0..]);
            }
            steps.push(BlockEntry {
                section: spill(&buf)?,
                importance: s.gain,
            });
        }
        let resident = std::iter::once(base).chain(base_rescale).collect();
        Ok(match rescale_bits {
            _ if mixed => Encoding::MixedNestedPalette {
                bits: l.bits,
                group_cols,
                rescale_bits: widths,
                resident,
                steps,
            },
            None => Encoding::NestedPalette {
                bits: l.bits,
                group_cols,
                base,
                steps,
            },
            Some(rescale_bits) => {
                rescaled_variant(lean, l.bits, group_cols, rescale_bits, resident, steps)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::NestedStepLayout;
    use crate::bitstack::OrderPolicy;
    use crate::checkpoint::testutil::structured;
    use crate::checkpoint::{
        BlockOrdering, Budget, BudgetLimit, CheckpointWriter, Encoding, Manifest, Reader,
    };
    use crate::palette::nested::{NestedPalette, nest_scaled};
    use crate::palette::{JointFit, nest_rescaled_joint};

    const ORDER: BlockOrdering = BlockOrdering::Policy(OrderPolicy::Greedy { min_levels: 0 });

    /// Three nested palettes of odd shapes (2..5 bits, 2..4 bits, 3..6 bits) and an
    /// f16 tensor, written in gain-per-byte order.
    fn model(seed: u64) -> (Vec<u8>, Manifest, Vec<(String, NestedPalette)>) {
        model_with(seed, None, 0)
    }

    /// As [`model`], the palettes rescaled with `rescale`-bit block corrections
    /// when given (format version 4), and step `i`'s correction dropped where bit
    /// `i` of `strip` is set (a lean palette, format version 5).
    fn model_with(
        seed: u64,
        rescale: Option<u8>,
        strip: u64,
    ) -> (Vec<u8>, Manifest, Vec<(String, NestedPalette)>) {
        model_mixed(seed, rescale, None, strip)
    }

    /// As [`model_with`], the steps above each palette's fit width corrected with
    /// `upper`-bit codes when given: `b`, fitted at 3 bits, then has corrections of
    /// two widths (format version 6), `a` and `c` one width.
    fn model_mixed(
        seed: u64,
        rescale: Option<u8>,
        upper: Option<u8>,
        strip: u64,
    ) -> (Vec<u8>, Manifest, Vec<(String, NestedPalette)>) {
        let joint = JointFit {
            upper_rescale_bits: upper.into(),
            ..JointFit::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut wr = CheckpointWriter::in_memory();
        wr.add_f16("embed", &[3, 5], &[0.25; 15]).expect("f16");
        let mut nested = Vec::new();
        for (name, rows, cols, base, top, g) in [
            ("a", 9, 65, 2, 5, 32),
            ("b", 5, 129, 2, 4, 16),
            ("c", 7, 47, 3, 6, 32),
        ] {
            let w = structured(rows, cols, &mut rng);
            // `b` rescaled is fitted at 3 bits: its base has its own correction.
            let p = match rescale {
                None => nest_scaled(&w, rows, cols, None, base, top, g),
                Some(rb) => {
                    let fit = if name == "b" { 3 } else { base };
                    nest_rescaled_joint(&w, rows, cols, None, base, fit, top, g, rb, joint)
                }
            }
            .expect("fits");
            let mut p = p;
            for (i, step) in p.steps.iter_mut().enumerate() {
                if strip >> i & 1 == 1 {
                    step.rescale = None;
                }
            }
            wr.add_nested_palette(name, &p).expect("add");
            nested.push((name.to_string(), p));
        }
        let mut file = Vec::new();
        let m = wr.finish(&ORDER, &mut file).expect("finish");
        (file, m, nested)
    }

    fn reason(e: crate::QuantError) -> String {
        e.to_string()
    }

    #[test]
    fn every_prefix_rebuilds_what_the_writer_encoded() {
        every_prefix_rebuilds(None, 0, 3);
        every_prefix_rebuilds(Some(1), 0, 4);
        every_prefix_rebuilds(Some(3), 0, 4);
        // Lean: the first step without a correction, the second without, the
        // first and third without, every step without.
        every_prefix_rebuilds(Some(2), 0b1, 5);
        every_prefix_rebuilds(Some(2), 0b10, 5);
        every_prefix_rebuilds(Some(1), 0b101, 5);
        every_prefix_rebuilds(Some(2), 0b111, 5);
    }

    fn every_prefix_rebuilds(rescale: Option<u8>, strip: u64, version: u32) {
        let (file, m, nested) = model_with(1, rescale, strip);
        assert_eq!(
            u32::from_le_bytes([file[8], file[9], file[10], file[11]]),
            version
        );
        // `a` has three steps and no base correction: with none of its steps
        // corrected it has no correction at all, a plain nested palette.
        let want = match (rescale, strip) {
            (None, _) | (Some(_), 0b111) => "nested palette",
            (Some(_), 0) => "rescaled nested palette",
            (Some(_), _) => "lean rescaled nested palette",
        };
        let t = m.tensor_index("a").expect("a");
        assert_eq!(m.tensors[t].encoding.name(), want);
        assert_eq!(m.min_blocks, 0, "the bases alone are a model");
        assert_eq!(m.block_order.len(), 3 + 2 + 3);
        every_prefix_matches(&file, &m, &nested);
    }

    #[test]
    fn steps_are_loaded_by_gain_per_byte() {
        let (_, m, _) = model(2);
        let per_byte: Vec<f64> = m
            .block_order
            .iter()
            .map(|b| {
                let e = &m.tensors[b.tensor as usize].encoding;
                let first = e.blocks()[0].section.len;
                e.blocks()[b.level as usize].importance / first as f64
            })
            .collect();
        // Gains shrink step by step here, so greedy is sorted by gain per byte.
        assert!(
            per_byte.windows(2).all(|w| w[0] >= w[1]),
            "not sorted: {per_byte:?}"
        );
    }

    #[test]
    fn a_flipped_or_missing_byte_names_the_section() {
        flipped_or_missing(None, None, 0);
        flipped_or_missing(Some(2), None, 0);
        flipped_or_missing(Some(2), None, 0b10);
        flipped_or_missing(Some(2), Some(3), 0b10);
    }

    fn flipped_or_missing(rescale: Option<u8>, upper: Option<u8>, strip: u64) {
        let (file, m, _) = model_mixed(3, rescale, upper, strip);
        let full = Budget::fit(&m, BudgetLimit::Full).expect("full");
        let (base, base_rescale, steps) = match m.tensor_index("b").map(|t| &m.tensors[t].encoding)
        {
            Some(Encoding::NestedPalette { base, steps, .. }) => (base, None, steps),
            Some(
                Encoding::RescaledNestedPalette {
                    resident, steps, ..
                }
                | Encoding::LeanNestedPalette {
                    resident, steps, ..
                }
                | Encoding::MixedNestedPalette {
                    resident, steps, ..
                },
            ) => (&resident[0], resident.get(1).copied(), steps),
            _ => panic!("tensor b is a nested palette"),
        };
        assert_eq!(base_rescale.is_some(), rescale.is_some());
        let mut targets = vec![(*base, "tensor `b` nested palette base".to_string())];
        if let Some(s) = base_rescale {
            targets.push((s, "tensor `b` nested palette base correction".to_string()));
        }
        for (l, s) in steps.iter().enumerate() {
            targets.push((s.section, format!("tensor `b` refinement step {l}")));
        }
        for (s, what) in targets {
            let mut bad = file.clone();
            bad[(s.offset + s.len / 2) as usize] ^= 0x04;
            let reader = Reader::new(&bad).expect("manifest intact");
            let r = reason(reader.rebuild_tensor("b", &full).expect_err("corrupt"));
            assert!(r.contains(&what) && r.contains("checksum"), "{what}: {r}");
        }
        let cut = Reader::new(&file[..file.len() - 1]).expect("manifest intact");
        let r = reason(cut.verify(&full).expect_err("truncated"));
        assert!(r.contains("truncated"), "{r}");
        // A file cut inside its last step: the full budget is refused, and one
        // that stops before that step still rebuilds from what is there.
        let last = steps.last().expect("steps");
        let short = &file[..(last.section.offset + last.section.len / 2) as usize];
        let reader = Reader::new(short).expect("manifest intact");
        let r = reason(reader.rebuild_tensor("b", &full).expect_err("cut"));
        assert!(r.contains("truncated"), "{r}");
        let fits = Budget::fit(&m, BudgetLimit::Bytes(short.len() as u64)).expect("fits");
        reader
            .verify(&fits)
            .expect("the prefix before the cut verifies");
    }

    /// `file` with its manifest replaced by `m` (same archived length), resealed.
    fn with_manifest(file: &[u8], m: &Manifest) -> Vec<u8> {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(m).expect("archive");
        let mut f = file.to_vec();
        let len = u64::from_le_bytes(f[24..32].try_into().expect("8 bytes")) as usize;
        assert_eq!(bytes.len(), len, "same manifest length");
        f[64..64 + len].copy_from_slice(&bytes);
        f[32..36].copy_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
        assert!(crate::checkpoint::reseal(&mut f));
        f
    }

    /// `file` under a header of `version` is refused, naming the version and the
    /// encoding `what`.
    fn refused_under(file: &[u8], version: u32, what: &str) {
        let mut old = file.to_vec();
        old[8..12].copy_from_slice(&version.to_le_bytes());
        assert!(crate::checkpoint::reseal(&mut old));
        let r = reason(Reader::new(&old).expect_err("old header"));
        assert!(
            r.contains(&format!("version {version}")) && r.contains(what),
            "{r}"
        );
    }

    #[test]
    fn rescaled_parameters_and_version_are_checked() {
        let (file, m, _) = model_with(4, Some(2), 0);
        let t = m.tensor_index("c").expect("c");
        for rb in [0u8, 9] {
            let mut bad = m.clone();
            if let Encoding::RescaledNestedPalette { rescale_bits, .. } =
                &mut bad.tensors[t].encoding
            {
                *rescale_bits = rb;
            }
            let f = with_manifest(&file, &bad);
            let r = reason(Reader::new(&f).expect_err("bad correction width"));
            assert!(
                r.contains("tensor `c`") && r.contains("corrections"),
                "{rb}: {r}"
            );
        }
        // A different (valid) width disagrees with the step sections' lengths.
        let a = m.tensor_index("a").expect("a");
        let mut bad = m.clone();
        if let Encoding::RescaledNestedPalette { rescale_bits, .. } = &mut bad.tensors[a].encoding {
            *rescale_bits = 4;
        }
        let f = with_manifest(&file, &bad);
        let r = reason(Reader::new(&f).expect_err("lengths"));
        assert!(r.contains("tensor `a` refinement step 0"), "{r}");
        // A version-4 encoding under a version-3 header.
        refused_under(&file, 3, "rescaled nested palette");
    }

    #[test]
    fn lean_steps_and_version_are_checked() {
        // Step 1 of every palette carries no correction.
        let (file, m, nested) = model_with(5, Some(2), 0b10);
        let a = m.tensor_index("a").expect("a");
        let Encoding::LeanNestedPalette {
            bits,
            group_cols,
            rescale_bits,
            resident,
            steps,
        } = m.tensors[a].encoding.clone()
        else {
            panic!("tensor a is lean");
        };
        let (rows, cols) = (9, 65);
        let plain = NestedStepLayout::new(rows, cols, bits + 2).expect("layout");
        let full = NestedStepLayout::rescaled(rows, cols, bits + 2, group_cols as usize, 2)
            .expect("layout");
        assert_eq!(steps[1].section.len, plain.len as u64);
        assert!(full.len > plain.len);
        // The same sections under the version-4 encoding: step 1 is refused.
        let mut strict = m.clone();
        strict.tensors[a].encoding = Encoding::RescaledNestedPalette {
            bits,
            group_cols,
            rescale_bits,
            resident: resident.clone(),
            steps: steps.clone(),
        };
        let r = reason(Reader::new(&with_manifest(&file, &strict)).expect_err("strict"));
        assert!(r.contains("tensor `a` refinement step 1"), "{r}");
        // A step section of neither length is refused, naming both.
        let mut odd = m.clone();
        if let Encoding::LeanNestedPalette { steps, .. } = &mut odd.tensors[a].encoding {
            steps[1].section.len += 1;
        }
        let r = reason(Reader::new(&with_manifest(&file, &odd)).expect_err("odd length"));
        assert!(
            r.contains("tensor `a` refinement step 1")
                && r.contains(&format!(
                    "{} (with a correction) or {} (without)",
                    full.len, plain.len
                )),
            "{r}"
        );
        // A lean palette under a version-4 header.
        refused_under(&file, 4, "lean rescaled nested palette");
        // With step 1 the last loaded, step 0's correction applies.
        let p = &nested[0].1;
        assert!(p.steps[1].rescale.is_none() && p.steps[0].rescale.is_some());
        assert_eq!(p.correction_at(2), p.steps[0].rescale.as_ref());
        assert_eq!(p.correction_at(3), p.steps[2].rescale.as_ref());
    }

    #[test]
    fn corrections_of_two_widths_are_a_mixed_palette() {
        // `b` (fitted at 3 bits): a 2-bit base correction, a 2-bit fit step, a
        // 3-bit step above it; `a` and `c` (fitted at their base) 3-bit steps only.
        let (file, m, nested) = model_mixed(6, Some(2), Some(3), 0);
        assert_eq!(
            u32::from_le_bytes([file[8], file[9], file[10], file[11]]),
            6
        );
        let names: Vec<&str> = ["a", "b", "c"]
            .iter()
            .map(|n| {
                m.tensors[m.tensor_index(n).expect("tensor")]
                    .encoding
                    .name()
            })
            .collect();
        assert_eq!(
            names,
            [
                "rescaled nested palette",
                "mixed rescaled nested palette",
                "rescaled nested palette"
            ]
        );
        let b = m.tensor_index("b").expect("b");
        let Encoding::MixedNestedPalette { rescale_bits, .. } = &m.tensors[b].encoding else {
            panic!("b is mixed");
        };
        assert_eq!(rescale_bits, &[2, 2, 3]);
        every_prefix_matches(&file, &m, &nested);
        // A lean mixed palette: `b`'s fit step without a correction, so with it
        // the last loaded the base's block parameters apply as stored, and with the
        // step above it that step's 3-bit correction.
        let (file, m, nested) = model_mixed(6, Some(2), Some(3), 0b1);
        let b = m.tensor_index("b").expect("b");
        let Encoding::MixedNestedPalette { rescale_bits, .. } = &m.tensors[b].encoding else {
            panic!("b is mixed");
        };
        assert_eq!(rescale_bits, &[2, 0, 3]);
        every_prefix_matches(&file, &m, &nested);
    }

    /// Every prefix of `file` alone verifies and reads back what the writer
    /// encoded, and a byte budget of its length picks it.
    fn every_prefix_matches(file: &[u8], m: &Manifest, nested: &[(String, NestedPalette)]) {
        for n in 0..=m.block_order.len() {
            let budget = Budget::fit(m, BudgetLimit::Blocks(n)).expect("budget");
            // Only the prefix is given: nothing beyond it can be read.
            let reader = Reader::new(&file[..budget.prefix_len as usize]).expect("prefix opens");
            reader.verify(&budget).expect("prefix verifies");
            let by_bytes = Budget::fit(m, BudgetLimit::Bytes(budget.prefix_len)).expect("fits");
            assert_eq!(by_bytes.prefix_len, budget.prefix_len);
            for (name, p) in nested {
                let t = m.tensor_index(name).expect("tensor");
                let got = reader.rebuild_tensor(name, &budget).expect("rebuilds");
                assert_eq!(
                    got,
                    p.decode(budget.blocks_per_matrix[t] as usize),
                    "{name} at {n}"
                );
            }
        }
    }

    #[test]
    fn mixed_widths_and_version_are_checked() {
        let (file, m, _) = model_mixed(7, Some(2), Some(3), 0);
        let b = m.tensor_index("b").expect("b");
        let with_widths = |w: Vec<u8>| {
            let mut bad = m.clone();
            if let Encoding::MixedNestedPalette { rescale_bits, .. } = &mut bad.tensors[b].encoding
            {
                *rescale_bits = w;
            }
            with_manifest(&file, &bad)
        };
        // The archived manifest keeps its length only with three widths; a count
        // or a width out of range, a base width without a base correction, and a
        // step width its section's length disagrees with.
        for (w, what) in [
            (vec![2, 9, 3], "correction widths [2, 9, 3]"),
            (vec![0, 2, 3], "0-bit base correction"),
            (vec![2, 2, 4], "tensor `b` refinement step 1"),
            (vec![2, 1, 3], "tensor `b` refinement step 0"),
        ] {
            let r = reason(Reader::new(&with_widths(w.clone())).expect_err("bad widths"));
            assert!(r.contains("tensor `b`") && r.contains(what), "{w:?}: {r}");
        }
        let mut short = m.clone();
        if let Encoding::MixedNestedPalette { rescale_bits, .. } = &mut short.tensors[b].encoding {
            rescale_bits.pop();
        }
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&short).expect("archive");
        let mut f = file.clone();
        let len = u64::from_le_bytes(f[24..32].try_into().expect("8 bytes")) as usize;
        f[64..64 + bytes.len()].copy_from_slice(&bytes);
        f[64 + bytes.len()..64 + len].fill(0);
        f[24..32].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        f[32..36].copy_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
        assert!(crate::checkpoint::reseal(&mut f));
        let r = reason(Reader::new(&f).expect_err("a width short"));
        assert!(r.contains("expected 3 of them"), "{r}");
        // A mixed palette under a version-5 header.
        refused_under(&file, 5, "mixed rescaled nested palette");
    }

    #[test]
    fn bad_parameters_are_rejected_naming_the_tensor() {
        let (file, m, _) = model(4);
        let t = m.tensor_index("c").expect("c");
        for (bits, group_cols) in [(1u8, 32u32), (9, 32), (6, 32), (3, 0), (3, 48)] {
            let mut bad = m.clone();
            if let Encoding::NestedPalette {
                bits: b,
                group_cols: g,
                ..
            } = &mut bad.tensors[t].encoding
            {
                *b = bits;
                *g = group_cols;
            }
            let f = with_manifest(&file, &bad);
            let r = reason(Reader::new(&f).expect_err("bad parameters"));
            assert!(r.contains("tensor `c`"), "{bits} {group_cols}: {r}");
        }
    }
}
