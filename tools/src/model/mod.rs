//! A checkpoint read into memory: named f32 tensors in Hugging Face naming and
//! layout, the architecture's config, and the choice of which tensors are the
//! "linear weights" that get compressed.
//!
//! Both readers (safetensors folders and GGUF files) produce this one shape, so
//! everything downstream (calibration, BitStack, palettes, export) sees one naming
//! scheme: `model.layers.{i}.self_attn.q_proj.weight` and friends.
//!
//! Around that description: the readers ([`hf`] for safetensors folders, [`gguf`] for
//! GGUF files, dequantised through candle), calibration ([`calib`]: tokenizers and
//! per-channel activation statistics), a llama forward pass over named tensors
//! ([`llama`]), sliding-window perplexity ([`ppl`]) and the peer quantizers the sweep
//! compares against ([`peers`]: round-to-nearest and candle's k-quants), and where
//! the real checkpoints the tests use are fetched to ([`locate`]).

pub mod bert;
pub mod calib;
pub mod error;
pub mod gguf;
pub mod hf;
pub mod llama;
pub mod locate;
pub mod peers;
pub mod ppl;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use regex::Regex;
use serde::{Deserialize, Serialize};

pub use error::{ModelError, Result};

/// The largest element count a single tensor may claim (2^34, 64 GiB of f32): a
/// header that says more is corrupt, and we refuse before allocating.
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 34;
/// The most dimensions a tensor may have.
pub const MAX_TENSOR_DIMS: usize = 8;
/// The most tensors one checkpoint may hold.
pub const MAX_TENSORS: usize = 1 << 20;

