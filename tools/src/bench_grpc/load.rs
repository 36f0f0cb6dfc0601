//! The load mode: concurrent clients doing mixed search / upsert for a while.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use octet_quant::vecio::read_fvecs;
use octet_server::pb;
use serde::Serialize;

use super::{BenchGrpcArgs, Connections, Latency};
use crate::client::{Clients, GrpcError, grpc};

/// Error messages kept for the report.
const KEPT_ERRORS: usize = 5;

/// Vectors sampled through Scroll when no --queries file is given.
const SAMPLED_QUERIES: u32 = 1000;

#[derive(Debug, Default)]
struct ClientLog {
    search: Vec<u32>,
    upsert: Vec<u32>,
    search_errors: u64,
    upsert_errors: u64,
    messages: Vec<String>,
}

/// One kind of operation in the report.
#[derive(Debug, Serialize)]
pub struct KindReport {
    pub calls: u64,
    pub calls_per_s: f64,
    /// Queries (search) or points (upsert) per second.
    pub items_per_s: f64,
    pub errors: u64,
    pub latency_ms: Latency,
}

/// The load mode's report (`--json`).
#[derive(Debug, Serialize)]
pub struct LoadReport {
    pub addr: String,
    pub collection: String,
    pub clients: usize,
    pub connections: Connections,
    pub duration_s: f64,
    pub elapsed_s: f64,
    pub search_fraction: f64,
    pub k: u32,
    pub ef: u32,
    pub with_payload: bool,
    pub batch_size: usize,
    pub upsert_batch: usize,
    pub durable: bool,
    pub queries: usize,
    pub points_before: u64,
    pub points_after: u64,
    pub calls: u64,
    pub calls_per_s: f64,
    pub errors: u64,
    pub error_messages: Vec<String>,
    pub search: KindReport,
    pub upsert: KindReport,
}

/// A small deterministic generator (xorshift64*), one per client.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

async fn sample_queries(c: &mut Clients, collection: &str) -> Result<Vec<Vec<f32>>> {
    let page = c
        .points
        .scroll(pb::ScrollRequest {
            collection: collection.into(),
            offset: None,
            limit: SAMPLED_QUERIES,
            filter: None,
            with_payload: false,
            with_vector: true,
        })
        .await
        .map_err(grpc)?
        .into_inner();
    Ok(page.points.into_iter().map(|r| r.vector).collect())
}

/// What every client runs until the deadline: the query pool, the search/upsert
/// mix and the request shapes.
struct Workload {
    collection: String,
    queries: Vec<Vec<f32>>,
    search_fraction: f64,
    k: u32,
    ef: u32,
    batch_size: usize,
    upsert_batch: usize,
    no_wait: bool,
    with_payload: bool,
    next_id: AtomicU64,
    deadline: Instant,
}

impl Workload {
    fn search(&self, rng: &mut Rng) -> pb::SearchRequest {
        let q = &self.queries[(rng.next() % self.queries.len() as u64) as usize];
        pb::SearchRequest {
            collection: String::new(),
            vector: q.clone(),
            k: self.k,
            filter: None,
            ef: self.ef,
            no_rescore: false,
            with_payload: self.with_payload,
            with_vector: false,
        }
    }

    fn upsert(&self, rng: &mut Rng, client: usize) -> pb::UpsertRequest {
        let first = self
            .next_id
            .fetch_add(self.upsert_batch as u64, Ordering::Relaxed);
        let points = (0..self.upsert_batch as u64)
            .map(|j| pb::Point {
                id: first + j,
                vector: self.queries[(rng.next() % self.queries.len() as u64) as usize].clone(),
                payload_json: format!(r#"{{"source":"bench-grpc","client":{client}}}"#),
            })
            .collect();
        pb::UpsertRequest {
            collection: self.collection.clone(),
            points,
            no_wait: self.no_wait,
        }
    }
}

async fn client_loop(work: Arc<Workload>, mut c: Clients, client: usize) -> ClientLog {
    let mut log = ClientLog::default();
    let mut rng = Rng::new(client as u64 + 1);
    while Instant::now() < work.deadline {
        let is_search = rng.unit() < work.search_fraction;
        let t = Instant::now();
        let result = if is_search {
            if work.batch_size == 1 {
                let mut r = work.search(&mut rng);
                r.collection = work.collection.clone();
                c.search.search(r).await.map(drop)
            } else {
                let searches = (0..work.batch_size)
                    .map(|_| work.search(&mut rng))
                    .collect();
                c.search
                    .search_batch(pb::SearchBatchRequest {
                        collection: work.collection.clone(),
                        searches,
                    })
                    .await
                    .map(drop)
            }
        } else {
            let r = work.upsert(&mut rng, client);
            c.points.upsert(r).await.map(drop)
        };
        let micros = u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX);
        match (result, is_search) {
            (Ok(()), true) => log.search.push(micros),
            (Ok(()), false) => log.upsert.push(micros),
            (Err(s), search) => {
                if search {
                    log.search_errors += 1;
                } else {
                    log.upsert_errors += 1;
                }
                if log.messages.len() < KEPT_ERRORS {
                    let kind = if search { "search" } else { "upsert" };
                    log.messages.push(format!("{kind}: {}", GrpcError::from(s)));
                }
            }
        }
    }
    log
}

fn kind_report(mut lat: Vec<u32>, errors: u64, per_call: usize, secs: f64) -> KindReport {
    let calls = lat.len() as u64;
    KindReport {
        calls,
        calls_per_s: calls as f64 / secs,
        items_per_s: (calls as f64 * per_call as f64) / secs,
        errors,
        latency_ms: Latency::of(&mut lat),
    }
}

