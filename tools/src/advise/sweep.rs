//! The measurement loop of `octet advise`: fit, encode, flat-scan, compare with the
//! exact neighbours.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use octet_quant::codec::Codec;
use octet_quant::eval::{candidate_recall, codec_top_k, exact_top_k, recall_at};
use octet_quant::vecio::Vectors;
use octet_quant::{CodecSpec, Metric, VectorCodec};
use serde::Serialize;

use super::{AdviseArgs, RESCORE_DEPTHS};

/// What one codec measured.
#[derive(Debug, Clone, Serialize)]
pub struct CodecResult {
    /// The codec, as `CodecSpec` text (`i8`, `pca192+e4m3`, `transform96`).
    pub codec: String,
    /// What a codec that picks its own size was fitted as (`transform-auto`:
    /// `transform96`); absent for every other codec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fitted: Option<String>,
    /// Bytes per stored vector.
    pub bytes_per_vector: usize,
    /// f32 bytes divided by code bytes.
    pub compression: f64,
    /// recall@k of a flat search over the codes.
    pub recall: f64,
    /// (R, fraction of the true top-k inside the top-R candidates) for each rescore depth.
    pub candidate_recall: Vec<(usize, f64)>,
    /// Seconds to fit the codec on the sample.
    pub fit_s: f64,
    /// Seconds to encode every base vector.
    pub encode_s: f64,
    /// Queries per second of the flat scan over all base codes (all threads).
    pub scan_qps: f64,
}

/// A fitted codec with its codes and candidate lists, kept for the two-tier analysis.
pub struct Measured {
    pub codec: Codec,
    pub codes: Vec<u8>,
    /// Top-`max(RESCORE_DEPTHS)` base rows per query, best first.
    pub candidates: Vec<Vec<u32>>,
}

/// Results of a whole sweep.
pub struct Sweep {
    pub results: Vec<CodecResult>,
    pub measured: Vec<Measured>,
    pub truth: Vec<Vec<u32>>,
    pub queries: Vectors,
    pub metric: Metric,
    pub k: usize,
    pub dim: usize,
    pub n_base: usize,
}

