//! A collection: one directory holding a manifest, a WAL and sealed segments, and
//! the in-memory state built from them.
//!
//! Concurrency: [`Collection`] is a cheap `Clone + Send + Sync` handle. Readers
//! take the state's read lock for the length of one search. Writers serialise on a
//! writer mutex (so WAL order is apply order), append to the WAL, take the write
//! lock only to apply in memory, and fsync outside every lock (group commit).
//! Sealing and compaction build their files with no lock held and swap the result
//! in under the write lock.

mod maintenance;
mod payload_ops;
mod search;
pub(crate) mod state;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::bitset::Bitset;
use crate::codec_fit;
use crate::config::CollectionConfig;
use crate::error::{IoContext, Result, StoreError, corrupt};
use crate::filter::Filter;
use crate::growing::Growing;
use crate::manifest::{FORMAT_VERSION, MANIFEST_FILE, Manifest};
use crate::point::{PayloadJson, Point, PointId, Record, prepare_batch};
use crate::segment::file::{Component, open_component};
use crate::segment::sealed::SealedSegment;
use crate::telemetry::{Histogram, Telemetry};
use crate::wal::{Wal, WalOp};
use octet_quant::{CodecSpec, VectorCodec};
pub use search::{MAX_K, ScoredPoint, SearchRequest};
use state::{Codecs, SealedEntry, State};

/// Where the WAL lives inside a collection directory.
const WAL_DIR: &str = "wal";

pub(crate) struct Inner {
    name: String,
    dir: PathBuf,
    config: CollectionConfig,
    wal: Wal,
    /// Serialises writers: WAL order is apply order.
    write_lock: Mutex<()>,
    state: RwLock<State>,
    /// Serialises seals, compactions and snapshots (everything that writes a
    /// manifest or deletes files).
    maintenance: Mutex<()>,
    wake: Arc<(Mutex<bool>, Condvar)>,
    closed: AtomicBool,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// Each sealed chunk, start to install.
    seal_latency: Histogram,
    /// Each compaction or refit that rewrote segments.
    compaction_latency: Histogram,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collection")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A handle to an open collection. Clones share the same collection.
#[derive(Debug, Clone)]
pub struct Collection {
    inner: Arc<Inner>,
}

/// What a write returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteReceipt {
    /// The WAL sequence number of the write.
    pub seq: u64,
    /// Whether it was on stable storage when the call returned.
    pub durable: bool,
    /// Distinct point ids the write carried (an id repeated in a batch counts once).
    pub points: usize,
}

/// Sizes and counts of a collection.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionInfo {
    /// The name.
    pub name: String,
    /// The configuration.
    pub config: CollectionConfig,
    /// Live points.
    pub points: usize,
    /// Points in the growing (and frozen) segment.
    pub growing_points: usize,
    /// Sealed segments.
    pub segments: usize,
    /// Bytes of compact codes over all sealed segments.
    pub code_bytes: usize,
    /// Bytes of the rescore tier.
    pub rescore_bytes: usize,
    /// Bytes of graph adjacency lists.
    pub graph_bytes: usize,
    /// Stored points in sealed segments, deleted ones included.
    pub sealed_points: usize,
    /// Per sealed segment: (id, stored points, deleted points).
    pub segment_points: Vec<(u64, usize, usize)>,
    /// The compact codec as fitted on the first seal (`None` before it): what
    /// `transform-auto` chose, for instance `transform96`.
    pub fitted_codec: Option<CodecSpec>,
}