/// One dense tensor, row-major f32.
#[derive(Clone, PartialEq)]
pub struct NamedTensor {
    /// Hugging Face style name.
    pub name: String,
    /// Dimensions, outermost first (a linear weight is `[out, in]`).
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

impl fmt::Debug for NamedTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamedTensor")
            .field("name", &self.name)
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

impl NamedTensor {
    /// Builds a tensor after checking that `data` holds exactly `shape`'s elements.
    pub fn new(name: String, shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let expected = checked_elements(&name, &shape)?;
        if expected != data.len() {
            return Err(ModelError::DataLen {
                tensor: name,
                shape,
                expected,
                actual: data.len(),
            });
        }
        Ok(Self { name, shape, data })
    }
}

/// Element count of `shape`, refusing shapes past [`MAX_TENSOR_DIMS`] or
/// [`MAX_TENSOR_ELEMENTS`] (checked multiplication, so no overflow either).
pub fn checked_elements(name: &str, shape: &[usize]) -> Result<usize> {
    if shape.len() > MAX_TENSOR_DIMS {
        return Err(ModelError::TooManyDims {
            tensor: name.to_owned(),
            dims: shape.len(),
            max: MAX_TENSOR_DIMS,
        });
    }
    let mut n: u64 = 1;
    for &d in shape {
        n = n.saturating_mul(d as u64);
        if n > MAX_TENSOR_ELEMENTS {
            return Err(ModelError::TooManyElements {
                tensor: name.to_owned(),
                shape: shape.to_vec(),
                max: MAX_TENSOR_ELEMENTS,
            });
        }
    }
    Ok(n as usize)
}

/// The hyper-parameters of a llama-family decoder (Llama, SmolLM, Mistral without
/// sliding window, Qwen2 without biases...). Field names follow Hugging Face's
/// `config.json` so the struct reads and writes it directly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); equals the query heads when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// RoPE base frequency.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// Longest context the model was trained for.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// Whether the LM head reuses the token embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

fn default_rope_theta() -> f32 {
    10_000.0
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_max_pos() -> usize {
    2048
}

impl LlamaConfig {
    /// Key/value heads, defaulting to the query heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Checks the relations the forward pass relies on, naming the field at fault.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        let bad = |field, reason: String| Err(ModelError::Config { field, reason });
        for (field, v) in positive {
            if v == 0 {
                return bad(field, "must be positive".into());
            }
            if v > 1 << 24 {
                return bad(field, format!("= {v} is beyond any real model (cap 2^24)"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(
                "hidden_size",
                format!(
                    "= {} is not a multiple of num_attention_heads {}",
                    self.hidden_size, self.num_attention_heads
                ),
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(
                "num_attention_heads",
                format!(
                    "= {} gives a head dimension of {}, which must be even for RoPE",
                    self.num_attention_heads,
                    self.head_dim()
                ),
            );
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return bad(
                "num_attention_heads",
                format!(
                    "= {} is not a multiple of num_key_value_heads {}",
                    self.num_attention_heads,
                    self.kv_heads()
                ),
            );
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return bad(
                "rope_theta",
                format!("= {} must be finite and > 1", self.rope_theta),
            );
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return bad(
                "rms_norm_eps",
                format!("= {} must be finite and > 0", self.rms_norm_eps),
            );
        }
        Ok(())
    }

    /// The same hyper-parameters as candle-transformers' llama expects them (the
    /// tests check our forward pass against it).
    #[cfg(test)]
    pub fn to_candle(&self) -> candle_transformers::models::llama::Config {
        candle_transformers::models::llama::Config {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            vocab_size: self.vocab_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.kv_heads(),
            use_flash_attn: false,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            bos_token_id: None,
            eos_token_id: None,
            rope_scaling: None,
            max_position_embeddings: self.max_position_embeddings,
            tie_word_embeddings: self.tie_word_embeddings,
        }
    }
}

/// What the tool knows about the network that uses the tensors.
#[derive(Debug, Clone, PartialEq)]
pub enum Architecture {
    /// A llama-family decoder the tool can run for calibration.
    Llama(LlamaConfig),
    /// Anything else: tensors are compressed, but no forward pass is available, so
    /// activation-aware scales fall back to uniform ones.
    Other {
        /// The architecture name from the file (`model_type`, `general.architecture`).
        name: String,
    },
}

impl Architecture {
    /// A short name for messages.
    pub fn name(&self) -> &str {
        match self {
            Architecture::Llama(_) => "llama",
            Architecture::Other { name } => name,
        }
    }
}

/// A whole checkpoint in memory.
#[derive(Debug, Clone)]
pub struct Model {
    /// Where it was read from.
    pub source: PathBuf,
    /// The architecture and its config.
    pub arch: Architecture,
    /// Tensors by name (sorted, so every run sees the same order).
    pub tensors: BTreeMap<String, NamedTensor>,
    /// Tokenizer source found next to the weights, if any.
    pub tokenizer: Option<TokenizerSource>,
    /// Tensors of the checkpoint that were not read: integer and boolean
    /// buffers, which are not weights.
    pub left_out: Vec<LeftOut>,
}

/// A tensor a checkpoint holds that was not read (see [`Model::left_out`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    pub name: String,
    /// The file's dtype, as safetensors names it (`I64`).
    pub dtype: String,
    pub shape: Vec<usize>,
}

impl std::fmt::Display for LeftOut {
    /// `name (dtype [shape])`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} {:?})", self.name, self.dtype, self.shape)
    }
}

/// Where a tokenizer comes from.
#[derive(Debug, Clone)]
pub enum TokenizerSource {
    /// A Hugging Face `tokenizer.json`.
    Json(PathBuf),
    /// A byte-level BPE vocabulary and merges from GGUF metadata.
    GgufBpe {
        /// Token strings, by id.
        tokens: Vec<String>,
        /// Merge rules `"a b"`, by priority.
        merges: Vec<String>,
        /// The GGUF pre-tokenizer name (`tokenizer.ggml.pre`), if given.
        pre: Option<String>,
        /// Control tokens (GGUF token type 3), matched whole.
        special: Vec<String>,
    },
}

/// Which tensors count as linear weights to compress.
#[derive(Debug, Clone, Default)]
pub struct LinearSelection {
    /// When set, only names matching it are candidates (still 2-D).
    pub include: Option<Regex>,
    /// Names matching it are never compressed.
    pub exclude: Option<Regex>,
}

/// Name fragments of tensors that are 2-D but are not linear layers of a block:
/// token embeddings and the LM head are lookup tables / the output projection that
/// quality is most sensitive to, so they stay f16 unless `--include` asks otherwise.
const KEPT_BY_DEFAULT: [&str; 5] = ["embed", "lm_head", "wte", "wpe", "token_embd"];

impl LinearSelection {
    /// Parses the two optional patterns, naming the flag in the error.
    pub fn from_patterns(include: Option<&str>, exclude: Option<&str>) -> Result<Self> {
        let compile = |flag: &'static str, p: Option<&str>| -> Result<Option<Regex>> {
            p.map(|p| {
                Regex::new(p).map_err(|source| ModelError::Pattern {
                    flag,
                    pattern: p.to_owned(),
                    source,
                })
            })
            .transpose()
        };
        Ok(Self {
            include: compile("--include", include)?,
            exclude: compile("--exclude", exclude)?,
        })
    }

    /// Whether `tensor` is compressed: 2-D with both dims > 1, not excluded, and
    /// either matching `--include` or (without it) not an embedding, head or norm.
    pub fn is_linear(&self, tensor: &NamedTensor) -> bool {
        let two_d = tensor.shape.len() == 2 && tensor.shape.iter().all(|&d| d > 1);
        if !two_d {
            return false;
        }
        if self
            .exclude
            .as_ref()
            .is_some_and(|r| r.is_match(&tensor.name))
        {
            return false;
        }
        match &self.include {
            Some(r) => r.is_match(&tensor.name),
            None => {
                // `output.weight` is the LM head in GGUF naming (kept for non-llama files).
                !KEPT_BY_DEFAULT.iter().any(|k| tensor.name.contains(k))
                    && tensor.name != "output.weight"
                    && !tensor.name.contains("norm")
            }
        }
    }

    /// Names of the linear weights of `model`, in name order.
    pub fn linear_names(&self, model: &Model) -> Vec<String> {
        model
            .tensors
            .values()
            .filter(|t| self.is_linear(t))
            .map(|t| t.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, shape: &[usize]) -> NamedTensor {
        let n = shape.iter().product();
        NamedTensor::new(name.into(), shape.to_vec(), vec![0.0; n]).expect("valid")
    }

    #[test]
    fn default_selection_keeps_embeddings_heads_and_norms() {
        let sel = LinearSelection::default();
        assert!(sel.is_linear(&t("model.layers.0.self_attn.q_proj.weight", &[8, 8])));
        assert!(sel.is_linear(&t("model.layers.3.mlp.down_proj.weight", &[8, 24])));
        assert!(!sel.is_linear(&t("model.embed_tokens.weight", &[128, 8])));
        assert!(!sel.is_linear(&t("lm_head.weight", &[128, 8])));
        assert!(!sel.is_linear(&t("model.norm.weight", &[8])));
        assert!(!sel.is_linear(&t("model.layers.0.input_layernorm.weight", &[8])));
        assert!(!sel.is_linear(&t("model.layers.0.bias_like", &[1, 8])));
    }

    #[test]
    fn include_and_exclude_override() {
        let sel = LinearSelection::from_patterns(Some("lm_head|q_proj"), Some("layers\\.1\\."))
            .expect("valid patterns");
        assert!(sel.is_linear(&t("lm_head.weight", &[128, 8])));
        assert!(sel.is_linear(&t("model.layers.0.self_attn.q_proj.weight", &[8, 8])));
        assert!(!sel.is_linear(&t("model.layers.1.self_attn.q_proj.weight", &[8, 8])));
        assert!(!sel.is_linear(&t("model.layers.0.mlp.up_proj.weight", &[8, 8])));
        assert!(LinearSelection::from_patterns(Some("("), None).is_err());
    }

    #[test]
    fn shape_caps_are_enforced() {
        assert!(checked_elements("x", &[1 << 20, 1 << 20]).is_err());
        assert!(checked_elements("x", &[usize::MAX, 2]).is_err());
        assert!(checked_elements("x", &[1; 9]).is_err());
        assert_eq!(checked_elements("x", &[3, 5]).expect("fits"), 15);
        assert!(NamedTensor::new("x".into(), vec![2, 2], vec![0.0; 3]).is_err());
    }

    #[test]
    fn config_validation_names_the_field() {
        let mut c = LlamaConfig {
            hidden_size: 64,
            intermediate_size: 96,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            vocab_size: 128,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            max_position_embeddings: 256,
            tie_word_embeddings: false,
        };
        c.validate().expect("valid");
        c.num_key_value_heads = Some(3);
        assert!(c.validate().is_err());
        c.num_key_value_heads = Some(2);
        c.vocab_size = 0;
        let e = c.validate().expect_err("zero vocab").to_string();
        assert!(e.contains("vocab_size"), "{e}");
    }
}
