//! Helpers shared by the integration tests: seeded data, a brute-force model of a
//! collection, and configurations small enough to seal often.
#![allow(dead_code)]

use std::collections::BTreeMap;

use octet_quant::{CodecSpec, ElementSpec, Metric};
use octet_store::{CollectionConfig, Filter, Payload, Point, PointId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A deterministic vector for `id` (so a crashed child and the parent agree).
pub fn vector_for(id: u64, dim: usize, salt: u64) -> Vec<f32> {
    let mut r = rng(id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt);
    (0..dim).map(|_| r.random_range(-1.0f32..1.0)).collect()
}

pub fn payload_for(id: u64) -> Payload {
    let v = json!({
        "tenant": format!("t{}", id % 5),
        "n": (id % 100) as i64,
        "tags": [format!("g{}", id % 3), format!("h{}", id % 7)],
        "meta": {"even": id.is_multiple_of(2)},
    });
    match v {
        serde_json::Value::Object(m) => m,
        _ => Payload::new(),
    }
}

pub fn point(id: u64, dim: usize, salt: u64) -> Point {
    Point::with_payload(id, vector_for(id, dim, salt), payload_for(id))
}

/// A configuration with exact f32 codes, small segments and a given rescore tier.
pub fn small_config(dim: usize, metric: Metric, rescore: Option<ElementSpec>) -> CollectionConfig {
    let mut c = CollectionConfig::new(dim, metric);
    c.codec = CodecSpec::element(ElementSpec::F32);
    c.rescore.element = rescore;
    c.rescore.oversampling = 2.0;
    c.hnsw.m = 12;
    c.hnsw.ef_construction = 64;
    c.hnsw.ef_search = 64;
    c.segments.seal_threshold = 200;
    c.segments.merge_below = 50;
    c
}

/// What the collection should hold.
#[derive(Debug, Default, Clone)]
pub struct Model {
    pub points: BTreeMap<PointId, (Vec<f32>, Payload)>,
}

impl Model {
    pub fn upsert(&mut self, points: &[Point], metric: Metric) {
        for p in points {
            self.points
                .insert(p.id, (metric.prepare_query(&p.vector), p.payload.clone()));
        }
    }

    pub fn delete(&mut self, ids: &[PointId]) {
        for id in ids {
            self.points.remove(id);
        }
    }

    /// Exact top-k ids (and scores) among points passing `filter`.
    pub fn search(
        &self,
        q: &[f32],
        metric: Metric,
        k: usize,
        filter: Option<&Filter>,
    ) -> Vec<(PointId, f32)> {
        let q = metric.prepare_query(q);
        let mut all: Vec<(PointId, f32)> = self
            .points
            .iter()
            .filter(|(id, (_, p))| filter.is_none_or(|f| f.matches(**id, p)))
            .map(|(id, (v, _))| (*id, metric.exact(&q, v)))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }
}

/// Fraction of `exact` ids found in `got`.
pub fn recall(got: &[PointId], exact: &[(PointId, f32)]) -> f64 {
    if exact.is_empty() {
        return 1.0;
    }
    exact.iter().filter(|(id, _)| got.contains(id)).count() as f64 / exact.len() as f64
}
