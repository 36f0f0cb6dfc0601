//! Building a segment's proximity graph: HNSW (Malkov & Yashunin, 2016, algorithms
//! 1, 2 and 4), inserted in parallel, flattened into the layered adjacency lists
//! that [`super::Graph`] searches.
//!
//! The graph is built from the best f32 vectors the sealer has: the exact vectors
//! when the growing segment is sealed, the decoded rescore tier (or codes) when
//! compaction rewrites segments. A graph is a navigation structure: building it
//! from exact vectors gives it the true neighbourhoods, and the search then ranks
//! by codes.
//!
//! The builder is ours (it replaced hnsw_rs, which took 4x faiss's build time on
//! the same data): every point's layer is drawn up front from a hash of its
//! offset; points are inserted by all of rayon's threads, each with its own
//! visited stamps and heaps. Neighbour lists are flat rows of atomics (layer 0 all
//! in one array, a count then the slots), guarded by one lock per point, so
//! reaching a list costs one cache miss, not a chain of pointers. Layer 0 keeps up to `2m` neighbours and the layers
//! above `m`, chosen by the diversity heuristic (algorithm 4: a candidate is kept
//! only when it is closer to the new point than to every neighbour kept before it),
//! both when a point is inserted and when a full list takes a new back-link.

use octet_quant::Metric;
use octet_quant::kernels::{DOT_I8_MAX_LEN, dot_f32, dot_i8, dot_i8_gather, quantize_i8};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use parking_lot::{Mutex, MutexGuard, RwLock};
use rayon::prelude::*;

use super::{Beam, Scored};

/// Most points one rayon piece of the parallel insertion holds.
const INSERT_PIECE: usize = 64;

/// Deepest layer a point is drawn into (the chance of reaching it is m^-15).
const MAX_LEVEL: usize = 15;

/// A graph as layered adjacency lists over points `0..n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatGraph {
    /// Number of points.
    pub n: u32,
    /// Where searches start; on the top layer.
    pub entry: u32,
    /// Neighbours of every point on layer 0.
    pub layer0: Vec<Vec<u32>>,
    /// Layers 1.., each the sorted points on it with their neighbours.
    pub upper: Vec<Vec<(u32, Vec<u32>)>>,
}

/// Builds the graph of `vectors` (row-major, `dim` each) under `metric`, inserting
/// on the current rayon pool's threads.
pub fn build(
    vectors: &[f32],
    dim: usize,
    metric: Metric,
    m: usize,
    ef_construction: usize,
) -> FlatGraph {
    let n = vectors.len().checked_div(dim).unwrap_or(0);
    if n == 0 {
        return FlatGraph {
            n: 0,
            entry: 0,
            layer0: Vec::new(),
            upper: Vec::new(),
        };
    }
    let m = m.clamp(2, crate::config::MAX_HNSW_M);
    // The store's dimension cap is the kernel's length cap.
    assert!(
        dim <= DOT_I8_MAX_LEN,
        "graph dimension {dim} above {DOT_I8_MAX_LEN}"
    );
    let builder = Builder::new(vectors, dim, metric, m, ef_construction.max(m));
    // The first point starts the graph; every other one is inserted in parallel.
    // Short pieces: rayon only splits a range further when a thread steals it, so
    // with long ones the last piece ran on one core while the other idled (a
    // tenth of a 2-thread build at 20k points).
    (1..n as u32)
        .into_par_iter()
        .with_max_len(INSERT_PIECE)
        .for_each_init(|| Scratch::new(n), |scratch, p| builder.insert(p, scratch));
    builder.flatten()
}

/// The level of point `p` for links `m`: `floor(-ln(u) / ln(m))` with `u` uniform in
/// (0, 1] drawn from a hash of `p`, so a graph's layers do not depend on threads.
fn level_of(p: u32, m: usize) -> usize {
    // splitmix64
    let mut z = u64::from(p).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let level = (-u.ln() / (m as f64).ln()).floor();
    (level as usize).min(MAX_LEVEL)
}

