//! `octet upsert`: points from `.fvecs`, raw f32 or JSONL, sent in batches over
//! the client-streaming `UpsertStream`.
//!
//! The whole input is read and checked first (dimension against the collection,
//! finite values, every JSONL line and payload), so a bad file is reported with its
//! line before anything is written. Batches then go out on streams of at most
//! [`BATCHES_PER_STREAM`] batches each, so a long upload never runs into the
//! server's per-request deadline; each batch is applied (and by default fsynced)
//! as it arrives, in order.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{ArgGroup, Args};
use indicatif::{ProgressBar, ProgressStyle};
use octet_quant::vecio::{read_fvecs, read_raw_f32};
use octet_server::pb;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio_stream::StreamExt;

use super::{ConnectArgs, GrpcError, runtime};

/// Batches per `UpsertStream` call: 64 x 512 points is a few seconds of work,
/// far below the server's default 60 s request deadline.
pub const BATCHES_PER_STREAM: usize = 64;

/// The largest batch (the server also caps a batch's size in bytes).
const MAX_BATCH: usize = 100_000;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("input").required(true).args(["fvecs", "raw", "jsonl"])))]
pub struct UpsertArgs {
    #[command(flatten)]
    pub conn: ConnectArgs,
    /// Collection to write to.
    pub collection: String,
    /// Vectors from a TEXMEX .fvecs file; ids are --start-id + row.
    #[arg(long, value_name = "FILE")]
    pub fvecs: Option<PathBuf>,
    /// Vectors from raw little-endian f32 rows of --dim; ids are --start-id + row.
    #[arg(long, value_name = "FILE", requires = "dim")]
    pub raw: Option<PathBuf>,
    /// Dimension of --raw rows.
    #[arg(long)]
    pub dim: Option<usize>,
    /// Points from JSON lines: {"id": 7, "vector": [0.1, ...], "payload": {...}}
    /// (payload optional).
    #[arg(long, value_name = "FILE")]
    pub jsonl: Option<PathBuf>,
    /// First id for --fvecs / --raw rows.
    #[arg(long, default_value_t = 0)]
    pub start_id: u64,
    /// Payloads for --fvecs / --raw: one JSON object per line, line r for row r.
    #[arg(long, value_name = "FILE", conflicts_with = "jsonl")]
    pub payloads: Option<PathBuf>,
    /// Points per batch (one WAL record, one fsync each).
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// Acknowledge batches once applied in memory instead of once fsynced (they
    /// reach disk with the next group commit, flush or shutdown).
    #[arg(long)]
    pub no_wait: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// One JSONL input line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    id: u64,
    vector: Vec<f32>,
    #[serde(default)]
    payload: Option<Map<String, Value>>,
}

fn check_vector(v: &[f32], dim: usize, collection: &str) -> Result<(), String> {
    if v.len() != dim {
        return Err(format!(
            "vector has dimension {}, collection `{collection}` has {dim}",
            v.len()
        ));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(format!("vector[{i}] is not finite"));
    }
    Ok(())
}

/// Reads JSONL points, checking every line; errors name the file and the line.
pub fn read_jsonl(path: &Path, dim: usize, collection: &str) -> Result<Vec<pb::Point>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("{} line {n}: reading", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let p: Line = serde_json::from_str(&line).map_err(|e| {
            anyhow::anyhow!(
                "{} line {n}: {e} (expected {{\"id\": INT, \"vector\": [NUM, ...], \
                 \"payload\": {{...}}}})",
                path.display()
            )
        })?;
        check_vector(&p.vector, dim, collection)
            .map_err(|e| anyhow::anyhow!("{} line {n}: {e}", path.display()))?;
        out.push(pb::Point {
            id: p.id,
            vector: p.vector,
            payload_json: p
                .payload
                .map(|m| serde_json::to_string(&m))
                .transpose()?
                .unwrap_or_default(),
        });
    }
    if out.is_empty() {
        bail!("{}: no points", path.display());
    }
    Ok(out)
}

/// Reads a payload per line (each a JSON object); line r belongs to row r.
pub fn read_payloads(path: &Path, rows: usize) -> Result<Vec<String>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::with_capacity(rows);
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("{} line {n}: reading", path.display()))?;
        if n > rows {
            if line.trim().is_empty() {
                continue;
            }
            bail!(
                "{}: more payload lines than vector rows ({rows})",
                path.display()
            );
        }
        serde_json::from_str::<Map<String, Value>>(&line).map_err(|e| {
            anyhow::anyhow!(
                "{} line {n}: payload is not a JSON object: {e}",
                path.display()
            )
        })?;
        out.push(line);
    }
    if out.len() != rows {
        bail!(
            "{}: {} payload lines for {rows} vector rows (line r is the payload of row r)",
            path.display(),
            out.len()
        );
    }
    Ok(out)
}