impl Collection {
    /// Creates a new collection in `dir` (which must not exist).
    pub(crate) fn create(name: &str, dir: &Path, config: CollectionConfig) -> Result<Collection> {
        config.validate()?;
        let config_json =
            serde_json::to_string(&config).map_err(|e| StoreError::InvalidConfig {
                field: "config",
                reason: e.to_string(),
            })?;
        fs::create_dir_all(dir).at(dir)?;
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            generation: 1,
            config_json,
            wal_seq: 0,
            next_segment: 1,
            codec: None,
            rescore_codec: None,
            segments: Vec::new(),
        };
        manifest.store(dir)?;
        Self::open(name, dir)
    }

    /// Opens an existing collection: loads the manifest, verifies and maps every
    /// segment file, removes files no manifest references (left by a crash), and
    /// replays the WAL.
    pub(crate) fn open(name: &str, dir: &Path) -> Result<Collection> {
        let manifest = Manifest::load(dir)?;
        let config: CollectionConfig =
            serde_json::from_str(&manifest.config_json).map_err(|e| {
                corrupt(
                    dir.join(MANIFEST_FILE),
                    format!("config does not parse: {e}"),
                )
            })?;
        config.validate()?;
        let codecs = load_codecs(dir, name, &manifest, &config)?;
        if codecs.is_none() && !manifest.segments.is_empty() {
            return Err(corrupt(
                dir.join(MANIFEST_FILE),
                "segments without a fitted codec",
            ));
        }
        let mut sealed = Vec::with_capacity(manifest.segments.len());
        for sref in &manifest.segments {
            let Some(c) = &codecs else { break };
            let rescore_len = c.rescore.as_ref().map(|(r, _)| r.code_len());
            let seg = SealedSegment::open(dir, sref, c.codec.code_len(), rescore_len, name)?;
            let deleted = match &sref.tombstones {
                Some(t) => {
                    let m = open_component(dir, t, Component::Tombstones, name)?;
                    let words: Vec<u64> = m
                        .body()
                        .chunks_exact(8)
                        .map(|c| {
                            u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                        })
                        .collect();
                    if m.body().len() % 8 != 0 {
                        return Err(corrupt(m.path(), "tombstone file is not whole words"));
                    }
                    Bitset::from_words(words, seg.len()).ok_or_else(|| {
                        corrupt(m.path(), "tombstone bitset does not fit the segment")
                    })?
                }
                None => Bitset::new(seg.len()),
            };
            sealed.push(SealedEntry {
                seg: Arc::new(seg),
                meta: sref.clone(),
                deleted,
                dirty: false,
            });
        }
        remove_unreferenced(dir, &manifest)?;
        let (wal, records) = Wal::open(&dir.join(WAL_DIR), config.dim, manifest.wal_seq)?;
        let mut state = State {
            growing: Growing::new(config.dim),
            frozen: Default::default(),
            chunk_points: config.segments.seal_threshold,
            sealed,
            codecs: codecs.map(Arc::new),
            applied_seq: manifest.wal_seq,
            manifest,
        };
        let replayed = records.len();
        for r in records {
            state.apply(r.seq, r.op);
        }
        if replayed > 0 {
            tracing::info!(collection = name, records = replayed, "replayed the WAL");
        }
        let inner = Arc::new(Inner {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            config,
            wal,
            write_lock: Mutex::new(()),
            state: RwLock::new(state),
            maintenance: Mutex::new(()),
            wake: Arc::new((Mutex::new(false), Condvar::new())),
            closed: AtomicBool::new(false),
            worker: Mutex::new(None),
            seal_latency: Histogram::default(),
            compaction_latency: Histogram::default(),
        });
        let handle = maintenance::spawn_worker(Arc::downgrade(&inner), Arc::clone(&inner.wake));
        *inner.worker.lock() = Some(handle);
        Ok(Collection { inner })
    }

    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The collection's configuration.
    pub fn config(&self) -> &CollectionConfig {
        &self.inner.config
    }

    /// Inserts or replaces `points`. The whole batch is checked first (dimension,
    /// NaN, infinity); one bad point rejects it and nothing is applied. With
    /// `durable`, returns only once the batch is fsynced to the WAL. The batch is one
    /// WAL record, so a crash keeps all of it or none. If the fsync itself fails the
    /// error is returned, but the batch is already visible to readers and may or may
    /// not survive a crash, as with any non-durable write.
    pub fn upsert(&self, points: &[Point], durable: bool) -> Result<WriteReceipt> {
        let prepared = prepare_batch(points, self.inner.config.dim, self.inner.config.metric)?;
        self.write(WalOp::Upsert(prepared), durable)
    }

    /// Deletes `ids` (absent ids are ignored). With `durable`, returns once fsynced.
    pub fn delete(&self, ids: &[PointId], durable: bool) -> Result<WriteReceipt> {
        let mut distinct = ids.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        self.write(WalOp::Delete(distinct), durable)
    }

    fn write(&self, op: WalOp, durable: bool) -> Result<WriteReceipt> {
        self.write_locked(self.inner.write_lock.lock(), op, durable)
    }

    /// [`Collection::write`] for a caller that already holds the writer lock (a
    /// read-modify-write such as [`Collection::update_payloads`]); releases it.
    fn write_locked(
        &self,
        writer: parking_lot::MutexGuard<'_, ()>,
        op: WalOp,
        durable: bool,
    ) -> Result<WriteReceipt> {
        let inner = &self.inner;
        let points = match &op {
            WalOp::Upsert(p) => p.len(),
            WalOp::Delete(ids) => ids.len(),
        };
        if inner.closed.load(Ordering::Acquire) {
            return Err(StoreError::CollectionNotFound {
                name: inner.name.clone(),
            });
        }
        let (seq, grown) = {
            let _writer = writer;
            // A chunk about to be frozen ends its WAL file, so sealing it lets
            // the file go.
            if inner.state.read().freeze_before(&op) {
                inner.wal.rotate()?;
            }
            let seq = inner.wal.append(&op)?;
            let mut st = inner.state.write();
            st.apply(seq, op);
            (
                seq,
                !st.frozen.is_empty() || st.growing.live() >= inner.config.segments.seal_threshold,
            )
        };
        if durable {
            inner.wal.sync_to(seq)?;
        }
        if grown {
            inner.wake_worker();
        }
        Ok(WriteReceipt {
            seq,
            durable,
            points,
        })
    }

    /// The points among `ids` that exist, in the order asked.
    pub fn get(
        &self,
        ids: &[PointId],
        with_payload: bool,
        with_vector: bool,
    ) -> Result<Vec<Record>> {
        let st = self.inner.state.read();
        let mut out = Vec::new();
        for &id in ids {
            if let Some(loc) = locate(&st, id) {
                out.push(self.record(&st, loc, with_payload, with_vector)?);
            }
        }
        Ok(out)
    }

    /// Live points, or those passing `filter`.
    pub fn count(&self, filter: Option<&Filter>) -> Result<usize> {
        if let Some(f) = filter {
            f.validate()?;
        }
        let st = self.inner.state.read();
        let Some(f) = filter else {
            return Ok(st.live());
        };
        let mut n = 0;
        for slot in 0..st.growing.slots() as u32 {
            n += usize::from(
                st.growing.is_live(slot)
                    && f.matches(st.growing.id(slot), st.growing.payload(slot)),
            );
        }
        for fr in &st.frozen {
            for slot in 0..fr.seg.slots() as u32 {
                n += usize::from(
                    !fr.deleted.get(slot as usize)
                        && f.matches(fr.seg.id(slot), fr.seg.payload(slot)),
                );
            }
        }
        for e in &st.sealed {
            n += e.seg.allowed(Some(f), &e.deleted).count_ones();
        }
        Ok(n)
    }

    /// Up to `limit` live points with ids `>= from`, in id order, passing `filter`;
    /// and the id to continue from, if more remain.
    pub fn scroll(
        &self,
        from: Option<PointId>,
        limit: usize,
        filter: Option<&Filter>,
        with_payload: bool,
        with_vector: bool,
    ) -> Result<(Vec<Record>, Option<PointId>)> {
        if let Some(f) = filter {
            f.validate()?;
        }
        let from = from.unwrap_or(0);
        let want = limit.saturating_add(1);
        let st = self.inner.state.read();
        let mut locs: Vec<(PointId, Loc)> = Vec::new();
        let mut push_part = |part: Vec<(PointId, Loc)>| locs.extend(part.into_iter().take(want));
        let mut g: Vec<(PointId, Loc)> = (0..st.growing.slots() as u32)
            .filter(|&s| st.growing.is_live(s) && st.growing.id(s) >= from)
            .filter(|&s| filter.is_none_or(|f| f.matches(st.growing.id(s), st.growing.payload(s))))
            .map(|s| (st.growing.id(s), Loc::Growing(s)))
            .collect();
        g.sort_unstable_by_key(|e| e.0);
        push_part(g);
        for (fi, fr) in st.frozen.iter().enumerate() {
            let mut g: Vec<(PointId, Loc)> = (0..fr.seg.slots() as u32)
                .filter(|&s| !fr.deleted.get(s as usize) && fr.seg.id(s) >= from)
                .filter(|&s| filter.is_none_or(|f| f.matches(fr.seg.id(s), fr.seg.payload(s))))
                .map(|s| (fr.seg.id(s), Loc::Frozen(fi, s)))
                .collect();
            g.sort_unstable_by_key(|e| e.0);
            push_part(g);
        }
        for (si, e) in st.sealed.iter().enumerate() {
            let allowed = e.seg.allowed(filter, &e.deleted);
            let by_id = e.seg.by_id();
            let start = by_id.partition_point(|(id, _)| *id < from);
            let part = by_id[start..]
                .iter()
                .filter(|(_, off)| allowed.get(*off as usize))
                .take(want)
                .map(|&(id, off)| (id, Loc::Sealed(si, off)))
                .collect();
            push_part(part);
        }
        locs.sort_unstable_by_key(|e| e.0);
        let next = locs.get(limit).map(|e| e.0);
        locs.truncate(limit);
        let records = locs
            .into_iter()
            .map(|(_, loc)| self.record(&st, loc, with_payload, with_vector))
            .collect::<Result<Vec<_>>>()?;
        Ok((records, next))
    }

    fn record(
        &self,
        st: &State,
        loc: Loc,
        with_payload: bool,
        with_vector: bool,
    ) -> Result<Record> {
        let (id, payload, vector) = match loc {
            Loc::Growing(s) => (
                st.growing.id(s),
                with_payload.then(|| PayloadJson::from_payload(st.growing.payload(s))),
                with_vector.then(|| st.growing.vector(s).to_vec()),
            ),
            Loc::Frozen(fi, s) => {
                let fr = st
                    .frozen
                    .get(fi)
                    .ok_or_else(|| corrupt(&self.inner.dir, "frozen segment vanished"))?;
                (
                    fr.seg.id(s),
                    with_payload.then(|| PayloadJson::from_payload(fr.seg.payload(s))),
                    with_vector.then(|| fr.seg.vector(s).to_vec()),
                )
            }
            Loc::Sealed(si, off) => {
                let seg = &st.sealed[si].seg;
                let payload = if with_payload {
                    Some(seg.payload_json(off)?)
                } else {
                    None
                };
                let vector = if with_vector {
                    decode_sealed(st, seg, off)
                } else {
                    None
                };
                (seg.id(off), payload, vector)
            }
        };
        Ok(Record {
            id,
            payload,
            vector,
        })
    }

    /// Counts and sizes.
    pub fn info(&self) -> CollectionInfo {
        let st = self.inner.state.read();
        let (mut code_bytes, mut rescore_bytes, mut graph_bytes, mut sealed_points) = (0, 0, 0, 0);
        for e in &st.sealed {
            let (c, r, g) = e.seg.sizes();
            code_bytes += c;
            rescore_bytes += r;
            graph_bytes += g;
            sealed_points += e.seg.len();
        }
        CollectionInfo {
            name: self.inner.name.clone(),
            config: self.inner.config.clone(),
            points: st.live(),
            growing_points: st.unsealed(),
            segments: st.sealed.len(),
            code_bytes,
            rescore_bytes,
            graph_bytes,
            sealed_points,
            fitted_codec: st.codecs.as_ref().map(|c| c.codec.spec()),
            segment_points: st
                .sealed
                .iter()
                .map(|e| (e.seg.meta.id, e.seg.len(), e.deleted.count_ones()))
                .collect(),
        }
    }

    /// Latencies of the WAL's fsyncs, seals and compactions since the collection
    /// was opened, and the chunks waiting to be sealed.
    pub fn telemetry(&self) -> Telemetry {
        let inner = &self.inner;
        Telemetry {
            wal_fsync: inner.wal.fsync_latency().snapshot(),
            seal: inner.seal_latency.snapshot(),
            compaction: inner.compaction_latency.snapshot(),
            seal_queue: inner.state.read().frozen.len(),
        }
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<()> {
        self.inner.wal.sync_all()
    }

    /// Stops the background worker and makes every write durable. Later writes fail.
    pub(crate) fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.wake_worker();
        let handle = self.inner.worker.lock().take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        // Wait out a maintenance step another thread may be running.
        let _m = self.inner.maintenance.lock();
        self.inner.wal.sync_all()
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub(crate) fn maintenance_lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.inner.maintenance.lock()
    }

    /// With writers held for an instant: fsync the WAL and note the manifest and
    /// each WAL file's length. Caller holds the maintenance lock.
    pub(crate) fn snapshot_point(&self) -> Result<SnapshotPoint> {
        let _w = self.inner.write_lock.lock();
        self.inner.wal.sync_all()?;
        let path = self.inner.dir.join(MANIFEST_FILE);
        let manifest = fs::read(&path).at(&path)?;
        Ok((manifest, self.inner.wal.files()))
    }
}

