//! `octet weights`: turn an LLM checkpoint into a memory-budget-adaptive `.octet`
//! checkpoint (BitStack residual stacks or k-means palettes), look inside one, plan
//! what fits a budget, and export any budget back to dequantised safetensors.
//!
//! DESIGN.md ("LLM weights") gives the algorithms; they live in `octet-quant`
//! (`bitstack`, `palette`, `checkpoint`). Reading checkpoints, calibration, the
//! llama forward pass, perplexity and the peers are the library's
//! [`octet_tools::model`]; this module holds the verbs and their flags.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use octet_quant::checkpoint::{BudgetLimit, Manifest};
use octet_tools::model::{LinearSelection, Model, calib, gguf, hf};

pub mod eval;
pub mod export;
#[cfg(feature = "cuda")]
pub mod gpu_check;
pub mod gpu_pack;
pub mod inspect;
pub mod measure;
pub mod palette;
pub mod plan;
pub mod prepare;
pub mod probe;
pub mod retrieval;
pub mod size;
pub mod stack;
pub mod sweep;
pub mod sweep_plot;
// Used by `gpu-check --synthetic` and the repack tests.
#[cfg(any(test, feature = "cuda"))]
pub mod synthetic;

/// Arguments of `octet weights`.
#[derive(Debug, Args)]
pub struct WeightsArgs {
    #[command(subcommand)]
    command: WeightsCommand,
}

#[derive(Debug, Subcommand)]
enum WeightsCommand {
    /// Decompose every linear weight with BitStack into a budget-adaptive .octet file.
    Stack(stack::StackArgs),
    /// Cluster every linear weight into a k-means palette (eDKM style).
    Palette(palette::PaletteArgs),
    /// Show what a .octet file holds and its budget table.
    Inspect(inspect::InspectArgs),
    /// Show what a budget loads: bits per weight per layer.
    Plan(plan::PlanArgs),
    /// Write a budget of a .octet file as dequantised safetensors.
    Export(export::ExportArgs),
    /// Time loads against plain reads and measure reconstruction error per budget.
    Measure(measure::MeasureArgs),
    /// Perplexity of a model (a .octet budget or the reference) on a text.
    Eval(eval::EvalArgs),
    /// Perplexity vs bits per weight: reference, RTN, k-quants, palettes, BitStack.
    Sweep(Box<sweep::SweepArgs>),
    /// A compressed sentence-embedding model's retrieval recall and query cosine.
    Retrieval(retrieval::RetrievalArgs),
    /// Redraw a sweep's plot (and table) from its --json output.
    SweepPlot(sweep_plot::SweepPlotArgs),
    /// Re-encode resident matrices (the embedding) as palettes, keeping every BitStack block.
    Repack(gpu_pack::RepackArgs),
    /// Load budgets on the GPU and compare with the CPU rebuild (feature `cuda`).
    #[cfg(feature = "cuda")]
    GpuCheck(gpu_check::GpuCheckArgs),
}

/// Runs one `octet weights` command.
pub fn run(args: WeightsArgs) -> Result<()> {
    match args.command {
        WeightsCommand::Stack(a) => stack::run(a),
        WeightsCommand::Palette(a) => palette::run(a),
        WeightsCommand::Inspect(a) => inspect::run(a),
        WeightsCommand::Plan(a) => plan::run(a),
        WeightsCommand::Export(a) => export::run(a),
        WeightsCommand::Measure(a) => measure::run(a),
        WeightsCommand::Eval(a) => eval::run(a),
        WeightsCommand::Sweep(a) => sweep::run(*a),
        WeightsCommand::Retrieval(a) => retrieval::run(a),
        WeightsCommand::SweepPlot(a) => sweep_plot::run(a),
        WeightsCommand::Repack(a) => gpu_pack::run(a),
        #[cfg(feature = "cuda")]
        WeightsCommand::GpuCheck(a) => gpu_check::run(a),
    }
}

/// Where the model comes from and which tensors are compressed.
#[derive(Debug, Clone, Args)]
pub struct InputArgs {
    /// The model: a Hugging Face folder (config.json + *.safetensors), one
    /// .safetensors file, or a .gguf file (dequantised to f32 first).
    #[arg(long, short = 'i', value_name = "MODEL")]
    pub input: PathBuf,
    /// Compress only 2-D tensors whose name matches this regex (overrides the
    /// default, which compresses every 2-D tensor except embeddings, the LM head and norms).
    #[arg(long, value_name = "REGEX")]
    pub include: Option<String>,
    /// Never compress tensors whose name matches this regex.
    #[arg(long, value_name = "REGEX")]
    pub exclude: Option<String>,
}

impl InputArgs {
    /// The tensor selection the flags describe.
    pub fn selection(&self) -> Result<LinearSelection> {
        Ok(LinearSelection::from_patterns(
            self.include.as_deref(),
            self.exclude.as_deref(),
        )?)
    }
}

/// Calibration text and tokenizer.
#[derive(Debug, Clone, Args)]
pub struct CalibArgs {
    /// Calibration text (UTF-8). Without it a small built-in English sample is used.
    #[arg(long, value_name = "TEXT")]
    pub calib: Option<PathBuf>,
    /// tokenizer.json to use instead of the one the checkpoint carries.
    #[arg(long, value_name = "JSON")]
    pub tokenizer: Option<PathBuf>,
    /// Tokens per calibration sequence.
    #[arg(long, default_value_t = 256)]
    pub calib_seq_len: usize,
    /// The most calibration sequences.
    #[arg(long, default_value_t = 32)]
    pub calib_samples: usize,
    /// Skip calibration: uniform scales (a plain Frobenius-norm decomposition).
    #[arg(long)]
    pub no_calib: bool,
}

