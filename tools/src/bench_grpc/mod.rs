//! `octet bench-grpc`: load a running server with concurrent clients, or compare
//! batch search over gRPC with the same search in-process.
//!
//! - **Load** (default): `--clients` tokio tasks, each on its own HTTP/2 connection
//!   (or one shared with `--connections shared`), loop for `--duration` seconds
//!   choosing search (probability `--search-fraction`) or upsert; prints
//!   throughput, p50/p95/p99 latency per kind and the errors.
//! - **Compare** (`--compare-in-process`): builds a collection from `--base`
//!   through an embedded server, runs batch search over gRPC, stops the server,
//!   opens the same data directory in-process and runs the same batches through
//!   the store, alternating for `--rounds`; reports the QPS ratio.

mod compare;
mod load;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::client::ConnectArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Connections {
    /// Every client opens its own channel (HTTP/2 connection).
    PerClient,
    /// All clients share one channel (requests multiplexed on one connection).
    Shared,
}

#[derive(Debug, Args)]
pub struct BenchGrpcArgs {
    #[command(flatten)]
    pub conn: ConnectArgs,
    /// Collection to load (must exist; compare mode creates it, default `bench`).
    #[arg(long)]
    pub collection: Option<String>,
    /// Concurrent clients (tokio tasks).
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Share of operations that are searches; the rest are upserts.
    #[arg(long, default_value_t = 0.9)]
    pub search_fraction: f64,
    /// Results per search.
    #[arg(long, default_value_t = 10)]
    pub k: u32,
    /// Graph candidate list size (0: the collection's ef_search).
    #[arg(long, default_value_t = 0)]
    pub ef: u32,
    /// Query vectors (.fvecs). Load mode without it samples up to 1000 stored
    /// vectors through Scroll.
    #[arg(long, value_name = "FILE")]
    pub queries: Option<PathBuf>,
    /// Queries per search call: 1 sends Search, more send SearchBatch (default 1;
    /// 100 in compare mode).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Points per upsert call (vectors from the queries, fresh ids from --id-start).
    #[arg(long, default_value_t = 1)]
    pub upsert_batch: usize,
    /// First id of upserted points (far above the loaded data, so nothing is
    /// overwritten).
    #[arg(long, default_value_t = 1 << 40)]
    pub id_start: u64,
    /// Upserts acknowledged before the fsync.
    #[arg(long)]
    pub no_wait: bool,
    /// Load mode: searches ask for the hits' payloads.
    #[arg(long)]
    pub with_payload: bool,
    /// Connections: each client its own, or one shared by all.
    #[arg(long, value_enum, default_value_t = Connections::PerClient)]
    pub connections: Connections,
    /// Write the results as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Compare gRPC batch search QPS with in-process search of the same data.
    #[arg(long)]
    pub compare_in_process: bool,
    /// Compare mode: base vectors (.fvecs) loaded into the collection.
    #[arg(long, value_name = "FILE", requires = "compare_in_process")]
    pub base: Option<PathBuf>,
    /// Compare mode: data directory (default: a temporary one, removed after). An
    /// existing collection with as many points as --base is reused.
    #[arg(long, value_name = "DIR", requires = "compare_in_process")]
    pub data: Option<PathBuf>,
    /// Compare mode: alternating gRPC / in-process rounds (medians reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Compare mode: passes over the queries per round and side.
    #[arg(long, default_value_t = 2)]
    pub passes: usize,
    /// Compare mode: the collection's seal threshold (default: the number of base
    /// rows, so every point ends up in one indexed segment).
    #[arg(long)]
    pub seal_threshold: Option<u32>,
    /// Compare mode: the collection's codec (default: the server's).
    #[arg(long)]
    pub codec: Option<String>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// From per-call latencies in microseconds (sorted here).
    pub fn of(micros: &mut [u32]) -> Latency {
        if micros.is_empty() {
            return Latency::default();
        }
        micros.sort_unstable();
        let ms = |x: u32| f64::from(x) / 1000.0;
        let sum: u64 = micros.iter().map(|&x| u64::from(x)).sum();
        Latency {
            p50: ms(percentile(micros, 50.0)),
            p95: ms(percentile(micros, 95.0)),
            p99: ms(percentile(micros, 99.0)),
            max: ms(micros[micros.len() - 1]),
            mean: sum as f64 / micros.len() as f64 / 1000.0,
        }
    }
}

/// Nearest-rank percentile of sorted, non-empty values.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// The median of a few measurements.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub fn run(args: BenchGrpcArgs) -> Result<()> {
    if args.compare_in_process {
        compare::run(args)
    } else {
        load::run(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u32> = (1..=100).rev().map(|x| x * 1000).collect();
        let l = Latency::of(&mut v);
        assert_eq!((l.p50, l.p95, l.p99, l.max), (50.0, 95.0, 99.0, 100.0));
        assert!((l.mean - 50.5).abs() < 1e-9);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(Latency::of(&mut []), Latency::default());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
    }
}