fn read_rows(args: &UpsertArgs, dim: usize) -> Result<Vec<pb::Point>> {
    let (path, vectors) = match (&args.fvecs, &args.raw) {
        (Some(p), _) => (p, read_fvecs(p, None)?),
        (None, Some(p)) => {
            let d = args.dim.context("--raw needs --dim")?;
            (p, read_raw_f32(p, d)?)
        }
        (None, None) => bail!("give --fvecs, --raw or --jsonl"),
    };
    if vectors.dim != dim {
        bail!(
            "{}: vectors have dimension {}, collection `{}` has {dim}",
            path.display(),
            vectors.dim,
            args.collection
        );
    }
    let rows = vectors.len();
    let payloads = args
        .payloads
        .as_deref()
        .map(|p| read_payloads(p, rows))
        .transpose()?;
    if args.start_id.checked_add(rows as u64).is_none() {
        bail!(
            "--start-id {} + {rows} rows overflows a u64 id",
            args.start_id
        );
    }
    Ok(vectors
        .rows()
        .enumerate()
        .map(|(r, v)| pb::Point {
            id: args.start_id + r as u64,
            vector: v.to_vec(),
            payload_json: payloads.as_ref().map(|p| p[r].clone()).unwrap_or_default(),
        })
        .collect())
}

fn progress(total: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:30} {pos}/{len} points [{elapsed}, {per_sec}, eta {eta}]",
    ) {
        bar.set_style(style);
    }
    bar
}

pub fn run(args: UpsertArgs) -> Result<()> {
    if !(1..=MAX_BATCH).contains(&args.batch) {
        bail!("--batch must be in 1..={MAX_BATCH}, got {}", args.batch);
    }
    runtime()?.block_on(async move {
        let mut c = args.conn.connect().await?;
        let info = c.info(&args.collection).await?;
        let dim = info.config.map_or(0, |c| c.dim) as usize;
        let points = match &args.jsonl {
            Some(p) => read_jsonl(p, dim, &args.collection)?,
            None => read_rows(&args, dim)?,
        };
        let total = points.len();
        let bar = progress(total as u64, args.quiet);
        let start = Instant::now();
        let mut written = 0u64;
        let mut sent_points = 0usize;
        let mut batch_no = 0usize;
        let mut it = points.into_iter();
        let mut durable = true;
        loop {
            // One stream of up to BATCHES_PER_STREAM batches.
            let mut batches = Vec::with_capacity(BATCHES_PER_STREAM);
            for _ in 0..BATCHES_PER_STREAM {
                let b: Vec<pb::Point> = it.by_ref().take(args.batch).collect();
                if b.is_empty() {
                    break;
                }
                batches.push(pb::UpsertRequest {
                    collection: args.collection.clone(),
                    points: b,
                    no_wait: args.no_wait,
                });
            }
            if batches.is_empty() {
                break;
            }
            let first_batch = batch_no;
            let first_point = sent_points;
            batch_no += batches.len();
            sent_points += batches.iter().map(|b| b.points.len()).sum::<usize>();
            let bar2 = bar.clone();
            // The bar moves as tonic takes each batch to send; HTTP/2 flow control
            // keeps that within a window of what the server has applied.
            let stream = tokio_stream::iter(batches).map(move |b| {
                bar2.inc(b.points.len() as u64);
                b
            });
            match c.points.upsert_stream(stream).await {
                Ok(r) => {
                    let r = r.into_inner();
                    written += r.points;
                    durable &= r.durable;
                }
                Err(s) => {
                    bar.abandon();
                    let e = GrpcError::from(s);
                    // The server counts batches from the start of this stream.
                    return Err(anyhow::Error::new(GrpcError {
                        code: e.code,
                        message: format!(
                            "{} (this stream began at input point {first_point}, batch \
                             {first_batch} of {} points; every point before it is written)",
                            e.message, args.batch
                        ),
                    }));
                }
            }
        }
        bar.finish_and_clear();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "upserted {written} points into `{}` in {secs:.2} s ({:.0} points/s, {})",
            args.collection,
            written as f64 / secs.max(1e-9),
            if durable {
                "durable"
            } else {
                "not yet fsynced (--no-wait)"
            }
        );
        Ok(())
    })
}
