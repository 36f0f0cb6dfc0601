//! `octet weights`: turn an LLM checkpoint into a memory-budget-adaptive `.octet`
//! checkpoint (BitStack residual stacks or k-means palettes), look inside one, plan
//! what fits a budget, and export any budget back to dequantised safetensors.
//!
//! DESIGN.md ("LLM weights") gives the algorithms; they live in `octet-quant`
//! (`bitstack`, `palette`, `checkpoint`). This module reads checkpoints
//! (`hf`, `gguf`), runs calibration (`llama`, `calib`) and drives the commands.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

pub mod calib;
pub mod gguf;
pub mod hf;
pub mod llama;
pub mod model;
pub mod size;

use model::{LinearSelection, Model};

/// Arguments of `octet weights`.
#[derive(Debug, Args)]
pub struct WeightsArgs {
    #[command(subcommand)]
    command: WeightsCommand,
}

#[derive(Debug, Subcommand)]
enum WeightsCommand {}

/// Runs one `octet weights` command.
pub fn run(args: WeightsArgs) -> Result<()> {
    match args.command {}
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
        LinearSelection::from_patterns(self.include.as_deref(), self.exclude.as_deref())
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

impl CalibArgs {
    /// The sequence shape.
    pub fn shape(&self) -> calib::CalibShape {
        calib::CalibShape {
            seq_len: self.calib_seq_len,
            max_samples: self.calib_samples,
        }
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
        hf::read_hf(path)
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
