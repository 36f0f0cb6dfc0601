//! Parsing and validating the header and manifest of untrusted bytes.
//!
//! Order of checks: header (fixed size, checksum, lengths capped), manifest bytes
//! present and checksummed, rkyv structural validation (`access` with bytecheck), the
//! caps on every count and length of the archived manifest, and only then
//! deserialization and the semantic checks (offsets inside the file, sizes matching
//! shapes, the block order a valid level-ordered permutation, the budget table
//! matching the block sections).

use std::path::Path;

use rkyv::rancor;
use rkyv::util::AlignedVec;

use super::header::Header;
use super::manifest::{
    ArchivedEncoding, ArchivedManifest, BitStackBlockLayout, Encoding, Manifest, Section,
};
use super::{
    ALIGN, HEADER_LEN, MAX_DIMS, MAX_META_KEY, MAX_META_VALUE, MAX_METADATA, MAX_NAME_LEN,
    MAX_NUMEL, MAX_TENSORS, format_err,
};
use crate::bitstack::MAX_LEVELS;
use crate::error::Result;
use crate::palette::{PaletteLayout, ScaledLayout};

/// Parses the header and manifest at the start of `bytes` (which may be a prefix of
/// the file, but must hold the whole manifest).
pub(crate) fn parse(bytes: &[u8], src: &Path) -> Result<Manifest> {
    let h = Header::decode(bytes, src)?;
    if bytes.len() as u64 > h.file_len {
        return Err(format_err(
            src,
            format!(
                "{} bytes given but the header says the file has {}",
                bytes.len(),
                h.file_len
            ),
        ));
    }
    // manifest_len <= 64 MiB, so this cannot overflow.
    let end = HEADER_LEN + h.manifest_len as usize;
    if bytes.len() < end {
        return Err(format_err(
            src,
            format!(
                "truncated: the manifest ends at byte {end}, only {} bytes available",
                bytes.len()
            ),
        ));
    }
    let raw = &bytes[HEADER_LEN..end];
    let crc = crc32c::crc32c(raw);
    if crc != h.manifest_crc {
        return Err(format_err(
            src,
            format!(
                "manifest checksum mismatch: stored crc32c {:#010x}, computed {crc:#010x}",
                h.manifest_crc
            ),
        ));
    }
    // rkyv needs the archive aligned; a memory map is, an arbitrary slice may not be.
    let mut aligned = AlignedVec::<16>::with_capacity(raw.len());
    aligned.extend_from_slice(raw);
    let archived = rkyv::access::<ArchivedManifest, rancor::Error>(&aligned)
        .map_err(|e| format_err(src, format!("manifest failed rkyv validation: {e}")))?;
    check_caps(archived, src)?;
    let m = rkyv::deserialize::<Manifest, rancor::Error>(archived)
        .map_err(|e| format_err(src, format!("manifest could not be deserialized: {e}")))?;
    check_manifest(&m, &h, src)?;
    Ok(m)
}

fn cap(src: &Path, field: &str, got: usize, max: usize) -> Result<()> {
    if got > max {
        return Err(format_err(
            src,
            format!("manifest {field} is {got}, at most {max} allowed"),
        ));
    }
    Ok(())
}

/// Caps on every count and length, checked on the archive before deserializing.
fn check_caps(a: &ArchivedManifest, src: &Path) -> Result<()> {
    cap(src, "tensor count", a.tensors.len(), MAX_TENSORS)?;
    let mut blocks = 0usize;
    for (i, t) in a.tensors.iter().enumerate() {
        cap(
            src,
            &format!("tensor {i} name length"),
            t.name.len(),
            MAX_NAME_LEN,
        )?;
        cap(
            src,
            &format!("tensor {i} dimension count"),
            t.shape.len(),
            MAX_DIMS,
        )?;
        if let ArchivedEncoding::BitStack { blocks: b, .. } = &t.encoding {
            cap(src, &format!("tensor {i} block count"), b.len(), MAX_LEVELS)?;
            blocks += b.len();
        }
    }
    cap(src, "block order length", a.block_order.len(), blocks)?;
    cap(src, "budget table length", a.budget_table.len(), blocks + 1)?;
    cap(src, "metadata count", a.metadata.len(), MAX_METADATA)?;
    for (i, e) in a.metadata.iter().enumerate() {
        cap(
            src,
            &format!("metadata {i} key length"),
            e.key.len(),
            MAX_META_KEY,
        )?;
        cap(
            src,
            &format!("metadata {i} value length"),
            e.value.len(),
            MAX_META_VALUE,
        )?;
    }
    Ok(())
}

