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

use super::encoding::{Check, archived_block_count, archived_width_count};
use super::header::Header;
use super::manifest::{ArchivedManifest, Manifest};
use super::{
    HEADER_LEN, MAX_DIMS, MAX_META_KEY, MAX_META_VALUE, MAX_METADATA, MAX_NAME_LEN, MAX_NUMEL,
    MAX_TENSORS, format_err,
};
use crate::bitstack::MAX_LEVELS;
use crate::error::Result;

/// Parses the header and manifest at the start of `bytes` (which may be a prefix of
/// the file, but must hold the whole manifest); returns the manifest and the format
/// version.
pub(crate) fn parse(bytes: &[u8], src: &Path) -> Result<(Manifest, u32)> {
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
    Ok((m, h.version))
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
        let b = archived_block_count(&t.encoding);
        cap(src, &format!("tensor {i} block count"), b, MAX_LEVELS)?;
        cap(
            src,
            &format!("tensor {i} correction width count"),
            archived_width_count(&t.encoding),
            MAX_LEVELS + 1,
        )?;
        blocks += b;
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
        let view = t.encoding.view();
        // Version 4 is the first whose writers always stamp what their encodings
        // need; older files are read as their releases wrote them.
        if view.min_version() >= 4 && h.version < view.min_version() {
            return Err(format_err(
                src,
                format!(
                    "tensor `{name}` is a {} (format version {}), but the header says version {}",
                    view.name(),
                    view.min_version(),
                    h.version
                ),
            ));
        }
        view.validate(&Check {
            name,
            shape: &t.shape,
            numel,
            data_start: m.data_start,
            file_len: m.file_len,
            src,
        })?;
        resident.extend(view.resident().iter().map(|(s, _)| (s.offset, s.end())));
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
    let total: usize = m.tensors.iter().map(|t| t.encoding.blocks().len()).sum();
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
        .filter(|t| t.encoding.has_blocks() && t.encoding.needs_a_block())
        .count();
    let mut min_blocks = 0usize;
    for (j, b) in m.block_order.iter().enumerate() {
        let t = b.tensor as usize;
        let blocks = match m.tensors.get(t).map(|t| &t.encoding) {
            Some(e) if e.has_blocks() => e.blocks(),
            _ => {
                return Err(format_err(
                    src,
                    format!("block order entry {j} names tensor {t}, which has no blocks"),
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
            if !std::mem::replace(&mut has_block[t], true) && m.tensors[t].encoding.needs_a_block()
            {
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
