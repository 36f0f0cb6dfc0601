//! A segment's search graph: layered adjacency lists built by our HNSW builder
//! ([`build`]), stored flat and searched by our own HNSW search (Malkov & Yashunin,
//! "Efficient and robust approximate nearest neighbor search using Hierarchical
//! Navigable Small World graphs", 2016, algorithms 2 and 5) with any scoring
//! function and an acceptance filter.
//!
//! File body, all u32 LE:
//!
//! | field | words |
//! |---|---|
//! | `n`, `levels` (upper layers), `entry` | 3 |
//! | layer 0 offsets | n + 1 |
//! | layer 0 neighbours | offsets\[n\] |
//! | per upper layer: `count`, sorted point ids, offsets, neighbours | 1 + count + count + 1 + ... |

pub mod build;

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::bitset::Bitset;

/// A parsed, validated graph. Layer 0 (almost all of the graph) is kept in rows of
/// one width ([`Rows`]) where that costs at most four times the packed lists,
/// packed otherwise; the few points of the upper layers as lists with offsets.
#[derive(Debug, Default)]
pub struct Graph {
    n: usize,
    entry: u32,
    layer0: Layer0,
    upper: Vec<UpperLayer>,
}

/// Layer 0 in memory.
#[derive(Debug)]
enum Layer0 {
    /// The fast layout.
    Rows(Rows),
    /// The file's own: offsets and one neighbour array. For graphs whose longest
    /// list would make rows cost more than four times the packed lists (plus 64
    /// KiB): a few hubs among sparse points, or a corrupt file claiming one very
    /// long list, so that a file cannot make opening it allocate far more than it
    /// holds.
    Packed {
        offsets: Vec<u32>,
        neighbours: Vec<u32>,
    },
}

impl Default for Layer0 {
    fn default() -> Self {
        Layer0::Packed {
            offsets: Vec::new(),
            neighbours: Vec::new(),
        }
    }
}

impl Layer0 {
    /// Rows when they cost at most four times the packed lists (plus 64 KiB), else
    /// the packed lists as they are. Real embeddings' graphs fill most of each row
    /// (the MiniLM set's: 128 bytes a point against 104 packed).
    fn new(offsets: Vec<u32>, neighbours: Vec<u32>) -> Result<Layer0, String> {
        let n = offsets.len().saturating_sub(1);
        let widest = offsets
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .max()
            .unwrap_or(0);
        if widest > MAX_LIST0 {
            return Err(format!(
                "a layer-0 list of {widest} neighbours, at most {MAX_LIST0}"
            ));
        }
        let per_row = widest.div_ceil(16).max(1);
        let packed = 4 * (offsets.len() + neighbours.len());
        let bound = packed.saturating_mul(4).saturating_add(64 << 10);
        if n.saturating_mul(per_row * size_of::<Line>()) > bound {
            return Ok(Layer0::Packed {
                offsets,
                neighbours,
            });
        }
        Ok(Layer0::Rows(Rows::new(&offsets, &neighbours, per_row)))
    }

    /// Point `p`'s list, possibly followed by [`NONE`]s (empty past the last point).
    #[inline]
    fn list(&self, p: u32) -> &[u32] {
        match self {
            Layer0::Rows(rows) => rows.row(p),
            Layer0::Packed {
                offsets,
                neighbours,
            } => csr_list(offsets, neighbours, p as usize),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Layer0::Rows(rows) => rows.bytes(),
            Layer0::Packed {
                offsets,
                neighbours,
            } => 4 * (offsets.len() + neighbours.len()),
        }
    }
}

/// The most neighbours a point may list on layer 0: twice the largest `m` a
/// collection accepts ([`crate::config::MAX_HNSW_M`]), what the builder keeps.
/// Graphs with longer lists are refused, so lowering `MAX_HNSW_M` would make
/// segments built with a larger `m` unreadable: raise this instead.
const MAX_LIST0: usize = 2 * crate::config::MAX_HNSW_M;

/// An unused slot of a [`Rows`] row: never a point, whose offsets are below `n`.
const NONE: u32 = u32::MAX;

/// One cache line of neighbour ids.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Line([u32; 16]);

