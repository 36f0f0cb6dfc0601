//! Segment component files: a body followed by a versioned footer with a checksum,
//! memory-mapped read-only once verified.
//!
//! | field | bytes |
//! |---|---|
//! | body | `body_len` |
//! | magic `OSEG` | 4 |
//! | component kind | 1 |
//! | format version | 1 |
//! | reserved (zero) | 2 |
//! | `body_len` | 8, u64 LE |
//! | CRC32C of the body | 4, u32 LE |
//! | reserved (zero) | 4 |

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{IoContext, Result, StoreError, corrupt};
use crate::fsutil::write_new;
use crate::manifest::FileRef;

const MAGIC: &[u8; 4] = b"OSEG";
const VERSION: u8 = 1;
/// Bytes of the footer.
pub const FOOTER_LEN: usize = 24;

/// What a component file holds; its byte is in the footer so files cannot be mixed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Component {
    /// Compact codes, `points x code_len` bytes.
    Codes = 1,
    /// Rescore tier codes.
    Rescore = 2,
    /// The search graph.
    Graph = 3,
    /// Point ids, u64 LE each.
    Ids = 4,
    /// Payload offsets and JSON bytes.
    Payloads = 5,
    /// Tombstone bitset words, u64 LE each.
    Tombstones = 6,
    /// A fitted codec as JSON.
    Codec = 7,
}

impl Component {
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Component::Codes => "codes",
            Component::Rescore => "rescore",
            Component::Graph => "graph",
            Component::Ids => "ids",
            Component::Payloads => "payload",
            Component::Tombstones => "tomb",
            Component::Codec => "codec",
        }
    }
}

/// Writes `body` with its footer to `dir/name` (fsynced) and returns its reference.
pub fn write_component(dir: &Path, name: String, kind: Component, body: &[u8]) -> Result<FileRef> {
    let crc = crc32c::crc32c(body);
    let mut bytes = Vec::with_capacity(body.len() + FOOTER_LEN);
    bytes.extend_from_slice(body);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&[kind as u8, VERSION, 0, 0]);
    bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    write_new(&dir.join(&name), &bytes)?;
    Ok(FileRef {
        name,
        len: bytes.len() as u64,
        crc32c: crc,
    })
}

/// A verified, read-only mapped component.
#[derive(Debug)]
pub struct Mapped {
    map: Mmap,
    body_len: usize,
    path: PathBuf,
}

impl Mapped {
    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.map[..self.body_len]
    }

    /// The file's path, for error messages.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens `dir/fref.name`, checks it against the manifest's length and checksum and
/// its own footer, and maps it.
pub fn open_component(
    dir: &Path,
    fref: &FileRef,
    kind: Component,
    collection: &str,
) -> Result<Mapped> {
    let path = dir.join(&fref.name);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::MissingFile {
                collection: collection.to_string(),
                path,
            });
        }
        Err(e) => return Err(e).at(&path),
    };
    let len = file.metadata().at(&path)?.len();
    if len != fref.len {
        return Err(corrupt(
            &path,
            format!("file is {len} bytes, the manifest says {}", fref.len),
        ));
    }
    if len < FOOTER_LEN as u64 {
        return Err(corrupt(&path, "shorter than its footer"));
    }
    // SAFETY: segment files are written once under a fresh name, fsynced, and never
    // modified afterwards (they are only deleted once unreferenced), so the mapped
    // bytes do not change under us. Another process writing into the data directory
    // would break this; the store holds a lock file against a second store.
    let map = unsafe { Mmap::map(&file) }.at(&path)?;
    let footer = &map[map.len() - FOOTER_LEN..];
    if &footer[..4] != MAGIC {
        return Err(corrupt(&path, "bad segment footer magic"));
    }
    if footer[4] != kind as u8 {
        return Err(corrupt(
            &path,
            format!(
                "footer says component {}, expected {}",
                footer[4], kind as u8
            ),
        ));
    }
    if footer[6..8] != [0, 0] || footer[20..24] != [0; 4] {
        return Err(corrupt(&path, "reserved footer bytes are not zero"));
    }
    if footer[5] != VERSION {
        return Err(corrupt(
            &path,
            format!("segment format version {} is not supported", footer[5]),
        ));
    }
    let mut b8 = [0u8; 8];
    b8.copy_from_slice(&footer[8..16]);
    let body_len = u64::from_le_bytes(b8);
    if body_len != len - FOOTER_LEN as u64 {
        return Err(corrupt(
            &path,
            format!("footer body length {body_len} does not match the file"),
        ));
    }
    let body_len = body_len as usize;
    let crc = u32::from_le_bytes([footer[16], footer[17], footer[18], footer[19]]);
    let actual = crc32c::crc32c(&map[..body_len]);
    if crc != fref.crc32c || actual != crc {
        return Err(corrupt(
            &path,
            format!(
                "checksum mismatch: body {actual:08x}, footer {crc:08x}, manifest {:08x}",
                fref.crc32c
            ),
        ));
    }
    Ok(Mapped {
        map,
        body_len,
        path,
    })
}
