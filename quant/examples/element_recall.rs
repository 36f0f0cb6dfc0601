//! Recall of every element codec on real embeddings, and of the scaled float8 codecs
//! at several scale quantiles.
//!
//! ```text
//! cargo run --release -p octet-quant --example element_recall -- [DATA_DIR]
//! ```
//!
//! `DATA_DIR` holds `base.fvecs`, `queries.fvecs` and `gt.ivecs` (default
//! `../shared/data`, the 20k MiniLM set, unit-length vectors). Each codec is fitted on
//! the base itself (plain casts ignore it), every query is searched flat over the
//! codes with the codec's fast scorer under the inner product, and recall@10 is
//! measured against the exact top 10 of `gt.ivecs`. Also printed: how often the true
//! top 10 sits inside the top 50 (what a rescoring tier needs), and the mean
//! relative reconstruction error `|x - decode(encode(x))| / |x|`.

use std::path::PathBuf;
use std::time::Instant;

use octet_quant::eval::{candidate_recall, codec_top_k, recall_at};
use octet_quant::vecio::{read_fvecs, read_ivecs};
use octet_quant::{
    ElementCodec, ElementSpec, Float8Format, Metric, ScaledFloat8Codec, VectorCodec,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "../shared/data".into()),
    );
    let base = read_fvecs(&dir.join("base.fvecs"), None)?;
    let queries = read_fvecs(&dir.join("queries.fvecs"), Some(base.dim))?;
    let (gt_k, gt) = read_ivecs(&dir.join("gt.ivecs"))?;
    let dim = base.dim;
    let truth: Vec<Vec<u32>> = gt
        .chunks_exact(gt_k)
        .map(|row| row.iter().map(|&i| i as u32).collect())
        .collect();
    println!(
        "{} base x {dim}, {} queries, metric dot (unit vectors)\n",
        base.len(),
        queries.len()
    );

    let mut codecs: Vec<(String, Box<dyn VectorCodec>)> = Vec::new();
    for spec in ElementSpec::ALL {
        let codec = ElementCodec::fit(spec, &base.data, dim)?;
        codecs.push((spec.name().to_string(), Box::new(codec)));
    }
    for format in [Float8Format::E4m3, Float8Format::E5m2] {
        for quantile in [0.9999f32, 0.999, 0.99] {
            let codec = ScaledFloat8Codec::fit_quantile(format, &base.data, dim, quantile)?;
            let name = format!("{}, q={quantile}", format.scaled_element().name());
            codecs.push((name, Box::new(codec)));
        }
    }

    println!("| codec | bytes/vector | recall@10 | top-10 in top-50 | rel. error | scan s |");
    println!("|---|---|---|---|---|---|");
    for (name, codec) in &codecs {
        let codes = codec.encode(&base.data)?;
        let decoded = codec.decode(&codes)?;
        let rel_err = base
            .rows()
            .zip(decoded.chunks_exact(dim))
            .map(|(x, y)| {
                let err: f32 = x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum();
                let norm: f32 = x.iter().map(|a| a * a).sum();
                f64::from((err / norm.max(f32::MIN_POSITIVE)).sqrt())
            })
            .sum::<f64>()
            / base.len() as f64;
        let start = Instant::now();
        let found = codec_top_k(codec.as_ref(), &codes, &queries.data, Metric::Dot, 50);
        let scan = start.elapsed().as_secs_f64();
        println!(
            "| {name} | {} | {:.4} | {:.4} | {rel_err:.4} | {scan:.2} |",
            codec.code_len(),
            recall_at(&found, &truth, 10),
            candidate_recall(&found, &truth, 10, 50),
        );
    }
    Ok(())
}
