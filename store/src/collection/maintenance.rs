//! Sealing, compaction and the background worker that runs them.
//!
//! Both build their files with no lock held, then take the writer mutex (so no
//! write interleaves), fsync the WAL (the tombstones about to be persisted may
//! reflect any applied write), write tombstone files and the new manifest, swap the
//! in-memory state under the write lock, and only then delete files the new
//! manifest no longer references. A crash at any point leaves either the old
//! manifest (new files are orphans, removed at open) or the new one.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::state::{Codecs, SealedEntry, State};
use super::{Collection, Inner};
use crate::bitset::Bitset;
use crate::codec_fit::{self, SharedCodec};
use crate::error::{Result, corrupt};
use crate::fsutil::{remove_if_exists, sync_dir};
use crate::manifest::{FileRef, Manifest, SegmentRef};
use crate::segment::file::{Component, write_component};
use crate::segment::sealed::SealedSegment;
use crate::segment::writer::{GraphParams, SegmentInput, write_segment};
use octet_quant::{CodecSpec, VectorCodec};

/// Rows sampled to fit a codec on the first seal.
const FIT_SAMPLE_ROWS: usize = 65_536;

pub(super) fn spawn_worker(weak: Weak<Inner>, wake: Arc<(Mutex<bool>, Condvar)>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("octet-maintenance".into())
        .spawn(move || worker_loop(weak, wake))
        .unwrap_or_else(|e| {
            // Without a worker, sealing still happens through explicit calls.
            tracing::error!("cannot start the maintenance thread: {e}");
            std::thread::spawn(|| {})
        })
}

