//! `octet weights retrieval`: a compressed sentence-embedding model judged as a RAG
//! service sees it. The queries are embedded by the model with its linears taken
//! from each `.octet` budget (or from a k-quant of them), searched exactly against
//! base vectors the unmodified model embedded, and scored by recall@k against the
//! exact neighbours, and by the cosine of each query embedding to the unmodified
//! model's. This is the quality test of an unquantised model (all-MiniLM-L6-v2,
//! fp32) that perplexity gives for a language model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use clap::Args;
use octet_quant::Metric;
use octet_quant::checkpoint::Reader;
use octet_quant::eval::{exact_top_k, recall_at};
use octet_quant::kernels::dot_f32;
use octet_quant::vecio::{Vectors, read_fvecs, read_ivecs};
use octet_tools::model::bert::{self, BertForward};
use octet_tools::model::calib::{self, CalibShape};
use octet_tools::model::llama::InputNorms;
use octet_tools::model::peers::KQuant;
use octet_tools::model::{LinearSelection, Model};
use serde::Serialize;
use tokenizers::Tokenizer;

use super::inspect::{budget_row, budgets_within, is_compressed};
use super::read_model;
use super::sweep::KQuantArg;

/// Arguments of `octet weights retrieval`.
#[derive(Debug, Args)]
pub struct RetrievalArgs {
    /// The embedding model: a Hugging Face BERT folder (config.json,
    /// model.safetensors, tokenizer.json), e.g. all-MiniLM-L6-v2 as
    /// `scripts/fetch_models.sh` unpacks it.
    #[arg(long, short = 'i', value_name = "MODEL")]
    pub input: PathBuf,
    /// Query texts: one JSON object with a `text` field per line
    /// (`queries.jsonl` of `../shared/data`).
    #[arg(long, value_name = "JSONL")]
    pub queries: PathBuf,
    /// Base vectors the unmodified model embedded (.fvecs), searched exactly.
    #[arg(long, value_name = "FVECS")]
    pub base: PathBuf,
    /// Exact neighbours of the queries among the base vectors (.ivecs, best first).
    #[arg(long, value_name = "IVECS")]
    pub gt: PathBuf,
    /// The queries' own vectors from the unmodified model (.fvecs), to check that
    /// this forward pass reproduces them.
    #[arg(long, value_name = "FVECS")]
    pub query_vectors: Option<PathBuf>,
    /// `.octet` files made from --input (repeatable), each measured at --bits.
    #[arg(long = "file", value_name = "FILE.octet")]
    pub files: Vec<PathBuf>,
    /// Budgets in bits per weight over the compressed tensors: the largest at or
    /// below each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "3,4,5,6")]
    pub bits: Vec<f64>,
    /// k-quants of the same linears as peers (comma-separated; with --calib they
    /// get its importance matrix, as `octet weights palette --calib` palettes do).
    #[arg(long, value_delimiter = ',')]
    pub kquants: Vec<KQuantArg>,
    /// Calibration text for the k-quants' importance matrix (the mean square of
    /// every linear's input columns over the text, run through this model's BERT
    /// encoder); without it they get none.
    #[arg(long, value_name = "TEXT")]
    pub calib: Option<PathBuf>,
    /// With --calib: the most calibration sequences.
    #[arg(long, default_value_t = 64, requires = "calib")]
    pub calib_samples: usize,
    /// With --calib: tokens per calibration sequence, [CLS] and [SEP] included.
    #[arg(long, default_value_t = 256, requires = "calib")]
    pub calib_seq_len: usize,
    /// Neighbours per query whose recall is measured.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Use at most this many queries (the first ones).
    #[arg(long)]
    pub max_queries: Option<usize>,
    /// Tokens per query at most, [CLS] and [SEP] included (sentence-transformers'
    /// all-MiniLM-L6-v2 embeds up to 256).
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Write the rows as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// One measured model.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub method: String,
    /// Over the compressed tensors; 32 for the reference.
    pub bits_per_weight: f64,
    pub recall: f64,
    /// Mean and least cosine of the query embeddings to the reference model's.
    pub cosine_mean: f64,
    pub cosine_min: f64,
}

/// The model, its tokenizer and the queries, read once.
struct Bench {
    model: Model,
    config: BertConfig,
    tokenizer: Tokenizer,
    texts: Vec<String>,
    base: Vectors,
    truth: Vec<Vec<u32>>,
    k: usize,
    max_tokens: usize,
}

fn read_texts(path: &Path, max: Option<usize>) -> Result<Vec<String>> {
    let body =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in body.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))?;
        let Some(text) = v.get("text").and_then(|t| t.as_str()) else {
            bail!(
                "{} line {}: expected a string field `text`",
                path.display(),
                i + 1
            );
        };
        out.push(text.to_owned());
        if max.is_some_and(|m| out.len() >= m) {
            break;
        }
    }
    if out.is_empty() {
        bail!("{}: no queries", path.display());
    }
    Ok(out)
}

