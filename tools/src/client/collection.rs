//! `octet collection create|list|info|drop`.

use anyhow::Result;
use clap::{Args, Subcommand};
use octet_quant::CodecSpec;
use octet_server::pb;
use serde_json::json;

use super::{ConnectArgs, grpc, metric_name, parse_metric, runtime};

#[derive(Debug, Args)]
pub struct CollectionArgs {
    #[command(flatten)]
    pub conn: ConnectArgs,
    #[command(subcommand)]
    pub command: CollectionCommand,
}

#[derive(Debug, Subcommand)]
pub enum CollectionCommand {
    /// Create a collection. Unset options take the server's defaults (codec
    /// transform<dim/2>, rescore i8 x4, m 16, ef_construction 128, ef_search 64,
    /// seal threshold 32768).
    Create(CreateArgs),
    /// List the collections.
    List {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Show a collection's configuration and statistics.
    Info {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a collection and its data.
    Drop { name: String },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Collection name.
    pub name: String,
    /// Vector dimension.
    #[arg(long)]
    pub dim: u32,
    /// Similarity: cosine, dot or l2.
    #[arg(long, default_value = "cosine", value_parser = parse_metric)]
    pub metric: pb::Metric,
    /// Compact codec: f16, bf16, i8, e4m3, e4m3-scaled, e5m2, b1, pca<dims>+<element>
    /// (pca192+e4m3), transform<bytes>, transform<bytes>-kmeans.
    #[arg(long)]
    pub codec: Option<String>,
    /// Rescore tier element (f32, f16, i8, e4m3, ...) or `none`.
    #[arg(long)]
    pub rescore: Option<String>,
    /// Candidates per result fetched before rescoring.
    #[arg(long)]
    pub oversampling: Option<f32>,
    /// HNSW links per node.
    #[arg(long)]
    pub m: Option<u32>,
    /// HNSW candidate list size while building.
    #[arg(long)]
    pub ef_construction: Option<u32>,
    /// HNSW candidate list size while searching (default of each search).
    #[arg(long)]
    pub ef_search: Option<u32>,
    /// Points in the growing segment (searched exactly) before it is sealed into
    /// an indexed segment.
    #[arg(long)]
    pub seal_threshold: Option<u32>,
}

impl CreateArgs {
    fn config(&self) -> pb::CollectionConfig {
        pb::CollectionConfig {
            dim: self.dim,
            metric: self.metric as i32,
            codec: self.codec.clone().unwrap_or_default(),
            rescore: self.rescore.clone().unwrap_or_default(),
            oversampling: self.oversampling.unwrap_or(0.0),
            hnsw_m: self.m.unwrap_or(0),
            ef_construction: self.ef_construction.unwrap_or(0),
            ef_search: self.ef_search.unwrap_or(0),
            seal_threshold: self.seal_threshold.unwrap_or(0),
        }
    }
}

/// A collection's description as JSON (the proto types carry no serde).
pub fn info_json(info: &pb::CollectionInfo) -> serde_json::Value {
    let c = info.config.clone().unwrap_or_default();
    let s = info.stats.clone().unwrap_or_default();
    json!({
        "name": info.name,
        "config": {
            "dim": c.dim,
            "metric": metric_name(c.metric),
            "codec": c.codec,
            "rescore": c.rescore,
            "oversampling": c.oversampling,
            "hnsw_m": c.hnsw_m,
            "ef_construction": c.ef_construction,
            "ef_search": c.ef_search,
            "seal_threshold": c.seal_threshold,
        },
        "stats": {
            "points": s.points,
            "growing_points": s.growing_points,
            "segments": s.segments,
            "sealed_points": s.sealed_points,
            "code_bytes": s.code_bytes,
            "rescore_bytes": s.rescore_bytes,
            "graph_bytes": s.graph_bytes,
            "bytes_per_vector": s.bytes_per_vector,
            "compression_ratio": s.compression_ratio,
            "fitted_codec": s.fitted_codec,
        },
    })
}

/// A collection's description as aligned lines.
pub fn print_info(info: &pb::CollectionInfo) {
    let c = info.config.clone().unwrap_or_default();
    let s = info.stats.clone().unwrap_or_default();
    println!("collection       {}", info.name);
    println!("dim              {}", c.dim);
    println!("metric           {}", metric_name(c.metric));
    let fitted = match s.fitted_codec.as_str() {
        "" => String::new(),
        f if f == c.codec => String::new(),
        f => format!(", fitted as {f}"),
    };
    let auto = matches!(c.codec.parse(), Ok(CodecSpec::TransformAuto { .. }));
    let bound = if s.fitted_codec.is_empty() && auto {
        "at most "
    } else {
        ""
    };
    println!(
        "codec            {}{fitted} ({bound}{} bytes/vector, {:.1}x smaller than f32)",
        c.codec, s.bytes_per_vector, s.compression_ratio
    );
    println!("rescore          {} x{}", c.rescore, c.oversampling);
    println!(
        "hnsw             m {}, ef_construction {}, ef_search {}",
        c.hnsw_m, c.ef_construction, c.ef_search
    );
    println!("seal threshold   {}", c.seal_threshold);
    println!("points           {}", s.points);
    println!(
        "segments         {} sealed ({} points), growing {}",
        s.segments, s.sealed_points, s.growing_points
    );
    println!(
        "bytes            codes {}, rescore {}, graph {}",
        s.code_bytes, s.rescore_bytes, s.graph_bytes
    );
}

pub fn run(args: CollectionArgs) -> Result<()> {
    runtime()?.block_on(async move {
        let mut c = args.conn.connect().await?;
        match args.command {
            CollectionCommand::Create(a) => {
                let info = c
                    .collections
                    .create(pb::CreateCollectionRequest {
                        name: a.name.clone(),
                        config: Some(a.config()),
                    })
                    .await
                    .map_err(grpc)?
                    .into_inner();
                let cfg = info.config.clone().unwrap_or_default();
                println!(
                    "created collection `{}`: dim {}, {}, codec {}, rescore {}",
                    info.name,
                    cfg.dim,
                    metric_name(cfg.metric),
                    cfg.codec,
                    cfg.rescore
                );
            }
            CollectionCommand::List { json } => {
                let names = c
                    .collections
                    .list(pb::ListCollectionsRequest {})
                    .await
                    .map_err(grpc)?
                    .into_inner()
                    .names;
                if json {
                    println!("{}", serde_json::to_string(&names)?);
                } else {
                    for n in names {
                        println!("{n}");
                    }
                }
            }
            CollectionCommand::Info { name, json } => {
                let info = c.info(&name).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&info_json(&info))?);
                } else {
                    print_info(&info);
                }
            }
            CollectionCommand::Drop { name } => {
                c.collections
                    .delete(pb::DeleteCollectionRequest { name: name.clone() })
                    .await
                    .map_err(grpc)?;
                println!("dropped collection `{name}`");
            }
        }
        Ok(())
    })
}
