//! Recall of the transform codec (and the PCA codec) on real embeddings.
//!
//! ```text
//! cargo run --release -p octet-quant --example transform_recall -- [DATA_DIR] [SPEC...]
//! ```
//!
//! `DATA_DIR` holds `base.fvecs`, `queries.fvecs` and `gt.ivecs` (default
//! `../shared/data`, the 20k MiniLM set); SPECs default to the transform codec at 384,
//! 192, 96 and 48 bytes, with uniform and k-means quantizers, and `pca192+e4m3`. Each
//! codec is fitted on the base itself, encoded, and searched flat for every query;
//! the table reports recall@10 and how often the true top-10 sits inside the top 20 and
//! top 50 candidates (what a rescoring tier needs), plus fit time and one-thread scan
//! speed. Set `FIT_ROWS=10000` to fit on the first 10k rows only.

use std::path::PathBuf;
use std::time::Instant;

use octet_quant::eval::{candidate_recall, codec_top_k, recall_at, top_k};
use octet_quant::vecio::{read_fvecs, read_ivecs};
use octet_quant::{CodecSpec, Metric, ScalarQuantizer, VectorCodec};

fn fit(spec: CodecSpec, sample: &[f32], dim: usize) -> octet_quant::Result<Box<dyn VectorCodec>> {
    match spec {
        CodecSpec::Transform { bytes, quantizer } => Ok(Box::new(
            octet_quant::codec::transform::TransformCodec::fit(sample, dim, bytes, quantizer)?,
        )),
        CodecSpec::Pca { dims, element } => Ok(Box::new(octet_quant::codec::pca::PcaCodec::fit(
            sample, dim, dims, element,
        )?)),
        other => Err(octet_quant::QuantError::UnknownCodec {
            spec: other.to_string(),
            reason: "this example measures pca and transform codecs".into(),
        }),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "../shared/data".into()));
    let mut specs: Vec<CodecSpec> = args.map(|s| s.parse()).collect::<Result<_, _>>()?;
    if specs.is_empty() {
        for bytes in [384, 192, 96, 48] {
            for quantizer in [ScalarQuantizer::Uniform, ScalarQuantizer::Kmeans] {
                specs.push(CodecSpec::Transform { bytes, quantizer });
            }
        }
        specs.push("pca192+e4m3".parse()?);
    }
    let base = read_fvecs(&dir.join("base.fvecs"), None)?;
    let queries = read_fvecs(&dir.join("queries.fvecs"), Some(base.dim))?;
    let (gt_k, gt) = read_ivecs(&dir.join("gt.ivecs"))?;
    let truth: Vec<Vec<u32>> = gt
        .chunks_exact(gt_k)
        .map(|r| r.iter().map(|&i| i as u32).collect())
        .collect();
    let dim = base.dim;
    let fit_rows: usize = std::env::var("FIT_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(base.len());
    let sample = &base.data[..fit_rows.min(base.len()) * dim];
    println!(
        "{} base x {dim}, {} queries, fit on {} rows, metric dot, flat search",
        base.len(),
        queries.len(),
        sample.len() / dim
    );
    println!(
        "| codec | bytes | recall@10 | top10 in top20 | top10 in top50 | squared error per vector | fit s | encode s | scan ms/query (1 thread) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for spec in specs {
        let t = Instant::now();
        let codec = fit(spec, sample, dim)?;
        let fit_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let codes = codec.encode(&base.data)?;
        let encode_s = t.elapsed().as_secs_f64();
        let decoded = codec.decode(&codes)?;
        let mse: f64 = base
            .data
            .iter()
            .zip(&decoded)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            / base.len() as f64;
        let found = codec_top_k(codec.as_ref(), &codes, &queries.data, Metric::Dot, 50);
        // One-thread scan speed over a few queries.
        let t = Instant::now();
        let timed = 50.min(queries.len());
        let mut scores = vec![0f32; base.len()];
        for q in queries.data.chunks_exact(dim).take(timed) {
            let scorer = codec.scorer(q, Metric::Dot);
            scorer.score_batch(&codes, &mut scores);
            std::hint::black_box(top_k(&scores, 10));
        }
        let scan_ms = t.elapsed().as_secs_f64() * 1e3 / timed as f64;
        println!(
            "| {spec} | {} | {:.4} | {:.4} | {:.4} | {mse:.3e} | {fit_s:.2} | {encode_s:.2} | {scan_ms:.2} |",
            codec.code_len(),
            recall_at(&found, &truth, 10),
            candidate_recall(&found, &truth, 10, 20),
            candidate_recall(&found, &truth, 10, 50),
        );
    }
    Ok(())
}
