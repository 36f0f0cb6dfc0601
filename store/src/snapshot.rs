//! Snapshots: one file holding a consistent copy of a collection (its manifest, the
//! files the manifest references and the WAL up to a point), each file checksummed
//! and the whole checksummed, restorable into any data directory.
//!
//! | field | bytes |
//! |---|---|
//! | magic `OCTSNAP\x01` | 8 |
//! | per file: tag `1`, name length (u16 LE), name, data length (u64 LE), CRC32C of data (u32 LE), data | |
//! | end: tag `0`, CRC32C of every byte before it (u32 LE) | 5 |
//!
//! Consistency: segment files never change once written; the snapshot takes the
//! maintenance lock (no seal or compaction deletes files meanwhile) and, with
//! writers held for an instant, fsyncs the WAL and notes each WAL file's length.
//! Restoring replays that WAL prefix on top of the manifest's segments: the
//! collection as it was at that instant.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::collection::Collection;
use crate::error::{IoContext, Result, corrupt};
use crate::fsutil::sync_dir;
use crate::manifest::{MANIFEST_FILE, Manifest};

const MAGIC: &[u8; 8] = b"OCTSNAP\x01";
const CHUNK: usize = 1 << 20;

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The snapshot file.
    pub path: PathBuf,
    /// Files inside it.
    pub files: usize,
    /// Its size in bytes.
    pub bytes: u64,
}

/// A snapshot entry's source: read twice, so it must seek.
trait Source: Read + Seek {}
impl<T: Read + Seek> Source for T {}

/// A writer that keeps a running CRC32C of what passes through.
struct CrcWriter<W: Write> {
    inner: W,
    crc: u32,
}

impl<W: Write> CrcWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.inner.write_all(bytes)
    }
}

impl Collection {
    /// Writes a consistent snapshot of this collection to `dest`.
    pub fn snapshot(&self, dest: &Path) -> Result<SnapshotInfo> {
        let _m = self.maintenance_lock();
        let (manifest_bytes, wal_files) = self.snapshot_point()?;
        let dir = self.dir().to_path_buf();
        let manifest =
            Manifest::decode(&manifest_bytes).map_err(|r| corrupt(dir.join(MANIFEST_FILE), r))?;
        let tmp = dest.with_extension("partial");
        let file = File::create(&tmp).at(&tmp)?;
        let mut w = CrcWriter {
            inner: BufWriter::new(file),
            crc: 0,
        };
        w.put(MAGIC).at(&tmp)?;
        let mut count = 0;
        let mut entry = |w: &mut CrcWriter<BufWriter<File>>,
                         name: &str,
                         src: &mut dyn Source,
                         len: u64|
         -> Result<()> {
            // The data's checksum goes before the data, so the data is read twice:
            // once to checksum, once to copy. Nothing bigger than a chunk is held.
            let mut buf = vec![0u8; CHUNK];
            let mut data_crc = 0u32;
            let mut left = len;
            while left > 0 {
                let n = (left as usize).min(CHUNK);
                src.read_exact(&mut buf[..n]).at(&tmp)?;
                data_crc = crc32c::crc32c_append(data_crc, &buf[..n]);
                left -= n as u64;
            }
            src.seek(SeekFrom::Start(0)).at(&tmp)?;
            w.put(&[1]).at(&tmp)?;
            w.put(&(name.len() as u16).to_le_bytes()).at(&tmp)?;
            w.put(name.as_bytes()).at(&tmp)?;
            w.put(&len.to_le_bytes()).at(&tmp)?;
            w.put(&data_crc.to_le_bytes()).at(&tmp)?;
            let mut left = len;
            let mut copy_crc = 0u32;
            while left > 0 {
                let n = (left as usize).min(CHUNK);
                src.read_exact(&mut buf[..n]).at(&tmp)?;
                copy_crc = crc32c::crc32c_append(copy_crc, &buf[..n]);
                w.put(&buf[..n]).at(&tmp)?;
                left -= n as u64;
            }
            if copy_crc != data_crc {
                return Err(corrupt(
                    &tmp,
                    format!("`{name}` changed while it was copied"),
                ));
            }
            count += 1;
            Ok(())
        };
        entry(
            &mut w,
            MANIFEST_FILE,
            &mut std::io::Cursor::new(&manifest_bytes),
            manifest_bytes.len() as u64,
        )?;
        for name in manifest.file_names() {
            let path = dir.join(name);
            let mut f = File::open(&path).at(&path)?;
            let len = f.metadata().at(&path)?.len();
            entry(&mut w, name, &mut f, len)?;
        }
        for (path, len) in wal_files {
            let name = path
                .file_name()
                .map(|n| format!("wal/{}", n.to_string_lossy()))
                .unwrap_or_default();
            let mut f = File::open(&path).at(&path)?;
            entry(&mut w, &name, &mut f, len)?;
        }
        w.put(&[0]).at(&tmp)?;
        let crc = w.crc;
        w.inner.write_all(&crc.to_le_bytes()).at(&tmp)?;
        let file = w.inner.into_inner().map_err(|e| e.into_error()).at(&tmp)?;
        file.sync_all().at(&tmp)?;
        fs::rename(&tmp, dest).at(dest)?;
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        let bytes = fs::metadata(dest).at(dest)?.len();
        Ok(SnapshotInfo {
            path: dest.to_path_buf(),
            files: count,
            bytes,
        })
    }
}

