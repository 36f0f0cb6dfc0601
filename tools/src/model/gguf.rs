//! Reader for GGUF files: every tensor is dequantised to f32 through candle-core's
//! GGUF reader (`QTensor::dequantize`), and llama-family files are renamed to Hugging
//! Face names with the query/key rows put back in Hugging Face order.
//!
//! llama.cpp's converter permutes the rows of `q_proj` and `k_proj` so that its
//! interleaved RoPE sees pairs `(2i, 2i+1)`; Hugging Face's RoPE rotates pairs
//! `(i, i + d/2)`. Undoing the permutation lets one forward pass (ours, or
//! candle-transformers' llama) and one export format serve both sources.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::Device;
use candle_core::quantized::gguf_file::{Content, Value};

use super::{
    Architecture, LlamaConfig, MAX_TENSORS, Model, ModelError, NamedTensor, Result,
    TokenizerSource, checked_elements,
};

/// The most tokens a GGUF vocabulary may list (real ones are under 300k).
const MAX_VOCAB: usize = 1 << 22;

/// Reads and dequantises a whole GGUF file. `progress` is called once per tensor.
pub fn read_gguf(path: &Path, mut progress: impl FnMut(usize, usize)) -> Result<Model> {
    let (mut reader, content) = open(path)?;
    if content.tensor_infos.len() > MAX_TENSORS {
        return Err(ModelError::TooManyTensors {
            path: path.to_path_buf(),
            max: MAX_TENSORS,
        });
    }
    let meta = Meta {
        path,
        map: &content.metadata,
    };
    let arch_name = meta.string("general.architecture")?;
    let arch = if arch_name == "llama" {
        let has_output = content.tensor_infos.contains_key("output.weight");
        Architecture::Llama(llama_config(&meta, &content, has_output)?)
    } else {
        Architecture::Other { name: arch_name }
    };

    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let total = names.len();
    let mut tensors = BTreeMap::new();
    for (i, name) in names.into_iter().enumerate() {
        let info = &content.tensor_infos[name];
        checked_elements(name, info.shape.dims()).map_err(|e| e.in_file(path))?;
        let gguf_err = |what: &'static str| {
            move |source| ModelError::Gguf {
                what: format!("{what} tensor `{name}`"),
                path: path.to_path_buf(),
                source: Box::new(source),
            }
        };
        let q = content
            .tensor(&mut reader, name, &Device::Cpu)
            .map_err(gguf_err("reading"))?;
        let dense = q
            .dequantize(&Device::Cpu)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(gguf_err("dequantising"))?;
        let shape = info.shape.dims().to_vec();
        let tensor = match &arch {
            Architecture::Llama(cfg) => to_hf(name, shape, dense, cfg),
            Architecture::Other { .. } => NamedTensor::new(name.clone(), shape, dense),
        }
        .map_err(|e| e.in_file(path))?;
        tensors.insert(tensor.name.clone(), tensor);
        progress(i + 1, total);
    }
    let tokenizer = gguf_tokenizer(&meta)?;
    Ok(Model {
        source: path.to_path_buf(),
        arch,
        tensors,
        tokenizer,
        left_out: Vec::new(),
    })
}

