//! The compare mode: the same batch searches over gRPC and in-process, on the same
//! data directory, in the same process, one after the other.
//!
//! The store locks its data directory, so the two sides cannot hold it at once;
//! and running them concurrently would make them compete for the same cores. Each
//! round therefore serves the directory with an embedded `octet_server::Bound` on
//! 127.0.0.1:0 and runs the batches through a tonic client over loopback TCP
//! (protobuf encode and decode, HTTP/2, the server's admission, conversion and
//! blocking pool included), stops the server (it drains and syncs), then opens the
//! directory with `Store::open` and runs the same batches through
//! `Collection::search_batch`. Both sides see the same segments and the same page
//! cache; the rounds alternate so that load from other processes falls on both.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use octet_quant::vecio::{Vectors, read_fvecs};
use octet_server::pb;
use octet_store::Store;
use serde::Serialize;

use super::{BenchGrpcArgs, median};
use crate::client::collection::info_json;
use crate::client::{Clients, ConnectArgs, grpc};

/// Points per upsert batch while loading.
const LOAD_BATCH: usize = 1000;

/// The longest wait for the background seal after loading.
const SEAL_WAIT: Duration = Duration::from_secs(1800);

/// `ServeArgs` parsed as `octet serve` would, so that settings added to the server
/// keep their defaults here.
#[derive(Debug, Parser)]
struct Embedded {
    #[command(flatten)]
    serve: octet_server::ServeArgs,
}

/// One round's measurements.
#[derive(Debug, Serialize)]
pub struct Round {
    pub grpc_qps: f64,
    pub in_process_qps: f64,
    pub ratio: f64,
}

/// The compare mode's report (`--json`).
#[derive(Debug, Serialize)]
pub struct CompareReport {
    pub mode: &'static str,
    pub base: PathBuf,
    pub queries_file: PathBuf,
    pub points: usize,
    pub queries: usize,
    pub batch_size: usize,
    pub passes: usize,
    pub k: u32,
    pub ef: u32,
    pub rounds: Vec<Round>,
    pub grpc_qps_median: f64,
    pub in_process_qps_median: f64,
    /// Median gRPC QPS over median in-process QPS.
    pub ratio: f64,
    /// Both sides returned the same ids and scores for every query.
    pub identical_results: bool,
    pub collection: serde_json::Value,
}

type Hits = Vec<Vec<(u64, f32)>>;

struct Setup<'a> {
    data: &'a Path,
    name: &'a str,
    api_key: Option<String>,
    requests: &'a [pb::SearchRequest],
    batch: usize,
    passes: usize,
}

