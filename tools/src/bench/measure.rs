//! One configuration: build a collection in a temporary data directory, seal it,
//! read its sizes, and time searches at every `ef`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use octet_quant::Metric;
use octet_quant::eval::recall_at;
use octet_quant::vecio::Vectors;
use octet_store::{Collection, CollectionConfig, Payload, Point, SearchRequest, Store};
use serde::Serialize;

use super::BenchConfig;
use super::filtered::{FilteredRun, Filters};

/// Points per upsert batch while building.
const BATCH: usize = 1000;

/// What every configuration shares.
#[derive(Debug, Clone)]
pub struct Settings {
    pub k: usize,
    pub efs: Vec<usize>,
    pub m: usize,
    pub ef_construction: usize,
    pub oversampling: f32,
    pub metric: Metric,
    pub reps: usize,
    pub threads: usize,
    pub exact_filter_fraction: Option<f32>,
}

/// Bytes per vector of each part, from the sealed segment's structures and files.
#[derive(Debug, Clone, Serialize)]
pub struct Bytes {
    /// Compact codes (the memory-mapped `.codes` body): in RAM while searching.
    pub codes: f64,
    /// The search graph's adjacency lists as held in RAM.
    pub graph: f64,
    /// The rescore tier (the memory-mapped `.rescore` body): read for `k x
    /// oversampling` candidates per query, may stay on disk.
    pub rescore: f64,
    /// What a search keeps resident: codes + graph.
    pub ram: f64,
    /// Every file of the collection on disk by extension (bytes per vector, footers
    /// and the write-ahead log included).
    pub disk: BTreeMap<String, f64>,
}

/// One `ef`.
#[derive(Debug, Clone, Serialize)]
pub struct EfResult {
    /// Requested graph candidate list size.
    pub ef: usize,
    /// What the search used: at least `k x oversampling` with a rescore tier.
    pub ef_effective: usize,
    /// recall@k against the exact neighbours.
    pub recall: f64,
    /// Queries per second, one query at a time on one thread (median of the reps).
    pub qps_1t: f64,
    /// Queries per second of one batch search over all threads (median of the reps).
    pub qps_all: f64,
    /// Every rep's one-thread QPS, in order.
    pub qps_1t_reps: Vec<f64>,
    /// Every rep's all-threads QPS, in order.
    pub qps_all_reps: Vec<f64>,
    /// One keyword filter per value (with `--filter-key`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filtered: Vec<FilteredRun>,
}

/// One configuration.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigResult {
    /// `CODEC[/RESCORE]`.
    pub config: String,
    pub codec: String,
    pub rescore: Option<String>,
    pub bytes_per_vector: Bytes,
    /// Seconds to upsert every vector (write-ahead log, growing segment) and flush.
    pub ingest_s: f64,
    /// Seconds to seal: fit the codec, encode, build the graph, write and verify files.
    pub seal_s: f64,
    pub runs: Vec<EfResult>,
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Sum of file sizes under `dir` by extension (`wal` for the log directory).
fn disk_usage(dir: &Path, into: &mut BTreeMap<String, u64>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        let meta = entry
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?;
        if meta.is_dir() {
            disk_usage(&path, into)?;
        } else {
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("(none)")
                .to_string();
            *into.entry(ext).or_default() += meta.len();
        }
    }
    Ok(())
}

/// recall@k of one batch search of `requests` (points' ids are base rows).
pub fn batch_recall(
    c: &Collection,
    requests: &[SearchRequest],
    truth: &[Vec<u32>],
    k: usize,
) -> Result<f64> {
    let found: Vec<Vec<u32>> = c
        .search_batch(requests)?
        .iter()
        .map(|h| h.iter().map(|p| p.id as u32).collect())
        .collect();
    Ok(recall_at(&found, truth, k))
}

/// Queries per second of `requests` one at a time on this thread.
pub fn one_thread_qps(c: &Collection, requests: &[SearchRequest]) -> Result<f64> {
    let t = Instant::now();
    for r in requests {
        std::hint::black_box(c.search(r)?);
    }
    Ok(requests.len() as f64 / t.elapsed().as_secs_f64().max(1e-9))
}