const _: () = assert!(size_of::<Line>() == 64 && align_of::<Line>() == 64);

// SAFETY: sixty-four bytes of `u32`s with no padding (the alignment equals the
// size, asserted above), valid for any bit pattern, zero included.
unsafe impl bytemuck::Zeroable for Line {}
// SAFETY: as above; `Copy` and `'static`.
unsafe impl bytemuck::Pod for Line {}

/// Layer 0 with every point's list in a row of the same whole number of cache
/// lines, unused slots [`NONE`]: a point's list is found by multiplying, so a walk
/// reaches it (and prefetches the next one) with one dependent load rather than
/// two (its offset, then the list): that first load was a tenth of a search's
/// time. It costs the unused slots: the file keeps the lists packed.
#[derive(Debug, Default)]
struct Rows {
    lines: Vec<Line>,
    /// Lines per row.
    per_row: usize,
}

impl Rows {
    /// Rows of `per_row` lines of the packed lists `offsets` / `neighbours`
    /// (validated by [`check_csr`]), none longer than `16 per_row`.
    fn new(offsets: &[u32], neighbours: &[u32], per_row: usize) -> Rows {
        let n = offsets.len().saturating_sub(1);
        let mut lines = vec![Line([NONE; 16]); n * per_row];
        for (p, w) in offsets.windows(2).enumerate() {
            let list = &neighbours[w[0] as usize..w[1] as usize];
            let row: &mut [u32] = bytemuck::cast_slice_mut(&mut lines[p * per_row..][..per_row]);
            row[..list.len()].copy_from_slice(list);
        }
        Rows { lines, per_row }
    }

    /// Point `p`'s row: its list, then [`NONE`] to the end (empty past the last
    /// point).
    #[inline]
    fn row(&self, p: u32) -> &[u32] {
        (p as usize)
            .checked_mul(self.per_row)
            .and_then(|at| self.lines.get(at..at.checked_add(self.per_row)?))
            .map_or(&[], |l| bytemuck::cast_slice(l))
    }

    fn bytes(&self) -> usize {
        self.lines.len() * size_of::<Line>()
    }
}

#[derive(Debug)]
struct UpperLayer {
    ids: Vec<u32>,
    offsets: Vec<u32>,
    neighbours: Vec<u32>,
}

/// A (score, point) pair ordered by score, for the search heaps.
#[derive(Debug, Clone, Copy)]
pub struct Scored {
    /// Higher is better.
    pub score: f32,
    /// Point offset within the segment.
    pub point: u32,
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.point.cmp(&self.point))
    }
}

/// A beam search's one list: the best `cap` points found so far, best first, each
/// marked once expanded (what DiskANN keeps in place of HNSW's two heaps). The
/// walk expands the best unexpanded point until none is left; that expands the
/// same points in the same order as a candidate max-heap beside a bounded
/// min-heap of results (with distinct scores; ties may break differently), since
/// the heaps' next candidate is either the list's best unexpanded point or no
/// better than every listed one, where the heaps stop. An insertion moves at most
/// `cap` entries; nothing is popped or sifted.
#[derive(Debug, Default)]
pub(crate) struct Beam {
    /// Best first; the flag marks an expanded point. One array, so an insertion
    /// is one move, not two (no measurable change alone: the moves stay about 4%
    /// of a search).
    items: Vec<(Scored, bool)>,
    /// Every entry before `next` is expanded.
    next: usize,
    cap: usize,
}

impl Beam {
    /// Empties the list, holds at most `cap` (at least 1) points from now on, and
    /// lists `start`.
    pub(crate) fn reset(&mut self, cap: usize, start: Scored) {
        self.items.clear();
        self.items.push((start, false));
        self.next = 0;
        self.cap = cap.max(1);
    }

