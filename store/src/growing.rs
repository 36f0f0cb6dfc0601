//! The growing segment: recent points as f32 in memory, searched exactly. It is
//! small by construction (sealed at a threshold), so a linear scan is both exact
//! and fast enough, and needs no index maintenance on every write.

use std::collections::HashMap;

use octet_quant::Metric;

use crate::bitset::Bitset;
use crate::filter::Filter;
use crate::graph::Scored;
use crate::point::{Payload, Point, PointId};

/// Points in insertion order; replaced or deleted slots are marked dead.
#[derive(Debug, Default)]
pub(crate) struct Growing {
    dim: usize,
    ids: Vec<PointId>,
    vectors: Vec<f32>,
    payloads: Vec<Payload>,
    dead: Vec<bool>,
    slots: HashMap<PointId, u32>,
}

impl Growing {
    pub(crate) fn new(dim: usize) -> Self {
        Growing {
            dim,
            ..Growing::default()
        }
    }

    /// Live points.
    pub(crate) fn live(&self) -> usize {
        self.slots.len()
    }

    /// Slots, dead ones included.
    pub(crate) fn slots(&self) -> usize {
        self.ids.len()
    }

    pub(crate) fn slot_of(&self, id: PointId) -> Option<u32> {
        self.slots.get(&id).copied()
    }

    pub(crate) fn id(&self, slot: u32) -> PointId {
        self.ids[slot as usize]
    }

    pub(crate) fn vector(&self, slot: u32) -> &[f32] {
        &self.vectors[slot as usize * self.dim..][..self.dim]
    }

    pub(crate) fn payload(&self, slot: u32) -> &Payload {
        &self.payloads[slot as usize]
    }

    pub(crate) fn is_live(&self, slot: u32) -> bool {
        !self.dead[slot as usize]
    }

    /// All vectors, row-major, dead slots included.
    pub(crate) fn vectors(&self) -> &[f32] {
        &self.vectors
    }

    /// Inserts or replaces a point.
    pub(crate) fn upsert(&mut self, p: Point) {
        self.delete(p.id);
        let slot = self.ids.len() as u32;
        self.ids.push(p.id);
        self.vectors.extend_from_slice(&p.vector);
        self.payloads.push(p.payload);
        self.dead.push(false);
        self.slots.insert(p.id, slot);
    }

    /// Deletes a point; returns whether it was here.
    pub(crate) fn delete(&mut self, id: PointId) -> bool {
        match self.slots.remove(&id) {
            Some(slot) => {
                self.dead[slot as usize] = true;
                true
            }
            None => false,
        }
    }

    /// A copy holding only the live points, in slot order: what a seal freezes.
    pub(crate) fn take_live(&mut self) -> Growing {
        let old = std::mem::replace(self, Growing::new(self.dim));
        let mut out = Growing::new(old.dim);
        for (slot, id) in old.ids.iter().enumerate() {
            if !old.dead[slot] {
                out.upsert(Point {
                    id: *id,
                    vector: old.vector(slot as u32).to_vec(),
                    payload: old.payloads[slot].clone(),
                });
            }
        }
        out
    }

    /// Exact top `k` of the live slots not in `deleted` that pass `filter`.
    pub(crate) fn search(
        &self,
        query: &[f32],
        metric: Metric,
        k: usize,
        filter: Option<&Filter>,
        deleted: Option<&Bitset>,
    ) -> Vec<Scored> {
        let mut best: std::collections::BinaryHeap<std::cmp::Reverse<Scored>> = Default::default();
        for slot in 0..self.ids.len() {
            if self.dead[slot] || deleted.is_some_and(|d| d.get(slot)) {
                continue;
            }
            if filter.is_some_and(|f| !f.matches(self.ids[slot], &self.payloads[slot])) {
                continue;
            }
            let s = Scored {
                score: metric.exact(query, self.vector(slot as u32)),
                point: slot as u32,
            };
            if best.len() < k {
                best.push(std::cmp::Reverse(s));
            } else if best.peek().is_some_and(|w| s > w.0) {
                best.pop();
                best.push(std::cmp::Reverse(s));
            }
        }
        let mut out: Vec<Scored> = best.into_iter().map(|r| r.0).collect();
        out.sort_by(|a, b| b.cmp(a));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_replaces_and_delete_hides() {
        let mut g = Growing::new(2);
        g.upsert(Point::new(1, vec![1.0, 0.0]));
        g.upsert(Point::new(2, vec![0.0, 1.0]));
        g.upsert(Point::new(1, vec![0.5, 0.5]));
        assert_eq!((g.live(), g.slots()), (2, 3));
        let hits = g.search(&[1.0, 0.0], Metric::Dot, 10, None, None);
        assert_eq!(
            hits.iter().map(|h| g.id(h.point)).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!((hits[0].score - 0.5).abs() < 1e-6);
        assert!(g.delete(2) && !g.delete(2));
        let frozen = g.take_live();
        assert_eq!((frozen.live(), frozen.slots(), g.live()), (1, 1, 0));
        assert_eq!(frozen.vector(0), &[0.5, 0.5]);
    }
}
