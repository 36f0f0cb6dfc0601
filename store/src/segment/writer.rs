//! Writing a sealed segment: every component file, fsynced, before any manifest
//! references it.

use std::path::Path;

use octet_quant::Metric;

use crate::error::Result;
use crate::graph::build;
use crate::manifest::{FileRef, SegmentRef};
use crate::segment::file::{Component, write_component};

/// Everything a sealed segment is made of, in storage order.
#[derive(Debug, Default)]
pub(crate) struct SegmentInput {
    /// Point ids.
    pub ids: Vec<u64>,
    /// Payloads as JSON object bytes.
    pub payloads: Vec<Vec<u8>>,
    /// Compact codes, `ids.len() x code_len`.
    pub codes: Vec<u8>,
    /// Rescore-tier codes, when the collection has a tier.
    pub rescore: Option<Vec<u8>>,
    /// The f32 vectors the graph is built from (row-major).
    pub graph_vectors: Vec<f32>,
}

/// Graph-building parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GraphParams {
    pub dim: usize,
    pub metric: Metric,
    pub m: usize,
    pub ef_construction: usize,
}

/// File name of component `kind` of segment `id`.
pub(crate) fn component_name(id: u64, kind: Component) -> String {
    format!("seg-{id:08}.{}", kind.extension())
}

/// Payload file body: `n + 1` u64 LE offsets into the JSON bytes that follow.
fn payload_body(payloads: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        8 * (payloads.len() + 1) + payloads.iter().map(|p| p.len()).sum::<usize>(),
    );
    let mut off = 0u64;
    out.extend_from_slice(&off.to_le_bytes());
    for p in payloads {
        off += p.len() as u64;
        out.extend_from_slice(&off.to_le_bytes());
    }
    for p in payloads {
        out.extend_from_slice(p);
    }
    out
}

/// `rows` (`order.len()` rows of equal length) with row `order[i]` at `i`.
fn permute_rows(rows: &[u8], order: &[u32]) -> Vec<u8> {
    let len = rows.len().checked_div(order.len()).unwrap_or(0);
    let mut out = Vec::with_capacity(rows.len());
    for &old in order {
        out.extend_from_slice(&rows[old as usize * len..][..len]);
    }
    out
}

/// Writes segment `id` into `dir` and returns its manifest entry (without
/// tombstones) and the storage order: point `i` of the segment is point
/// `order[i]` of `input`.
///
/// Points are stored in the graph's breadth-first order
/// ([`build::FlatGraph::renumbered`]), so the codes and lists a search walks
/// through lie close together. Every reader maps offsets to ids through the ids
/// file, so no reader depends on the order; a caller that keeps per-point state
/// by input position (the frozen chunk's deletions) permutes it with `order`.
pub(crate) fn write_segment(
    dir: &Path,
    id: u64,
    input: &SegmentInput,
    graph: GraphParams,
) -> Result<(SegmentRef, Vec<u32>)> {
    let n = input.ids.len();
    let (flat, order) = build::build(
        &input.graph_vectors,
        graph.dim,
        graph.metric,
        graph.m,
        graph.ef_construction,
    )
    .renumbered();
    let write = |kind: Component, body: &[u8]| -> Result<FileRef> {
        write_component(dir, component_name(id, kind), kind, body)
    };
    let codes = write(Component::Codes, &permute_rows(&input.codes, &order))?;
    let rescore = match &input.rescore {
        Some(r) => Some(write(Component::Rescore, &permute_rows(r, &order))?),
        None => None,
    };
    let graph = write(Component::Graph, &flat.to_bytes())?;
    let ids_body: Vec<u8> = order
        .iter()
        .flat_map(|&o| input.ids[o as usize].to_le_bytes())
        .collect();
    let ids = write(Component::Ids, &ids_body)?;
    let payloads: Vec<&[u8]> = order
        .iter()
        .map(|&o| input.payloads[o as usize].as_slice())
        .collect();
    let payloads = write(Component::Payloads, &payload_body(&payloads))?;
    let sref = SegmentRef {
        id,
        points: n as u64,
        codes,
        rescore,
        graph,
        ids,
        payloads,
        tombstones: None,
    };
    Ok((sref, order))
}
