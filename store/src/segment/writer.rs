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
fn payload_body(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(8 * (payloads.len() + 1) + payloads.iter().map(Vec::len).sum::<usize>());
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

/// Writes segment `id` into `dir` and returns its manifest entry (without tombstones).
pub(crate) fn write_segment(
    dir: &Path,
    id: u64,
    input: &SegmentInput,
    graph: GraphParams,
) -> Result<SegmentRef> {
    let n = input.ids.len();
    let flat = build::build(
        &input.graph_vectors,
        graph.dim,
        graph.metric,
        graph.m,
        graph.ef_construction,
    );
    let write = |kind: Component, body: &[u8]| -> Result<FileRef> {
        write_component(dir, component_name(id, kind), kind, body)
    };
    let codes = write(Component::Codes, &input.codes)?;
    let rescore = match &input.rescore {
        Some(r) => Some(write(Component::Rescore, r)?),
        None => None,
    };
    let graph = write(Component::Graph, &flat.to_bytes())?;
    let ids_body: Vec<u8> = input.ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    let ids = write(Component::Ids, &ids_body)?;
    let payloads = write(Component::Payloads, &payload_body(&input.payloads))?;
    Ok(SegmentRef {
        id,
        points: n as u64,
        codes,
        rescore,
        graph,
        ids,
        payloads,
        tombstones: None,
    })
}