    /// The best unexpanded point, now marked expanded; `None` when the walk is over.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<Scored> {
        while self.items.get(self.next).is_some_and(|e| e.1) {
            self.next += 1;
        }
        let e = self.items.get_mut(self.next)?;
        e.1 = true;
        self.next += 1;
        Some(e.0)
    }

    /// The best unexpanded point (the next [`Beam::pop`]), if any.
    #[inline]
    pub(crate) fn peek(&self) -> Option<Scored> {
        self.items[self.next.min(self.items.len())..]
            .iter()
            .find(|e| !e.1)
            .map(|e| e.0)
    }

    /// Whether a point of `score` would be listed: the list is not full, or it
    /// beats the worst listed.
    #[inline]
    pub(crate) fn takes(&self, score: f32) -> bool {
        self.items.len() < self.cap || self.items.last().is_some_and(|w| score > w.0.score)
    }

    /// Lists `cand` (the caller checked [`Beam::takes`]), dropping the worst when
    /// full; true when it is the best unexpanded point now (the next one popped).
    #[inline]
    pub(crate) fn insert(&mut self, cand: Scored) -> bool {
        let at = self.items.partition_point(|e| e.0 > cand);
        if self.items.len() >= self.cap {
            self.items.pop();
        }
        self.items.insert(at, (cand, false));
        if at < self.next {
            self.next = at;
            return true;
        }
        false
    }

    /// The best `k` listed points, best first.
    pub(crate) fn best(&self, k: usize) -> Vec<Scored> {
        self.items.iter().take(k).map(|e| e.0).collect()
    }
}

struct Words<'a> {
    words: &'a [u8],
    pos: usize,
}

impl Words<'_> {
    fn take(&mut self, count: usize) -> Result<Vec<u32>, String> {
        let end = count
            .checked_mul(4)
            .and_then(|b| b.checked_add(self.pos))
            .filter(|&e| e <= self.words.len())
            .ok_or("graph file ends early")?;
        let out = self.words[self.pos..end]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        self.pos = end;
        Ok(out)
    }

    fn one(&mut self) -> Result<u32, String> {
        Ok(self.take(1)?[0])
    }
}

/// List `i` of packed lists (`offsets` into `neighbours`, validated by
/// [`check_csr`]); empty past the last.
fn csr_list<'a>(offsets: &[u32], neighbours: &'a [u32], i: usize) -> &'a [u32] {
    match (offsets.get(i), offsets.get(i + 1)) {
        (Some(&a), Some(&b)) => neighbours.get(a as usize..b as usize).unwrap_or(&[]),
        _ => &[],
    }
}

fn check_csr(offsets: &[u32], neighbours: &[u32], n: usize) -> Result<(), String> {
    if offsets.first() != Some(&0) || offsets.windows(2).any(|w| w[0] > w[1]) {
        return Err("graph offsets are not increasing from 0".into());
    }
    if offsets.last().map(|&o| o as usize) != Some(neighbours.len()) {
        return Err("graph offsets do not end at the neighbour count".into());
    }
    if neighbours.iter().any(|&x| x as usize >= n) {
        return Err("graph neighbour id out of range".into());
    }
    Ok(())
}

