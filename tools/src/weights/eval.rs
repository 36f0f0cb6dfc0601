//! `octet weights eval`: perplexity of a model on a text, for a `.octet` checkpoint
//! at a budget or for the reference checkpoint it came from (GGUF or a Hugging Face
//! folder), with sliding windows ([`octet_tools::model::ppl`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use octet_quant::candle_load::MappedCheckpoint;
use octet_tools::model::calib;
use octet_tools::model::llama::LlamaForward;
use octet_tools::model::ppl::{Perplexity, perplexity, tokenize_text};
use octet_tools::model::{Architecture, LlamaConfig};
use serde::Serialize;
use tokenizers::Tokenizer;

use super::export::ExportDtype;
use super::inspect::budget_row;
use super::{BudgetArgs, ReserveArgs, bar};

/// Arguments of `octet weights eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The model: a .octet file (loaded at the budget below), a .gguf file or a
    /// Hugging Face folder (the reference, dequantised to f32).
    #[arg(long, short = 'm', value_name = "MODEL")]
    pub model: PathBuf,
    #[command(flatten)]
    pub budget: BudgetArgs,
    /// The text to measure (UTF-8).
    #[arg(long, value_name = "FILE")]
    pub text: PathBuf,
    #[command(flatten)]
    pub window: WindowArgs,
    /// Tokenizer: a tokenizer.json or a .gguf whose metadata holds the vocabulary.
    /// Required for a .octet file (it carries no tokenizer); otherwise the model's own.
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "OUT")]
    pub json: Option<PathBuf>,
    /// Element type of the linear weights, the embeddings and the LM head: a
    /// `.octet` file is loaded straight into it, and the matmuls run in it (norms
    /// and activations between the linears stay f32). f16 and bf16 halve the
    /// weights' memory and load time.
    #[arg(long, value_enum, default_value_t = ExportDtype::F32)]
    pub dtype: ExportDtype,
}

/// Context, stride and length of a perplexity run.
#[derive(Debug, Clone, Copy, Args)]
pub struct WindowArgs {
    /// Tokens per window (the context length).
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Tokens the window advances by; only tokens not scored by an earlier window
    /// count. Defaults to --ctx (non-overlapping windows).
    #[arg(long)]
    pub stride: Option<usize>,
    /// Use only the first N tokens of the text.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<usize>,
}

impl WindowArgs {
    /// The stride in effect.
    pub fn stride(&self) -> usize {
        self.stride.unwrap_or(self.ctx)
    }
}

/// A model ready to evaluate.
pub struct EvalModel {
    /// Hyper-parameters.
    pub cfg: LlamaConfig,
    /// Every tensor, Hugging Face names, on the CPU (f32, or the `.octet` file's
    /// load dtype).
    pub tensors: HashMap<String, Tensor>,
    /// Bits per weight of the linear layers, as stored (None when unknown).
    pub linear_bits: Option<f64>,
    /// Bits per weight over every tensor, as stored (None when unknown).
    pub all_bits: Option<f64>,
    /// The model's own tokenizer, when it carries one.
    pub tokenizer: Option<Tokenizer>,
    /// What was loaded, in words.
    pub what: String,
}

