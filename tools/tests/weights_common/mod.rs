//! A tiny synthetic llama written as a Hugging Face folder, and helpers to run
//! candle-transformers' llama on named tensors. Shared by the `weights_*` tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::llama::{Cache, Config, Llama};
use half::{bf16, f16};
use octet_tests::{Cli, path_str};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

pub const HIDDEN: usize = 64;
pub const INTER: usize = 96;
pub const LAYERS: usize = 2;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const VOCAB: usize = 128;

/// The linear weights of every layer (7 per layer).
pub const LINEARS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

pub fn config() -> Config {
    Config {
        hidden_size: HIDDEN,
        intermediate_size: INTER,
        vocab_size: VOCAB,
        num_hidden_layers: LAYERS,
        num_attention_heads: HEADS,
        num_key_value_heads: KV_HEADS,
        use_flash_attn: false,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        bos_token_id: None,
        eos_token_id: None,
        rope_scaling: None,
        max_position_embeddings: 256,
        tie_word_embeddings: false,
    }
}

pub fn config_json() -> serde_json::Value {
    serde_json::json!({
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "vocab_size": VOCAB,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 256,
        "tie_word_embeddings": false
    })
}

/// One tensor of the synthetic model and the dtype it is stored as on disk.
#[derive(Debug, Clone)]
pub struct Tiny {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    pub dtype: Dtype,
}

fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Random weights. Embeddings and the LM head are bf16 values (also exact in f16),
/// norms f16, linears f32. With `grid`, each linear takes at most `grid` distinct
/// f16-exact values (so an 8-bit palette holds it exactly).
pub fn tiny_llama(seed: u64, grid: Option<usize>) -> Vec<Tiny> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, dtype: Dtype, f: &mut dyn FnMut() -> f32| {
        let n = shape.iter().product();
        let data = (0..n).map(|_| f()).collect();
        out.push(Tiny {
            name,
            shape,
            data,
            dtype,
        });
    };
    let kv = KV_HEADS * HIDDEN / HEADS;
    let uniform = |scale: f32, rng: &mut ChaCha8Rng| scale * (rng.random::<f32>() * 2.0 - 1.0);
    let mut r = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    push(
        "model.embed_tokens.weight".into(),
        vec![VOCAB, HIDDEN],
        Dtype::BF16,
        &mut || bf16::from_f32(uniform(1.0, &mut r)).to_f32(),
    );
    push(
        "lm_head.weight".into(),
        vec![VOCAB, HIDDEN],
        Dtype::BF16,
        &mut || bf16::from_f32(uniform(0.2, &mut r)).to_f32(),
    );
    push(
        "model.norm.weight".into(),
        vec![HIDDEN],
        Dtype::F16,
        &mut || round_f16(1.0 + uniform(0.1, &mut r)),
    );
    for l in 0..LAYERS {
        for (i, lin) in LINEARS.iter().enumerate() {
            let shape = match i {
                0 | 3 => vec![HIDDEN, HIDDEN],
                1 | 2 => vec![kv, HIDDEN],
                4 | 5 => vec![INTER, HIDDEN],
                _ => vec![HIDDEN, INTER],
            };
            // Input channels of different magnitude, as real models have.
            let cols = shape[1];
            let mut j = 0usize;
            let levels: Vec<f32> = (0..grid.unwrap_or(0))
                .map(|_| round_f16(uniform(0.3, &mut rng)))
                .collect();
            push(
                format!("model.layers.{l}.{lin}.weight"),
                shape,
                Dtype::F32,
                &mut || {
                    let col = j % cols;
                    j += 1;
                    if levels.is_empty() {
                        uniform(0.3, &mut rng) * (0.5 + (col % 7) as f32 / 4.0)
                    } else {
                        levels[rng.random_range(0..levels.len())]
                    }
                },
            );
        }
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            push(
                format!("model.layers.{l}.{norm}.weight"),
                vec![HIDDEN],
                Dtype::F16,
                &mut || round_f16(1.0 + uniform(0.1, &mut r)),
            );
        }
    }
    out
}

fn bytes_of(t: &Tiny) -> Vec<u8> {
    match t.dtype {
        Dtype::F32 => t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F16 => t
            .data
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect(),
        Dtype::BF16 => t
            .data
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect(),
        other => panic!("unsupported test dtype {other:?}"),
    }
}

/// A character-level tokenizer.json: ids 0..128 are the ASCII characters.
pub fn tokenizer_json() -> serde_json::Value {
    let vocab: serde_json::Map<String, serde_json::Value> = (0u8..128)
        .map(|c| ((c as char).to_string(), serde_json::json!(c)))
        .collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": null,
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "vocab": vocab,
            "merges": []
        }
    })
}

/// Writes config.json, model.safetensors (tensors split over two files to exercise
/// multi-file folders) and tokenizer.json into `dir`.
pub fn write_hf_folder(dir: &Path, tensors: &[Tiny]) {
    std::fs::create_dir_all(dir).expect("model dir");
    std::fs::write(dir.join("config.json"), config_json().to_string()).expect("config");
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json().to_string()).expect("tokenizer");
    let (a, b) = tensors.split_at(tensors.len() / 2);
    for (file, part) in [
        ("model-00001-of-00002.safetensors", a),
        ("model-00002-of-00002.safetensors", b),
    ] {
        let bytes: Vec<Vec<u8>> = part.iter().map(bytes_of).collect();
        let views: Vec<(String, TensorView<'_>)> = part
            .iter()
            .zip(&bytes)
            .map(|(t, b)| {
                (
                    t.name.clone(),
                    TensorView::new(t.dtype, t.shape.clone(), b).expect("view"),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(file)).expect("safetensors");
    }
}

pub fn to_candle(tensors: &[Tiny]) -> HashMap<String, Tensor> {
    tensors
        .iter()
        .map(|t| {
            let x = Tensor::from_slice(&t.data, t.shape.as_slice(), &Device::Cpu).expect("tensor");
            (t.name.clone(), x)
        })
        .collect()
}

/// Last-position logits of candle-transformers' llama over `tokens`.
pub fn llama_logits(tensors: HashMap<String, Tensor>, tokens: &[u32]) -> Vec<f32> {
    let cfg = config();
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let model = Llama::load(vb, &cfg).expect("llama loads");
    let mut cache = Cache::new(false, DType::F32, &cfg, &Device::Cpu).expect("cache");
    let input = Tensor::new(tokens, &Device::Cpu)
        .and_then(|t| t.unsqueeze(0))
        .expect("ids");
    model
        .forward(&input, 0, &mut cache)
        .and_then(|t| t.squeeze(0))
        .and_then(|t| t.to_vec1())
        .expect("forward")
}

pub fn tokens() -> Vec<u32> {
    (0..40u32).map(|i| (i * 37 + 11) % VOCAB as u32).collect()
}

/// max |a - b| / max |b|.
pub fn rel_max_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

const OCTET: &str = env!("CARGO_BIN_EXE_octet");

pub fn octet() -> Command {
    Cli::new(OCTET).command()
}

/// Runs `octet` with `args`, panicking with its stderr on failure; returns stdout.
pub fn run_ok(args: &[&str]) -> String {
    Cli::new(OCTET).ok(args)
}

/// Runs `octet` with `args` expecting failure; returns stderr.
pub fn run_err(args: &[&str]) -> String {
    Cli::new(OCTET).fails(args)
}

pub fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

pub fn p(path: &Path) -> &str {
    path_str(path)
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

pub fn path_in(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}