/// Opens `path` and reads its GGUF header (metadata and tensor table).
fn open(path: &Path) -> Result<(BufReader<File>, Content)> {
    let file = File::open(path).map_err(|source| ModelError::Io {
        action: "opening",
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = BufReader::new(file);
    // Content::read caps string, array and dimension counts and checks them against
    // the file size before allocating.
    let content = Content::read(&mut reader).map_err(|source| ModelError::Gguf {
        what: "malformed GGUF header".into(),
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    Ok((reader, content))
}

/// Typed, error-naming access to GGUF metadata.
struct Meta<'a> {
    path: &'a Path,
    map: &'a HashMap<String, Value>,
}

impl Meta<'_> {
    fn bad(&self, key: &str, problem: String) -> ModelError {
        ModelError::Metadata {
            path: self.path.to_path_buf(),
            key: key.to_owned(),
            problem,
        }
    }

    fn get(&self, key: &str) -> Result<&Value> {
        self.map
            .get(key)
            .ok_or_else(|| self.bad(key, "is missing".into()))
    }

    fn string(&self, key: &str) -> Result<String> {
        match self.get(key)? {
            Value::String(s) => Ok(s.clone()),
            v => Err(self.bad(key, format!("is {:?}, expected a string", v.value_type()))),
        }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        let v = self.get(key)?;
        let n: i128 = match v {
            Value::U8(x) => (*x).into(),
            Value::U16(x) => (*x).into(),
            Value::U32(x) => (*x).into(),
            Value::U64(x) => (*x).into(),
            Value::I8(x) => (*x).into(),
            Value::I16(x) => (*x).into(),
            Value::I32(x) => (*x).into(),
            Value::I64(x) => (*x).into(),
            other => {
                return Err(self.bad(
                    key,
                    format!("is {:?}, expected an integer", other.value_type()),
                ));
            }
        };
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= 1 << 24)
            .ok_or_else(|| self.bad(key, format!("= {n} is out of range")))
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.map.get(key) {
            None => Ok(default),
            Some(Value::F32(x)) => Ok(f64::from(*x)),
            Some(Value::F64(x)) => Ok(*x),
            Some(v) => Err(self.bad(key, format!("is {:?}, expected a float", v.value_type()))),
        }
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        let Some(v) = self.map.get(key) else {
            return Ok(None);
        };
        let Value::Array(items) = v else {
            return Err(self.bad(key, "is not an array".into()));
        };
        if items.len() > MAX_VOCAB {
            return Err(self.bad(
                key,
                format!("has {} entries, the cap is {MAX_VOCAB}", items.len()),
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(self.bad(key, format!("[{i}] is not a string"))),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

fn llama_config(meta: &Meta<'_>, content: &Content, has_output: bool) -> Result<LlamaConfig> {
    let vocab_size = match meta.usize("llama.vocab_size") {
        Ok(v) => v,
        Err(_) => content
            .tensor_infos
            .get("token_embd.weight")
            .map(|t| t.shape.dims()[0])
            .ok_or_else(|| ModelError::NoVocabSize {
                path: meta.path.to_path_buf(),
            })?,
    };
    let heads = meta.usize("llama.attention.head_count")?;
    let cfg = LlamaConfig {
        hidden_size: meta.usize("llama.embedding_length")?,
        intermediate_size: meta.usize("llama.feed_forward_length")?,
        num_hidden_layers: meta.usize("llama.block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: Some(meta.usize("llama.attention.head_count_kv").unwrap_or(heads)),
        vocab_size,
        rope_theta: meta.f64_or("llama.rope.freq_base", 10_000.0)? as f32,
        rms_norm_eps: meta.f64_or("llama.attention.layer_norm_rms_epsilon", 1e-5)?,
        max_position_embeddings: meta.usize("llama.context_length").unwrap_or(2048),
        tie_word_embeddings: !has_output,
    };
    cfg.validate().map_err(|e| ModelError::InvalidLlama {
        what: "metadata",
        path: meta.path.to_path_buf(),
        source: Box::new(e),
    })?;
    Ok(cfg)
}

/// Renames a llama GGUF tensor to its Hugging Face name, un-permuting q/k rows.
fn to_hf(name: &str, shape: Vec<usize>, data: Vec<f32>, cfg: &LlamaConfig) -> Result<NamedTensor> {
    let global = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(hf) = global {
        return NamedTensor::new(hf.to_owned(), shape, data);
    }
    let Some(rest) = name.strip_prefix("blk.") else {
        return NamedTensor::new(name.to_owned(), shape, data);
    };
    let Some((layer, part)) = rest.split_once('.') else {
        return NamedTensor::new(name.to_owned(), shape, data);
    };
    let hf_part = match part {
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return NamedTensor::new(name.to_owned(), shape, data),
    };
    let data = match part {
        "attn_q.weight" => unpermute_rows(name, &shape, &data, cfg.num_attention_heads)?,
        "attn_k.weight" => unpermute_rows(name, &shape, &data, cfg.kv_heads())?,
        _ => data,
    };
    NamedTensor::new(format!("model.layers.{layer}.{hf_part}"), shape, data)
}

/// Inverse of llama.cpp's `permute(w, n_head)`: within each head, GGUF row
/// `2i + j` holds Hugging Face row `j * d/2 + i`.
pub fn unpermute_rows(name: &str, shape: &[usize], data: &[f32], heads: usize) -> Result<Vec<f32>> {
    let &[rows, cols] = shape else {
        return Err(ModelError::NotMatrix {
            tensor: name.to_owned(),
            shape: shape.to_vec(),
        });
    };
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(ModelError::HeadSplit {
            tensor: name.to_owned(),
            rows,
            heads,
        });
    }
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0.0; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = h * hd + 2 * i + j;
                let dst = h * hd + j * half + i;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    Ok(out)
}

/// Reads only the metadata of a GGUF file and returns its tokenizer, if it carries a
/// byte-level BPE vocabulary.
pub fn read_tokenizer(path: &Path) -> Result<Option<TokenizerSource>> {
    let (_, content) = open(path)?;
    gguf_tokenizer(&Meta {
        path,
        map: &content.metadata,
    })
}

/// Bits per weight of a GGUF file as stored: `(linear layers, every tensor)`, where
/// the linear layers are the `blk.*` attention and MLP projections.
pub fn storage_bits(path: &Path) -> Result<(f64, f64)> {
    let (_, content) = open(path)?;
    const LINEAR: [&str; 7] = [
        "attn_q.weight",
        "attn_k.weight",
        "attn_v.weight",
        "attn_output.weight",
        "ffn_gate.weight",
        "ffn_up.weight",
        "ffn_down.weight",
    ];
    let (mut lin, mut all) = ((0f64, 0f64), (0f64, 0f64));
    for (name, info) in &content.tensor_infos {
        let n = info.shape.elem_count() as f64;
        let d = info.ggml_dtype;
        let bits = 8.0 * n / d.block_size() as f64 * d.type_size() as f64;
        all = (all.0 + bits, all.1 + n);
        let is_linear =
            name.starts_with("blk.") && LINEAR.iter().any(|l| name.ends_with(&format!(".{l}")));
        if is_linear {
            lin = (lin.0 + bits, lin.1 + n);
        }
    }
    Ok((lin.0 / lin.1.max(1.0), all.0 / all.1.max(1.0)))
}

fn gguf_tokenizer(meta: &Meta<'_>) -> Result<Option<TokenizerSource>> {
    let Ok(kind) = meta.string("tokenizer.ggml.model") else {
        return Ok(None);
    };
    if kind != "gpt2" {
        // SentencePiece-style ("llama") vocabularies need the scores-based merge
        // order; we do not rebuild those, the user passes --tokenizer instead.
        return Ok(None);
    }
    let tokens = meta.strings("tokenizer.ggml.tokens")?.unwrap_or_default();
    let merges = meta.strings("tokenizer.ggml.merges")?.unwrap_or_default();
    if tokens.is_empty() || merges.is_empty() {
        return Ok(None);
    }
    let pre = meta.string("tokenizer.ggml.pre").ok();
    // llama.cpp's token types: 3 marks control tokens (`<|im_start|>`, `<|endoftext|>`),
    // which must match whole rather than be split by the BPE.
    let special = match meta.map.get("tokenizer.ggml.token_type") {
        Some(Value::Array(types)) => types
            .iter()
            .enumerate()
            .filter(|(_, v)| matches!(v, Value::I32(3) | Value::U32(3)))
            .filter_map(|(i, _)| tokens.get(i).cloned())
            .collect(),
        _ => Vec::new(),
    };
    Ok(Some(TokenizerSource::GgufBpe {
        tokens,
        merges,
        pre,
        special,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's permutation, written as its Python does it.
    fn permute(data: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
        let hd = rows / heads;
        let half = hd / 2;
        let mut out = vec![0.0; data.len()];
        // reshape(heads, 2, half, cols).swapaxes(1, 2): out[h, i, j] = in[h, j, i]
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..half {
                    let src = h * hd + j * half + i;
                    let dst = h * hd + i * 2 + j;
                    out[dst * cols..(dst + 1) * cols]
                        .copy_from_slice(&data[src * cols..(src + 1) * cols]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        let (rows, cols, heads) = (24, 5, 3);
        let w: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        let p = permute(&w, rows, cols, heads);
        assert_ne!(p, w);
        let back = unpermute_rows("q", &[rows, cols], &p, heads).expect("shape fits");
        assert_eq!(back, w);
        assert!(unpermute_rows("q", &[rows, cols], &p, 5).is_err());
    }
}
