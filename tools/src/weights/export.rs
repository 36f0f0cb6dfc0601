//! `octet weights export FILE --budget ... --to out.safetensors`: a budget of a
//! `.octet` checkpoint, rebuilt and written as plain (dequantised) safetensors that
//! any tool can load.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use half::{bf16, f16};
use octet_quant::checkpoint::{Budget, MappedCheckpoint};
use rayon::prelude::*;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde::Serialize;

use super::size::human_bytes;
use super::{BudgetArgs, ReserveArgs, bar};

/// Arguments of `octet weights export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The .octet file.
    file: PathBuf,
    #[command(flatten)]
    budget: BudgetArgs,
    #[command(flatten)]
    reserve: ReserveArgs,
    /// The safetensors file to write.
    #[arg(long, value_name = "OUT.safetensors")]
    to: PathBuf,
    /// Element type of the written tensors.
    #[arg(long, value_enum, default_value_t = ExportDtype::F16)]
    dtype: ExportDtype,
    /// Also write the model's config.json next to the output (llama checkpoints), so
    /// the folder loads as a Hugging Face model.
    #[arg(long)]
    write_config: bool,
    /// Print a JSON report on stdout.
    #[arg(long)]
    json: bool,
}

/// `--dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportDtype {
    /// 32-bit floats: exactly what the loader rebuilds.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
}

impl ExportDtype {
    /// The candle dtype of the same name.
    pub fn candle(self) -> candle_core::DType {
        match self {
            ExportDtype::F32 => candle_core::DType::F32,
            ExportDtype::F16 => candle_core::DType::F16,
            ExportDtype::Bf16 => candle_core::DType::BF16,
        }
    }

    /// The name the command line takes.
    pub fn name(self) -> &'static str {
        match self {
            ExportDtype::F32 => "f32",
            ExportDtype::F16 => "f16",
            ExportDtype::Bf16 => "bf16",
        }
    }
}

#[derive(Debug, Serialize)]
struct ExportReport {
    file: PathBuf,
    to: PathBuf,
    blocks: usize,
    prefix_bytes: u64,
    bits_per_weight: f64,
    tensors: usize,
    output_bytes: u64,
    config_json: Option<PathBuf>,
}

fn encode(name: &str, v: &[f32], dtype: ExportDtype) -> Result<Vec<u8>> {
    Ok(match dtype {
        ExportDtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ExportDtype::F16 => {
            if let Some(x) = v.iter().find(|x| !f16::from_f32(**x).is_finite()) {
                bail!("tensor `{name}`: value {x} overflows f16; export with --dtype f32 or bf16");
            }
            v.iter()
                .flat_map(|x| f16::from_f32(*x).to_le_bytes())
                .collect()
        }
        ExportDtype::Bf16 => v
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect(),
    })
}

/// Runs `octet weights export`.
pub fn run(args: ExportArgs) -> Result<()> {
    let ckpt = MappedCheckpoint::open(&args.file)?;
    let reader = ckpt
        .reader()
        .with_context(|| format!("reading {}", args.file.display()))?;
    let limit = args.budget.limit(args.reserve, reader.manifest())?;
    let budget =
        Budget::fit(reader.manifest(), limit).with_context(|| format!("planning {limit:?}"))?;
    // Rebuild from the budget's prefix only, as the loader does.
    let reader = ckpt.prefix_reader(&budget)?;
    let m = reader.manifest();
    let pb = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        bar(m.tensors.len() as u64, "rebuilding")
    };
    let (dtype, st_dtype) = match args.dtype {
        ExportDtype::F32 => (ExportDtype::F32, Dtype::F32),
        ExportDtype::F16 => (ExportDtype::F16, Dtype::F16),
        ExportDtype::Bf16 => (ExportDtype::Bf16, Dtype::BF16),
    };
    let data: Vec<Vec<u8>> = (0..m.tensors.len())
        .into_par_iter()
        .map(|t| {
            let name = &m.tensors[t].name;
            let v = reader
                .rebuild_index(t, &budget)
                .with_context(|| format!("rebuilding `{name}`"))?;
            pb.inc(1);
            encode(name, &v, dtype)
        })
        .collect::<Result<_>>()?;
    pb.finish_and_clear();
    let views = m
        .tensors
        .iter()
        .zip(&data)
        .map(|(e, bytes)| {
            let shape: Vec<usize> = e.shape.iter().map(|&d| d as usize).collect();
            let view = TensorView::new(st_dtype, shape, bytes)
                .with_context(|| format!("tensor `{}`", e.name))?;
            Ok((e.name.clone(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut meta: HashMap<String, String> = m
        .metadata
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    meta.insert("octet.budget_blocks".into(), budget.n_blocks.to_string());
    meta.insert(
        "octet.budget_prefix_bytes".into(),
        budget.prefix_len.to_string(),
    );
    meta.insert(
        "octet.bits_per_weight".into(),
        format!("{:.4}", budget.bits_per_weight),
    );
    // safetensors' own convention for PyTorch-free loaders.
    meta.insert("format".into(), "pt".into());
    safetensors::serialize_to_file(views, Some(meta), &args.to)
        .with_context(|| format!("writing {}", args.to.display()))?;
    let config_json = match (
        args.write_config,
        m.metadata.iter().find(|e| e.key == "model.config"),
    ) {
        (false, _) => None,
        (true, None) => bail!("{} carries no model config to write", args.file.display()),
        (true, Some(cfg)) => {
            // Hugging Face loaders also want the model type.
            let mut v: serde_json::Value =
                serde_json::from_str(&cfg.value).context("model.config metadata is not JSON")?;
            if let Some(o) = v.as_object_mut() {
                o.entry("model_type").or_insert_with(|| "llama".into());
                o.entry("architectures")
                    .or_insert_with(|| serde_json::json!(["LlamaForCausalLM"]));
            }
            let p = args.to.with_file_name("config.json");
            std::fs::write(&p, serde_json::to_string_pretty(&v)?)
                .with_context(|| format!("writing {}", p.display()))?;
            Some(p)
        }
    };
    let report = ExportReport {
        file: args.file.clone(),
        to: args.to.clone(),
        blocks: budget.n_blocks,
        prefix_bytes: budget.prefix_len,
        bits_per_weight: budget.bits_per_weight,
        tensors: m.tensors.len(),
        output_bytes: std::fs::metadata(&args.to).map(|md| md.len()).unwrap_or(0),
        config_json,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "wrote {} ({}, {} tensors) from {} blocks ({} prefix, {:.3} bits/weight){}",
            report.to.display(),
            human_bytes(report.output_bytes),
            report.tensors,
            report.blocks,
            human_bytes(report.prefix_bytes),
            report.bits_per_weight,
            report
                .config_json
                .as_ref()
                .map_or(String::new(), |p| format!(" and {}", p.display()))
        );
    }
    Ok(())
}