/// Every point's neighbour lists: per list a row of `1 + cap` words, the count and
/// then the slots. Rows are only read or written under their point's lock (the
/// atomics make that safe Rust; the lock makes each list change whole).
struct Links {
    m: usize,
    locks: Vec<Mutex<()>>,
    /// Layer 0, `1 + 2m` words per point.
    layer0: Vec<AtomicU32>,
    /// Layers `1..=level` of each point, `1 + m` words per layer.
    upper: Vec<Box<[AtomicU32]>>,
}

impl Links {
    fn new(n: usize, m: usize) -> Links {
        Links {
            m,
            locks: (0..n).map(|_| Mutex::new(())).collect(),
            layer0: (0..n * (1 + 2 * m)).map(|_| AtomicU32::new(0)).collect(),
            upper: (0..n as u32)
                .map(|p| {
                    (0..level_of(p, m) * (1 + m))
                        .map(|_| AtomicU32::new(0))
                        .collect()
                })
                .collect(),
        }
    }

    /// The level of point `p` (its highest layer).
    fn level(&self, p: u32) -> usize {
        self.upper[p as usize].len() / (1 + self.m)
    }

    fn lock(&self, p: u32) -> MutexGuard<'_, ()> {
        self.locks[p as usize].lock()
    }

    /// Point `p`'s row on `layer`; empty when `p` is not on it. Read it under `p`'s
    /// lock.
    fn row(&self, p: u32, layer: usize) -> &[AtomicU32] {
        if layer == 0 {
            let w = 1 + 2 * self.m;
            &self.layer0[p as usize * w..][..w]
        } else {
            let w = 1 + self.m;
            self.upper[p as usize]
                .get((layer - 1) * w..layer * w)
                .unwrap_or(&[])
        }
    }

    /// Appends the list in `row` to `out` (the caller holds the lock).
    fn read(row: &[AtomicU32], out: &mut Vec<u32>) {
        let Some((count, slots)) = row.split_first() else {
            return;
        };
        let n = (count.load(Relaxed) as usize).min(slots.len());
        out.extend(slots[..n].iter().map(|a| a.load(Relaxed)));
    }

    /// Replaces the list in `row` (the caller holds the lock; `list` fits).
    fn write(row: &[AtomicU32], list: &[u32]) {
        let Some((count, slots)) = row.split_first() else {
            return;
        };
        for (slot, &x) in slots.iter().zip(list) {
            slot.store(x, Relaxed);
        }
        count.store(list.len().min(slots.len()) as u32, Relaxed);
    }
}

/// The vectors as the builder scores them: each row `x` as `scale * c` with `c` in
/// i8 (`scale = max |x_i| / 127`), plus its exact squared norm. Scoring is then an
/// exact integer dot product over a quarter of the f32 bytes; the rounding moves a
/// MiniLM inner product by about 1e-3, well below the gaps between neighbours.
struct Rows {
    dim: usize,
    codes: Vec<i8>,
    scales: Vec<f32>,
    norms: Vec<f32>,
}

impl Rows {
    fn new(vectors: &[f32], dim: usize) -> Rows {
        let n = vectors.len() / dim;
        let mut codes = vec![0i8; n * dim];
        let mut scales = Vec::with_capacity(n);
        let mut norms = Vec::with_capacity(n);
        for (v, c) in vectors.chunks_exact(dim).zip(codes.chunks_exact_mut(dim)) {
            scales.push(quantize_i8(v, c));
            norms.push(dot_f32(v, v));
        }
        Rows {
            dim,
            codes,
            scales,
            norms,
        }
    }

    fn code(&self, p: u32) -> &[i8] {
        &self.codes[p as usize * self.dim..][..self.dim]
    }

    /// [`Rows::dot`] of row `a` with each of rows `ids`, into `out`.
    fn dots(&self, a: u32, ids: &[u32], raw: &mut Vec<i32>, out: &mut Vec<f32>) {
        raw.clear();
        raw.resize(ids.len(), 0);
        dot_i8_gather(self.code(a), &self.codes, ids, raw);
        let sa = self.scales[a as usize];
        out.clear();
        out.extend(
            ids.iter()
                .zip(raw.iter())
                .map(|(&b, &d)| sa * self.scales[b as usize] * d as f32),
        );
    }

