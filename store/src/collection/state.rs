//! The in-memory state of a collection and how one WAL operation changes it.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::bitset::Bitset;
use crate::codec_fit::SharedCodec;
use crate::growing::Growing;
use crate::manifest::{FileRef, Manifest, SegmentRef};
use crate::point::PointId;
use crate::segment::sealed::SealedSegment;
use crate::wal::WalOp;

/// The fitted codecs of a collection (absent until the first seal).
#[derive(Debug)]
pub(crate) struct Codecs {
    pub codec: SharedCodec,
    pub codec_file: FileRef,
    pub rescore: Option<(SharedCodec, FileRef)>,
}

/// A sealed segment as part of the live state: its deletions are here, not in it.
#[derive(Debug, Clone)]
pub(crate) struct SealedEntry {
    pub seg: Arc<SealedSegment>,
    /// The segment's entry in the current manifest (its tombstone file changes).
    pub meta: SegmentRef,
    pub deleted: Bitset,
    /// Deletions since the tombstone file was last written.
    pub dirty: bool,
}

impl SealedEntry {
    pub(crate) fn live(&self) -> usize {
        self.seg.len() - self.deleted.count_ones()
    }
}

/// A chunk of the growing segment frozen for sealing: searched exactly until its
/// sealed replacement is installed. It holds exactly the live points written by
/// the WAL records after the previous chunk's `seq` up to its own, so sealing
/// chunks oldest first keeps the manifest's `wal_seq` a true prefix.
#[derive(Debug)]
pub(crate) struct Frozen {
    pub seg: Arc<Growing>,
    pub deleted: Bitset,
    /// The last WAL sequence number it reflects.
    pub seq: u64,
}

/// Everything searches read and writes change, behind the collection's `RwLock`.
#[derive(Debug)]
pub(crate) struct State {
    pub growing: Growing,
    /// Frozen chunks, oldest first; each holds at most `chunk_points` points (or
    /// one batch, if a single batch is larger).
    pub frozen: VecDeque<Frozen>,
    /// The collection's `seal_threshold`: the most points a chunk holds.
    pub chunk_points: usize,
    pub sealed: Vec<SealedEntry>,
    pub codecs: Option<Arc<Codecs>>,
    pub manifest: Manifest,
    /// The last WAL sequence number applied.
    pub applied_seq: u64,
}

impl State {
    /// Installs a newly written manifest: every entry takes its segment's
    /// reference from it, and nothing is dirty any more.
    pub(crate) fn install_manifest(&mut self, manifest: Manifest) {
        for e in &mut self.sealed {
            if let Some(m) = manifest.segments.iter().find(|m| m.id == e.meta.id) {
                e.meta = m.clone();
            }
            e.dirty = false;
        }
        self.manifest = manifest;
    }

    /// Hides `id` in the sealed and frozen segments.
    fn remove_older(&mut self, id: PointId) {
        for e in &mut self.sealed {
            if let Some(off) = e.seg.offset_of(id)
                && e.deleted.set(off as usize)
            {
                e.dirty = true;
            }
        }
        for f in &mut self.frozen {
            if let Some(slot) = f.seg.slot_of(id) {
                f.deleted.set(slot as usize);
            }
        }
    }

    /// Whether applying `op` must first freeze the growing segment: an upsert
    /// that would take it past `chunk_points`. Writers ask before logging `op`
    /// (to start a new WAL file there) and [`State::apply`] asks again, so a
    /// replayed WAL freezes at the same bound.
    pub(crate) fn freeze_before(&self, op: &WalOp) -> bool {
        let live = self.growing.live();
        matches!(op, WalOp::Upsert(points) if live > 0 && live + points.len() > self.chunk_points)
    }

    /// Moves the growing segment's live points into a new frozen chunk, as of
    /// the last applied WAL record. Returns false when there was nothing to move.
    pub(crate) fn freeze(&mut self) -> bool {
        if self.growing.live() == 0 {
            return false;
        }
        let seg = self.growing.take_live();
        let n = seg.slots();
        self.frozen.push_back(Frozen {
            seg: Arc::new(seg),
            deleted: Bitset::new(n),
            seq: self.applied_seq,
        });
        true
    }

    /// Points in the growing segment and the frozen chunks.
    pub(crate) fn unsealed(&self) -> usize {
        self.growing.live()
            + self
                .frozen
                .iter()
                .map(|f| f.seg.live() - f.deleted.count_ones())
                .sum::<usize>()
    }

    /// Applies one logged operation. Replaying an operation twice gives the same
    /// state, which recovery relies on.
    pub(crate) fn apply(&mut self, seq: u64, op: WalOp) {
        if self.freeze_before(&op) {
            self.freeze();
        }
        match op {
            WalOp::Upsert(points) => {
                for p in points {
                    self.remove_older(p.id);
                    self.growing.upsert(p);
                }
            }
            WalOp::Delete(ids) => {
                for id in ids {
                    self.remove_older(id);
                    self.growing.delete(id);
                }
            }
        }
        self.applied_seq = self.applied_seq.max(seq);
    }

    /// Live points in the whole collection.
    pub(crate) fn live(&self) -> usize {
        self.unsealed() + self.sealed.iter().map(SealedEntry::live).sum::<usize>()
    }
}