impl Inner {
    fn wake_worker(&self) {
        let (lock, cv) = &*self.wake;
        *lock.lock() = true;
        cv.notify_one();
    }
}

/// The manifest bytes and the WAL files with their lengths at a snapshot's instant.
pub(crate) type SnapshotPoint = (Vec<u8>, Vec<(PathBuf, u64)>);

/// Where a live point is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Loc {
    Growing(u32),
    /// Chunk index in `State::frozen`, slot.
    Frozen(usize, u32),
    Sealed(usize, u32),
}

fn locate(st: &State, id: PointId) -> Option<Loc> {
    if let Some(s) = st.growing.slot_of(id) {
        return Some(Loc::Growing(s));
    }
    for (fi, fr) in st.frozen.iter().enumerate() {
        if let Some(s) = fr.seg.slot_of(id).filter(|&s| !fr.deleted.get(s as usize)) {
            return Some(Loc::Frozen(fi, s));
        }
    }
    st.sealed.iter().enumerate().find_map(|(si, e)| {
        e.seg
            .offset_of(id)
            .filter(|&o| !e.deleted.get(o as usize))
            .map(|o| Loc::Sealed(si, o))
    })
}

/// The best stored approximation of a sealed point's vector.
fn decode_sealed(st: &State, seg: &SealedSegment, off: u32) -> Option<Vec<f32>> {
    let codecs = st.codecs.as_ref()?;
    let mut out = vec![0f32; codecs.codec.dim()];
    match (&codecs.rescore, seg.rescore_code(off)) {
        (Some((r, _)), Some(code)) => r.decode_into(code, &mut out),
        _ => codecs.codec.decode_into(seg.code(off), &mut out),
    }
    Some(out)
}

