//! Reader for Hugging Face checkpoints: a folder with `config.json` and one or more
//! `*.safetensors` files (f32, f16 or bf16), or a single `.safetensors` file.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use super::{
    Architecture, LlamaConfig, MAX_TENSORS, Model, NamedTensor, TokenizerSource, checked_elements,
};

/// The largest `config.json` we parse (real ones are a few KiB).
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Model types the llama forward pass runs as they are (no biases, SwiGLU, RMSNorm).
const LLAMA_MODEL_TYPES: [&str; 2] = ["llama", "mistral"];

/// Reads a folder (or one `.safetensors` file and the `config.json` beside it).
pub fn read_hf(path: &Path) -> Result<Model> {
    let (dir, files) = if path.is_dir() {
        let mut files: Vec<PathBuf> = fs::read_dir(path)
            .with_context(|| format!("listing {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        (path.to_path_buf(), files)
    } else {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        (dir, vec![path.to_path_buf()])
    };
    if files.is_empty() {
        bail!("{}: no *.safetensors file found", path.display());
    }
    let arch = read_config(&dir.join("config.json"))?;
    let mut tensors = BTreeMap::new();
    for file in &files {
        read_safetensors_file(file, &mut tensors)?;
    }
    let tokenizer = Some(dir.join("tokenizer.json"))
        .filter(|p| p.is_file())
        .map(TokenizerSource::Json);
    Ok(Model {
        source: path.to_path_buf(),
        arch,
        tensors,
        tokenizer,
    })
}

/// Reads `config.json`; a missing file means an unknown architecture.
pub fn read_config(path: &Path) -> Result<Architecture> {
    let Ok(meta) = fs::metadata(path) else {
        return Ok(Architecture::Other {
            name: "unknown (no config.json)".into(),
        });
    };
    if meta.len() > MAX_CONFIG_BYTES {
        bail!(
            "{}: {} bytes, more than the {MAX_CONFIG_BYTES} a config may have",
            path.display(),
            meta.len()
        );
    }
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let model_type = value
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown")
        .to_owned();
    if !LLAMA_MODEL_TYPES.contains(&model_type.as_str()) {
        return Ok(Architecture::Other { name: model_type });
    }
    let cfg: LlamaConfig = serde_json::from_value(value)
        .with_context(|| format!("{}: not a llama config", path.display()))?;
    cfg.validate()
        .with_context(|| format!("{}: invalid llama config", path.display()))?;
    Ok(Architecture::Llama(cfg))
}

/// Decodes every tensor of one safetensors file into `out` as f32.
fn read_safetensors_file(path: &Path, out: &mut BTreeMap<String, NamedTensor>) -> Result<()> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    // `deserialize` checks the header length against its own cap and that every
    // tensor's offsets lie inside the buffer and match its shape and dtype.
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: malformed safetensors header", path.display()))?;
    if st.len() + out.len() > MAX_TENSORS {
        bail!("{}: more than {MAX_TENSORS} tensors", path.display());
    }
    for (name, view) in st.iter() {
        let shape = view.shape().to_vec();
        checked_elements(name, &shape).with_context(|| path.display().to_string())?;
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => bail!(
                "{}: tensor `{name}` has dtype {other:?}; only F32, F16 and BF16 are read",
                path.display()
            ),
        };
        if out.contains_key(name) {
            bail!("{}: tensor `{name}` appears in two files", path.display());
        }
        let t = NamedTensor::new(name.to_owned(), shape, data)
            .with_context(|| path.display().to_string())?;
        out.insert(name.to_owned(), t);
    }
    Ok(())
}
