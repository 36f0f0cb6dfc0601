//! Building a segment's proximity graph with hnsw_rs and flattening it into the
//! layered adjacency lists that [`super::Graph`] searches.
//!
//! hnsw_rs builds the graph (parallel insertion, its heuristic neighbour selection);
//! we keep only its neighbour lists. Searching is ours, because hnsw_rs scores a
//! query of the same element type as the stored data, while our queries are f32 and
//! the stored data are compact codes scored through a per-query [`octet_quant::Scorer`].
//!
//! The graph is built from the best f32 vectors the sealer has: the exact vectors
//! when the growing segment is sealed, the decoded rescore tier (or codes) when
//! compaction rewrites segments. A graph is a navigation structure: building it
//! from exact vectors gives it the true neighbourhoods, and the search then ranks
//! by codes.

use hnsw_rs::prelude::{Distance, Hnsw};
use octet_quant::Metric;
use octet_quant::kernels::{dot_f32, l2sq_f32};

/// hnsw_rs's deepest layer count.
const MAX_LAYERS: usize = 16;

/// The distance hnsw_rs builds with. hnsw_rs asserts distances are non-negative,
/// so inner products are shifted by an upper bound of the largest possible score.
#[derive(Debug, Clone, Copy)]
struct BuildDistance {
    metric: Metric,
    /// For dot: the square of the largest norm (bounds every inner product).
    shift: f32,
}

impl Distance<f32> for BuildDistance {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        let d = match self.metric {
            Metric::L2 => l2sq_f32(a, b),
            Metric::Cosine => 1.0 - dot_f32(a, b),
            Metric::Dot => self.shift - dot_f32(a, b),
        };
        // Rounding can push a shifted distance a hair below zero; NaN cannot occur
        // for the finite vectors the store accepts, but is mapped to "far" anyway.
        if d.is_nan() { f32::MAX } else { d.max(0.0) }
    }
}

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

/// Builds the graph of `vectors` (row-major, `dim` each) under `metric`.
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
    let shift = vectors
        .chunks_exact(dim)
        .map(|v| dot_f32(v, v))
        .fold(0.0f32, f32::max)
        * 1.001
        + 1e-6;
    // Config validation keeps m <= 256; hnsw_rs would exit the process above it.
    let m = m.clamp(2, crate::config::MAX_HNSW_M);
    let hnsw: Hnsw<f32, BuildDistance> = Hnsw::new(
        m,
        n,
        MAX_LAYERS,
        ef_construction,
        BuildDistance { metric, shift },
    );
    let data: Vec<(&[f32], usize)> = vectors
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, v)| (v, i))
        .collect();
    hnsw.parallel_insert_slice(&data);

    let index = hnsw.get_point_indexation();
    let top = usize::from(index.get_max_level_observed());
    let mut layer0 = vec![Vec::new(); n];
    let mut upper: Vec<Vec<(u32, Vec<u32>)>> = vec![Vec::new(); top];
    for point in index {
        let id = point.get_origin_id();
        let level = usize::from(point.get_point_id().0);
        for (layer, neighbours) in point
            .get_neighborhood_id()
            .into_iter()
            .enumerate()
            .take(level + 1)
        {
            let ids: Vec<u32> = neighbours
                .iter()
                .map(|nb| nb.get_origin_id() as u32)
                .collect();
            if layer == 0 {
                layer0[id] = ids;
            } else if let Some(l) = upper.get_mut(layer - 1) {
                l.push((id as u32, ids));
            }
        }
    }
    for l in &mut upper {
        l.sort_by_key(|(id, _)| *id);
    }
    let entry = index
        .get_layer_iterator(top)
        .next()
        .map_or(0, |p| p.get_origin_id() as u32);
    FlatGraph {
        n: n as u32,
        entry,
        layer0,
        upper,
    }
}

impl FlatGraph {
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
