//! The manifest: which segment files make up a collection, their checksums, and the
//! WAL position the segments cover. Stored with rkyv (validated on read) behind a
//! magic and a CRC32C, and replaced atomically (temp file, fsync, rename, fsync dir).
//!
//! | field | bytes |
//! |---|---|
//! | magic `OCTMAN\0\x01` | 8 |
//! | CRC32C of the body | 4, u32 LE |
//! | body length | 4, u32 LE |
//! | body: rkyv archive of [`Manifest`] | length |

use std::path::Path;

use rkyv::{Archive, Deserialize, Serialize};

use crate::error::{IoContext, Result, corrupt};
use crate::fsutil::write_atomic;

/// The manifest's file name inside a collection directory.
pub const MANIFEST_FILE: &str = "MANIFEST";

pub(crate) const MAGIC: &[u8; 8] = b"OCTMAN\x00\x01";

/// The on-disk format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// A file the manifest vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct FileRef {
    /// File name inside the collection directory.
    pub name: String,
    /// Its exact length in bytes.
    pub len: u64,
    /// CRC32C of its body (everything before its footer).
    pub crc32c: u32,
}

/// One sealed segment.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct SegmentRef {
    /// Segment id, unique within the collection.
    pub id: u64,
    /// Points stored (live or tombstoned).
    pub points: u64,
    /// Compact codes.
    pub codes: FileRef,
    /// The rescore tier, when the collection has one.
    pub rescore: Option<FileRef>,
    /// The graph.
    pub graph: FileRef,
    /// Point ids in storage order.
    pub ids: FileRef,
    /// Payloads in storage order.
    pub payloads: FileRef,
    /// The tombstone bitset, once any point of the segment is deleted.
    pub tombstones: Option<FileRef>,
}

/// Everything that makes up a collection on disk.
#[derive(Debug, Clone, PartialEq, Archive, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// Incremented on every write; names files written with it.
    pub generation: u64,
    /// The collection configuration, as JSON.
    pub config_json: String,
    /// Every WAL record up to this sequence number is reflected in the segments.
    pub wal_seq: u64,
    /// The next segment id to hand out.
    pub next_segment: u64,
    /// The fitted compact codec (JSON), once the first seal fitted it.
    pub codec: Option<FileRef>,
    /// The fitted rescore-tier codec (JSON), once fitted.
    pub rescore_codec: Option<FileRef>,
    /// Live sealed segments, oldest first.
    pub segments: Vec<SegmentRef>,
}

impl Manifest {
    /// Writes the manifest atomically into `dir`.
    pub fn store(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = self.encode().map_err(|reason| corrupt(&path, reason))?;
        write_atomic(&path, &bytes)
    }

    /// The manifest file's bytes: header and rkyv body.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let body = rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .map_err(|e| format!("cannot serialize manifest: {e}"))?;
        let len = u32::try_from(body.len())
            .map_err(|_| format!("manifest body of {} bytes is too large", body.len()))?;
        let mut bytes = Vec::with_capacity(16 + body.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&body);
        Ok(bytes)
    }

    /// Reads and validates the manifest in `dir`.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).at(&path)?;
        Self::decode(&bytes).map_err(|reason| corrupt(&path, reason))
    }

    /// Parses manifest bytes; the error says which check failed.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, String> {
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err("bad manifest magic".into());
        }
        let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
        let body = &bytes[16..];
        if body.len() != len {
            return Err(format!(
                "manifest body is {} bytes, header says {len}",
                body.len()
            ));
        }
        if crc32c::crc32c(body) != crc {
            return Err("manifest checksum mismatch".into());
        }
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
        aligned.extend_from_slice(body);
        let m = rkyv::from_bytes::<Manifest, rkyv::rancor::Error>(&aligned)
            .map_err(|e| format!("manifest does not validate: {e}"))?;
        if m.format_version != FORMAT_VERSION {
            return Err(format!(
                "manifest format version {} is not supported (this build reads {FORMAT_VERSION})",
                m.format_version
            ));
        }
        Ok(m)
    }

    /// Every file name the manifest references.
    pub fn file_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        names.extend(self.codec.iter().map(|f| f.name.as_str()));
        names.extend(self.rescore_codec.iter().map(|f| f.name.as_str()));
        for s in &self.segments {
            names.extend([&s.codes, &s.graph, &s.ids, &s.payloads].map(|f| f.name.as_str()));
            names.extend(
                s.rescore
                    .iter()
                    .chain(&s.tombstones)
                    .map(|f| f.name.as_str()),
            );
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = FileRef {
            name: "1.codes".into(),
            len: 10,
            crc32c: 7,
        };
        let m = Manifest {
            format_version: FORMAT_VERSION,
            generation: 3,
            config_json: "{}".into(),
            wal_seq: 42,
            next_segment: 2,
            codec: Some(f.clone()),
            rescore_codec: None,
            segments: vec![SegmentRef {
                id: 1,
                points: 5,
                codes: f.clone(),
                rescore: None,
                graph: f.clone(),
                ids: f.clone(),
                payloads: f,
                tombstones: None,
            }],
        };
        m.store(dir.path()).expect("store");
        assert_eq!(Manifest::load(dir.path()).expect("load"), m);
        let bytes = std::fs::read(dir.path().join(MANIFEST_FILE)).expect("read");
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1;
            assert!(Manifest::decode(&b).is_err(), "flip at {i}");
        }
        assert!(Manifest::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