/// Second-order (GPTQ) palette fitting.
#[derive(Debug, Clone, Copy, Args)]
pub struct GptqArgs {
    /// Fit palettes to each layer's output on the calibration text (GPTQ error
    /// feedback with a least-squares table refit) instead of to each weight; needs
    /// calibration (llama-family models) and holds every input's Gram matrix while it
    /// runs (4 x 8 x width^2 bytes per layer).
    #[arg(long)]
    pub gptq: bool,
    /// Rounds of GPTQ pass and table refit.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub gptq_rounds: usize,
    /// Damping added to the Gram matrix's diagonal, as a fraction of its mean.
    #[arg(long, default_value_t = 0.01, value_name = "FRACTION")]
    pub gptq_damp: f64,
}

impl GptqArgs {
    /// The fitting parameters, or `None` without `--gptq`.
    pub fn config(&self) -> Option<octet_quant::palette::GptqConfig> {
        self.gptq.then_some(octet_quant::palette::GptqConfig {
            damp: self.gptq_damp,
            rounds: self.gptq_rounds,
            act_order: true,
        })
    }
}

impl CalibArgs {
    /// The sequence shape.
    pub fn shape(&self) -> calib::CalibShape {
        calib::CalibShape {
            seq_len: self.calib_seq_len,
            max_samples: self.calib_samples,
        }
    }
}

/// Which budget of a `.octet` file to use. At most one; none means the whole file.
#[derive(Debug, Clone, Args)]
#[group(multiple = false)]
pub struct BudgetArgs {
    /// The largest budget whose file prefix fits in this many bytes (300MB, 1.5GiB...).
    #[arg(long, value_name = "SIZE")]
    pub budget: Option<size::ByteSize>,
    /// Memory of the device that will hold the compressed weights: the budget is this
    /// minus --reserve (for activations and the KV cache).
    #[arg(long, value_name = "SIZE")]
    pub device_memory: Option<size::ByteSize>,
    /// The largest budget of at most this many bits per weight (over all weights,
    /// resident f16 tensors included).
    #[arg(long, value_name = "BITS")]
    pub bits: Option<f64>,
    /// The largest budget of at most this many bits per weight over the compressed
    /// tensors (the linears), as `measure --bits`, `sweep` and `retrieval --bits`
    /// count them.
    #[arg(long, value_name = "BITS")]
    pub linear_bits: Option<f64>,
    /// Exactly this many blocks of the global order.
    #[arg(long, value_name = "N")]
    pub blocks: Option<usize>,
}

/// Share of --device-memory kept free for activations and the KV cache.
#[derive(Debug, Clone, Copy, Args)]
pub struct ReserveArgs {
    /// Percent of --device-memory kept free for activations and the KV cache.
    #[arg(long, default_value_t = 10.0, value_name = "PERCENT")]
    pub reserve: f64,
}

impl BudgetArgs {
    /// Whether any budget was asked for.
    pub fn given(&self) -> bool {
        self.budget.is_some()
            || self.device_memory.is_some()
            || self.bits.is_some()
            || self.linear_bits.is_some()
            || self.blocks.is_some()
    }

    /// The loader's limit these flags describe for the file whose manifest is `m`.
    pub fn limit(&self, reserve: ReserveArgs, m: &Manifest) -> Result<BudgetLimit> {
        if let Some(b) = self.linear_bits {
            if !(b.is_finite() && b >= 0.0) {
                anyhow::bail!("--linear-bits {b}: expected a finite number of bits, 0 or more");
            }
            let budget = inspect::budget_within(m, b)?.map_err(|smallest| {
                anyhow::anyhow!(
                    "--linear-bits {b}: below the smallest budget, {smallest:.4} bits per weight over the compressed tensors"
                )
            })?;
            return Ok(BudgetLimit::Blocks(budget.n_blocks));
        }
        if let Some(b) = self.budget {
            return Ok(BudgetLimit::Bytes(b.0));
        }
        if let Some(d) = self.device_memory {
            if !(0.0..100.0).contains(&reserve.reserve) {
                anyhow::bail!(
                    "--reserve {}: expected a percentage in [0, 100)",
                    reserve.reserve
                );
            }
            let usable = d.0 as f64 * (1.0 - reserve.reserve / 100.0);
            return Ok(BudgetLimit::Bytes(usable as u64));
        }
        if let Some(b) = self.bits {
            return Ok(BudgetLimit::BitsPerWeight(b));
        }
        if let Some(n) = self.blocks {
            return Ok(BudgetLimit::Blocks(n));
        }
        Ok(BudgetLimit::Full)
    }
}

/// Reads a checkpoint by its extension: `.gguf` or safetensors.
pub fn read_model(path: &Path) -> Result<Model> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        let bar = bar(0, "dequantising GGUF tensors");
        let model = gguf::read_gguf(path, |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })?;
        bar.finish_and_clear();
        Ok(model)
    } else {
        let model = hf::read_hf(path)?;
        if !model.left_out.is_empty() {
            eprintln!(
                "note: {}: {} non-float tensor(s) left out (buffers, not weights): {}",
                path.display(),
                model.left_out.len(),
                model
                    .left_out
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(model)
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn bar(len: u64, msg: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:32} [{bar:40}] {pos}/{len} {elapsed_precise} (eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(msg);
    bar
}