    /// Approximate inner product of rows `a` and `b`.
    #[inline]
    fn dot(&self, a: u32, b: u32) -> f32 {
        let d = dot_i8(self.code(a), self.code(b));
        self.scales[a as usize] * self.scales[b as usize] * d as f32
    }
}

struct Builder {
    rows: Rows,
    metric: Metric,
    m: usize,
    ef: usize,
    links: Links,
    /// The entry point and its level (the top layer).
    entry: RwLock<(u32, usize)>,
}

/// Per-thread working memory of the insertions.
struct Scratch {
    /// `visited[p] == stamp` marks `p` seen by the current layer search.
    visited: Vec<u32>,
    stamp: u32,
    /// The layer search's list of the best points found.
    beam: Beam,
    links: Vec<u32>,
    /// A list's raw `i8` dot products and similarities to the point inserted.
    dots: Vec<i32>,
    sims: Vec<f32>,
}

impl Scratch {
    fn new(n: usize) -> Scratch {
        Scratch {
            visited: vec![0; n],
            stamp: 0,
            beam: Beam::default(),
            links: Vec::new(),
            dots: Vec::new(),
            sims: Vec::new(),
        }
    }

    /// Starts a new search: every point unvisited.
    fn next_stamp(&mut self) {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.visited.fill(0);
            self.stamp = 1;
        }
    }
}

impl Builder {
    fn new(vectors: &[f32], dim: usize, metric: Metric, m: usize, ef: usize) -> Builder {
        let n = vectors.len() / dim;
        Builder {
            rows: Rows::new(vectors, dim),
            metric,
            m,
            ef,
            links: Links::new(n, m),
            entry: RwLock::new((0, level_of(0, m))),
        }
    }

    /// Similarity of rows `a` and `b`, higher is closer: the inner product, or minus
    /// the squared distance.
    #[inline]
    fn sim(&self, a: u32, b: u32) -> f32 {
        self.sim_of_dot(a, b, self.rows.dot(a, b))
    }

    /// [`Builder::sim`] from the rows' approximate inner product `dot`.
    #[inline]
    fn sim_of_dot(&self, a: u32, b: u32, dot: f32) -> f32 {
        let s = match self.metric {
            Metric::L2 => 2.0 * dot - self.rows.norms[a as usize] - self.rows.norms[b as usize],
            Metric::Cosine | Metric::Dot => dot,
        };
        // NaN cannot occur for the finite vectors the store accepts; "far" if it did.
        if s.is_nan() { f32::MIN } else { s }
    }

    /// [`Builder::sim`] of `q` with each of `ids`, into `sims` (one gathered
    /// kernel call; `dots` is scratch).
    fn sims(&self, q: u32, ids: &[u32], dots: &mut Vec<i32>, sims: &mut Vec<f32>) {
        self.rows.dots(q, ids, dots, sims);
        for (s, &b) in sims.iter_mut().zip(ids) {
            *s = self.sim_of_dot(q, b, *s);
        }
    }

    /// Starts loading row `p` into the cache.
    #[inline]
    fn prefetch(&self, p: u32) {
        octet_quant::kernels::prefetch(bytemuck::cast_slice(self.rows.code(p)));
    }

    /// Starts loading point `p`'s list on `layer` into the cache.
    #[inline]
    fn prefetch_row(&self, p: u32, layer: usize) {
        if layer == 0 {
            let row = self.links.row(p, 0);
            // SAFETY: AtomicU32 has the size, alignment and bit validity of u32,
            // and a prefetch reads nothing into the program.
            let words: &[u32] =
                unsafe { std::slice::from_raw_parts(row.as_ptr().cast(), row.len()) };
            octet_quant::kernels::prefetch(bytemuck::cast_slice(words));
        }
    }

