//! The fixed 64-byte header (layout table on [`super::CheckpointWriter`]).

use std::path::Path;

use super::{HEADER_LEN, MAGIC, MAX_MANIFEST_BYTES, MIN_VERSION, VERSION, align_u64, format_err};
use crate::error::Result;

/// The decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Format version, [`MIN_VERSION`]..=[`VERSION`].
    pub version: u32,
    pub manifest_len: u64,
    pub manifest_crc: u32,
    pub data_start: u64,
    pub file_len: u64,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

impl Header {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        // 12..16 flags: none defined in v1 or v2.
        b[16..24].copy_from_slice(&(HEADER_LEN as u64).to_le_bytes());
        b[24..32].copy_from_slice(&self.manifest_len.to_le_bytes());
        b[32..36].copy_from_slice(&self.manifest_crc.to_le_bytes());
        // 36..40 reserved.
        b[40..48].copy_from_slice(&self.data_start.to_le_bytes());
        b[48..56].copy_from_slice(&self.file_len.to_le_bytes());
        // 56..60 reserved.
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and checks the header at the start of `bytes`.
    pub(crate) fn decode(bytes: &[u8], source: &Path) -> Result<Header> {
        if bytes.len() < HEADER_LEN {
            return Err(format_err(
                source,
                format!(
                    "truncated header: need {HEADER_LEN} bytes, have {}",
                    bytes.len()
                ),
            ));
        }
        let b = &bytes[..HEADER_LEN];
        if b[0..8] != MAGIC {
            return Err(format_err(
                source,
                format!(
                    "bad magic {:02x?}: expected {:02x?} (\"OCTETWGT\"), not an octet checkpoint",
                    &b[0..8],
                    MAGIC
                ),
            ));
        }
        let version = le_u32(b, 8);
        if !(MIN_VERSION..=VERSION).contains(&version) {
            return Err(format_err(
                source,
                format!(
                    "unsupported format version {version}: this reader reads versions {MIN_VERSION}..={VERSION}"
                ),
            ));
        }
        let (stored, computed) = (le_u32(b, 60), crc32c::crc32c(&b[..60]));
        if stored != computed {
            return Err(format_err(
                source,
                format!(
                    "header checksum mismatch: stored crc32c {stored:#010x}, computed {computed:#010x}"
                ),
            ));
        }
        for (field, at) in [
            ("flags", 12usize),
            ("reserved word at 36", 36),
            ("reserved word at 56", 56),
        ] {
            let v = le_u32(b, at);
            if v != 0 {
                return Err(format_err(
                    source,
                    format!("header {field} is {v:#x}, expected 0"),
                ));
            }
        }
        let manifest_offset = le_u64(b, 16);
        if manifest_offset != HEADER_LEN as u64 {
            return Err(format_err(
                source,
                format!("header manifest offset is {manifest_offset}, expected {HEADER_LEN}"),
            ));
        }
        let h = Header {
            version,
            manifest_len: le_u64(b, 24),
            manifest_crc: le_u32(b, 32),
            data_start: le_u64(b, 40),
            file_len: le_u64(b, 48),
        };
        if h.manifest_len == 0 || h.manifest_len > MAX_MANIFEST_BYTES {
            return Err(format_err(
                source,
                format!(
                    "header manifest length is {}, expected 1..={MAX_MANIFEST_BYTES}",
                    h.manifest_len
                ),
            ));
        }
        let want = align_u64(HEADER_LEN as u64 + h.manifest_len);
        if h.data_start != want {
            return Err(format_err(
                source,
                format!("header data start is {}, expected {want}", h.data_start),
            ));
        }
        if h.file_len < h.data_start {
            return Err(format_err(
                source,
                format!(
                    "header file length {} is below the data start {}",
                    h.file_len, h.data_start
                ),
            ));
        }
        Ok(h)
    }
}

/// Recomputes the manifest and header checksums of a checkpoint edited in place, so
/// a fuzzer's mutations of the manifest reach its validation instead of stopping at
/// the checksum. Returns `false` (changing nothing) when the header's manifest length
/// does not fit `bytes`. Not for production use: it launders corruption.
pub fn reseal(bytes: &mut [u8]) -> bool {
    if bytes.len() < HEADER_LEN {
        return false;
    }
    let len = le_u64(bytes, 24);
    let Some(end) = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_add(HEADER_LEN))
        .filter(|&e| e <= bytes.len())
    else {
        return false;
    };
    let crc = crc32c::crc32c(&bytes[HEADER_LEN..end]);
    bytes[32..36].copy_from_slice(&crc.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    true
}
