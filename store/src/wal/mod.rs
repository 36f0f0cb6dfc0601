//! The write-ahead log of a collection: every upsert and delete is appended here
//! before it is applied in memory, and replayed on open.
//!
//! The log is a directory of files named by the sequence number of their first
//! record (`00000000000000000001.wal`), each an 8-byte magic followed by records
//! (see [`record`]). A file is rotated when the growing segment is frozen for
//! sealing, so once the manifest says a seal covers sequence `s`, whole files at or
//! below `s` can be deleted.
//!
//! Group commit: appends go to the file under a short lock; a caller that needs
//! durability then calls [`Wal::sync_to`] with its sequence number. Syncers queue on
//! one mutex, and each `fdatasync` covers every record written before it started, so
//! concurrent durable writers share fsyncs instead of paying one each.

pub mod record;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::error::{IoContext, Result, StoreError, corrupt};
use crate::fsutil::{remove_if_exists, sync_dir};
use crate::telemetry::Histogram;
pub use record::{WalOp, WalRecord, decode_all, fuzz_one};

/// The first bytes of every WAL file.
pub const MAGIC: &[u8; 8] = b"OCTWAL\x00\x01";

#[derive(Debug)]
struct Writer {
    file: Arc<File>,
    path: PathBuf,
    /// Bytes in the current file.
    len: u64,
    /// Sequence number of the last record written (0: none ever).
    last_seq: u64,
    /// Every file, oldest first: (first sequence number, path).
    files: Vec<(u64, PathBuf)>,
    buf: Vec<u8>,
    /// Set when a failed write could not be rolled back (appending more would put
    /// records after garbage) or an fsync failed (the kernel may have dropped
    /// written pages and a later fsync can report success anyway): what it says.
    poisoned: Option<&'static str>,
}

