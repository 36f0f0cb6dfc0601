//! `octet search`: one query, printed as a table or as JSON.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{ArgGroup, Args};
use octet_quant::vecio::read_fvecs;
use octet_server::pb;
use serde_json::{Value, json};

use super::filter::{FILTER_HELP, parse_filter};
use super::{ConnectArgs, grpc, runtime, truncate};

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("query").required(true).args(["vector", "query_fvecs"])))]
pub struct SearchArgs {
    #[command(flatten)]
    pub conn: ConnectArgs,
    /// Collection to search.
    pub collection: String,
    /// The query as a JSON array: '[0.1, -0.2, ...]'.
    #[arg(long)]
    pub vector: Option<String>,
    /// Take the query from this .fvecs file (row --row).
    #[arg(long, value_name = "FILE")]
    pub query_fvecs: Option<PathBuf>,
    /// Row of --query-fvecs.
    #[arg(long, default_value_t = 0, requires = "query_fvecs")]
    pub row: usize,
    /// Results wanted.
    #[arg(long, default_value_t = 10)]
    pub k: u32,
    /// Graph candidate list size (default: the collection's ef_search).
    #[arg(long)]
    pub ef: Option<u32>,
    #[arg(long, help = FILTER_HELP)]
    pub filter: Option<String>,
    /// Return and print payloads.
    #[arg(long)]
    pub with_payload: bool,
    /// Return and print vectors (JSON output only).
    #[arg(long)]
    pub with_vector: bool,
    /// Scores from the compact codes only (skip the rescore tier).
    #[arg(long)]
    pub no_rescore: bool,
    /// Print JSON: [{"id": .., "score": .., "payload": {..}}, ...].
    #[arg(long)]
    pub json: bool,
    /// Widest payload column in the table, in characters.
    #[arg(long, default_value_t = 80)]
    pub width: usize,
}

fn query(args: &SearchArgs) -> Result<Vec<f32>> {
    if let Some(text) = &args.vector {
        let v: Vec<f32> = serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("--vector: expected a JSON array of numbers: {e}"))?;
        return Ok(v);
    }
    let path = args
        .query_fvecs
        .as_ref()
        .context("give --vector or --query-fvecs")?;
    let vectors = read_fvecs(path, None)?;
    if args.row >= vectors.len() {
        bail!(
            "--row {}: {} has {} rows",
            args.row,
            path.display(),
            vectors.len()
        );
    }
    Ok(vectors.row(args.row).to_vec())
}

/// The request `octet search` sends.
pub fn request(args: &SearchArgs) -> Result<pb::SearchRequest> {
    let filter = args
        .filter
        .as_deref()
        .map(parse_filter)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--filter: {e}"))?;
    Ok(pb::SearchRequest {
        collection: args.collection.clone(),
        vector: query(args)?,
        k: args.k,
        filter,
        ef: args.ef.unwrap_or(0),
        no_rescore: args.no_rescore,
        with_payload: args.with_payload,
        with_vector: args.with_vector,
    })
}

fn payload_value(p: &pb::ScoredPoint) -> Value {
    match &p.payload_json {
        None => Value::Null,
        Some(s) if s.is_empty() => json!({}),
        // The server writes these; show the text as is if it ever is not JSON.
        Some(s) => serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())),
    }
}

pub fn run(args: SearchArgs) -> Result<()> {
    let req = request(&args)?;
    let points = runtime()?.block_on(async {
        let mut c = args.conn.connect().await?;
        let r = c.search.search(req).await.map_err(grpc)?;
        Ok::<_, anyhow::Error>(r.into_inner().points)
    })?;
    if args.json {
        let rows: Vec<Value> = points
            .iter()
            .map(|p| {
                let mut o = json!({"id": p.id, "score": p.score});
                if args.with_payload {
                    o["payload"] = payload_value(p);
                }
                if args.with_vector {
                    o["vector"] = json!(p.vector);
                }
                o
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if points.is_empty() {
        println!("no results");
        return Ok(());
    }
    let id_w = points
        .iter()
        .map(|p| p.id.to_string().len())
        .max()
        .unwrap_or(2)
        .max(2);
    if args.with_payload {
        println!("{:>4}  {:>id_w$}  {:>9}  payload", "rank", "id", "score");
    } else {
        println!("{:>4}  {:>id_w$}  {:>9}", "rank", "id", "score");
    }
    for (i, p) in points.iter().enumerate() {
        if args.with_payload {
            let text = p.payload_json.as_deref().unwrap_or("");
            println!(
                "{:>4}  {:>id_w$}  {:>9.6}  {}",
                i + 1,
                p.id,
                p.score,
                truncate(text, args.width)
            );
        } else {
            println!("{:>4}  {:>id_w$}  {:>9.6}", i + 1, p.id, p.score);
        }
    }
    Ok(())
}