/// Runs maintenance until the collection is closed or dropped. Holds the
/// collection only while working, never while waiting, so dropping the last
/// handle ends the loop.
fn worker_loop(weak: Weak<Inner>, wake: Arc<(Mutex<bool>, Condvar)>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        {
            let Some(inner) = weak.upgrade() else { return };
            if inner.closed.load(Ordering::Acquire) {
                return;
            }
            let c = Collection { inner };
            // A panic in a seal or compaction (a bug) must not end background work
            // for good: the state it leaves (a frozen segment) is retried.
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.maintain_once()));
            match result {
                Ok(Ok(true)) => continue,
                Ok(Ok(false)) => backoff = Duration::from_millis(200),
                Ok(Err(e)) => {
                    tracing::warn!(
                        collection = c.name(),
                        "background maintenance failed, will retry: {e}"
                    );
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(_) => {
                    tracing::error!(
                        collection = c.name(),
                        "background maintenance panicked, will retry"
                    );
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        let (lock, cv) = &*wake;
        let mut woken = lock.lock();
        if !*woken {
            cv.wait_for(&mut woken, backoff);
        }
        *woken = false;
    }
}

impl Collection {
    /// One step of background work: a seal if due, else a compaction if due.
    /// Returns whether anything was done.
    pub fn maintain_once(&self) -> Result<bool> {
        if self.seal_due() {
            return self.seal_due_chunk();
        }
        if self.compaction_plan(&self.inner.state.read()).is_some() {
            return self.compact();
        }
        Ok(false)
    }

    /// Seals the growing segment now (however small), and every chunk frozen
    /// before it, into sealed segments. Returns false when there was nothing to
    /// seal.
    pub fn seal(&self) -> Result<bool> {
        let _m = self.inner.maintenance.lock();
        self.freeze_growing()?;
        let mut any = false;
        while self.seal_oldest_chunk()? {
            any = true;
        }
        Ok(any)
    }

    fn seal_due(&self) -> bool {
        let st = self.inner.state.read();
        !st.frozen.is_empty() || st.growing.live() >= self.inner.config.segments.seal_threshold
    }

    /// The worker's seal: one chunk, the oldest frozen one, or the growing
    /// segment once it holds `seal_threshold` points. Checked again under the
    /// maintenance lock, so the worker never seals what an explicit `seal` call
    /// was about to. A crash loses at most the chunk being sealed.
    fn seal_due_chunk(&self) -> Result<bool> {
        let _m = self.inner.maintenance.lock();
        if !self.seal_due() {
            return Ok(false);
        }
        if self.inner.state.read().frozen.is_empty() {
            self.freeze_growing()?;
        }
        self.seal_oldest_chunk()
    }

    /// Freezes the growing segment into a chunk of its own, starting a new WAL
    /// file. Caller holds the maintenance lock.
    fn freeze_growing(&self) -> Result<()> {
        let inner = &self.inner;
        let _w = inner.write_lock.lock();
        if inner.state.read().growing.live() == 0 {
            return Ok(());
        }
        inner.wal.rotate()?;
        inner.state.write().freeze();
        Ok(())
    }

    /// Seals the oldest frozen chunk and installs it, timing it. Returns false
    /// when no chunk is frozen. Caller holds the maintenance lock.
    fn seal_oldest_chunk(&self) -> Result<bool> {
        let started = std::time::Instant::now();
        let sealed = self.build_and_install_oldest_chunk()?;
        if sealed {
            self.inner.seal_latency.observe(started.elapsed());
        }
        Ok(sealed)
    }

    fn build_and_install_oldest_chunk(&self) -> Result<bool> {
        let inner = &self.inner;
        let frozen = {
            let st = inner.state.read();
            st.frozen.front().map(|f| (Arc::clone(&f.seg), f.seq))
        };
        let Some(frozen) = frozen else {
            return Ok(false);
        };
        // The first seal fits the codecs on the oldest chunk; a fit that fails
        // leaves the chunk frozen, to be retried.
        let codecs = inner.state.read().codecs.clone();
        let codecs = match codecs {
            Some(c) => c,
            None => {
                let g = &frozen.0;
                let sample: Vec<f32> = (0..g.slots() as u32)
                    .filter(|&s| g.is_live(s))
                    .take(FIT_SAMPLE_ROWS)
                    .flat_map(|s| g.vector(s).to_vec())
                    .collect();
                if sample.is_empty() {
                    return Ok(false);
                }
                let t = std::time::Instant::now();
                let fitted = self.fit_codecs(&sample)?;
                tracing::info!(collection = %inner.name, rows = sample.len() / inner.config.dim, codec = %fitted.codec.spec(), secs = t.elapsed().as_secs_f64(), "fitted the codecs");
                Arc::new(fitted)
            }
        };
        let (seg, seq) = frozen;
        let n = seg.slots();
        let dim = inner.config.dim;
        let vectors = seg.vectors();
        let t = std::time::Instant::now();
        let codes = codecs.codec.encode(vectors)?;
        let rescore = match &codecs.rescore {
            Some((r, _)) => Some(r.encode(vectors)?),
            None => None,
        };
        let mut payloads = Vec::with_capacity(n);
        for s in 0..n as u32 {
            payloads.push(
                serde_json::to_vec(seg.payload(s))
                    .map_err(|e| corrupt(&inner.dir, e.to_string()))?,
            );
        }
        let input = SegmentInput {
            ids: (0..n as u32).map(|s| seg.id(s)).collect(),
            payloads,
            codes,
            rescore,
            graph_vectors: vectors.to_vec(),
        };
        let id = inner.state.read().manifest.next_segment;
        let encode_secs = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        // The segment stores its points in graph order: the frozen chunk's
        // deletions (by slot) are permuted with it below.
        let (sref, order) = write_segment(&inner.dir, id, &input, self.graph_params(dim))?;
        sync_dir(&inner.dir)?;
        let write_secs = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let sealed = self.open_segment(&sref, &codecs)?;
        tracing::info!(
            collection = %inner.name, points = n, encode_secs, graph_and_write_secs = write_secs,
            open_secs = t.elapsed().as_secs_f64(), "built a sealed segment"
        );

        let _w = inner.write_lock.lock();
        inner.wal.sync_all()?;
        let (manifest, cleaned) = {
            let st = inner.state.read();
            let deleted = st
                .frozen
                .front()
                .map_or_else(|| Bitset::new(n), |f| f.deleted.permuted(&order));
            let mut entries: Vec<(SegmentRef, &Bitset, bool)> = st
                .sealed
                .iter()
                .map(|e| (e.meta.clone(), &e.deleted, e.dirty))
                .collect();
            entries.push((sref, &deleted, deleted.count_ones() > 0));
            let manifest = self.write_manifest(&st, entries, seq, &codecs)?;
            (manifest, deleted)
        };
        let old = {
            let mut st = inner.state.write();
            // Writers are held, so this is the bitset the manifest just persisted.
            let frozen_deleted = st
                .frozen
                .pop_front()
                .map_or(cleaned, |f| f.deleted.permuted(&order));
            let meta = sealed.meta.clone();
            st.sealed.push(SealedEntry {
                seg: Arc::new(sealed),
                meta,
                deleted: frozen_deleted,
                dirty: false,
            });
            st.codecs = Some(Arc::clone(&codecs));
            let old = st.manifest.clone();
            st.install_manifest(manifest.clone());
            old
        };
        drop(_w);
        inner.wal.remove_covered(seq)?;
        self.remove_obsolete(&old, &manifest)?;
        tracing::debug!(collection = %inner.name, points = n, segment = id, wal_seq = seq, "sealed a segment");
        Ok(true)
    }

    fn graph_params(&self, dim: usize) -> GraphParams {
        let c = &self.inner.config;
        GraphParams {
            dim,
            metric: c.metric,
            m: c.hnsw.m,
            ef_construction: c.hnsw.ef_construction,
        }
    }

    fn open_segment(&self, sref: &SegmentRef, codecs: &Codecs) -> Result<SealedSegment> {
        let rescore_len = codecs.rescore.as_ref().map(|(r, _)| r.code_len());
        SealedSegment::open(
            &self.inner.dir,
            sref,
            codecs.codec.code_len(),
            rescore_len,
            &self.inner.name,
        )
    }

    /// Fits the compact codec and the rescore codec on `sample` and writes their
    /// files (referenced by the next manifest).
    fn fit_codecs(&self, sample: &[f32]) -> Result<Codecs> {
        let inner = &self.inner;
        let config = &inner.config;
        let generation = inner.state.read().manifest.generation;
        let write = |codec: &SharedCodec, what: &str| -> Result<FileRef> {
            let name = format!("{what}-g{generation:08}.{}", Component::Codec.extension());
            let json = codec_fit::to_json(codec).map_err(|r| corrupt(inner.dir.join(&name), r))?;
            write_component(&inner.dir, name, Component::Codec, &json)
        };
        let codec = codec_fit::fit(&config.codec, sample, config)?;
        let codec_file = write(&codec, "codec")?;
        let rescore = match config.rescore.element {
            Some(element) => {
                let r = codec_fit::fit(&CodecSpec::element(element), sample, config)?;
                let f = write(&r, "rescore")?;
                Some((r, f))
            }
            None => None,
        };
        sync_dir(&inner.dir)?;
        Ok(Codecs {
            codec,
            codec_file,
            rescore,
        })
    }

    /// Writes tombstone files for changed segments and the manifest listing
    /// `entries`. Caller holds the writer mutex and has synced the WAL.
    fn write_manifest(
        &self,
        st: &State,
        entries: Vec<(SegmentRef, &Bitset, bool)>,
        wal_seq: u64,
        codecs: &Codecs,
    ) -> Result<Manifest> {
        let dir = &self.inner.dir;
        let generation = st.manifest.generation + 1;
        let mut segments = Vec::with_capacity(entries.len());
        for (mut sref, deleted, dirty) in entries {
            if dirty {
                let body: Vec<u8> = deleted
                    .words()
                    .iter()
                    .flat_map(|w| w.to_le_bytes())
                    .collect();
                let name = format!(
                    "seg-{:08}-g{generation:08}.{}",
                    sref.id,
                    Component::Tombstones.extension()
                );
                sref.tombstones = Some(write_component(dir, name, Component::Tombstones, &body)?);
            }
            segments.push(sref);
        }
        sync_dir(dir)?;
        let next_segment = segments
            .iter()
            .map(|s| s.id + 1)
            .max()
            .unwrap_or(1)
            .max(st.manifest.next_segment);
        let manifest = Manifest {
            format_version: st.manifest.format_version,
            generation,
            config_json: st.manifest.config_json.clone(),
            wal_seq,
            next_segment,
            codec: Some(codecs.codec_file.clone()),
            rescore_codec: codecs.rescore.as_ref().map(|(_, f)| f.clone()),
            segments,
        };
        manifest.store(dir)?;
        Ok(manifest)
    }

    fn remove_obsolete(&self, old: &Manifest, new: &Manifest) -> Result<()> {
        let keep: HashSet<&str> = new.file_names().into_iter().collect();
        for name in old.file_names() {
            if !keep.contains(name) {
                remove_if_exists(&self.inner.dir.join(name))?;
            }
        }
        Ok(())
    }

    /// Which sealed segments (by position) a compaction would rewrite, if any:
    /// those over the deleted fraction, plus all small ones when there are two.
    fn compaction_plan(&self, st: &State) -> Option<Vec<usize>> {
        let c = &self.inner.config.segments;
        let mut pick: Vec<usize> = st
            .sealed
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e.seg.len() > 0
                    && (e.seg.len() - e.live()) as f32
                        > c.compact_deleted_fraction * e.seg.len() as f32
            })
            .map(|(i, _)| i)
            .collect();
        let small: Vec<usize> = st
            .sealed
            .iter()
            .enumerate()
            .filter(|(_, e)| e.live() < c.merge_below)
            .map(|(i, _)| i)
            .collect();
        if small.len() >= 2 {
            pick.extend(small);
        }
        pick.sort_unstable();
        pick.dedup();
        (!pick.is_empty()).then_some(pick)
    }

    /// Rewrites segments without their deleted points and merges small ones, if
    /// the policy says so. Readers and writers go on meanwhile; they wait only for
    /// the swap. Returns whether anything was rewritten.
    pub fn compact(&self) -> Result<bool> {
        self.compact_with(false, false)
    }

    /// Rewrites every sealed segment into one, dropping deleted points.
    pub fn compact_all(&self) -> Result<bool> {
        self.compact_with(true, false)
    }

    /// Refits the compact codec on a sample of every live sealed point and rewrites
    /// all sealed segments with it (one merged segment). For a collection whose first
    /// seal was small or unrepresentative. The sample and the new codes come from the
    /// best stored vectors: the rescore tier when there is one (exact for f32), the
    /// old codes otherwise. The rescore tier itself is kept as it is. Readers and
    /// writers go on meanwhile. Returns false when nothing is sealed yet.
    pub fn refit_codec(&self) -> Result<bool> {
        self.compact_with(true, true)
    }

    fn compact_with(&self, all: bool, refit: bool) -> Result<bool> {
        let _m = self.inner.maintenance.lock();
        let started = std::time::Instant::now();
        let rewrote = self.rewrite_segments(all, refit)?;
        if rewrote {
            self.inner.compaction_latency.observe(started.elapsed());
        }
        Ok(rewrote)
    }

    /// The body of [`Collection::compact_with`]. Caller holds the maintenance lock.
    fn rewrite_segments(&self, all: bool, refit: bool) -> Result<bool> {
        let inner = &self.inner;
        let (picked, codecs) = {
            let st = inner.state.read();
            let plan = if all {
                (!st.sealed.is_empty()).then(|| (0..st.sealed.len()).collect())
            } else {
                self.compaction_plan(&st)
            };
            let (Some(plan), Some(codecs)) = (plan, st.codecs.clone()) else {
                return Ok(false);
            };
            let picked: Vec<(Arc<SealedSegment>, Bitset)> = plan
                .iter()
                .map(|&i| (Arc::clone(&st.sealed[i].seg), st.sealed[i].deleted.clone()))
                .collect();
            (picked, codecs)
        };
        let dim = inner.config.dim;
        // The best stored approximation of a point: the rescore tier, else the codes.
        let decode = |seg: &SealedSegment, off: u32, out: &mut [f32]| match (
            seg.rescore_code(off),
            &codecs.rescore,
        ) {
            (Some(code), Some((r, _))) => r.decode_into(code, out),
            _ => codecs.codec.decode_into(seg.code(off), out),
        };
        let codecs = if refit {
            let live: usize = picked.iter().map(|(s, d)| s.len() - d.count_ones()).sum();
            let stride = live.div_ceil(FIT_SAMPLE_ROWS).max(1);
            let mut sample = Vec::new();
            let mut buf = vec![0f32; dim];
            let mut i = 0usize;
            for (seg, deleted) in &picked {
                for off in (0..seg.len() as u32).filter(|&o| !deleted.get(o as usize)) {
                    if i.is_multiple_of(stride) {
                        decode(seg, off, &mut buf);
                        sample.extend_from_slice(&buf);
                    }
                    i += 1;
                }
            }
            if sample.is_empty() {
                return Ok(false);
            }
            let codec = codec_fit::fit(&inner.config.codec, &sample, &inner.config)?;
            let generation = inner.state.read().manifest.generation;
            let name = format!("codec-g{generation:08}.{}", Component::Codec.extension());
            let json = codec_fit::to_json(&codec).map_err(|r| corrupt(inner.dir.join(&name), r))?;
            let codec_file = write_component(&inner.dir, name, Component::Codec, &json)?;
            tracing::info!(collection = %inner.name, rows = sample.len() / dim, codec = %codec.spec(), "refitted the codec");
            Arc::new(Codecs {
                codec,
                codec_file,
                rescore: codecs.rescore.clone(),
            })
        } else {
            Arc::clone(&codecs)
        };
        let mut input = SegmentInput {
            rescore: codecs.rescore.as_ref().map(|_| Vec::new()),
            ..SegmentInput::default()
        };
        let mut buf = vec![0f32; dim];
        let mut code = vec![0u8; codecs.codec.code_len()];
        for (seg, deleted) in &picked {
            for off in (0..seg.len() as u32).filter(|&o| !deleted.get(o as usize)) {
                input.ids.push(seg.id(off));
                input.payloads.push(seg.payload_bytes(off).to_vec());
                decode(seg, off, &mut buf);
                if refit {
                    codecs.codec.encode_into(&buf, &mut code);
                    input.codes.extend_from_slice(&code);
                } else {
                    input.codes.extend_from_slice(seg.code(off));
                }
                if let (Some(out), Some(rc)) = (&mut input.rescore, seg.rescore_code(off)) {
                    out.extend_from_slice(rc);
                }
                input.graph_vectors.extend_from_slice(&buf);
            }
        }
        let n = input.ids.len();
        let id = inner.state.read().manifest.next_segment;
        let new_seg = if n > 0 {
            // Deletions during the rewrite are carried over by id below, so the
            // storage order is not needed here.
            let (sref, _) = write_segment(&inner.dir, id, &input, self.graph_params(dim))?;
            sync_dir(&inner.dir)?;
            Some(self.open_segment(&sref, &codecs)?)
        } else {
            None
        };

        let _w = inner.write_lock.lock();
        inner.wal.sync_all()?;
        // Points deleted while we were building: carry them over to the new segment.
        let mut new_deleted = Bitset::new(n);
        let picked_ids: HashSet<u64> = picked.iter().map(|(s, _)| s.meta.id).collect();
        let (manifest, old) = {
            let st = inner.state.read();
            for (seg, before) in &picked {
                let Some(now) = st.sealed.iter().find(|e| e.seg.meta.id == seg.meta.id) else {
                    continue;
                };
                let mut fresh = now.deleted.clone();
                fresh.and_not(before);
                for off in fresh.iter_ones() {
                    if let Some(ns) = &new_seg
                        && let Some(o) = ns.offset_of(seg.id(off as u32))
                    {
                        new_deleted.set(o as usize);
                    }
                }
            }
            let mut entries: Vec<(SegmentRef, &Bitset, bool)> = st
                .sealed
                .iter()
                .filter(|e| !picked_ids.contains(&e.seg.meta.id))
                .map(|e| (e.meta.clone(), &e.deleted, e.dirty))
                .collect();
            if let Some(ns) = &new_seg {
                entries.push((ns.meta.clone(), &new_deleted, new_deleted.count_ones() > 0));
            }
            let manifest = self.write_manifest(&st, entries, st.manifest.wal_seq, &codecs)?;
            (manifest.clone(), st.manifest.clone())
        };
        {
            let mut st = inner.state.write();
            st.sealed.retain(|e| !picked_ids.contains(&e.seg.meta.id));
            if let Some(ns) = new_seg {
                let meta = ns.meta.clone();
                st.sealed.push(SealedEntry {
                    seg: Arc::new(ns),
                    meta,
                    deleted: new_deleted,
                    dirty: false,
                });
            }
            st.codecs = Some(Arc::clone(&codecs));
            st.install_manifest(manifest.clone());
        }
        drop(_w);
        self.remove_obsolete(&old, &manifest)?;
        tracing::debug!(collection = %inner.name, rewritten = picked.len(), points = n, "compacted");
        Ok(true)
    }
}
