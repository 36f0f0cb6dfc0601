//! `octet bench`: build an octet-store collection per configuration from the base
//! vectors, search the queries through the HNSW graph at several `ef`, and report
//! bytes per vector (compact codes, graph, rescore tier), build time, recall@k
//! against exact f32 neighbours, and QPS on one thread and on all threads.
//!
//! Every collection is sealed into one segment before searching, so each query
//! walks the segment's graph over compact codes (nothing is left in the growing
//! segment, which is searched exactly).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use octet_quant::Metric;
use octet_quant::eval::exact_top_k;
use octet_quant::vecio::read_ivecs;

mod config;
mod filtered;
mod measure;
mod passes;
mod report;

pub use config::{BenchConfig, default_configs};
use measure::Settings;

use crate::advise::{load, load_queries, parse_metric};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Base vectors: .fvecs (TEXMEX), or raw little-endian f32 rows with --dim.
    #[arg(long, value_name = "FILE")]
    pub base: PathBuf,

    /// Query vectors, same format and dimension as --base.
    #[arg(long, value_name = "FILE")]
    pub queries: PathBuf,

    /// Exact neighbours (.ivecs, one row of base row ids per query, best first).
    /// Without it they are computed by brute force in f32.
    #[arg(long, value_name = "FILE")]
    pub gt: Option<PathBuf>,

    /// Dimension of raw f32 input (required for raw files; checked against .fvecs).
    #[arg(long)]
    pub dim: Option<usize>,

    /// Similarity metric: cosine (vectors are normalised first), dot, or l2.
    #[arg(long, default_value = "cosine", value_parser = parse_metric)]
    pub metric: Metric,

    /// Neighbours per query whose recall is measured (recall@k).
    #[arg(long, default_value_t = 10)]
    pub k: usize,

    /// Comma-separated configurations `CODEC[/RESCORE]`, e.g.
    /// `f32,i8,transform192/i8,transform96/e4m3-scaled` (no /RESCORE: no rescore
    /// tier). Default: f32, i8, e4m3-scaled, pca(dim/2)+e4m3, and transform at dim/2
    /// and dim/4 bytes, each with no tier, an e4m3-scaled tier and an i8 tier.
    #[arg(long, value_delimiter = ',', value_parser = parse_config)]
    pub configs: Option<Vec<BenchConfig>>,

    /// Comma-separated graph candidate list sizes to search with.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256")]
    pub ef: Vec<usize>,

    /// HNSW links per node (layer 0 keeps up to 2m).
    #[arg(long, default_value_t = 16)]
    pub m: usize,

    /// HNSW candidate list size while building.
    #[arg(long, default_value_t = 128)]
    pub ef_construction: usize,

    /// Candidates fetched per result before rescoring (configs with a rescore tier).
    #[arg(long, default_value_t = 4.0)]
    pub oversampling: f32,

    /// Threads for the all-threads QPS and for building (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,

    /// Timed repetitions of each query pass; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,

    /// Use only the first N base vectors (a quick run).
    #[arg(long)]
    pub limit: Option<usize>,

    /// Use at most this many queries (the first ones in the file).
    #[arg(long)]
    pub max_queries: Option<usize>,

    /// Payloads for filtered runs: one JSON object per line, line r for base row r
    /// (`passages.jsonl` of `../shared/data`).
    #[arg(long, value_name = "FILE", requires = "filter_key")]
    pub payloads: Option<PathBuf>,

    /// Top-level payload key for filtered runs: each distinct string value becomes a
    /// keyword filter, searched at every `ef`, with recall against the exact
    /// neighbours among the points it matches.
    #[arg(long, requires = "payloads")]
    pub filter_key: Option<String>,

    /// The collections' `exact_filter_fraction`: filters matching a smaller share of
    /// a segment are searched exactly (default: the collection default).
    #[arg(long)]
    pub exact_filter_fraction: Option<f32>,

    /// After the table, keep every collection open and run timed passes on request:
    /// each stdin line `CONFIG EF` searches every query once, one at a time on this
    /// thread, and prints one JSON line (config, ef, recall, qps). For harnesses
    /// that alternate our passes with a peer's (`benches/peers/interleave.py`).
    #[arg(long)]
    pub passes_on_stdin: bool,

    /// Write the full results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Print no progress on stderr.
    #[arg(long)]
    pub quiet: bool,
}

fn parse_config(s: &str) -> Result<BenchConfig, String> {
    s.parse()
}

