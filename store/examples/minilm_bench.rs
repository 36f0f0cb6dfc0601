//! Recall@10, QPS and ingest rate of an octet-store collection on the MiniLM
//! development set (`../shared/data`: 20k x 384 base vectors, 500 queries, exact
//! top-100 neighbours).
//!
//! ```text
//! cargo run --release -p octet-store --example minilm_bench -- \
//!     [--data ../shared/data] [--codec transform192] [--rescore i8|e4m3-scaled|f16|f32|none] \
//!     [--oversampling 4] [--m 16] [--ef-construction 128]
//! ```
//!
//! Prints, per ef, recall@10 against `gt.ivecs` and single-thread QPS with the
//! rescore tier and without it, then all-thread QPS of batch search.

use std::path::PathBuf;
use std::time::Instant;

use octet_quant::vecio::{read_fvecs, read_ivecs};
use octet_quant::{CodecSpec, ElementSpec, Metric};
use octet_store::{CollectionConfig, Point, SearchRequest, Store};

struct Args {
    data: PathBuf,
    codec: Option<CodecSpec>,
    rescore: Option<Option<ElementSpec>>,
    oversampling: Option<f32>,
    m: Option<usize>,
    ef_construction: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        data: PathBuf::from("../shared/data"),
        codec: None,
        rescore: None,
        oversampling: None,
        m: None,
        ef_construction: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--data" => args.data = PathBuf::from(&value),
            "--codec" => args.codec = Some(value.parse().map_err(|e| bad(&e))?),
            "--rescore" if value == "none" => args.rescore = Some(None),
            "--rescore" => args.rescore = Some(Some(value.parse().map_err(|e| bad(&e))?)),
            "--oversampling" => args.oversampling = Some(value.parse().map_err(|e| bad(&e))?),
            "--m" => args.m = Some(value.parse().map_err(|e| bad(&e))?),
            "--ef-construction" => args.ef_construction = Some(value.parse().map_err(|e| bad(&e))?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "octet_store=info".into()),
        )
        .init();
    let base = read_fvecs(&args.data.join("base.fvecs"), None)?;
    let queries = read_fvecs(&args.data.join("queries.fvecs"), Some(base.dim))?;
    let (gt_k, gt) = read_ivecs(&args.data.join("gt.ivecs"))?;
    let dim = base.dim;
    let (n, nq) = (base.len(), queries.len());
    let k = 10;

    let mut config = CollectionConfig::new(dim, Metric::Cosine);
    if let Some(c) = args.codec {
        config.codec = c;
    }
    if let Some(r) = args.rescore {
        config.rescore.element = r;
    }
    if let Some(o) = args.oversampling {
        config.rescore.oversampling = o;
    }
    if let Some(m) = args.m {
        config.hnsw.m = m;
    }
    if let Some(e) = args.ef_construction {
        config.hnsw.ef_construction = e;
    }
    println!(
        "data: {n} x {dim}, {nq} queries; codec {}, rescore {:?} x{}, hnsw m={} ef_construction={}",
        config.codec,
        config.rescore.element,
        config.rescore.oversampling,
        config.hnsw.m,
        config.hnsw.ef_construction
    );

    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let c = store.create_collection("minilm", config)?;
    let t = Instant::now();
    for (b, rows) in base.data.chunks(1000 * dim).enumerate() {
        let points: Vec<Point> = rows
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, v)| Point::new((b * 1000 + i) as u64, v.to_vec()))
            .collect();
        c.upsert(&points, false)?;
    }
    c.flush()?;
    let ingest = t.elapsed().as_secs_f64();
    let t = Instant::now();
    c.seal()?;
    let seal = t.elapsed().as_secs_f64();
    let info = c.info();
    println!(
        "ingest (WAL + fsync + growing segment): {:.0} points/s; seal (fit codecs, encode, build graph, write, verify): {seal:.2} s",
        n as f64 / ingest
    );
    println!(
        "bytes per vector: codes {:.1}, rescore tier {:.1}, graph {:.1}",
        info.code_bytes as f64 / n as f64,
        info.rescore_bytes as f64 / n as f64,
        info.graph_bytes as f64 / n as f64
    );

    let truth: Vec<&[i32]> = gt.chunks_exact(gt_k).map(|r| &r[..k]).collect();
    let recall = |results: &[Vec<u64>]| -> f64 {
        let hits: usize = results
            .iter()
            .zip(&truth)
            .map(|(got, want)| want.iter().filter(|&&w| got.contains(&(w as u64))).count())
            .sum();
        hits as f64 / (nq * k) as f64
    };
    println!(
        "{:>5} {:>8} {:>10} {:>8} {:>10} {:>12}",
        "ef", "recall", "QPS", "recall", "QPS", "QPS"
    );
    println!(
        "{:>5} {:>19} {:>19} {:>12}",
        "", "(rescored, 1 thread)", "(codes only)", "(all threads)"
    );
    for ef in [16, 32, 64, 128, 256] {
        let mut row = format!("{ef:>5}");
        for rescore in [true, false] {
            let t = Instant::now();
            let mut results = Vec::with_capacity(nq);
            for q in queries.data.chunks_exact(dim) {
                let hits = c.search(&SearchRequest::new(q.to_vec(), k).ef(ef).rescore(rescore))?;
                results.push(hits.iter().map(|h| h.id).collect::<Vec<_>>());
            }
            let qps = nq as f64 / t.elapsed().as_secs_f64();
            row += &format!(" {:>8.4} {:>10.0}", recall(&results), qps);
        }
        let requests: Vec<SearchRequest> = queries
            .data
            .chunks_exact(dim)
            .map(|q| SearchRequest::new(q.to_vec(), k).ef(ef))
            .collect();
        let t = Instant::now();
        c.search_batch(&requests)?;
        row += &format!(" {:>12.0}", nq as f64 / t.elapsed().as_secs_f64());
        println!("{row}");
    }
    drop(c);
    store.close()?;
    Ok(())
}
