//! An open sealed segment: verified, memory-mapped codes and rescore tier, the
//! graph, ids, payloads and their filter index.

use std::path::Path;

use crate::bitset::Bitset;
use crate::error::{Result, corrupt};
use crate::graph::Graph;
use crate::manifest::SegmentRef;
use crate::payload_index::PayloadIndex;
use crate::point::{Payload, PayloadJson, PointId};
use crate::segment::file::{Component, Mapped, open_component};

/// An immutable segment. Deletions live outside it, in the collection's state.
#[derive(Debug)]
pub(crate) struct SealedSegment {
    pub(crate) meta: SegmentRef,
    n: usize,
    code_len: usize,
    codes: Mapped,
    rescore_len: usize,
    rescore: Option<Mapped>,
    pub(crate) graph: Graph,
    ids: Vec<PointId>,
    /// (id, offset), sorted by id, for lookups and scrolling.
    by_id: Vec<(PointId, u32)>,
    payload_offsets: Vec<u64>,
    payloads: Mapped,
    pub(crate) index: PayloadIndex,
}

fn u64s(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        })
        .collect()
}

impl SealedSegment {
    /// Opens and verifies every file of `meta`. `code_len` / `rescore_len` come from
    /// the fitted codecs; a file whose size disagrees is corrupt.
    pub(crate) fn open(
        dir: &Path,
        meta: &SegmentRef,
        code_len: usize,
        rescore_len: Option<usize>,
        collection: &str,
    ) -> Result<SealedSegment> {
        let n = usize::try_from(meta.points)
            .map_err(|_| corrupt(dir, "segment point count overflows"))?;
        let codes = open_component(dir, &meta.codes, Component::Codes, collection)?;
        if codes.body().len() != n.saturating_mul(code_len) {
            return Err(corrupt(
                codes.path(),
                format!(
                    "{} bytes of codes for {n} points of {code_len} bytes",
                    codes.body().len()
                ),
            ));
        }
        let (rescore, rescore_len) = match (&meta.rescore, rescore_len) {
            (Some(f), Some(len)) => {
                let m = open_component(dir, f, Component::Rescore, collection)?;
                if m.body().len() != n.saturating_mul(len) {
                    return Err(corrupt(
                        m.path(),
                        format!(
                            "{} bytes of rescore codes for {n} points of {len} bytes",
                            m.body().len()
                        ),
                    ));
                }
                (Some(m), len)
            }
            (None, None) => (None, 0),
            _ => {
                return Err(corrupt(
                    dir,
                    format!(
                        "segment {} and the collection disagree on the rescore tier",
                        meta.id
                    ),
                ));
            }
        };
        let graph_file = open_component(dir, &meta.graph, Component::Graph, collection)?;
        let graph =
            Graph::parse(graph_file.body(), n).map_err(|r| corrupt(graph_file.path(), r))?;
        let ids_file = open_component(dir, &meta.ids, Component::Ids, collection)?;
        if Some(ids_file.body().len()) != n.checked_mul(8) {
            return Err(corrupt(
                ids_file.path(),
                format!("{} bytes of ids for {n} points", ids_file.body().len()),
            ));
        }
        let ids = u64s(ids_file.body());
        let mut by_id: Vec<(PointId, u32)> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i as u32))
            .collect();
        by_id.sort_unstable();
        if by_id.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(corrupt(ids_file.path(), "duplicate point id in a segment"));
        }
        let payloads = open_component(dir, &meta.payloads, Component::Payloads, collection)?;
        let body = payloads.body();
        let head = n.saturating_add(1).saturating_mul(8);
        if body.len() < head {
            return Err(corrupt(
                payloads.path(),
                "payload offsets run past the file",
            ));
        }
        let payload_offsets = u64s(&body[..head]);
        let data_len = (body.len() - head) as u64;
        if payload_offsets.first() != Some(&0)
            || payload_offsets.windows(2).any(|w| w[0] > w[1])
            || payload_offsets.last() != Some(&data_len)
        {
            return Err(corrupt(
                payloads.path(),
                "payload offsets are not increasing to the end of the file",
            ));
        }
        let mut index = PayloadIndex::new(n);
        let mut seg = SealedSegment {
            meta: meta.clone(),
            n,
            code_len,
            codes,
            rescore_len,
            rescore,
            graph,
            ids,
            by_id,
            payload_offsets,
            payloads,
            index: PayloadIndex::new(0),
        };
        for i in 0..n {
            let p = seg.payload(i as u32)?;
            index.add(i as u32, &p);
        }
        index.finish();
        seg.index = index;
        Ok(seg)
    }

    /// Points stored (live or not).
    pub(crate) fn len(&self) -> usize {
        self.n
    }

    pub(crate) fn id(&self, offset: u32) -> PointId {
        self.ids[offset as usize]
    }

    pub(crate) fn offset_of(&self, id: PointId) -> Option<u32> {
        self.by_id
            .binary_search_by_key(&id, |e| e.0)
            .ok()
            .map(|i| self.by_id[i].1)
    }

    /// (id, offset) pairs sorted by id.
    pub(crate) fn by_id(&self) -> &[(PointId, u32)] {
        &self.by_id
    }

    /// Every point's compact code, `code_len` bytes each, in offset order.
    pub(crate) fn codes(&self) -> &[u8] {
        self.codes.body()
    }

    pub(crate) fn code(&self, offset: u32) -> &[u8] {
        &self.codes.body()[offset as usize * self.code_len..][..self.code_len]
    }

    pub(crate) fn rescore_code(&self, offset: u32) -> Option<&[u8]> {
        self.rescore
            .as_ref()
            .map(|m| &m.body()[offset as usize * self.rescore_len..][..self.rescore_len])
    }

    /// The raw JSON bytes of a payload.
    pub(crate) fn payload_bytes(&self, offset: u32) -> &[u8] {
        let i = offset as usize;
        let head = (self.n + 1) * 8;
        let (a, b) = (
            self.payload_offsets[i] as usize,
            self.payload_offsets[i + 1] as usize,
        );
        &self.payloads.body()[head + a..head + b]
    }

    /// A payload's JSON text as stored: checked to be a JSON object when the
    /// segment was opened (every payload is parsed then, for the filter index),
    /// so only its UTF-8 is checked again here.
    pub(crate) fn payload_json(&self, offset: u32) -> Result<PayloadJson> {
        let text = std::str::from_utf8(self.payload_bytes(offset)).map_err(|e| {
            corrupt(
                self.payloads.path(),
                format!("payload of point {} is not UTF-8: {e}", self.id(offset)),
            )
        })?;
        Ok(PayloadJson::from_checked(text.to_owned()))
    }

    pub(crate) fn payload(&self, offset: u32) -> Result<Payload> {
        serde_json::from_slice(self.payload_bytes(offset)).map_err(|e| {
            corrupt(
                self.payloads.path(),
                format!(
                    "payload of point {} is not a JSON object: {e}",
                    self.id(offset)
                ),
            )
        })
    }

    /// The live points among `deleted`'s complement that pass a filter's bitset.
    pub(crate) fn allowed(
        &self,
        filter: Option<&crate::filter::Filter>,
        deleted: &Bitset,
    ) -> Bitset {
        let mut allowed = match filter {
            Some(f) => self.index.evaluate(f, &|id| self.offset_of(id)),
            None => Bitset::full(self.n),
        };
        allowed.and_not(deleted);
        allowed
    }

    /// Bytes in RAM or mapped: codes, rescore tier, graph.
    pub(crate) fn sizes(&self) -> (usize, usize, usize) {
        (
            self.codes.body().len(),
            self.rescore.as_ref().map_or(0, |m| m.body().len()),
            self.graph.memory_bytes(),
        )
    }
}