    fn cap(&self, layer: usize) -> usize {
        if layer == 0 { 2 * self.m } else { self.m }
    }

    /// Copies `p`'s neighbours on `layer` into `out`.
    fn links_into(&self, p: u32, layer: usize, out: &mut Vec<u32>) {
        out.clear();
        let _guard = self.links.lock(p);
        Links::read(self.links.row(p, layer), out);
    }

    fn insert(&self, p: u32, scratch: &mut Scratch) {
        let level = self.links.level(p);
        let (entry, top) = *self.entry.read();
        let mut best = Scored {
            score: self.sim(p, entry),
            point: entry,
        };
        // Greedy descent through the layers above the point's own.
        for layer in (level + 1..=top).rev() {
            loop {
                let mut moved = false;
                let mut links = std::mem::take(&mut scratch.links);
                self.links_into(best.point, layer, &mut links);
                self.sims(p, &links, &mut scratch.dots, &mut scratch.sims);
                for (&nb, &s) in links.iter().zip(&scratch.sims) {
                    if s > best.score {
                        best = Scored {
                            score: s,
                            point: nb,
                        };
                        moved = true;
                    }
                }
                scratch.links = links;
                if !moved {
                    break;
                }
            }
        }
        for layer in (0..=level.min(top)).rev() {
            let found = self.search_layer(p, best, layer, scratch);
            if let Some(&b) = found.first() {
                best = b;
            }
            let chosen = self.select(&found, self.cap(layer));
            {
                let _guard = self.links.lock(p);
                let row = self.links.row(p, layer);
                // Another insertion can have linked to `p` already (it reached `p`
                // through a layer above); keep those links too.
                let mut own = chosen.clone();
                let mut earlier = Vec::new();
                Links::read(row, &mut earlier);
                for nb in earlier {
                    if !own.contains(&nb) {
                        own.push(nb);
                    }
                }
                if own.len() > self.cap(layer) {
                    own = self.reselect(p, &own, self.cap(layer));
                }
                Links::write(row, &own);
            }
            for &nb in &chosen {
                self.link(nb, p, layer);
            }
        }
        if level > top {
            let mut e = self.entry.write();
            if level > e.1 {
                *e = (p, level);
            }
        }
    }

    /// Up to `ef` closest points to `q` on `layer` from `start`, best first.
    fn search_layer(&self, q: u32, start: Scored, layer: usize, s: &mut Scratch) -> Vec<Scored> {
        s.next_stamp();
        s.visited[start.point as usize] = s.stamp;
        s.beam.reset(self.ef, start);
        let mut links = std::mem::take(&mut s.links);
        while let Some(c) = s.beam.pop() {
            // The unvisited neighbours, marked and prefetched under the list's lock.
            self.links_into(c.point, layer, &mut links);
            links.retain(|&nb| {
                let seen = &mut s.visited[nb as usize];
                let fresh = *seen != s.stamp;
                *seen = s.stamp;
                fresh
            });
            for &nb in &links {
                self.prefetch(nb);
            }
            // The next candidate's list, likely read next.
            if let Some(next) = s.beam.peek() {
                self.prefetch_row(next.point, layer);
            }
            let mut sims = std::mem::take(&mut s.sims);
            self.sims(q, &links, &mut s.dots, &mut sims);
            for (&nb, &score) in links.iter().zip(&sims) {
                if s.beam.takes(score) {
                    s.beam.insert(Scored { score, point: nb });
                }
            }
            s.sims = sims;
        }
        s.links = links;
        s.beam.best(usize::MAX)
    }

    /// The diversity heuristic over `candidates` (best first, scored against the
    /// point whose list this is): at most `cap`, each closer to that point than to
    /// any chosen before it.
    fn select(&self, candidates: &[Scored], cap: usize) -> Vec<u32> {
        let mut chosen: Vec<u32> = Vec::with_capacity(cap);
        for c in candidates {
            if chosen.len() >= cap {
                break;
            }
            if chosen.iter().all(|&r| self.sim(c.point, r) < c.score) {
                chosen.push(c.point);
            }
        }
        chosen
    }