fn read_exact_at<R: Read>(r: &mut R, buf: &mut [u8], crc: &mut u32, path: &Path) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            corrupt(path, "snapshot ends early")
        } else {
            crate::error::StoreError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })?;
    *crc = crc32c::crc32c_append(*crc, buf);
    Ok(())
}

/// Checks an entry name: the manifest, a flat file name, or `wal/<file>`.
fn safe_name(name: &str) -> bool {
    let flat = |n: &str| {
        !n.is_empty()
            && n != "."
            && n != ".."
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    match name.strip_prefix("wal/") {
        Some(rest) => flat(rest),
        None => flat(name),
    }
}

/// Unpacks and verifies the snapshot at `src` into the new directory `dir`.
pub(crate) fn unpack(src: &Path, dir: &Path) -> Result<()> {
    let file = File::open(src).at(src)?;
    let total = file.metadata().at(src)?.len();
    let mut r = BufReader::new(file);
    let mut crc = 0u32;
    let mut magic = [0u8; 8];
    read_exact_at(&mut r, &mut magic, &mut crc, src)?;
    if &magic != MAGIC {
        return Err(corrupt(src, "not an octet snapshot (bad magic)"));
    }
    fs::create_dir_all(dir.join("wal")).at(dir)?;
    let mut seen_manifest = false;
    loop {
        let mut tag = [0u8; 1];
        read_exact_at(&mut r, &mut tag, &mut crc, src)?;
        if tag[0] == 0 {
            break;
        }
        if tag[0] != 1 {
            return Err(corrupt(src, format!("unknown entry tag {}", tag[0])));
        }
        let mut len2 = [0u8; 2];
        read_exact_at(&mut r, &mut len2, &mut crc, src)?;
        let mut name = vec![0u8; usize::from(u16::from_le_bytes(len2))];
        read_exact_at(&mut r, &mut name, &mut crc, src)?;
        let name = String::from_utf8(name).map_err(|_| corrupt(src, "entry name is not UTF-8"))?;
        if !safe_name(&name) {
            return Err(corrupt(src, format!("unsafe entry name `{name}`")));
        }
        let mut head = [0u8; 12];
        read_exact_at(&mut r, &mut head, &mut crc, src)?;
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(&head[..8]);
        let len = u64::from_le_bytes(len8);
        if len > total {
            return Err(corrupt(
                src,
                format!("entry `{name}` claims {len} bytes, more than the file"),
            ));
        }
        let want = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        let out_path = dir.join(&name);
        let mut out = BufWriter::new(File::create(&out_path).at(&out_path)?);
        let mut data_crc = 0u32;
        let mut buf = vec![0u8; CHUNK];
        let mut left = len;
        while left > 0 {
            let n = (left as usize).min(CHUNK);
            read_exact_at(&mut r, &mut buf[..n], &mut crc, src)?;
            data_crc = crc32c::crc32c_append(data_crc, &buf[..n]);
            out.write_all(&buf[..n]).at(&out_path)?;
            left -= n as u64;
        }
        if data_crc != want {
            return Err(corrupt(src, format!("entry `{name}` fails its checksum")));
        }
        let f = out.into_inner().map_err(|e| e.into_error()).at(&out_path)?;
        f.sync_all().at(&out_path)?;
        seen_manifest |= name == MANIFEST_FILE;
    }
    let expected = crc;
    let mut tail = [0u8; 4];
    r.read_exact(&mut tail)
        .map_err(|_| corrupt(src, "snapshot ends before its checksum"))?;
    if u32::from_le_bytes(tail) != expected {
        return Err(corrupt(src, "snapshot checksum mismatch"));
    }
    if r.read(&mut [0u8; 1]).at(src)? != 0 {
        return Err(corrupt(src, "bytes after the snapshot's end"));
    }
    if !seen_manifest {
        return Err(corrupt(src, "snapshot holds no manifest"));
    }
    sync_dir(&dir.join("wal"))?;
    sync_dir(dir)
}