fn check(args: &BenchGrpcArgs) -> Result<String> {
    let Some(collection) = args.collection.clone() else {
        bail!("--collection is required (the collection to load; it must exist)");
    };
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if !(args.duration.is_finite() && args.duration > 0.0) {
        bail!("--duration must be a positive number of seconds");
    }
    if !(0.0..=1.0).contains(&args.search_fraction) {
        bail!(
            "--search-fraction must be in 0..=1, got {}",
            args.search_fraction
        );
    }
    if args.batch_size == Some(0) || args.upsert_batch == 0 {
        bail!("--batch-size and --upsert-batch must be at least 1");
    }
    Ok(collection)
}

pub fn run(args: BenchGrpcArgs) -> Result<()> {
    let collection = check(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = rt.block_on(load(&args, collection))?;
    print(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn load(args: &BenchGrpcArgs, collection: String) -> Result<LoadReport> {
    let batch_size = args.batch_size.unwrap_or(1);
    let mut admin = args.conn.connect().await?;
    let info = admin.info(&collection).await?;
    let dim = info.config.as_ref().map_or(0, |c| c.dim) as usize;
    let points_before = info.stats.map_or(0, |s| s.points);
    let queries = match &args.queries {
        Some(p) => {
            let v = read_fvecs(p, None)?;
            if v.dim != dim {
                bail!(
                    "{}: queries have dimension {}, collection `{collection}` has {dim}",
                    p.display(),
                    v.dim
                );
            }
            v.rows().map(<[f32]>::to_vec).collect::<Vec<_>>()
        }
        None => sample_queries(&mut admin, &collection).await?,
    };
    if queries.is_empty() {
        bail!("no query vectors: give --queries or load the collection first");
    }
    let n_queries = queries.len();

    let shared = match args.connections {
        Connections::Shared => Some(args.conn.channel().await?),
        Connections::PerClient => None,
    };
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let ch = match &shared {
            Some(ch) => ch.clone(),
            None => args.conn.channel().await?,
        };
        clients.push(Clients::new(ch, &args.conn)?);
    }

    let start = Instant::now();
    let work = Arc::new(Workload {
        collection: collection.clone(),
        queries,
        search_fraction: args.search_fraction,
        k: args.k,
        ef: args.ef,
        batch_size,
        upsert_batch: args.upsert_batch,
        no_wait: args.no_wait,
        with_payload: args.with_payload,
        next_id: AtomicU64::new(args.id_start),
        deadline: start + Duration::from_secs_f64(args.duration),
    });
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(client_loop(Arc::clone(&work), c, i)))
        .collect();
    let mut all = ClientLog::default();
    for t in tasks {
        let log = t.await.context("a client task failed")?;
        all.search.extend(log.search);
        all.upsert.extend(log.upsert);
        all.search_errors += log.search_errors;
        all.upsert_errors += log.upsert_errors;
        for m in log.messages {
            if all.messages.len() < KEPT_ERRORS {
                all.messages.push(m);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let points_after = admin.info(&collection).await?.stats.map_or(0, |s| s.points);

    let errors = all.search_errors + all.upsert_errors;
    let calls = (all.search.len() + all.upsert.len()) as u64;
    Ok(LoadReport {
        addr: args.conn.url(),
        collection,
        clients: args.clients,
        connections: args.connections,
        duration_s: args.duration,
        elapsed_s: secs,
        search_fraction: args.search_fraction,
        k: args.k,
        ef: args.ef,
        with_payload: args.with_payload,
        batch_size,
        upsert_batch: args.upsert_batch,
        durable: !args.no_wait,
        queries: n_queries,
        points_before,
        points_after,
        calls,
        calls_per_s: calls as f64 / secs,
        errors,
        error_messages: all.messages,
        search: kind_report(all.search, all.search_errors, batch_size, secs),
        upsert: kind_report(all.upsert, all.upsert_errors, args.upsert_batch, secs),
    })
}

fn print(r: &LoadReport) {
    let ef = if r.ef == 0 {
        "collection default".to_string()
    } else {
        r.ef.to_string()
    };
    println!(
        "bench-grpc {}: `{}`, {} clients ({} connections), {:.1} s",
        r.addr,
        r.collection,
        r.clients,
        match r.connections {
            Connections::PerClient => "one per client",
            Connections::Shared => "one shared",
        },
        r.elapsed_s
    );
    println!(
        "mix: {:.0}% search (k {}, ef {ef}, {} queries per call, {} distinct queries{}), \
         {:.0}% upsert ({} points per call, {})",
        r.search_fraction * 100.0,
        r.k,
        r.batch_size,
        r.queries,
        if r.with_payload {
            ", with payloads"
        } else {
            ""
        },
        (1.0 - r.search_fraction) * 100.0,
        r.upsert_batch,
        if r.durable { "durable" } else { "no_wait" }
    );
    println!(
        "points: {} before, {} after",
        r.points_before, r.points_after
    );
    println!(
        "{:<7} {:>9} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "kind", "calls", "calls/s", "items/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"
    );
    for (name, k) in [("search", &r.search), ("upsert", &r.upsert)] {
        println!(
            "{name:<7} {:>9} {:>9.1} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7}",
            k.calls,
            k.calls_per_s,
            k.items_per_s,
            k.latency_ms.p50,
            k.latency_ms.p95,
            k.latency_ms.p99,
            k.latency_ms.max,
            k.errors
        );
    }
    println!(
        "total   {:>9} {:>9.1}   errors {}",
        r.calls, r.calls_per_s, r.errors
    );
    for m in &r.error_messages {
        println!("  error: {m}");
    }
}