impl Sweep {
    pub fn run(
        base: &Vectors,
        queries: &Vectors,
        args: &AdviseArgs,
        specs: &[CodecSpec],
    ) -> Result<Sweep> {
        let dim = base.dim;
        let depth = RESCORE_DEPTHS
            .iter()
            .copied()
            .max()
            .unwrap_or(100)
            .max(args.k);
        let truth = exact_top_k(&base.data, &queries.data, dim, args.metric, depth);
        let sample = fit_sample(base, args.fit_sample);

        let bar = if args.quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(specs.len() as u64)
        };
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} codecs [{elapsed}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let mut results = Vec::with_capacity(specs.len());
        let mut measured = Vec::with_capacity(specs.len());
        for spec in specs {
            bar.set_message(format!("fitting {spec}"));
            let t = Instant::now();
            // Under the metric searched, checked against the store's default
            // oversampling (what `transform-auto` decides its size by).
            let codec = spec
                .fit_for(&sample, dim, args.metric, 4.0)
                .with_context(|| format!("fitting codec `{spec}`"))?;
            let fitted = Some(codec.spec().to_string()).filter(|f| *f != spec.to_string());
            let fit_s = t.elapsed().as_secs_f64();

            bar.set_message(format!("encoding {spec}"));
            let t = Instant::now();
            let codes = codec
                .encode(&base.data)
                .with_context(|| format!("encoding with `{spec}`"))?;
            let encode_s = t.elapsed().as_secs_f64();

            bar.set_message(format!("scanning {spec}"));
            let t = Instant::now();
            let candidates = codec_top_k(&codec, &codes, &queries.data, args.metric, depth);
            let scan_qps = queries.len() as f64 / t.elapsed().as_secs_f64().max(1e-9);

            let bytes = codec.code_len();
            results.push(CodecResult {
                codec: spec.to_string(),
                fitted,
                bytes_per_vector: bytes,
                compression: (4 * dim) as f64 / bytes as f64,
                recall: recall_at(&candidates, &truth, args.k),
                candidate_recall: RESCORE_DEPTHS
                    .iter()
                    .map(|&r| (r, candidate_recall(&candidates, &truth, args.k, r)))
                    .collect(),
                fit_s,
                encode_s,
                scan_qps,
            });
            measured.push(Measured {
                codec,
                codes,
                candidates,
            });
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(Sweep {
            results,
            measured,
            truth,
            queries: queries.clone(),
            metric: args.metric,
            k: args.k,
            dim,
            n_base: base.len(),
        })
    }

    /// Recall@k after taking `cand`'s top-`r` candidates and reordering them by
    /// `rescore`'s scores: what a two-tier search returns.
    pub fn two_tier_recall(&self, cand: &Measured, r: usize, rescore: &Measured) -> f64 {
        let dim = self.dim;
        let len = rescore.codec.code_len();
        let found: Vec<Vec<u32>> = self
            .queries
            .data
            .chunks_exact(dim)
            .zip(&cand.candidates)
            .map(|(q, cands)| {
                let scorer = rescore.codec.scorer(q, self.metric);
                let mut scored: Vec<(f32, u32)> = cands
                    .iter()
                    .take(r)
                    .map(|&id| (scorer.score(&rescore.codes[id as usize * len..][..len]), id))
                    .collect();
                scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                scored.into_iter().map(|(_, id)| id).collect()
            })
            .collect();
        recall_at(&found, &self.truth, self.k)
    }

    pub fn print_table(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "{} base x {} queries, dim {}, metric {}, flat search, recall@{} against exact f32\n",
            self.n_base,
            self.queries.len(),
            self.dim,
            self.metric,
            self.k
        )?;
        let depths: Vec<String> = RESCORE_DEPTHS
            .iter()
            .map(|r| format!("top{}@{r}", self.k))
            .collect();
        let names: Vec<String> = self
            .results
            .iter()
            .map(|r| match &r.fitted {
                Some(f) => format!("{} ({f})", r.codec),
                None => r.codec.clone(),
            })
            .collect();
        let w = names.iter().map(String::len).max().unwrap_or(0).max(22);
        writeln!(
            out,
            "{:<w$} {:>9} {:>7} {:>10} {:>11} {:>11} {:>12} {:>8} {:>10}",
            "codec",
            "bytes/vec",
            "ratio",
            format!("recall@{}", self.k),
            depths[0],
            depths[1],
            depths[2],
            "fit s",
            "scan q/s"
        )?;
        for (r, name) in self.results.iter().zip(&names) {
            let c: Vec<String> = r
                .candidate_recall
                .iter()
                .map(|(_, v)| format!("{v:.4}"))
                .collect();
            writeln!(
                out,
                "{:<w$} {:>9} {:>6.1}x {:>10.4} {:>11} {:>11} {:>12} {:>8.2} {:>10.0}",
                name,
                r.bytes_per_vector,
                r.compression,
                r.recall,
                c[0],
                c[1],
                c[2],
                r.fit_s,
                r.scan_qps
            )?;
        }
        writeln!(
            out,
            "\ntop{k}@R: fraction of the true top-{k} inside the codec's top-R candidates (rescoring R recovers them)",
            k = self.k
        )
    }
}

/// Up to `max` base rows picked by a seeded shuffle (all rows when there are fewer).
fn fit_sample(base: &Vectors, max: usize) -> Vec<f32> {
    let n = base.len();
    if n <= max {
        return base.data.clone();
    }
    let mut idx: Vec<usize> = (0..n).collect();
    // A fixed seed keeps the sample, and so the fitted codecs, reproducible.
    octet_quant::eval::seeded_shuffle(&mut idx, 0x9E37_79B9_7F4A_7C15);
    idx.truncate(max.max(1));
    idx.sort_unstable();
    idx.iter()
        .flat_map(|&i| base.row(i).iter().copied())
        .collect()
}