    /// `list` (an overfull neighbour list of `base`) cut back to `cap` by the
    /// heuristic.
    fn reselect(&self, base: u32, list: &[u32], cap: usize) -> Vec<u32> {
        let (mut dots, mut sims) = (Vec::new(), Vec::new());
        self.sims(base, list, &mut dots, &mut sims);
        let mut candidates: Vec<Scored> = list
            .iter()
            .zip(sims)
            .map(|(&point, score)| Scored { score, point })
            .collect();
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        self.select(&candidates, cap)
    }

    /// Adds the back-link `from -> to` on `layer`, re-choosing `from`'s list by the
    /// heuristic when it is full.
    fn link(&self, from: u32, to: u32, layer: usize) {
        let _guard = self.links.lock(from);
        let row = self.links.row(from, layer);
        let mut list = Vec::with_capacity(row.len());
        Links::read(row, &mut list);
        if row.is_empty() || list.contains(&to) {
            return;
        }
        list.push(to);
        if list.len() > self.cap(layer) {
            list = self.reselect(from, &list, self.cap(layer));
        }
        Links::write(row, &list);
    }

    fn flatten(self) -> FlatGraph {
        let n = self.links.locks.len();
        let (entry, top) = self.entry.into_inner();
        let mut layer0 = Vec::with_capacity(n);
        let mut upper: Vec<Vec<(u32, Vec<u32>)>> = vec![Vec::new(); top];
        for p in 0..n as u32 {
            let mut list = Vec::new();
            Links::read(self.links.row(p, 0), &mut list);
            layer0.push(list);
            for (layer, u) in upper.iter_mut().enumerate().take(self.links.level(p)) {
                let mut list = Vec::new();
                Links::read(self.links.row(p, layer + 1), &mut list);
                u.push((p, list));
            }
        }
        FlatGraph {
            n: n as u32,
            entry,
            layer0,
            upper,
        }
    }
}

impl FlatGraph {
    /// The same graph with its points renumbered in breadth-first order from the
    /// entry over layer 0 (points it does not reach follow in their old order),
    /// and `order`, where `order[new] = old`. A point's neighbours then mostly
    /// have numbers close to its own, so a walk over codes and lists stored in
    /// that order touches fewer cache lines and pages.
    pub fn renumbered(&self) -> (FlatGraph, Vec<u32>) {
        let n = self.n as usize;
        let mut order: Vec<u32> = Vec::with_capacity(n);
        let mut seen = vec![false; n];
        let (mut head, mut cursor) = (0, 0);
        let mut start = (n > 0).then_some(self.entry);
        while let Some(s) = start {
            seen[s as usize] = true;
            order.push(s);
            while let Some(&p) = order.get(head) {
                head += 1;
                for &nb in &self.layer0[p as usize] {
                    if !std::mem::replace(&mut seen[nb as usize], true) {
                        order.push(nb);
                    }
                }
            }
            while cursor < n && seen[cursor] {
                cursor += 1;
            }
            start = (cursor < n).then_some(cursor as u32);
        }
        let mut new_of = vec![0u32; n];
        for (new, &old) in order.iter().enumerate() {
            new_of[old as usize] = new as u32;
        }
        let map = |list: &[u32]| -> Vec<u32> { list.iter().map(|&x| new_of[x as usize]).collect() };
        let layer0 = order
            .iter()
            .map(|&old| map(&self.layer0[old as usize]))
            .collect();
        let upper = self
            .upper
            .iter()
            .map(|layer| {
                let mut l: Vec<(u32, Vec<u32>)> = layer
                    .iter()
                    .map(|(p, list)| (new_of[*p as usize], map(list)))
                    .collect();
                l.sort_unstable_by_key(|e| e.0);
                l
            })
            .collect();
        let graph = FlatGraph {
            n: self.n,
            entry: if n > 0 {
                new_of[self.entry as usize]
            } else {
                0
            },
            layer0,
            upper,
        };
        (graph, order)
    }

