//! What `stack` and `palette` share: read the model, pick the linears, calibrate,
//! store the resident tensors, and write the finished file atomically.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use octet_quant::checkpoint::{BlockOrdering, CheckpointWriter, Manifest};
use octet_tools::model::bert::{self, BertForward};
use octet_tools::model::calib::{self, CalibShape};
use octet_tools::model::llama::{InputNorms, LlamaForward};
use octet_tools::model::{Architecture, Model, NamedTensor};
use serde::Serialize;

use super::{CalibArgs, InputArgs, bar};

/// A checkpoint read, with its linears chosen and (for llama and BERT) calibrated.
#[derive(Debug)]
pub struct Prepared {
    /// The model.
    pub model: Model,
    /// Names of the tensors to compress.
    pub linears: Vec<String>,
    /// Calibration, when the architecture could be run.
    pub calib: Option<Calibrated>,
    /// How scales were obtained, in words (printed and stored in the file).
    pub scales_note: String,
    /// Seconds spent reading the model.
    pub read_s: f64,
    /// Seconds spent calibrating.
    pub calib_s: f64,
}

/// The outcome of running the model over calibration text.
#[derive(Debug)]
pub struct Calibrated {
    /// The forward pass, kept for perplexity-based ordering (llama only: a BERT
    /// model is calibrated, not scored by perplexity).
    pub forward: Option<LlamaForward>,
    /// A BERT model's encoder, kept for the embedding probes.
    pub bert: Option<BertForward>,
    /// The token sequences used.
    pub seqs: Vec<Vec<u32>>,
    /// Per-input-channel statistics.
    pub stats: InputNorms,
}

/// Reads `input`, selects its linears and calibrates when possible; `gram` also
/// accumulates each linear input's Gram matrix (for GPTQ palettes).
pub fn prepare(
    input: &InputArgs,
    calib_args: &CalibArgs,
    quiet: bool,
    gram: bool,
) -> Result<Prepared> {
    let t0 = Instant::now();
    let model = super::read_model(&input.input)?;
    let read_s = t0.elapsed().as_secs_f64();
    let linears = input.selection()?.linear_names(&model);
    if linears.is_empty() {
        bail!(
            "{}: no tensor selected for compression (2-D, not an embedding, head or norm); adjust --include/--exclude",
            input.input.display()
        );
    }
    let t1 = Instant::now();
    let (calib, scales_note) = match &model.arch {
        _ if calib_args.no_calib => (None, "uniform (--no-calib)".to_owned()),
        Architecture::Other { name } if name == "bert" => {
            if gram {
                bail!(
                    "{}: --gptq fits palettes to a llama model's calibration activations; this is a BERT model",
                    input.input.display()
                );
            }
            let cfg = bert::config_of(&model)?;
            let tok = calib::load_tokenizer(&model, calib_args.tokenizer.as_deref())?;
            let text = calib::read_text(calib_args.calib.as_deref())?;
            let tensors = calib::to_candle(&model, &Device::Cpu)?;
            let bert_forward = BertForward::new(&cfg, &tensors)?;
            drop(tensors);
            let shape: CalibShape = calib_args.shape();
            let pb = if quiet {
                indicatif::ProgressBar::hidden()
            } else {
                bar(shape.max_samples as u64, "calibrating")
            };
            let (stats, seqs) = bert::calibrate(&cfg, &bert_forward, &tok, &text, shape, |d, _| {
                pb.set_position(d as u64)
            })?;
            pb.finish_and_clear();
            let note = calib_note(&stats, &seqs, calib_args);
            (
                Some(Calibrated {
                    forward: None,
                    bert: Some(bert_forward),
                    seqs,
                    stats,
                }),
                note,
            )
        }
        Architecture::Other { name } => (
            None,
            format!(
                "uniform: architecture `{name}` cannot be run by octet (llama family only), so no activation statistics"
            ),
        ),
        Architecture::Llama(_) if model.tokenizer.is_none() && calib_args.tokenizer.is_none() && calib_args.calib.is_none() => (
            None,
            "uniform: no tokenizer found beside the model (pass --tokenizer tokenizer.json for activation-aware scales)".to_owned(),
        ),
        Architecture::Llama(cfg) => {
            let tok = calib::load_tokenizer(&model, calib_args.tokenizer.as_deref())?;
            let text = calib::read_text(calib_args.calib.as_deref())?;
            let shape: CalibShape = calib_args.shape();
            let seqs = calib::sequences(&tok, &text, shape, cfg.vocab_size)?;
            let tensors = calib::to_candle(&model, &Device::Cpu)?;
            let forward = LlamaForward::new(cfg, &tensors)?;
            drop(tensors);
            let pb = if quiet {
                indicatif::ProgressBar::hidden()
            } else {
                bar(seqs.len() as u64, "calibrating")
            };
            let stats =
                calib::collect_input_norms(cfg, &forward, &seqs, gram, |d, _| {
                    pb.set_position(d as u64)
                })?;
            pb.finish_and_clear();
            let note = calib_note(&stats, &seqs, calib_args);
            (
                Some(Calibrated {
                    forward: Some(forward),
                    bert: None,
                    seqs,
                    stats,
                }),
                note,
            )
        }
    };
    if gram && calib.is_none() {
        bail!(
            "{}: --gptq fits palettes to calibration activations, and this model was not calibrated ({scales_note})",
            input.input.display()
        );
    }
    Ok(Prepared {
        model,
        linears,
        calib,
        scales_note,
        read_s,
        calib_s: t1.elapsed().as_secs_f64(),
    })
}