impl Writer {
    /// Refuses once the log is poisoned, saying why.
    fn usable(&self) -> Result<()> {
        match self.poisoned {
            Some(reason) => Err(StoreError::WalFailed {
                path: self.path.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }
}

/// The log of one collection.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    dim: usize,
    writer: Mutex<Writer>,
    sync_lock: Mutex<()>,
    synced_seq: AtomicU64,
    /// How long each `fdatasync` of the log took.
    fsync_latency: Histogram,
}

fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.wal")
}

fn create_file(dir: &Path, first_seq: u64) -> Result<(Arc<File>, PathBuf)> {
    let path = dir.join(file_name(first_seq));
    let made = (|| {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .at(&path)?;
        f.write_all(MAGIC).at(&path)?;
        f.sync_all().at(&path)?;
        sync_dir(dir)?;
        drop(f);
        OpenOptions::new().append(true).open(&path).at(&path)
    })();
    match made {
        Ok(f) => Ok((Arc::new(f), path)),
        Err(e) => {
            // A half-made file (the disk filled up, say) must not stay behind: once a
            // later file exists, a short one before it reads as corruption.
            let _ = fs::remove_file(&path);
            Err(e)
        }
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir` for vectors of `dim` values and returns
    /// the records after `after_seq`, the last sequence number the segments cover.
    ///
    /// A torn or corrupt tail of the newest file is logged, dropped and cut off; a
    /// bad record in an older file (which was fsynced whole before the next one
    /// began) is reported as corruption, because skipping it would lose writes.
    pub fn open(dir: &Path, dim: usize, after_seq: u64) -> Result<(Wal, Vec<WalRecord>)> {
        if !dir.exists() {
            fs::create_dir_all(dir).at(dir)?;
            // The directory entry itself must survive a crash, or so would not the log.
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).at(dir)? {
            let entry = entry.at(dir)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name
                .strip_suffix(".wal")
                .and_then(|s| s.parse::<u64>().ok())
            {
                files.push((seq, entry.path()));
            }
        }
        files.sort();
        let mut records = Vec::new();
        let mut next_seq = after_seq + 1;
        let mut kept = Vec::new();
        let count = files.len();
        let mut current: Option<(PathBuf, u64)> = None;
        for (i, (first_seq, path)) in files.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let bytes = fs::read(&path).at(&path)?;
            if bytes.len() < MAGIC.len() {
                if !is_last {
                    return Err(corrupt(&path, "WAL file shorter than its header"));
                }
                // A crash while a rotation created this file: start it again.
                remove_if_exists(&path)?;
                continue;
            }
            if &bytes[..MAGIC.len()] != MAGIC {
                return Err(corrupt(&path, "bad WAL magic"));
            }
            let (file_records, valid, tail) = record::decode_all(&bytes[MAGIC.len()..], dim);
            if let Some(tail) = &tail {
                if !is_last {
                    return Err(corrupt(
                        &path,
                        format!("{tail} in a WAL file that was complete"),
                    ));
                }
                tracing::warn!(
                    path = %path.display(),
                    dropped_bytes = bytes.len() - MAGIC.len() - valid,
                    "dropping the torn tail of the WAL: {tail}"
                );
                let f = OpenOptions::new().write(true).open(&path).at(&path)?;
                f.set_len((MAGIC.len() + valid) as u64).at(&path)?;
                f.sync_all().at(&path)?;
            }
            let mut expect = first_seq;
            for r in &file_records {
                if r.seq != expect {
                    return Err(corrupt(
                        &path,
                        format!("record sequence {} where {expect} was expected", r.seq),
                    ));
                }
                expect += 1;
            }
            let last_in_file = expect - 1;
            if last_in_file <= after_seq {
                // Covered by sealed segments (a crash came before its deletion), or
                // an empty file: the next append starts a fresh one.
                remove_if_exists(&path)?;
                continue;
            }
            for r in file_records {
                if r.seq > after_seq {
                    if r.seq != next_seq {
                        return Err(corrupt(
                            &path,
                            format!("WAL gap: sequence {} where {next_seq} was expected", r.seq),
                        ));
                    }
                    next_seq = r.seq + 1;
                    records.push(r);
                }
            }
            kept.push((first_seq, path.clone()));
            if is_last {
                current = Some((path, (MAGIC.len() + valid) as u64));
            }
        }
        let last_seq = next_seq - 1;
        let (file, path, len) = match current {
            Some((path, len)) => {
                let f = OpenOptions::new().append(true).open(&path).at(&path)?;
                (Arc::new(f), path, len)
            }
            None => {
                let (f, path) = create_file(dir, next_seq)?;
                kept.push((next_seq, path.clone()));
                (f, path, MAGIC.len() as u64)
            }
        };
        let wal = Wal {
            dir: dir.to_path_buf(),
            dim,
            writer: Mutex::new(Writer {
                file,
                path,
                len,
                last_seq,
                files: kept,
                buf: Vec::new(),
                poisoned: None,
            }),
            sync_lock: Mutex::new(()),
            synced_seq: AtomicU64::new(last_seq),
            fsync_latency: Histogram::default(),
        };
        Ok((wal, records))
    }

    /// Appends one record and returns its sequence number. Not yet durable: see
    /// [`Wal::sync_to`].
    pub fn append(&self, op: &WalOp) -> Result<u64> {
        let bytes = record::encoded_len(op, self.dim);
        if bytes > record::MAX_RECORD_LEN {
            return Err(StoreError::BatchTooLarge {
                bytes,
                max: record::MAX_RECORD_LEN,
            });
        }
        let mut w = self.writer.lock();
        w.usable()?;
        let seq = w.last_seq + 1;
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        record::encode(seq, op, &mut buf);
        let result = (&*w.file).write_all(&buf);
        if let Err(source) = result {
            // Cut a partial record off so the next append does not follow garbage.
            let len = w.len;
            if w.file.set_len(len).is_err() {
                w.poisoned = Some("an earlier write failed and could not be undone");
            }
            w.buf = buf;
            return Err(StoreError::Io {
                path: w.path.clone(),
                source,
            });
        }
        w.len += buf.len() as u64;
        w.last_seq = seq;
        // Keep a small buffer around for the next record; drop huge ones.
        if buf.capacity() <= 1 << 20 {
            w.buf = buf;
        }
        Ok(seq)
    }

    /// Returns once every record up to `seq` is on stable storage.
    pub fn sync_to(&self, seq: u64) -> Result<()> {
        if self.synced_seq.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let _turn = self.sync_lock.lock();
        // Another syncer may have covered us while we waited.
        if self.synced_seq.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let (file, path, upto) = {
            let w = self.writer.lock();
            w.usable()?;
            (Arc::clone(&w.file), w.path.clone(), w.last_seq)
        };
        if let Err(e) = self.fsync_latency.time(|| file.sync_data()) {
            // After a failed fsync nothing written since the last good one can be
            // trusted, and a retry may "succeed" without the data: stop here.
            self.writer.lock().poisoned = Some("an fsync of the log failed");
            return Err(e).at(path);
        }
        self.synced_seq.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }

    /// Makes every record written so far durable.
    pub fn sync_all(&self) -> Result<()> {
        self.sync_to(self.last_seq())
    }

    /// How long the log's fsyncs took, since it was opened.
    pub fn fsync_latency(&self) -> &Histogram {
        &self.fsync_latency
    }

    /// The sequence number of the last record written.
    pub fn last_seq(&self) -> u64 {
        self.writer.lock().last_seq
    }

    /// Ends the current file (fsynced) and starts a new one. Returns the last
    /// sequence number of the ended file.
    pub fn rotate(&self) -> Result<u64> {
        let mut w = self.writer.lock();
        if let Err(e) = self.fsync_latency.time(|| w.file.sync_data()) {
            w.poisoned = Some("an fsync of the log failed");
            return Err(e).at(&w.path);
        }
        let last = w.last_seq;
        self.synced_seq.fetch_max(last, Ordering::AcqRel);
        if w.len == MAGIC.len() as u64 {
            return Ok(last);
        }
        let (file, path) = create_file(&self.dir, last + 1)?;
        w.files.push((last + 1, path.clone()));
        w.file = file;
        w.path = path;
        w.len = MAGIC.len() as u64;
        Ok(last)
    }

    /// Deletes the files whose records are all at or below `seq` (never the current one).
    pub fn remove_covered(&self, seq: u64) -> Result<()> {
        let mut w = self.writer.lock();
        let mut removed = false;
        while w.files.len() > 1 && w.files[1].0 <= seq + 1 {
            let (_, path) = w.files.remove(0);
            remove_if_exists(&path)?;
            removed = true;
        }
        drop(w);
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The files and their lengths right now, for a snapshot. Call after
    /// [`Wal::sync_all`] while writers are held off.
    pub fn files(&self) -> Vec<(PathBuf, u64)> {
        let w = self.writer.lock();
        w.files
            .iter()
            .map(|(_, p)| {
                let len = if *p == w.path {
                    w.len
                } else {
                    fs::metadata(p).map_or(0, |m| m.len())
                };
                (p.clone(), len)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::point::Point;

    fn upsert(id: u64) -> WalOp {
        WalOp::Upsert(vec![Point::new(id, vec![id as f32, 1.0])])
    }

    #[test]
    fn append_replay_rotate_and_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (wal, recs) = Wal::open(dir.path(), 2, 0).expect("open");
            assert!(recs.is_empty());
            for id in 1..=3 {
                let seq = wal.append(&upsert(id)).expect("append");
                wal.sync_to(seq).expect("sync");
            }
            assert_eq!(wal.rotate().expect("rotate"), 3);
            wal.append(&WalOp::Delete(vec![2])).expect("append");
            wal.sync_all().expect("sync");
        }
        let (wal, recs) = Wal::open(dir.path(), 2, 0).expect("reopen");
        assert_eq!(
            recs.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(recs[3].op, WalOp::Delete(vec![2]));
        wal.remove_covered(3).expect("remove");
        assert_eq!(wal.files().len(), 1);
        drop(wal);
        let (wal, recs) = Wal::open(dir.path(), 2, 3).expect("reopen after seal");
        assert_eq!(recs.len(), 1);
        assert_eq!(wal.append(&upsert(9)).expect("append"), 5);
    }

    #[test]
    fn concurrent_durable_writers_share_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (wal, _) = Wal::open(dir.path(), 2, 0).expect("open");
            let wal = std::sync::Arc::new(wal);
            let threads: Vec<_> = (0..4u64)
                .map(|t| {
                    let wal = std::sync::Arc::clone(&wal);
                    std::thread::spawn(move || {
                        for i in 0..25 {
                            let seq = wal.append(&upsert(t * 100 + i)).expect("append");
                            wal.sync_to(seq).expect("sync");
                            assert!(wal.synced_seq.load(Ordering::Acquire) >= seq);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().expect("writer");
            }
        }
        let (_, recs) = Wal::open(dir.path(), 2, 0).expect("reopen");
        assert_eq!(
            recs.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=100).collect::<Vec<_>>()
        );
        let mut ids: Vec<u64> = recs
            .iter()
            .flat_map(|r| match &r.op {
                WalOp::Upsert(p) => p.iter().map(|p| p.id).collect(),
                WalOp::Delete(_) => Vec::new(),
            })
            .collect();
        ids.sort_unstable();
        let want: Vec<u64> = (0..4u64)
            .flat_map(|t| (0..25).map(move |i| t * 100 + i))
            .collect();
        assert_eq!(ids, want);
    }

    #[test]
    fn torn_tail_is_dropped_and_appends_continue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = {
            let (wal, _) = Wal::open(dir.path(), 2, 0).expect("open");
            wal.append(&upsert(1)).expect("append");
            wal.append(&upsert(2)).expect("append");
            wal.sync_all().expect("sync");
            wal.files()[0].0.clone()
        };
        let len = fs::metadata(&path).expect("meta").len();
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        f.set_len(len - 3).expect("truncate");
        drop(f);
        let (wal, recs) = Wal::open(dir.path(), 2, 0).expect("recover");
        assert_eq!(recs.len(), 1);
        assert_eq!(wal.append(&upsert(3)).expect("append"), 2);
        drop(wal);
        let (_, recs) = Wal::open(dir.path(), 2, 0).expect("reopen");
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].op, upsert(3));
    }
}