    /// Serializes the graph; the layout is documented on [`super::Graph`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut words: Vec<u32> = vec![self.n, self.upper.len() as u32, self.entry];
        let push_csr = |lists: &mut dyn Iterator<Item = &Vec<u32>>, words: &mut Vec<u32>| {
            let lists: Vec<&Vec<u32>> = lists.collect();
            let mut off = 0u32;
            words.push(0);
            for l in &lists {
                off += l.len() as u32;
                words.push(off);
            }
            for l in &lists {
                words.extend_from_slice(l);
            }
        };
        push_csr(&mut self.layer0.iter(), &mut words);
        for layer in &self.upper {
            words.push(layer.len() as u32);
            words.extend(layer.iter().map(|(id, _)| *id));
            push_csr(&mut layer.iter().map(|(_, l)| l), &mut words);
        }
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::tests::random_vectors;

    /// Renumbering is a relabelling: every edge maps to an edge, structure and
    /// search results (as old ids) are unchanged, the entry comes first, and
    /// neighbours end up closer in number.
    #[test]
    fn renumbering_relabels_the_same_graph() {
        let (n, dim) = (700, 8);
        let v = random_vectors(n, dim, 21);
        let g = build(&v, dim, Metric::L2, 8, 48);
        let (r, order) = g.renumbered();
        check_structure(&r, 8);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..n as u32).collect::<Vec<_>>(), "a permutation");
        assert_eq!(order[r.entry as usize], g.entry);
        assert_eq!(r.entry, 0);
        for (new, &old) in order.iter().enumerate() {
            let mapped: Vec<u32> = r.layer0[new].iter().map(|&x| order[x as usize]).collect();
            assert_eq!(mapped, g.layer0[old as usize]);
        }
        for (a, b) in g.upper.iter().zip(&r.upper) {
            assert_eq!(a.len(), b.len());
            for (p, list) in b {
                let old = order[*p as usize];
                let (_, want) = a
                    .iter()
                    .find(|e| e.0 == old)
                    .expect("point kept on its layer");
                let mapped: Vec<u32> = list.iter().map(|&x| order[x as usize]).collect();
                assert_eq!(&mapped, want);
            }
        }
        let spread = |g: &FlatGraph| -> u64 {
            g.layer0
                .iter()
                .enumerate()
                .flat_map(|(p, l)| l.iter().map(move |&x| (x as i64 - p as i64).unsigned_abs()))
                .sum()
        };
        assert!(spread(&r) < spread(&g), "{} vs {}", spread(&r), spread(&g));
        // The same searches find the same points.
        let (a, b) = (
            crate::graph::Graph::parse(&g.to_bytes(), n).expect("parse"),
            crate::graph::Graph::parse(&r.to_bytes(), n).expect("parse"),
        );
        let q = random_vectors(5, dim, 22);
        for q in q.chunks_exact(dim) {
            let score = |p: u32| -octet_quant::kernels::l2sq_f32(q, &v[p as usize * dim..][..dim]);
            let want: Vec<u32> = a
                .search(10, 32, score, |_| {}, |_| true)
                .iter()
                .map(|s| s.point)
                .collect();
            let got: Vec<u32> = b
                .search(10, 32, |p| score(order[p as usize]), |_| {}, |_| true)
                .iter()
                .map(|s| order[s.point as usize])
                .collect();
            assert_eq!(got, want);
        }
        // Points the walk from the entry cannot reach still get numbers.
        let mut cut = g.clone();
        for l in &mut cut.layer0 {
            l.clear();
        }
        let (rc, oc) = cut.renumbered();
        assert_eq!(oc.len(), n);
        assert_eq!(oc[0], g.entry);
        assert_eq!(rc.n as usize, n);
    }

    /// Every list within its cap, without self-links or repeats, ids in range; the
    /// upper layers nested (a point on layer l is on every layer below) and the
    /// entry point on the top one.
    fn check_structure(g: &FlatGraph, m: usize) {
        let n = g.n as usize;
        assert_eq!(g.layer0.len(), n);
        let check = |p: u32, list: &[u32], cap: usize| {
            assert!(
                list.len() <= cap,
                "point {p}: {} links, cap {cap}",
                list.len()
            );
            assert!(!list.contains(&p), "point {p} links to itself");
            let mut sorted = list.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), list.len(), "point {p} repeats a link");
            assert!(list.iter().all(|&x| (x as usize) < n));
        };
        for (p, list) in g.layer0.iter().enumerate() {
            check(p as u32, list, 2 * m);
        }
        let mut below: Vec<u32> = (0..g.n).collect();
        for layer in &g.upper {
            let ids: Vec<u32> = layer.iter().map(|(p, _)| *p).collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]));
            assert!(ids.iter().all(|p| below.binary_search(p).is_ok()));
            for (p, list) in layer {
                check(*p, list, m);
                assert!(list.iter().all(|x| ids.binary_search(x).is_ok()));
            }
            below = ids;
        }
        assert!(
            below.contains(&g.entry),
            "entry {} not on the top layer",
            g.entry
        );
    }

    #[test]
    fn graphs_keep_their_invariants_and_find_neighbours_under_every_metric() {
        let (n, dim, m) = (1500, 24, 8);
        let v = random_vectors(n, dim, 5);
        let queries = random_vectors(40, dim, 6);
        for metric in [Metric::L2, Metric::Dot, Metric::Cosine] {
            let data: Vec<f32> = match metric {
                Metric::Cosine => v
                    .chunks_exact(dim)
                    .flat_map(|r| {
                        let norm = dot_f32(r, r).sqrt();
                        r.iter().map(move |x| x / norm)
                    })
                    .collect(),
                _ => v.clone(),
            };
            let flat = build(&data, dim, metric, m, 64);
            check_structure(&flat, m);
            let g = crate::graph::Graph::parse(&flat.to_bytes(), n).expect("parse");
            let mut hits = 0;
            for q in queries.chunks_exact(dim) {
                let score = |p: u32| {
                    let x = &data[p as usize * dim..][..dim];
                    match metric {
                        Metric::L2 => -octet_quant::kernels::l2sq_f32(q, x),
                        _ => dot_f32(q, x),
                    }
                };
                let mut exact: Vec<u32> = (0..n as u32).collect();
                exact.sort_by(|&a, &b| score(b).total_cmp(&score(a)));
                let got = g.search(10, 64, score, |_| {}, |_| true);
                hits += got
                    .iter()
                    .filter(|s| exact[..10].contains(&s.point))
                    .count();
            }
            let recall = hits as f64 / 400.0;
            assert!(recall > 0.9, "{metric}: recall {recall}");
        }
    }

    #[test]
    fn levels_follow_the_geometric_law_and_do_not_depend_on_threads() {
        let m = 16;
        let levels: Vec<usize> = (0..100_000u32).map(|p| level_of(p, m)).collect();
        let above0 = levels.iter().filter(|&&l| l >= 1).count() as f64 / 1e5;
        let above1 = levels.iter().filter(|&&l| l >= 2).count() as f64 / 1e5;
        // P(level >= l) = m^-l.
        assert!((above0 - 1.0 / 16.0).abs() < 0.005, "{above0}");
        assert!((above1 - 1.0 / 256.0).abs() < 0.001, "{above1}");
        assert_eq!(level_of(7, m), level_of(7, m));
        assert!(levels.iter().all(|&l| l <= MAX_LEVEL));
    }

    #[test]
    fn tiny_and_degenerate_inputs_build() {
        assert_eq!(build(&[], 4, Metric::L2, 16, 64).n, 0);
        let one = build(&[1.0, 2.0], 2, Metric::Dot, 16, 64);
        assert_eq!((one.n, one.entry, one.layer0.len()), (1, 0, 1));
        // Identical and zero vectors: still a valid graph over every point.
        let same = vec![0.0f32; 40 * 3];
        let g = build(&same, 3, Metric::Cosine, 4, 16);
        check_structure(&g, 4);
        assert!(g.layer0.iter().all(|l| !l.is_empty()));
    }
}