/// How a calibration went, in words.
fn calib_note(stats: &InputNorms, seqs: &[Vec<u32>], calib_args: &CalibArgs) -> String {
    let tokens: usize = seqs.iter().map(Vec::len).sum();
    let source = calib_args
        .calib
        .as_ref()
        .map_or("built-in sample".to_owned(), |p| p.display().to_string());
    format!(
        "activation-aware: {} sequences, {tokens} tokens of {source}",
        stats.samples()
    )
}

impl Prepared {
    /// The tensors that stay resident (everything but the linears).
    pub fn resident(&self) -> impl Iterator<Item = &NamedTensor> {
        self.model
            .tensors
            .values()
            .filter(|t| !self.linears.contains(&t.name))
    }

    /// Adds every resident tensor: f16, or f32 when a value overflows f16.
    /// Returns the names stored as f32.
    pub fn add_resident<S>(&self, w: &mut CheckpointWriter<S>) -> Result<Vec<String>>
    where
        S: std::io::Read + std::io::Write + std::io::Seek,
    {
        let mut as_f32 = Vec::new();
        for t in self.resident() {
            if t.data.iter().all(|x| x.abs() <= f32::from(half::f16::MAX)) {
                w.add_f16(&t.name, &t.shape, &t.data)?;
            } else {
                w.add_f32(&t.name, &t.shape, &t.data)?;
                as_f32.push(t.name.clone());
            }
        }
        Ok(as_f32)
    }

    /// Metadata every octet checkpoint carries.
    pub fn add_metadata<S>(&self, w: &mut CheckpointWriter<S>, method: &str) -> Result<()>
    where
        S: std::io::Read + std::io::Write + std::io::Seek,
    {
        w.add_metadata("octet.method", method)?;
        w.add_metadata("octet.tool", concat!("octet ", env!("CARGO_PKG_VERSION")))?;
        w.add_metadata("octet.scales", &self.scales_note)?;
        w.add_metadata("model.architecture", self.model.arch.name())?;
        if let Some(name) = self.model.source.file_name() {
            w.add_metadata("model.source", &name.to_string_lossy())?;
        }
        if let Architecture::Llama(cfg) = &self.model.arch {
            w.add_metadata("model.config", &serde_json::to_string(cfg)?)?;
        }
        Ok(())
    }
}

/// A spill file next to `output` (same disk, removed when dropped).
pub fn spill_for(output: &Path) -> Result<File> {
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    tempfile::tempfile_in(dir)
        .with_context(|| format!("creating a spill file in {}", dir.display()))
}

/// Finishes `w` into `output` through a temporary file renamed at the end, so a
/// failed or interrupted run never leaves a half-written checkpoint under that name.
pub fn finish_to(
    w: CheckpointWriter<File>,
    ordering: &BlockOrdering,
    output: &Path,
) -> Result<Manifest> {
    let tmp: PathBuf = {
        let mut s = output.as_os_str().to_owned();
        s.push(".partial");
        s.into()
    };
    let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut out = BufWriter::new(file);
    let manifest = w
        .finish(ordering, &mut out)
        .with_context(|| format!("writing {}", tmp.display()))?;
    out.flush()
        .with_context(|| format!("writing {}", tmp.display()))?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, output)
        .with_context(|| format!("renaming {} to {}", tmp.display(), output.display()))?;
    Ok(manifest)
}

/// A summary line shared by the JSON reports of `stack` and `palette`.
#[derive(Debug, Serialize)]
pub struct WriteSummary {
    /// The output file.
    pub output: PathBuf,
    /// Its size.
    pub file_bytes: u64,
    /// Tensors compressed.
    pub compressed_tensors: usize,
    /// Tensors stored resident.
    pub resident_tensors: usize,
    /// Resident tensors kept as f32 because they overflow f16.
    pub resident_f32: Vec<String>,
    /// How scales / importances were obtained.
    pub scales: String,
    /// Seconds reading the model.
    pub read_s: f64,
    /// Seconds calibrating.
    pub calib_s: f64,
    /// Seconds compressing.
    pub compress_s: f64,
    /// Seconds ordering blocks (BitStack) and writing.
    pub write_s: f64,
}