/// Loads `path`: a `.octet` file at `budget`, its tensors rebuilt straight into
/// `dtype`, or a reference checkpoint (read as f32 whatever `dtype`).
pub fn load(path: &Path, budget: &BudgetArgs, dtype: DType) -> Result<EvalModel> {
    let is_octet = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("octet"));
    if is_octet {
        let ckpt = MappedCheckpoint::open(path)?;
        let reader = ckpt
            .reader()
            .with_context(|| format!("reading {}", path.display()))?;
        let limit = budget.limit(ReserveArgs { reserve: 10.0 }, reader.manifest())?;
        let config = reader
            .manifest()
            .metadata
            .iter()
            .find(|m| m.key == "model.config")
            .map(|m| m.value.clone())
            .with_context(|| {
                format!(
                    "{}: no `model.config` metadata; perplexity needs a llama-family model",
                    path.display()
                )
            })?;
        let cfg: LlamaConfig = serde_json::from_str(&config)
            .with_context(|| format!("{}: metadata `model.config`", path.display()))?;
        let loaded = ckpt
            .load_as(limit, &Device::Cpu, dtype)
            .with_context(|| format!("loading {}", path.display()))?;
        let row = budget_row(reader.manifest(), &loaded.budget);
        Ok(EvalModel {
            cfg,
            tensors: loaded.tensors,
            linear_bits: Some(row.compressed_bits_per_weight),
            all_bits: Some(row.bits_per_weight),
            tokenizer: None,
            what: format!(
                "{} at {} blocks ({} bytes)",
                path.display(),
                row.blocks,
                row.prefix_bytes
            ),
        })
    } else {
        if budget.given() {
            bail!(
                "{}: --budget, --bits, --linear-bits, --blocks and --device-memory apply to .octet files only",
                path.display()
            );
        }
        let model = super::read_model(path)?;
        let Architecture::Llama(cfg) = &model.arch else {
            bail!(
                "{}: architecture `{}`; perplexity is computed for llama-family models only",
                path.display(),
                model.arch.name()
            );
        };
        let (linear_bits, all_bits) = if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            let (l, a) = octet_tools::model::gguf::storage_bits(path)?;
            (Some(l), Some(a))
        } else {
            (None, None)
        };
        let tokenizer = match model.tokenizer {
            Some(_) => Some(calib::load_tokenizer(&model, None)?),
            None => None,
        };
        Ok(EvalModel {
            cfg: cfg.clone(),
            tensors: calib::to_candle(&model, &Device::Cpu)?,
            linear_bits,
            all_bits,
            tokenizer,
            what: format!("{} (reference, dequantised)", path.display()),
        })
    }
}

/// What `octet weights eval` reports.
#[derive(Debug, Serialize)]
struct EvalReport {
    model: String,
    text: PathBuf,
    ctx: usize,
    stride: usize,
    #[serde(flatten)]
    ppl: Perplexity,
    linear_bits_per_weight: Option<f64>,
    bits_per_weight: Option<f64>,
    /// Element type of the linears (`--dtype`).
    dtype: &'static str,
    load_s: f64,
    eval_s: f64,
}

/// Runs `octet weights eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    let t0 = Instant::now();
    let m = load(&args.model, &args.budget, args.dtype.candle())?;
    let tok = match (&args.tokenizer, m.tokenizer) {
        (Some(p), _) => calib::tokenizer_file(p)?,
        (None, Some(t)) => t,
        (None, None) => bail!(
            "{}: no tokenizer in the model; pass --tokenizer (a tokenizer.json, or the .gguf the checkpoint came from)",
            args.model.display()
        ),
    };
    let ids = tokenize_text(&tok, &args.text, args.window.max_tokens, m.cfg.vocab_size)?;
    let forward = LlamaForward::with_linear_dtype(&m.cfg, &m.tensors, args.dtype.candle())?;
    drop(m.tensors);
    let load_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let pb = bar(0, "perplexity windows");
    let ppl = perplexity(
        &forward,
        &ids,
        args.window.ctx,
        args.window.stride(),
        |d, n| {
            pb.set_length(n as u64);
            pb.set_position(d as u64);
        },
    )?;
    pb.finish_and_clear();
    let report = EvalReport {
        model: m.what,
        text: args.text.clone(),
        ctx: args.window.ctx,
        stride: args.window.stride(),
        ppl,
        linear_bits_per_weight: m.linear_bits,
        bits_per_weight: m.all_bits,
        dtype: args.dtype.name(),
        load_s,
        eval_s: t1.elapsed().as_secs_f64(),
    };
    let bits = |b: Option<f64>| b.map_or("unknown".to_owned(), |b| format!("{b:.3}"));
    println!("model: {}", report.model);
    println!(
        "text: {} ({} tokens scored in {} windows, context {}, stride {})",
        report.text.display(),
        report.ppl.tokens,
        report.ppl.windows,
        report.ctx,
        report.stride
    );
    println!("perplexity: {:.4}", report.ppl.perplexity);
    println!(
        "bits/weight: {} over the linear layers, {} over all weights",
        bits(report.linear_bits_per_weight),
        bits(report.bits_per_weight)
    );
    println!(
        "time: load {:.1}s, evaluate {:.1}s (linears in {})",
        report.load_s, report.eval_s, report.dtype
    );
    if let Some(out) = &args.json {
        std::fs::write(out, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