/// Checks that a section is aligned, starts after the manifest and ends in the file.
fn check_section(s: &Section, what: &dyn Fn() -> String, m: &Manifest, src: &Path) -> Result<()> {
    let end = s.offset.checked_add(s.len);
    if !s.offset.is_multiple_of(ALIGN as u64)
        || s.offset < m.data_start
        || end.is_none_or(|e| e > m.file_len)
    {
        return Err(format_err(
            src,
            format!(
                "{}: section at {} of {} bytes, expected a multiple of {ALIGN} within [{}, {})",
                what(),
                s.offset,
                s.len,
                m.data_start,
                m.file_len
            ),
        ));
    }
    Ok(())
}

fn check_len(
    s: &Section,
    want: Option<usize>,
    what: &dyn Fn() -> String,
    src: &Path,
) -> Result<()> {
    if want.map(|w| w as u64) != Some(s.len) {
        let want = want.map_or("a length that fits in memory".to_string(), |w| {
            w.to_string()
        });
        return Err(format_err(
            src,
            format!("{}: section length {}, expected {want}", what(), s.len),
        ));
    }
    Ok(())
}

fn check_manifest(m: &Manifest, h: &Header, src: &Path) -> Result<()> {
    if m.data_start != h.data_start || m.file_len != h.file_len {
        return Err(format_err(
            src,
            format!(
                "manifest data start {} and file length {} disagree with the header ({}, {})",
                m.data_start, m.file_len, h.data_start, h.file_len
            ),
        ));
    }
    let mut names = std::collections::HashSet::with_capacity(m.tensors.len());
    let mut resident: Vec<(u64, u64)> = Vec::new();
    for t in &m.tensors {
        let name = &t.name;
        if name.is_empty() || !names.insert(name.as_str()) {
            return Err(format_err(
                src,
                format!("tensor name `{name}` is empty or repeated"),
            ));
        }
        let numel = t.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let numel = match numel {
            Some(n) if n <= MAX_NUMEL && !t.shape.is_empty() => n as usize,
            _ => {
                return Err(format_err(
                    src,
                    format!(
                        "tensor `{name}` shape {:?}: expected 1..={MAX_DIMS} dims and at most {MAX_NUMEL} elements",
                        t.shape
                    ),
                ));
            }
        };
        let matrix = || -> Result<(usize, usize)> {
            match t.shape[..] {
                [r, c] => Ok((r as usize, c as usize)),
                _ => Err(format_err(
                    src,
                    format!("tensor `{name}`: shape {:?}, expected 2 dims", t.shape),
                )),
            }
        };
        match &t.encoding {
            Encoding::F16 { data } | Encoding::F32 { data } => {
                let what = || format!("tensor `{name}` data");
                let width = if matches!(t.encoding, Encoding::F16 { .. }) {
                    2
                } else {
                    4
                };
                check_section(data, &what, m, src)?;
                check_len(data, numel.checked_mul(width), &what, src)?;
                resident.push((data.offset, data.end()));
            }
            Encoding::BitStack {
                rank,
                scales,
                blocks,
            } => {
                let (rows, cols) = matrix()?;
                let rank = *rank as usize;
                if rank == 0 || rank > rows.min(cols) || blocks.is_empty() {
                    return Err(format_err(
                        src,
                        format!(
                            "tensor `{name}`: rank {rank} with {} blocks, expected rank 1..={} and at least one block",
                            blocks.len(),
                            rows.min(cols)
                        ),
                    ));
                }
                if let Some(s) = scales {
                    let what = || format!("tensor `{name}` scales");
                    check_section(s, &what, m, src)?;
                    check_len(s, cols.checked_mul(4), &what, src)?;
                    resident.push((s.offset, s.end()));
                }
                let layout = BitStackBlockLayout::new(rows, cols, rank);
                for (l, b) in blocks.iter().enumerate() {
                    let what = || format!("tensor `{name}` block {l}");
                    check_section(&b.section, &what, m, src)?;
                    check_len(&b.section, layout.map(|x| x.len), &what, src)?;
                }
            }
            Encoding::Palette {
                bits,
                group_rows,
                data,
            } => {
                let (rows, cols) = matrix()?;
                let what = || format!("tensor `{name}` palette");
                let layout = PaletteLayout::new(rows, cols, *bits, *group_rows as usize)
                    .filter(|_| (2..=8).contains(bits) && (*group_rows as usize) <= rows.max(1));
                if layout.is_none() {
                    return Err(format_err(
                        src,
                        format!(
                            "tensor `{name}`: palette of {bits} bits, groups of {group_rows} rows; expected 2..=8 bits and 1..={rows} rows"
                        ),
                    ));
                }
                check_section(data, &what, m, src)?;
                check_len(data, layout.map(|x| x.len), &what, src)?;
                resident.push((data.offset, data.end()));
            }
            Encoding::ScaledPalette {
                bits,
                group_cols,
                data,
            } => {
                let (rows, cols) = matrix()?;
                let what = || format!("tensor `{name}` scaled palette");
                let layout = ScaledLayout::new(rows, cols, *bits, *group_cols as usize)
                    .filter(|_| (*group_cols as usize) <= cols.max(1));
                if layout.is_none() {
                    return Err(format_err(
                        src,
                        format!(
                            "tensor `{name}`: scaled palette of {bits} bits, blocks of {group_cols} weights; expected 2..=8 bits and 1..={cols} weights"
                        ),
                    ));
                }
                check_section(data, &what, m, src)?;
                check_len(data, layout.map(|x| x.len), &what, src)?;
                resident.push((data.offset, data.end()));
            }
        }
    }
    resident.sort_unstable();
    let mut resident_end = m.data_start;
    for &(start, end) in &resident {
        if start < resident_end {
            return Err(format_err(
                src,
                format!(
                    "resident section at {start} overlaps the one before (ends at {resident_end})"
                ),
            ));
        }
        resident_end = end;
    }
    check_order(m, resident_end, src)
}