fn load_codecs(
    dir: &Path,
    name: &str,
    m: &Manifest,
    config: &CollectionConfig,
) -> Result<Option<Codecs>> {
    let Some(cref) = &m.codec else {
        return Ok(None);
    };
    let load = |fref: &crate::manifest::FileRef| -> Result<codec_fit::SharedCodec> {
        let mapped = open_component(dir, fref, Component::Codec, name)?;
        let codec = codec_fit::from_json(mapped.body()).map_err(|r| corrupt(mapped.path(), r))?;
        if codec.dim() != config.dim {
            return Err(corrupt(
                mapped.path(),
                format!(
                    "codec dimension {} is not the collection's {}",
                    codec.dim(),
                    config.dim
                ),
            ));
        }
        Ok(codec)
    };
    let codec = load(cref)?;
    let rescore = match (&m.rescore_codec, config.rescore.element) {
        (Some(r), Some(_)) => Some((load(r)?, r.clone())),
        (None, None) => None,
        _ => {
            return Err(corrupt(
                dir.join(MANIFEST_FILE),
                "rescore codec does not match the configuration",
            ));
        }
    };
    Ok(Some(Codecs {
        codec,
        codec_file: cref.clone(),
        rescore,
    }))
}

/// Deletes files in the collection directory that the manifest does not reference:
/// segments written by a seal or compaction that crashed before its manifest.
fn remove_unreferenced(dir: &Path, m: &Manifest) -> Result<()> {
    let keep: std::collections::HashSet<&str> = m.file_names().into_iter().collect();
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == MANIFEST_FILE || name == WAL_DIR || keep.contains(name.as_ref()) {
            continue;
        }
        if entry.file_type().at(entry.path())?.is_file() {
            tracing::info!(file = %entry.path().display(), "removing a file no manifest references");
            crate::fsutil::remove_if_exists(&entry.path())?;
        }
    }
    Ok(())
}