/// Reads `--gt` and checks it against the base and query counts.
fn load_truth(path: &Path, n_base: usize, n_queries: usize, k: usize) -> Result<Vec<Vec<u32>>> {
    let (cols, ids) = read_ivecs(path).context("reading the exact neighbours (--gt)")?;
    let rows = ids.len().checked_div(cols).unwrap_or(0);
    if rows < n_queries {
        bail!(
            "{}: {rows} rows of neighbours, the queries need {n_queries}",
            path.display()
        );
    }
    if cols < k {
        bail!(
            "{}: {cols} neighbours per query, --k is {k}",
            path.display()
        );
    }
    ids.chunks_exact(cols)
        .take(n_queries)
        .enumerate()
        .map(|(q, row)| {
            row[..k]
                .iter()
                .map(|&id| {
                    u32::try_from(id).ok().filter(|&i| (i as usize) < n_base).with_context(|| {
                        format!(
                            "{}: row {q} names base row {id}, but there are {n_base} base vectors \
                             (with --limit, leave out --gt)",
                            path.display()
                        )
                    })
                })
                .collect()
        })
        .collect()
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.k == 0 {
        bail!("--k must be at least 1");
    }
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    if args.ef.is_empty() || args.ef.iter().any(|&e| !(1..=10_000).contains(&e)) {
        bail!("--ef values must be in 1..=10000, got {:?}", args.ef);
    }
    if args.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    let started = Instant::now();
    let mut base = load(&args.base, args.dim, "base")?;
    if let Some(limit) = args.limit {
        if limit == 0 {
            bail!("--limit must be at least 1");
        }
        base.data.truncate(limit * base.dim);
    }
    let queries = load_queries(
        &mut base,
        &args.base,
        &args.queries,
        args.max_queries,
        args.k,
        args.metric,
    )?;
    let configs = args
        .configs
        .clone()
        .unwrap_or_else(|| default_configs(base.dim));
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("starting the thread pool")?;

    let progress = |msg: &str| {
        if !args.quiet {
            eprintln!("[{:7.1}s] {msg}", started.elapsed().as_secs_f64());
        }
    };
    let (truth, truth_source) = match &args.gt {
        Some(path) => (
            load_truth(path, base.len(), queries.len(), args.k)?,
            format!("{}", path.display()),
        ),
        None => {
            progress("exact f32 neighbours by brute force");
            let truth = pool
                .install(|| exact_top_k(&base.data, &queries.data, base.dim, args.metric, args.k));
            (truth, "exact f32 brute force".to_string())
        }
    };

    let filters = match (&args.payloads, &args.filter_key) {
        (Some(path), Some(key)) => {
            let keywords = filtered::read_keywords(path, key, base.len())?;
            progress(&format!(
                "exact f32 neighbours among each `{key}` value's matches"
            ));
            let cases = pool
                .install(|| filtered::cases(&keywords, key, &base, &queries, args.metric, args.k));
            if cases.is_empty() {
                bail!("{}: no string values at key `{key}`", path.display());
            }
            Some(filtered::Filters {
                key: key.clone(),
                keywords,
                cases,
            })
        }
        _ => None,
    };

    let settings = Settings {
        k: args.k,
        efs: args.ef.clone(),
        m: args.m,
        ef_construction: args.ef_construction,
        oversampling: args.oversampling,
        metric: args.metric,
        reps: args.reps,
        threads,
        exact_filter_fraction: args.exact_filter_fraction,
    };
    let mut results = Vec::with_capacity(configs.len());
    let mut kept = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        progress(&format!("[{}/{}] {config}", i + 1, configs.len()));
        let r = pool
            .install(|| {
                measure::measure(
                    config,
                    &base,
                    &queries,
                    &truth,
                    filters.as_ref(),
                    &settings,
                    &progress,
                )
            })
            .with_context(|| format!("config `{config}`"))?;
        results.push(r.0);
        if args.passes_on_stdin {
            kept.push(r.1);
        } else {
            r.1.close()?;
        }
    }

    let doc = report::Report {
        base: args.base.clone(),
        queries: args.queries.clone(),
        n_base: base.len(),
        n_queries: queries.len(),
        dim: base.dim,
        metric: args.metric.to_string(),
        k: args.k,
        ground_truth: truth_source,
        m: args.m,
        ef_construction: args.ef_construction,
        oversampling: args.oversampling,
        threads,
        reps: args.reps,
        search: "each collection sealed into one segment: every query walks its HNSW graph \
                 over compact codes, then rescores k x oversampling candidates from the \
                 rescore tier when the config has one"
            .into(),
        results,
    };
    let mut out = std::io::stdout().lock();
    doc.print_table(&mut out)?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    drop(out);
    if args.passes_on_stdin {
        passes::serve(&kept, &queries, &truth, args.k)?;
    }
    for b in kept {
        b.close()?;
    }
    progress("done");
    Ok(())
}