async fn serve_and_search(
    s: &Setup<'_>,
    load: Option<(&Vectors, pb::CollectionConfig)>,
) -> Result<(f64, Hits, pb::CollectionInfo)> {
    let data = s.data.to_str().context("the data directory is not UTF-8")?;
    let mut argv = vec![
        "octet",
        "--addr",
        "127.0.0.1:0",
        "--data",
        data,
        "--drain-secs",
        "1",
    ];
    if let Some(k) = &s.api_key {
        argv.extend(["--api-key", k.as_str()]);
    }
    let serve = Embedded::try_parse_from(argv)
        .context("server settings")?
        .serve;
    let bound = octet_server::Bound::bind(serve).await?;
    let conn = ConnectArgs {
        addr: format!("http://{}", bound.local_addr()),
        api_key: s.api_key.clone(),
        timeout: 600.0,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bound.serve(async {
        let _ = stopped.await;
    }));
    let measured = async {
        let mut c = conn.connect().await?;
        if let Some((base, config)) = load {
            ingest(&mut c, s.name, base, config).await?;
        }
        let mut hits = Vec::new();
        // Untimed: one batch to warm the connection and the caches.
        search_batch(&mut c, s.name, &s.requests[..s.batch.min(s.requests.len())]).await?;
        let start = Instant::now();
        for pass in 0..s.passes {
            for chunk in s.requests.chunks(s.batch) {
                let found = search_batch(&mut c, s.name, chunk).await?;
                if pass + 1 == s.passes {
                    hits.extend(found);
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let info = c.info(s.name).await?;
        Ok::<_, anyhow::Error>((secs, hits, info))
    }
    .await;
    // Stop the server whatever happened; the client's connection is closed first
    // (dropped above) so the drain does not wait for it.
    let _ = stop.send(());
    server.await.context("the embedded server task failed")??;
    measured
}

async fn search_batch(c: &mut Clients, name: &str, chunk: &[pb::SearchRequest]) -> Result<Hits> {
    let r = c
        .search
        .search_batch(pb::SearchBatchRequest {
            collection: name.to_string(),
            searches: chunk.to_vec(),
        })
        .await
        .map_err(grpc)?
        .into_inner();
    Ok(r.results
        .into_iter()
        .map(|res| res.points.into_iter().map(|p| (p.id, p.score)).collect())
        .collect())
}

async fn ingest(
    c: &mut Clients,
    name: &str,
    base: &Vectors,
    config: pb::CollectionConfig,
) -> Result<()> {
    let threshold = config.seal_threshold as u64;
    c.collections
        .create(pb::CreateCollectionRequest {
            name: name.to_string(),
            config: Some(config),
        })
        .await
        .map_err(grpc)?;
    let start = Instant::now();
    let batches: Vec<pb::UpsertRequest> = base
        .data
        .chunks(base.dim * LOAD_BATCH)
        .enumerate()
        .map(|(b, rows)| pb::UpsertRequest {
            collection: name.to_string(),
            points: rows
                .chunks_exact(base.dim)
                .enumerate()
                .map(|(r, v)| pb::Point {
                    id: (b * LOAD_BATCH + r) as u64,
                    vector: v.to_vec(),
                    payload_json: String::new(),
                })
                .collect(),
            no_wait: false,
        })
        .collect();
    let written = c
        .points
        .upsert_stream(tokio_stream::iter(batches))
        .await
        .map_err(grpc)?
        .into_inner()
        .points;
    eprintln!(
        "loaded {written} points through gRPC in {:.1} s; waiting for the background seal",
        start.elapsed().as_secs_f64()
    );
    let waited = Instant::now();
    loop {
        let s = c.info(name).await?.stats.unwrap_or_default();
        if s.growing_points < threshold {
            eprintln!(
                "sealed: {} segments, {} growing points ({:.1} s)",
                s.segments,
                s.growing_points,
                waited.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if waited.elapsed() > SEAL_WAIT {
            bail!("the seal did not finish within {} s", SEAL_WAIT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn in_process(s: &Setup<'_>, requests: &[octet_store::SearchRequest]) -> Result<(f64, Hits)> {
    let store =
        Store::open(s.data).with_context(|| format!("opening {} in-process", s.data.display()))?;
    let c = store.collection(s.name)?;
    let mut hits = Vec::new();
    c.search_batch(&requests[..s.batch.min(requests.len())])?;
    let start = Instant::now();
    for pass in 0..s.passes {
        for chunk in requests.chunks(s.batch) {
            let found = c.search_batch(chunk)?;
            if pass + 1 == s.passes {
                hits.extend(
                    found
                        .into_iter()
                        .map(|r| r.into_iter().map(|p| (p.id, p.score)).collect()),
                );
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(c);
    store.close()?;
    Ok((secs, hits))
}

pub fn run(args: BenchGrpcArgs) -> Result<()> {
    let base_path = args
        .base
        .clone()
        .context("--compare-in-process needs --base FILE.fvecs")?;
    let queries_path = args
        .queries
        .clone()
        .context("--compare-in-process needs --queries FILE.fvecs")?;
    let batch = args.batch_size.unwrap_or(100);
    if batch == 0 || args.rounds == 0 || args.passes == 0 {
        bail!("--batch-size, --rounds and --passes must be at least 1");
    }
    let base = read_fvecs(&base_path, None)?;
    let queries = read_fvecs(&queries_path, Some(base.dim))?;
    let name = args.collection.clone().unwrap_or_else(|| "bench".into());
    let tmp;
    let data = match &args.data {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().context("creating a temporary data directory")?;
            tmp.path().to_path_buf()
        }
    };
    let requests: Vec<pb::SearchRequest> = queries
        .rows()
        .map(|q| pb::SearchRequest {
            collection: String::new(),
            vector: q.to_vec(),
            k: args.k,
            filter: None,
            ef: args.ef,
            no_rescore: false,
            with_payload: false,
            with_vector: false,
        })
        .collect();
    // The in-process side gets exactly what the server would make of each request.
    let engine: Vec<octet_store::SearchRequest> = requests
        .iter()
        .cloned()
        .map(octet_store::SearchRequest::try_from)
        .collect::<Result<_, _>>()
        .map_err(grpc)?;
    let setup = Setup {
        data: &data,
        name: &name,
        api_key: args.conn.api_key.clone(),
        requests: &requests,
        batch,
        passes: args.passes,
    };

    // Load unless the data directory already holds the collection.
    let existing = match Store::open(&data) {
        Ok(store) => {
            let points = store.collection(&name).ok().map(|c| c.info().points);
            store.close()?;
            points
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", data.display())),
    };
    let mut load = match existing {
        Some(n) if n == base.len() => {
            eprintln!(
                "reusing collection `{name}` ({n} points) in {}",
                data.display()
            );
            None
        }
        Some(n) => bail!(
            "collection `{name}` in {} has {n} points, --base has {}: use another \
             --data or --collection",
            data.display(),
            base.len()
        ),
        None => Some(pb::CollectionConfig {
            dim: u32::try_from(base.dim)?,
            metric: pb::Metric::Cosine as i32,
            codec: args.codec.clone().unwrap_or_default(),
            seal_threshold: args
                .seal_threshold
                .unwrap_or(u32::try_from(base.len()).unwrap_or(u32::MAX)),
            ..Default::default()
        }),
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let n = (requests.len() * args.passes) as f64;
    let mut rounds = Vec::new();
    let mut identical = true;
    let mut info = None;
    for round in 0..args.rounds {
        let config = load.take();
        let (g_secs, g_hits, i) =
            rt.block_on(serve_and_search(&setup, config.map(|c| (&base, c))))?;
        info = Some(i);
        let (p_secs, p_hits) = in_process(&setup, &engine)?;
        identical &= g_hits == p_hits;
        let r = Round {
            grpc_qps: n / g_secs,
            in_process_qps: n / p_secs,
            ratio: p_secs / g_secs,
        };
        eprintln!(
            "round {}: gRPC {:.0} QPS, in-process {:.0} QPS, ratio {:.3}",
            round + 1,
            r.grpc_qps,
            r.in_process_qps,
            r.ratio
        );
        rounds.push(r);
    }
    let g = median(&rounds.iter().map(|r| r.grpc_qps).collect::<Vec<_>>());
    let p = median(&rounds.iter().map(|r| r.in_process_qps).collect::<Vec<_>>());
    let report = CompareReport {
        mode: "compare-in-process",
        base: base_path,
        queries_file: queries_path,
        points: base.len(),
        queries: requests.len(),
        batch_size: batch,
        passes: args.passes,
        k: args.k,
        ef: args.ef,
        rounds,
        grpc_qps_median: g,
        in_process_qps_median: p,
        ratio: g / p,
        identical_results: identical,
        collection: info.as_ref().map(info_json).unwrap_or_default(),
    };
    println!(
        "{} points, {} queries, batches of {batch}, k {}, ef {}, {} rounds x {} passes",
        report.points,
        report.queries,
        args.k,
        if args.ef == 0 {
            "default".to_string()
        } else {
            args.ef.to_string()
        },
        args.rounds,
        args.passes
    );
    println!(
        "batch search QPS (median): gRPC {g:.0}, in-process {p:.0}; gRPC / in-process = {:.3} \
         (target >= 0.70: {})",
        report.ratio,
        if report.ratio >= 0.70 {
            "met"
        } else {
            "not met"
        }
    );
    println!(
        "identical results on both sides: {}",
        if identical { "yes" } else { "NO" }
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !identical {
        bail!("gRPC and in-process searches returned different results");
    }
    Ok(())
}
