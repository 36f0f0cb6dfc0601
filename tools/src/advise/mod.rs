//! `octet advise`: sweep codecs over a user's own embeddings, measure recall against
//! exact f32 neighbours, and recommend the smallest codec (alone, or as a candidate
//! tier in front of a rescore tier) that reaches a target recall.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use octet_quant::vecio::{Vectors, read_vectors};
use octet_quant::{CodecSpec, Metric};

mod plot;
mod recommend;
mod sweep;

use recommend::Recommendation;
use sweep::Sweep;

/// Candidate-list sizes measured for rescoring.
pub const RESCORE_DEPTHS: [usize; 3] = [20, 50, 100];

#[derive(Debug, Args)]
pub struct AdviseArgs {
    /// Base vectors: .fvecs (TEXMEX), or raw little-endian f32 rows with --dim.
    #[arg(long, value_name = "FILE")]
    pub base: PathBuf,

    /// Query vectors, same format and dimension as --base.
    #[arg(long, value_name = "FILE")]
    pub queries: PathBuf,

    /// Dimension of raw f32 input (required for raw files; checked against .fvecs).
    #[arg(long)]
    pub dim: Option<usize>,

    /// Similarity metric: cosine (vectors are normalised first), dot, or l2.
    #[arg(long, default_value = "cosine", value_parser = parse_metric)]
    pub metric: Metric,

    /// Neighbours per query whose recall is measured (recall@k).
    #[arg(long, default_value_t = 10)]
    pub k: usize,

    /// Recall@k the recommendation must reach.
    #[arg(long, default_value_t = 0.95)]
    pub target_recall: f64,

    /// Comma-separated codecs to measure instead of the default ladder, e.g.
    /// `f16,i8,e4m3-scaled,pca192+e4m3,transform96`.
    #[arg(long, value_delimiter = ',', value_parser = parse_spec)]
    pub codecs: Option<Vec<CodecSpec>>,

    /// Use at most this many queries (the first ones in the file).
    #[arg(long)]
    pub max_queries: Option<usize>,

    /// Fit codecs on at most this many base vectors (a seeded random sample).
    #[arg(long, default_value_t = 20_000)]
    pub fit_sample: usize,

    /// Write the full results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write a plot of recall@k and candidate recall against bytes per vector to FILE (SVG).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// Do not draw a progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `--metric` for clap: cosine, dot or l2 (shared with `octet bench`).
pub(crate) fn parse_metric(s: &str) -> Result<Metric, String> {
    s.parse()
        .map_err(|e: octet_quant::QuantError| e.to_string())
}

fn parse_spec(s: &str) -> Result<CodecSpec, String> {
    s.parse()
        .map_err(|e: octet_quant::QuantError| e.to_string())
}

/// The default ladder for `dim`-dimensional input: the element codecs, the seed
/// recipe at half the dimensions, and the transform codec at dim, dim/2, dim/4 and
/// dim/8 bytes (384/192/96/48 for 384-d embeddings).
pub fn default_ladder(dim: usize) -> Vec<CodecSpec> {
    use octet_quant::{ElementSpec as E, ScalarQuantizer};
    let mut ladder: Vec<CodecSpec> = [
        E::F16,
        E::Bf16,
        E::I8,
        E::E4m3,
        E::E4m3Scaled,
        E::E5m2,
        E::E5m2Scaled,
        E::B1,
    ]
    .into_iter()
    .map(CodecSpec::element)
    .collect();
    if dim >= 2 {
        ladder.push(CodecSpec::Pca {
            dims: dim / 2,
            element: E::E4m3,
        });
    }
    for div in [1, 2, 4, 8] {
        let bytes = dim / div;
        if bytes >= 1
            && !ladder
                .iter()
                .any(|s| s.code_len(dim) == bytes && matches!(s, CodecSpec::Transform { .. }))
        {
            ladder.push(CodecSpec::Transform {
                bytes,
                quantizer: ScalarQuantizer::Uniform,
            });
        }
    }
    ladder
}

/// Reads a vector file, refusing an empty one.
pub(crate) fn load(path: &Path, dim: Option<usize>, what: &str) -> Result<Vectors> {
    let v = read_vectors(path, dim).with_context(|| format!("reading {what} vectors"))?;
    if v.is_empty() {
        bail!("{}: no {what} vectors in the file", path.display());
    }
    Ok(v)
}

pub fn run(args: AdviseArgs) -> Result<()> {
    if args.k == 0 {
        bail!("--k must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.target_recall) {
        bail!(
            "--target-recall must be between 0 and 1, got {}",
            args.target_recall
        );
    }
    let started = Instant::now();
    let mut base = load(&args.base, args.dim, "base")?;
    let queries = load_queries(
        &mut base,
        &args.base,
        &args.queries,
        args.max_queries,
        args.k,
        args.metric,
    )?;
    let specs = args
        .codecs
        .clone()
        .unwrap_or_else(|| default_ladder(base.dim));
    for spec in &specs {
        spec.validate(base.dim)
            .with_context(|| format!("codec `{spec}`"))?;
    }

    let sweep = Sweep::run(&base, &queries, &args, &specs)?;
    let rec = Recommendation::choose(&sweep, args.target_recall);

    let mut out = std::io::stdout().lock();
    sweep.print_table(&mut out)?;
    writeln!(out)?;
    rec.print(&mut out, &sweep)?;
    writeln!(out, "\n(total {:.1} s)", started.elapsed().as_secs_f64())?;

    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "base": args.base, "queries": args.queries,
            "n_base": base.len(), "n_queries": queries.len(), "dim": base.dim,
            "metric": args.metric, "k": args.k, "target_recall": args.target_recall,
            "results": sweep.results, "recommendation": rec,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        plot::write_svg(path, &sweep, args.k)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Reads the queries for `base` (same dimension, at most `max_queries`), checks
/// that the base has more than `k` vectors, and normalizes both for cosine.
pub(crate) fn load_queries(
    base: &mut Vectors,
    base_path: &Path,
    queries_path: &Path,
    max_queries: Option<usize>,
    k: usize,
    metric: Metric,
) -> Result<Vectors> {
    let mut queries = load(queries_path, Some(base.dim), "query").with_context(|| {
        format!(
            "queries must have the dimension of the base vectors ({})",
            base.dim
        )
    })?;
    if let Some(m) = max_queries {
        queries.data.truncate(m.max(1) * queries.dim);
    }
    if base.len() <= k {
        bail!(
            "{}: {} base vectors, need more than --k {k}",
            base_path.display(),
            base.len(),
        );
    }
    if metric == Metric::Cosine {
        normalize_rows(base);
        normalize_rows(&mut queries);
    }
    Ok(queries)
}

fn normalize_rows(v: &mut Vectors) {
    let dim = v.dim;
    for row in v.data.chunks_exact_mut(dim) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|x| *x /= norm);
        }
    }
}