impl Bench {
    fn new(args: &RetrievalArgs) -> Result<Bench> {
        let dir = if args.input.is_dir() {
            args.input.clone()
        } else {
            args.input
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
        };
        let config_path = dir.join("config.json");
        let config: BertConfig = serde_json::from_str(
            &std::fs::read_to_string(&config_path)
                .with_context(|| format!("reading {}", config_path.display()))?,
        )
        .with_context(|| format!("{}: not a BERT config", config_path.display()))?;
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", tok_path.display()))?;
        // all-MiniLM-L6-v2's tokenizer.json pads every input to 128 tokens and
        // truncates there; sentence-transformers embeds the tokens alone, up to
        // its own 256 (`--max-tokens`).
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| anyhow::anyhow!("{}: {e}", tok_path.display()))?;
        let model = read_model(&args.input)?;
        let texts = read_texts(&args.queries, args.max_queries)?;
        let base = read_fvecs(&args.base, None)?;
        let (dim, ids) = read_ivecs(&args.gt)?;
        if args.k == 0 || args.k > dim {
            bail!(
                "--k {}: expected 1..={dim} (the neighbours per query in {})",
                args.k,
                args.gt.display()
            );
        }
        let truth: Vec<Vec<u32>> = ids
            .chunks_exact(dim)
            .take(texts.len())
            .map(|r| r[..args.k].iter().map(|&i| i as u32).collect())
            .collect();
        if truth.len() < texts.len() {
            bail!(
                "{}: {} rows of neighbours for {} queries",
                args.gt.display(),
                truth.len(),
                texts.len()
            );
        }
        if truth.iter().flatten().any(|&i| i as usize >= base.len()) {
            bail!(
                "{}: a neighbour id past the {} base vectors",
                args.gt.display(),
                base.len()
            );
        }
        if args.max_tokens < 2 {
            bail!(
                "--max-tokens {}: expected at least 2 ([CLS] and [SEP])",
                args.max_tokens
            );
        }
        Ok(Bench {
            model,
            config,
            tokenizer,
            texts,
            base,
            truth,
            k: args.k,
            max_tokens: args.max_tokens,
        })
    }

    /// Every query's unit-length embedding, mean-pooled over its tokens (what
    /// sentence-transformers does for all-MiniLM-L6-v2), with the tensors of
    /// `replaced` in place of the model's.
    fn embed(&self, replaced: &HashMap<String, Vec<f32>>) -> Result<Vec<Vec<f32>>> {
        let dev = Device::Cpu;
        let mut tensors = HashMap::new();
        for (name, t) in &self.model.tensors {
            let data = replaced.get(name).unwrap_or(&t.data);
            tensors.insert(
                name.clone(),
                Tensor::from_slice(data, t.shape.as_slice(), &dev)?,
            );
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
        let bert = BertModel::load(vb, &self.config).context("loading BERT from the tensors")?;
        let mut out = Vec::with_capacity(self.texts.len());
        for text in &self.texts {
            let enc = self
                .tokenizer
                .encode(text.as_str(), true)
                .map_err(|e| anyhow::anyhow!("tokenizing a query: {e}"))?;
            let mut ids = enc.get_ids().to_vec();
            if ids.len() > self.max_tokens {
                let last = ids[ids.len() - 1];
                ids.truncate(self.max_tokens - 1);
                ids.push(last);
            }
            let input = Tensor::new(ids.as_slice(), &dev)?.unsqueeze(0)?;
            let types = input.zeros_like()?;
            let mask = input.ones_like()?;
            let hidden = bert.forward(&input, &types, Some(&mask))?;
            let mut v: Vec<f32> = hidden.mean(1)?.squeeze(0)?.to_vec1()?;
            let norm = dot_f32(&v, &v).sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
            out.push(v);
        }
        Ok(out)
    }

    /// Every linear input's statistics over the calibration text at `path`, run
    /// through [`BertForward`] (the importance matrix of the k-quants).
    fn calibrate(&self, path: &Path, samples: usize, seq_len: usize) -> Result<InputNorms> {
        let text = calib::read_text(Some(path))?;
        let tensors = calib::to_candle(&self.model, &Device::Cpu)?;
        let forward = BertForward::new(&self.config, &tensors)?;
        drop(tensors);
        let shape = CalibShape {
            seq_len,
            max_samples: samples,
        };
        let (stats, seqs) = bert::calibrate(
            &self.config,
            &forward,
            &self.tokenizer,
            &text,
            shape,
            |_, _| {},
        )?;
        let tokens: usize = seqs.iter().map(Vec::len).sum();
        println!(
            "importance matrix: {} sequences, {tokens} tokens of {}",
            stats.samples(),
            path.display()
        );
        Ok(stats)
    }

    /// recall@k of `queries` searched exactly over the base vectors.
    fn recall(&self, queries: &[Vec<f32>]) -> Result<f64> {
        let dim = self.base.dim;
        if let Some(q) = queries.iter().find(|q| q.len() != dim) {
            bail!(
                "the model embeds {} dimensions, the base vectors have {dim}",
                q.len()
            );
        }
        let flat: Vec<f32> = queries.concat();
        let found = exact_top_k(&self.base.data, &flat, dim, Metric::Dot, self.k);
        Ok(recall_at(&found, &self.truth, self.k))
    }

    fn row(
        &self,
        method: String,
        bits: f64,
        reference: &[Vec<f32>],
        replaced: &HashMap<String, Vec<f32>>,
    ) -> Result<Row> {
        let emb = self.embed(replaced)?;
        let cos: Vec<f64> = emb
            .iter()
            .zip(reference)
            .map(|(a, b)| f64::from(dot_f32(a, b)))
            .collect();
        let row = Row {
            method,
            bits_per_weight: bits,
            recall: self.recall(&emb)?,
            cosine_mean: cos.iter().sum::<f64>() / cos.len() as f64,
            cosine_min: cos.iter().copied().fold(f64::INFINITY, f64::min),
        };
        println!(
            "{:<34} {:>8.3} {:>10.4} {:>12.5} {:>11.5}",
            row.method, row.bits_per_weight, row.recall, row.cosine_mean, row.cosine_min
        );
        Ok(row)
    }
}