impl Graph {
    /// Parses and validates a graph over `expect_n` points, so that searching it can
    /// never index out of bounds.
    pub fn parse(bytes: &[u8], expect_n: usize) -> Result<Graph, String> {
        let mut w = Words {
            words: bytes,
            pos: 0,
        };
        let n = w.one()? as usize;
        if n != expect_n {
            return Err(format!("graph has {n} points, the segment {expect_n}"));
        }
        let levels = w.one()? as usize;
        if levels >= 64 {
            return Err(format!("graph claims {levels} layers"));
        }
        let entry = w.one()?;
        if n > 0 && entry as usize >= n {
            return Err("graph entry point out of range".into());
        }
        let offsets0 = w.take(n + 1)?;
        let total = offsets0.last().copied().unwrap_or(0) as usize;
        let neighbours0 = w.take(total)?;
        check_csr(&offsets0, &neighbours0, n)?;
        let layer0 = Layer0::new(offsets0, neighbours0)?;
        let mut upper = Vec::with_capacity(levels);
        for _ in 0..levels {
            let count = w.one()? as usize;
            if count > n {
                return Err("upper graph layer larger than the segment".into());
            }
            let ids = w.take(count)?;
            if ids.windows(2).any(|p| p[0] >= p[1]) || ids.iter().any(|&i| i as usize >= n) {
                return Err("upper graph layer ids unsorted or out of range".into());
            }
            let offsets = w.take(count + 1)?;
            let total = offsets.last().copied().unwrap_or(0) as usize;
            let neighbours = w.take(total)?;
            check_csr(&offsets, &neighbours, n)?;
            upper.push(UpperLayer {
                ids,
                offsets,
                neighbours,
            });
        }
        if w.pos != bytes.len() {
            return Err(format!(
                "{} trailing bytes after the graph",
                bytes.len() - w.pos
            ));
        }
        Ok(Graph {
            n,
            entry,
            layer0,
            upper,
        })
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the graph has no points.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Bytes the adjacency lists take in memory (layer 0's unused slots included).
    pub fn memory_bytes(&self) -> usize {
        self.layer0.bytes()
            + 4 * self
                .upper
                .iter()
                .map(|l| l.ids.len() + l.offsets.len() + l.neighbours.len())
                .sum::<usize>()
    }

    /// Starts loading point `p`'s layer-0 row into the cache.
    #[inline]
    fn prefetch_neighbours0(&self, p: u32) {
        octet_quant::kernels::prefetch(bytemuck::cast_slice(self.layer0.list(p)));
    }

    /// Point `p`'s layer-0 neighbours.
    #[inline]
    fn neighbours0(&self, p: u32) -> impl Iterator<Item = u32> + '_ {
        self.layer0
            .list(p)
            .iter()
            .copied()
            .take_while(|&x| x != NONE)
    }

    fn neighbours_upper<'a>(&self, layer: &'a UpperLayer, p: u32) -> &'a [u32] {
        let Ok(i) = layer.ids.binary_search(&p) else {
            return &[];
        };
        csr_list(&layer.offsets, &layer.neighbours, i)
    }

    /// The best `k` accepted points by `score`, best first, exploring with a
    /// candidate list of `ef` (at least `k`). Points that `accept` rejects are
    /// traversed but never returned, so a filter does not cut the graph apart.
    ///
    /// `prefetch(p)` is called for every unvisited neighbour of a node before any of
    /// them is scored, so the caller can start loading their codes (a cache hint:
    /// it must not change what `score` returns).
    ///
    /// One point at a time; [`Graph::search_gather`] scores a node's unvisited
    /// neighbours in one call.
    pub fn search<S, P, A>(
        &self,
        k: usize,
        ef: usize,
        score: S,
        prefetch: P,
        accept: A,
    ) -> Vec<Scored>
    where
        S: Fn(u32) -> f32,
        P: Fn(u32),
        A: Fn(u32) -> bool,
    {
        let gather = |ids: &[u32], out: &mut [f32]| {
            for (&p, o) in ids.iter().zip(out.iter_mut()) {
                *o = score(p);
            }
        };
        self.search_gather(k, ef, gather, prefetch, |_| {}, accept)
    }

    /// [`Graph::search`] with a scorer of many points: `score(ids, out)` writes the
    /// score of `ids[i]` to `out[i]`, and is called once per expanded node with its
    /// unvisited neighbours (after `prefetch` for each of them).
    ///
    /// `expanded(p)` is called as each node's list is expanded, a cache hint like
    /// `prefetch`: the points a walk ends with were all expanded, so a caller that
    /// rescores them from a second tier can start loading their rows here, long
    /// before it scores them.
    ///
    /// Generic over the functions so each call site gets its own copy with the
    /// closures inlined, and the visited set, heaps and buffers come from a
    /// per-thread scratch: a search allocates only its result.
    pub fn search_gather<S, P, E, A>(
        &self,
        k: usize,
        ef: usize,
        score: S,
        prefetch: P,
        expanded: E,
        accept: A,
    ) -> Vec<Scored>
    where
        S: Fn(&[u32], &mut [f32]),
        P: Fn(u32),
        E: Fn(u32),
        A: Fn(u32) -> bool,
    {
        let hints = Hints {
            prefetch: &prefetch,
            expanded: &expanded,
        };
        self.with_scratch(k, |s| self.search_in(s, k, ef, &score, &hints, &accept))
    }

    /// [`Graph::search_gather`] accepting every point, with one sorted list
    /// ([`Beam`]) in place of the two heaps: the same result (with distinct
    /// scores), faster. A filter needs the heaps: it traverses points it never
    /// returns.
    pub fn search_gather_all<S, P, E>(
        &self,
        k: usize,
        ef: usize,
        score: S,
        prefetch: P,
        expanded: E,
    ) -> Vec<Scored>
    where
        S: Fn(&[u32], &mut [f32]),
        P: Fn(u32),
        E: Fn(u32),
    {
        let hints = Hints {
            prefetch: &prefetch,
            expanded: &expanded,
        };
        self.with_scratch(k, |s| self.search_list(s, k, ef, &score, &hints))
    }

    /// Runs a layer-0 walk for `k` results on this thread's scratch (nothing for an
    /// empty graph or `k` 0).
    #[inline(always)]
    fn with_scratch(
        &self,
        k: usize,
        walk: impl FnOnce(&mut Scratch) -> Vec<Scored>,
    ) -> Vec<Scored> {
        if self.n == 0 || k == 0 {
            return Vec::new();
        }
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => walk(&mut scratch),
            // Only when a score function itself searches on this thread.
            Err(_) => walk(&mut Scratch::default()),
        })
    }

    /// Greedy descent through the upper layers from the entry point: the layer-0
    /// start.
    #[inline(always)]
    fn descend<S>(&self, scores: &mut Vec<f32>, score: &S) -> Scored
    where
        S: Fn(&[u32], &mut [f32]),
    {
        let mut one = [0f32];
        score(&[self.entry], &mut one);
        let mut best = Scored {
            score: one[0],
            point: self.entry,
        };
        for layer in self.upper.iter().rev() {
            loop {
                let list = self.neighbours_upper(layer, best.point);
                scores.clear();
                scores.resize(list.len(), 0.0);
                score(list, scores);
                let mut moved = false;
                for (&nb, &s) in list.iter().zip(scores.iter()) {
                    if s > best.score {
                        best = Scored {
                            score: s,
                            point: nb,
                        };
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        best
    }

    /// `p`'s unvisited layer-0 neighbours into `ids` (now marked visited, each
    /// prefetched), and their scores into `scores`.
    #[inline(always)]
    fn score_unvisited<S, P>(
        &self,
        p: u32,
        visited: &mut Bitset,
        ids: &mut Vec<u32>,
        scores: &mut Vec<f32>,
        score: &S,
        prefetch: &P,
    ) where
        S: Fn(&[u32], &mut [f32]),
        P: Fn(u32),
    {
        ids.clear();
        for nb in self.neighbours0(p) {
            if visited.set(nb as usize) {
                prefetch(nb);
                ids.push(nb);
            }
        }
        scores.clear();
        scores.resize(ids.len(), 0.0);
        score(ids, scores);
    }

    #[inline(always)]
    fn search_list<S, P, E>(
        &self,
        scratch: &mut Scratch,
        k: usize,
        ef: usize,
        score: &S,
        hints: &Hints<'_, P, E>,
    ) -> Vec<Scored>
    where
        S: Fn(&[u32], &mut [f32]),
        P: Fn(u32),
        E: Fn(u32),
    {
        let Scratch {
            visited,
            beam,
            ids,
            scores,
            ..
        } = scratch;
        let best = self.descend(scores, score);
        visited.reset(self.n);
        visited.set(best.point as usize);
        beam.reset(ef.max(k), best);
        while let Some(c) = beam.pop() {
            // The list most likely expanded next starts loading now.
            if let Some(next) = beam.peek() {
                self.prefetch_neighbours0(next.point);
            }
            (hints.expanded)(c.point);
            self.score_unvisited(c.point, visited, ids, scores, score, hints.prefetch);
            for (&nb, &s) in ids.iter().zip(scores.iter()) {
                if beam.takes(s)
                    && beam.insert(Scored {
                        score: s,
                        point: nb,
                    })
                {
                    // A new best unexpanded point: expanded next, so its list
                    // loads while the rest of this one is placed.
                    self.prefetch_neighbours0(nb);
                }
            }
        }
        beam.best(k)
    }

    #[inline(always)]
    fn search_in<S, P, E, A>(
        &self,
        scratch: &mut Scratch,
        k: usize,
        ef: usize,
        score: &S,
        hints: &Hints<'_, P, E>,
        accept: &A,
    ) -> Vec<Scored>
    where
        S: Fn(&[u32], &mut [f32]),
        P: Fn(u32),
        E: Fn(u32),
        A: Fn(u32) -> bool,
    {
        let ef = ef.max(k);
        let Scratch {
            visited,
            candidates,
            results,
            ids,
            scores,
            ..
        } = scratch;
        let best = self.descend(scores, score);
        // Beam search on layer 0.
        visited.reset(self.n);
        candidates.clear();
        results.clear();
        visited.set(best.point as usize);
        candidates.push(best);
        // Min-heap of accepted results via Reverse ordering.
        if accept(best.point) {
            results.push(Reverse(best));
        }
        while let Some(c) = candidates.pop() {
            if results.len() >= ef && results.peek().is_some_and(|w| c.score < w.0.score) {
                break;
            }
            // The list most likely expanded next starts loading now; a profile of
            // the walk put a quarter of its time on first touching each list.
            if let Some(next) = candidates.peek() {
                self.prefetch_neighbours0(next.point);
            }
            (hints.expanded)(c.point);
            self.score_unvisited(c.point, visited, ids, scores, score, hints.prefetch);
            for (&nb, &s) in ids.iter().zip(scores.iter()) {
                let worst = results.peek().map(|w| w.0.score);
                if results.len() < ef || worst.is_some_and(|w| s > w) {
                    let cand = Scored {
                        score: s,
                        point: nb,
                    };
                    // A new best candidate is the next one expanded: its list
                    // loads while the rest of this list is pushed.
                    if candidates.peek().is_none_or(|top| cand > *top) {
                        self.prefetch_neighbours0(nb);
                    }
                    candidates.push(cand);
                    if accept(nb) {
                        if results.len() < ef {
                            results.push(Reverse(cand));
                        } else if let Some(mut worst) = results.peek_mut() {
                            // Full, and `cand` beats the worst: it takes the worst's
                            // place (one sift instead of a push and a pop).
                            *worst = Reverse(cand);
                        }
                    }
                }
            }
        }
        let mut out: Vec<Scored> = results.drain().map(|r| r.0).collect();
        out.sort_by(|a, b| b.cmp(a));
        out.truncate(k);
        out
    }
}

/// A walk's two cache hints ([`Graph::search_gather`]): `prefetch` for each
/// unvisited neighbour before it is scored, `expanded` for each node as it is
/// expanded.
struct Hints<'a, P, E> {
    prefetch: &'a P,
    expanded: &'a E,
}

/// What one graph search needs besides its result, kept per thread between searches.
#[derive(Debug, Default)]
struct Scratch {
    visited: Bitset,
    candidates: BinaryHeap<Scored>,
    results: BinaryHeap<Reverse<Scored>>,
    /// The unfiltered walk's one list.
    beam: Beam,
    /// An expanded node's unvisited neighbours, and their scores.
    ids: Vec<u32>,
    scores: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use octet_quant::Metric;
    use rand::{Rng, SeedableRng};

    pub(super) fn random_vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n * dim)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// The one-list walk is the two-heap walk with every point accepted: same
        /// points, same order, same scores.
        #[test]
        fn the_list_walk_returns_what_the_heap_walk_does(
            n in 1usize..700,
            seed in 0u64..1_000,
            m in 2usize..12,
            k in 1usize..20,
            ef in 1usize..120,
        ) {
            let dim = 6;
            let v = random_vectors(n, dim, seed);
            let g = Graph::parse(&build::build(&v, dim, Metric::L2, m, 48).to_bytes(), n)
                .expect("parse");
            for q in random_vectors(8, dim, seed + 1).chunks_exact(dim) {
                let gather = |ids: &[u32], out: &mut [f32]| {
                    for (&p, o) in ids.iter().zip(out.iter_mut()) {
                        *o = -octet_quant::kernels::l2sq_f32(q, &v[p as usize * dim..][..dim]);
                    }
                };
                let heaps = g.search_gather(k, ef, gather, |_| {}, |_| {}, |_| true);
                let list = g.search_gather_all(k, ef, gather, |_| {}, |_| {});
                proptest::prop_assert_eq!(&list, &heaps);
                // A graph of m = 2 can leave points out of the entry's reach.
                proptest::prop_assert!(!list.is_empty() && list.len() <= k.min(n));
            }
        }
    }

    #[test]
    fn built_graph_round_trips_and_finds_neighbours() {
        let (n, dim) = (600, 9);
        let v = random_vectors(n, dim, 1);
        let flat = build::build(&v, dim, Metric::L2, 12, 64);
        let bytes = flat.to_bytes();
        let g = Graph::parse(&bytes, n).expect("parse");
        assert_eq!(g.len(), n);
        let queries = random_vectors(30, dim, 2);
        let mut hits = 0;
        for q in queries.chunks_exact(dim) {
            let score = |p: u32| -octet_quant::kernels::l2sq_f32(q, &v[p as usize * dim..][..dim]);
            let mut exact: Vec<Scored> = (0..n as u32)
                .map(|p| Scored {
                    score: score(p),
                    point: p,
                })
                .collect();
            exact.sort_by(|a, b| b.cmp(a));
            let got = g.search(10, 64, score, |_| {}, |_| true);
            assert_eq!(got.len(), 10);
            hits += got
                .iter()
                .filter(|s| exact[..10].iter().any(|e| e.point == s.point))
                .count();
            // Prefetch hints go to points that are then scored, and change nothing.
            let scored = std::cell::RefCell::new(Vec::new());
            let prefetched = std::cell::RefCell::new(Vec::new());
            let recording = |p: u32| {
                scored.borrow_mut().push(p);
                score(p)
            };
            let same = g.search(
                10,
                64,
                recording,
                |p| prefetched.borrow_mut().push(p),
                |_| true,
            );
            assert_eq!(same, got);
            let scored = scored.into_inner();
            let prefetched = prefetched.into_inner();
            assert!(!prefetched.is_empty());
            assert!(prefetched.iter().all(|p| scored.contains(p)));
            // A filter that accepts only even points returns only even points.
            let even = g.search(10, 64, score, |_| {}, |p| p % 2 == 0);
            assert!(even.iter().all(|s| s.point % 2 == 0) && even.len() == 10);
        }
        let recall = hits as f64 / 300.0;
        assert!(recall > 0.9, "recall {recall}");
    }

    /// Layer 0's rows hold each point's list as built, in order, with nothing
    /// after it; a point past the end has none. Graphs of 32-dimensional points
    /// fill enough of their rows to be kept in them.
    #[test]
    fn rows_hold_the_lists_as_built() {
        for (n, m) in [(1, 2), (40, 3), (600, 12), (300, 20)] {
            let v = random_vectors(n, 32, n as u64);
            let flat = build::build(&v, 32, Metric::L2, m, 40);
            let g = Graph::parse(&flat.to_bytes(), n).expect("parse");
            assert!(matches!(g.layer0, Layer0::Rows(_)), "n {n}, m {m}");
            for (p, list) in flat.layer0.iter().enumerate() {
                let got: Vec<u32> = g.neighbours0(p as u32).collect();
                assert_eq!(&got, list, "point {p} of {n}, m {m}");
                assert_eq!(g.layer0.list(p as u32).len() % 16, 0);
            }
            assert_eq!(g.neighbours0(n as u32).count(), 0);
            assert_eq!(g.neighbours0(u32::MAX).count(), 0);
            let widest = flat.layer0.iter().map(Vec::len).max().unwrap_or(0);
            let rows = n * 64 * widest.div_ceil(16).max(1);
            assert_eq!(g.memory_bytes(), rows + upper_bytes(&flat));
        }
    }

    /// Bytes of `flat`'s upper layers once parsed: ids, offsets and neighbours.
    fn upper_bytes(flat: &build::FlatGraph) -> usize {
        flat.upper
            .iter()
            .map(|l| 4 * (2 * l.len() + 1 + l.iter().map(|(_, nb)| nb.len()).sum::<usize>()))
            .sum()
    }

    /// A list longer than any collection's `2 m` is refused before rows of its
    /// width are allocated for every point.
    #[test]
    fn an_overlong_list_is_refused() {
        let n = MAX_LIST0 + 2;
        let flat = build::FlatGraph {
            n: n as u32,
            entry: 0,
            layer0: (0..n as u32)
                .map(|p| {
                    if p == 0 {
                        (1..n as u32).collect()
                    } else {
                        vec![0]
                    }
                })
                .collect(),
            upper: Vec::new(),
        };
        let err = Graph::parse(&flat.to_bytes(), n).expect_err("overlong list");
        let expected = format!(
            "layer-0 list of {} neighbours, at most {MAX_LIST0}",
            MAX_LIST0 + 1
        );
        assert!(err.contains(&expected), "{err}");
        // One list of 512 among lists of 1: rows would cost a hundred times the
        // lists, so they stay packed, and walks read the same lists.
        let mut fits = flat;
        fits.layer0[0].truncate(MAX_LIST0);
        let g = Graph::parse(&fits.to_bytes(), n).expect("fits");
        assert!(matches!(g.layer0, Layer0::Packed { .. }));
        for (p, list) in fits.layer0.iter().enumerate() {
            assert_eq!(&g.neighbours0(p as u32).collect::<Vec<_>>(), list);
        }
        assert_eq!(g.memory_bytes(), 4 * (n + 1 + 2 * MAX_LIST0 + 1));
        let found = g.search(3, 8, |p| -(p as f32), |_| {}, |_| true);
        assert_eq!(found.iter().map(|s| s.point).collect::<Vec<_>>(), [0, 1, 2]);
    }

    /// Every point a walk returns was expanded on the way, and reported to the
    /// `expanded` hint once: what lets a caller prefetch rescore rows there.
    #[test]
    fn every_returned_point_was_reported_expanded() {
        let (n, dim) = (500, 8);
        let v = random_vectors(n, dim, 4);
        let g =
            Graph::parse(&build::build(&v, dim, Metric::L2, 8, 48).to_bytes(), n).expect("parse");
        for q in random_vectors(10, dim, 5).chunks_exact(dim) {
            let gather = |ids: &[u32], out: &mut [f32]| {
                for (&p, o) in ids.iter().zip(out.iter_mut()) {
                    *o = -octet_quant::kernels::l2sq_f32(q, &v[p as usize * dim..][..dim]);
                }
            };
            for ef in [4, 10, 40] {
                let seen = std::cell::RefCell::new(Vec::new());
                let note = |p: u32| seen.borrow_mut().push(p);
                let list = g.search_gather_all(10, ef, gather, |_| {}, note);
                let heap_seen = std::cell::RefCell::new(Vec::new());
                let heaps = g.search_gather(
                    10,
                    ef,
                    gather,
                    |_| {},
                    |p| heap_seen.borrow_mut().push(p),
                    |p| p % 3 != 0,
                );
                let (mut seen, mut heap_seen) = (seen.into_inner(), heap_seen.into_inner());
                for (found, seen) in [(&list, &mut seen), (&heaps, &mut heap_seen)] {
                    assert!(found.iter().all(|s| seen.contains(&s.point)));
                    let all = seen.len();
                    seen.sort_unstable();
                    seen.dedup();
                    assert_eq!(seen.len(), all, "a point reported twice");
                }
            }
        }
    }

    #[test]
    fn corrupt_graphs_are_rejected() {
        let v = random_vectors(50, 4, 3);
        let bytes = build::build(&v, 4, Metric::Dot, 8, 32).to_bytes();
        assert!(Graph::parse(&bytes, 51).is_err());
        assert!(Graph::parse(&bytes[..bytes.len() - 4], 50).is_err());
        let mut bad = bytes.clone();
        let last = bad.len() - 4;
        bad[last..].copy_from_slice(&999u32.to_le_bytes());
        assert!(Graph::parse(&bad, 50).is_err());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for _ in 0..200 {
            let mut b = bytes.clone();
            let i = rng.random_range(0..b.len());
            b[i] = rng.random();
            if let Ok(g) = Graph::parse(&b, 50) {
                let _ = g.search(5, 10, |p| p as f32, |_| {}, |_| true);
            }
        }
    }
}