/// The block order is a level-ordered permutation of all blocks whose sections follow
/// each other in the file, and the budget table holds their ends.
fn check_order(m: &Manifest, resident_end: u64, src: &Path) -> Result<()> {
    let total: usize = m
        .tensors
        .iter()
        .map(|t| match &t.encoding {
            Encoding::BitStack { blocks, .. } => blocks.len(),
            _ => 0,
        })
        .sum();
    if m.block_order.len() != total || m.budget_table.len() != total + 1 {
        return Err(format_err(
            src,
            format!(
                "block order has {} entries and budget table {}, expected {total} and {}",
                m.block_order.len(),
                m.budget_table.len(),
                total + 1
            ),
        ));
    }
    if m.budget_table[0] != resident_end {
        return Err(format_err(
            src,
            format!(
                "budget table entry 0 is {}, expected the end of the resident sections {resident_end}",
                m.budget_table[0]
            ),
        ));
    }
    let mut next = vec![0u32; m.tensors.len()];
    let mut has_block = vec![false; m.tensors.len()];
    let mut missing = m
        .tensors
        .iter()
        .filter(|t| matches!(t.encoding, Encoding::BitStack { .. }))
        .count();
    let mut min_blocks = 0usize;
    for (j, b) in m.block_order.iter().enumerate() {
        let t = b.tensor as usize;
        let blocks = match m.tensors.get(t).map(|t| &t.encoding) {
            Some(Encoding::BitStack { blocks, .. }) => blocks,
            _ => {
                return Err(format_err(
                    src,
                    format!(
                        "block order entry {j} names tensor {t}, which is not a BitStack tensor"
                    ),
                ));
            }
        };
        if b.level != next[t] {
            return Err(format_err(
                src,
                format!(
                    "block order entry {j} is tensor {t} level {}, expected level {}",
                    b.level, next[t]
                ),
            ));
        }
        next[t] += 1;
        // level < blocks.len(): every block appears once, so `total` bounds the count.
        let Some(entry) = blocks.get(b.level as usize) else {
            return Err(format_err(
                src,
                format!("block order entry {j}: tensor {t} has no level {}", b.level),
            ));
        };
        let s = &entry.section;
        if s.offset < m.budget_table[j] || m.budget_table[j + 1] != s.end() {
            return Err(format_err(
                src,
                format!(
                    "block order entry {j}: section [{}, {}) must start at or after {} and end at the budget table entry {}",
                    s.offset,
                    s.end(),
                    m.budget_table[j],
                    m.budget_table[j + 1]
                ),
            ));
        }
        if missing > 0 {
            if !std::mem::replace(&mut has_block[t], true) {
                missing -= 1;
            }
            min_blocks = j + 1;
        }
    }
    if m.min_blocks as usize != min_blocks {
        return Err(format_err(
            src,
            format!(
                "manifest min_blocks is {}, expected {min_blocks}",
                m.min_blocks
            ),
        ));
    }
    if m.budget_table[total] != m.file_len {
        return Err(format_err(
            src,
            format!(
                "the last budget table entry is {}, expected the file length {}",
                m.budget_table[total], m.file_len
            ),
        ));
    }
    Ok(())
}