/// Runs `octet weights retrieval`.
pub fn run(args: RetrievalArgs) -> Result<()> {
    let bench = Bench::new(&args)?;
    let none = HashMap::new();
    let reference = bench.embed(&none)?;
    if let Some(path) = &args.query_vectors {
        let given = read_fvecs(path, Some(reference[0].len()))?;
        if given.len() < reference.len() {
            bail!(
                "{}: {} vectors for {} queries",
                path.display(),
                given.len(),
                reference.len()
            );
        }
        let mean = reference
            .iter()
            .zip(given.rows())
            .map(|(a, b)| f64::from(dot_f32(a, b)))
            .sum::<f64>()
            / reference.len() as f64;
        println!(
            "this forward pass against {}: mean cosine {mean:.6} over {} queries",
            path.display(),
            reference.len()
        );
    }
    println!(
        "{:<34} {:>8} {:>10} {:>12} {:>11}",
        "method",
        "bits/w",
        format!("recall@{}", args.k),
        "cos mean",
        "cos min"
    );
    let mut rows = vec![bench.row("reference (fp32)".into(), 32.0, &reference, &none)?];
    let stats = match &args.calib {
        Some(path) => Some(bench.calibrate(path, args.calib_samples, args.calib_seq_len)?),
        None => None,
    };
    for &kq in &args.kquants {
        let kq = KQuant::from(kq);
        let selection = LinearSelection::from_patterns(None, None)?;
        let mut replaced = HashMap::new();
        for t in bench
            .model
            .tensors
            .values()
            .filter(|t| selection.is_linear(t))
        {
            let (rows_, cols) = (t.shape[0], t.shape[1]);
            let imp = stats.as_ref().and_then(|s| s.mean_square(&t.name));
            replaced.insert(
                t.name.clone(),
                kq.apply(&t.data, rows_, cols, imp.as_deref())?,
            );
        }
        let label = if stats.is_some() {
            format!("{} + imatrix", kq.name())
        } else {
            kq.name().to_owned()
        };
        rows.push(bench.row(label, kq.bits_per_weight(), &reference, &replaced)?);
    }
    for path in &args.files {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let reader = Reader::new(&bytes)?;
        let m = reader.manifest();
        let label = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for budget in budgets_within(m, &args.bits, &label)? {
            let bits = budget_row(m, &budget).compressed_bits_per_weight;
            let mut replaced = HashMap::new();
            for t in (0..m.tensors.len()).filter(|&t| is_compressed(m, t)) {
                let name = &m.tensors[t].name;
                if !bench.model.tensors.contains_key(name) {
                    bail!(
                        "{}: tensor `{name}` is not in {}",
                        path.display(),
                        args.input.display()
                    );
                }
                replaced.insert(name.clone(), reader.rebuild_tensor(name, &budget)?);
            }
            rows.push(bench.row(
                format!("{label} {} steps", budget.n_blocks),
                bits,
                &reference,
                &replaced,
            )?);
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&rows)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::read_texts;

    #[test]
    fn query_files_are_read_or_named_with_their_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q.jsonl");
        let write = |body: &str| std::fs::write(&path, body).expect("write");
        write("{\"id\": 0, \"text\": \"one\"}\n\n{\"text\": \"two\"}\n{\"text\": \"three\"}\n");
        assert_eq!(
            read_texts(&path, None).expect("read"),
            ["one", "two", "three"]
        );
        assert_eq!(read_texts(&path, Some(2)).expect("read"), ["one", "two"]);
        write("{\"text\": \"one\"}\nnot json\n");
        let err = format!("{:#}", read_texts(&path, None).expect_err("bad line"));
        assert!(err.contains("q.jsonl line 2: not JSON"), "{err}");
        write("{\"text\": 3}\n");
        let err = format!("{:#}", read_texts(&path, None).expect_err("no text"));
        assert!(
            err.contains("line 1: expected a string field `text`"),
            "{err}"
        );
        write("\n");
        let err = format!("{:#}", read_texts(&path, None).expect_err("empty"));
        assert!(err.contains("no queries"), "{err}");
    }
}
