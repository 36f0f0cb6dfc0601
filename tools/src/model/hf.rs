//! Reader for Hugging Face checkpoints: a folder with `config.json` and one or more
//! `*.safetensors` files (f32, f16 or bf16), or a single `.safetensors` file.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use super::{
    Architecture, LeftOut, LlamaConfig, MAX_TENSORS, Model, ModelError, NamedTensor, Result,
    TokenizerSource, checked_elements,
};

/// The largest `config.json` we parse (real ones are a few KiB).
pub(crate) const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Model types the llama forward pass runs as they are (no biases, SwiGLU, RMSNorm).
const LLAMA_MODEL_TYPES: [&str; 2] = ["llama", "mistral"];

/// An I/O error about `path`.
fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ModelError {
    let path = path.to_path_buf();
    move |source| ModelError::Io {
        action,
        path,
        source,
    }
}

/// Reads a folder (or one `.safetensors` file and the `config.json` beside it).
pub fn read_hf(path: &Path) -> Result<Model> {
    let (dir, files) = if path.is_dir() {
        let mut files: Vec<PathBuf> = fs::read_dir(path)
            .map_err(io("listing", path))?
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
        return Err(ModelError::NoSafetensors {
            path: path.to_path_buf(),
        });
    }
    let arch = read_config(&dir.join("config.json"))?;
    let mut tensors = BTreeMap::new();
    let mut left_out = Vec::new();
    for file in &files {
        read_safetensors_file(file, &mut tensors, &mut left_out)?;
    }
    let tokenizer = Some(dir.join("tokenizer.json"))
        .filter(|p| p.is_file())
        .map(TokenizerSource::Json);
    Ok(Model {
        source: path.to_path_buf(),
        arch,
        tensors,
        tokenizer,
        left_out,
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
        return Err(ModelError::TooLarge {
            what: "config",
            path: path.to_path_buf(),
            len: meta.len(),
            max: MAX_CONFIG_BYTES,
        });
    }
    let text = fs::read_to_string(path).map_err(io("reading", path))?;
    let json = |what| {
        move |source| ModelError::Json {
            what,
            path: path.to_path_buf(),
            source,
        }
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(json("not valid JSON"))?;
    let model_type = value
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown")
        .to_owned();
    if !LLAMA_MODEL_TYPES.contains(&model_type.as_str()) {
        return Ok(Architecture::Other { name: model_type });
    }
    let cfg: LlamaConfig = serde_json::from_value(value).map_err(json("not a llama config"))?;
    cfg.validate().map_err(|e| ModelError::InvalidLlama {
        what: "config",
        path: path.to_path_buf(),
        source: Box::new(e),
    })?;
    Ok(Architecture::Llama(cfg))
}

/// Whether an integer tensor's name says it holds a quantised checkpoint's weights
/// (`*.weight` as bitsandbytes stores them, GPTQ / AWQ `qweight`, `qzeros`,
/// `g_idx`): refused, where buffers are left out.
fn looks_quantised(name: &str) -> bool {
    ["weight", "qzeros", "g_idx"]
        .iter()
        .any(|end| name.ends_with(end))
}

/// Decodes every float tensor of one safetensors file into `out` as f32. Integer
/// and boolean buffers (BERT's `position_ids`) are named in `left_out` instead;
/// integer weights ([`looks_quantised`]: a quantised checkpoint) and any other
/// dtype are errors.
fn read_safetensors_file(
    path: &Path,
    out: &mut BTreeMap<String, NamedTensor>,
    left_out: &mut Vec<LeftOut>,
) -> Result<()> {
    let bytes = fs::read(path).map_err(io("reading", path))?;
    // `deserialize` checks the header length against its own cap and that every
    // tensor's offsets lie inside the buffer and match its shape and dtype.
    let st = SafeTensors::deserialize(&bytes).map_err(|source| ModelError::Safetensors {
        path: path.to_path_buf(),
        source,
    })?;
    if st.len() + out.len() > MAX_TENSORS {
        return Err(ModelError::TooManyTensors {
            path: path.to_path_buf(),
            max: MAX_TENSORS,
        });
    }
    for (name, view) in st.iter() {
        // Read, or left out, from an earlier file.
        if out.contains_key(name) || left_out.iter().any(|l| l.name == name) {
            return Err(ModelError::DuplicateTensor {
                path: path.to_path_buf(),
                tensor: name.to_owned(),
            });
        }
        let shape = view.shape().to_vec();
        checked_elements(name, &shape).map_err(|e| e.in_file(path))?;
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
            Dtype::BOOL
            | Dtype::U8
            | Dtype::I8
            | Dtype::U16
            | Dtype::I16
            | Dtype::U32
            | Dtype::I32
            | Dtype::U64
            | Dtype::I64
                if !looks_quantised(name) =>
            {
                left_out.push(LeftOut {
                    name: name.to_owned(),
                    dtype: format!("{:?}", view.dtype()),
                    shape,
                });
                continue;
            }
            other => {
                return Err(ModelError::Dtype {
                    path: path.to_path_buf(),
                    tensor: name.to_owned(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        let t = NamedTensor::new(name.to_owned(), shape, data).map_err(|e| e.in_file(path))?;
        out.insert(name.to_owned(), t);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use safetensors::{Dtype, tensor::TensorView};

    use super::*;

    /// A BERT checkpoint keeps `position_ids` as an I64 buffer: it is named as left
    /// out, and every float tensor is read; an F64 tensor is still refused by name.
    #[test]
    fn integer_buffers_are_left_out_and_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("config.json"), r#"{"model_type": "bert"}"#).expect("config");
        let w: Vec<u8> = (0..32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let ids: Vec<u8> = (0..4i64).flat_map(|i| i.to_le_bytes()).collect();
        let write = |extra: (&str, Dtype, Vec<usize>, &[u8])| {
            let mut views = HashMap::new();
            views.insert(
                "dense.weight".to_string(),
                TensorView::new(Dtype::F32, vec![4, 8], &w).expect("view"),
            );
            views.insert(
                extra.0.to_string(),
                TensorView::new(extra.1, extra.2, extra.3).expect("view"),
            );
            safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors"))
                .expect("write");
        };
        write(("embeddings.position_ids", Dtype::I64, vec![1, 4], &ids));
        let model = read_hf(dir.path()).expect("read");
        assert_eq!(model.tensors.keys().collect::<Vec<_>>(), ["dense.weight"]);
        let left: Vec<String> = model.left_out.iter().map(ToString::to_string).collect();
        assert_eq!(left, ["embeddings.position_ids (I64 [1, 4])"]);
        let f64s: Vec<u8> = (0..4).flat_map(|i| f64::from(i).to_le_bytes()).collect();
        write(("scale", Dtype::F64, vec![4], &f64s));
        let err = read_hf(dir.path()).expect_err("f64").to_string();
        assert!(err.contains("tensor `scale` has dtype F64"), "{err}");
        // Integer weights are a quantised checkpoint, not a buffer: refused.
        let q: Vec<u8> = (0..4i32).flat_map(|i| i.to_le_bytes()).collect();
        for name in ["proj.qweight", "proj.weight", "proj.qzeros", "proj.g_idx"] {
            write((name, Dtype::I32, vec![1, 4], &q));
            let err = read_hf(dir.path()).expect_err(name).to_string();
            assert!(
                err.contains(&format!("tensor `{name}` has dtype I32")),
                "{err}"
            );
        }
    }
}