pub fn measure(
    config: &BenchConfig,
    base: &Vectors,
    queries: &Vectors,
    truth: &[Vec<u32>],
    filters: Option<&Filters>,
    s: &Settings,
    progress: &dyn Fn(&str),
) -> Result<(ConfigResult, Built)> {
    let dim = base.dim;
    let n = base.len();
    let mut cc = CollectionConfig::new(dim, s.metric);
    cc.codec = config.codec;
    cc.rescore.element = config.rescore;
    cc.rescore.oversampling = s.oversampling;
    cc.hnsw.m = s.m;
    cc.hnsw.ef_construction = s.ef_construction;
    if let Some(f) = s.exact_filter_fraction {
        cc.hnsw.exact_filter_fraction = f;
    }
    // One explicit seal of everything: the background worker must not seal part of
    // the data first (two segments would be two graphs to walk).
    cc.segments.seal_threshold = n.clamp(16, 1 << 26) + 1;
    cc.validate().context("collection config")?;

    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let store = Store::open(dir.path())?;
    let c = store.create_collection("bench", cc)?;
    let t = Instant::now();
    for (b, rows) in base.data.chunks(BATCH * dim).enumerate() {
        let points: Vec<Point> = rows
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, v)| {
                let row = b * BATCH + i;
                let mut payload = Payload::new();
                if let Some(f) = filters
                    && let Some(value) = &f.keywords[row]
                {
                    payload.insert(f.key.clone(), value.clone().into());
                }
                Point::with_payload(row as u64, v.to_vec(), payload)
            })
            .collect();
        c.upsert(&points, false)?;
    }
    c.flush()?;
    let ingest_s = t.elapsed().as_secs_f64();
    progress(&format!(
        "  ingested {n} points in {ingest_s:.2} s; sealing"
    ));
    let t = Instant::now();
    c.seal()?;
    let seal_s = t.elapsed().as_secs_f64();
    let info = c.info();
    if info.sealed_points != n || info.segments != 1 || info.growing_points != 0 {
        anyhow::bail!(
            "expected all {n} points in one sealed segment, got {} sealed in {} segments and {} growing",
            info.sealed_points,
            info.segments,
            info.growing_points
        );
    }
    let mut disk = BTreeMap::new();
    disk_usage(dir.path(), &mut disk)?;
    let per = |b: usize| b as f64 / n as f64;
    let bytes = Bytes {
        codes: per(info.code_bytes),
        graph: per(info.graph_bytes),
        rescore: per(info.rescore_bytes),
        ram: per(info.code_bytes + info.graph_bytes),
        disk: disk
            .into_iter()
            .map(|(k, v)| (k, per(v as usize)))
            .collect(),
    };
    progress(&format!(
        "  sealed in {seal_s:.2} s; bytes/vector: codes {:.1}, graph {:.1}, rescore {:.1}",
        bytes.codes, bytes.graph, bytes.rescore
    ));

    let fetch = if config.rescore.is_some() {
        ((s.k as f32) * s.oversampling).ceil() as usize
    } else {
        s.k
    };
    let mut runs = Vec::with_capacity(s.efs.len());
    for &ef in &s.efs {
        let requests: Vec<SearchRequest> = queries
            .rows()
            .map(|q| SearchRequest::new(q.to_vec(), s.k).ef(ef))
            .collect();
        // Warm-up pass (pages the memory maps in), also the recall measurement.
        let recall = batch_recall(&c, &requests, truth, s.k)?;
        let mut one = Vec::with_capacity(s.reps);
        let mut all = Vec::with_capacity(s.reps);
        for _ in 0..s.reps {
            one.push(one_thread_qps(&c, &requests)?);
            let t = Instant::now();
            std::hint::black_box(c.search_batch(&requests)?);
            all.push(requests.len() as f64 / t.elapsed().as_secs_f64().max(1e-9));
        }
        let mut r = EfResult {
            ef,
            ef_effective: ef.max(fetch),
            recall,
            qps_1t: median(&one),
            qps_all: median(&all),
            qps_1t_reps: one,
            qps_all_reps: all,
            filtered: Vec::new(),
        };
        progress(&format!(
            "  ef {ef:>4}: recall@{} {:.4}, {:.0} QPS 1 thread, {:.0} QPS {} threads",
            s.k, r.recall, r.qps_1t, r.qps_all, s.threads
        ));
        for case in filters.map_or(&[][..], |f| &f.cases) {
            let requests: Vec<SearchRequest> = requests
                .iter()
                .map(|q| q.clone().filter(case.filter.clone()))
                .collect();
            let recall = batch_recall(&c, &requests, &case.truth, s.k)?;
            let qps: Vec<f64> = (0..s.reps)
                .map(|_| one_thread_qps(&c, &requests))
                .collect::<Result<_>>()?;
            let run = FilteredRun {
                value: case.value.clone(),
                fraction: case.fraction,
                recall,
                qps_1t: median(&qps),
            };
            progress(&format!(
                "    filter {}: recall@{} {:.4}, {:.0} QPS 1 thread",
                run.value, s.k, run.recall, run.qps_1t
            ));
            r.filtered.push(run);
        }
        runs.push(r);
    }
    let result = ConfigResult {
        config: config.to_string(),
        codec: config.codec.to_string(),
        rescore: config.rescore.map(|r| r.name().to_string()),
        bytes_per_vector: bytes,
        ingest_s,
        seal_s,
        runs,
    };
    let built = Built {
        config: config.to_string(),
        collection: c,
        store,
        _dir: dir,
    };
    Ok((result, built))
}

/// A measured configuration's collection, still open (for `--passes-on-stdin`).
#[derive(Debug)]
pub struct Built {
    pub config: String,
    pub collection: Collection,
    store: Store,
    _dir: tempfile::TempDir,
}

impl Built {
    /// Closes the store; the temporary data directory goes with it.
    pub fn close(self) -> Result<()> {
        drop(self.collection);
        self.store.close()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
