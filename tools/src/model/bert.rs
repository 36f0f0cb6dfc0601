//! A compact BERT encoder forward pass (post-LayerNorm, erf GELU, absolute
//! positions) that records what every linear sees at its input, so an embedding
//! model such as all-MiniLM-L6-v2 gets the same activation statistics (the
//! importance of each input column) that [`super::llama::LlamaForward`] gives a
//! language model: for its palettes and for the k-quants' importance matrix.
//!
//! candle-transformers' `BertModel` keeps its linears private; this pass is checked
//! against its hidden states in the tests below. One sequence at a time, no
//! padding, token type 0: what `octet weights retrieval` embeds.

use std::collections::HashMap;

use candle_core::{D, DType, Device, Tensor};
use candle_transformers::models::bert::{Config as BertConfig, HiddenAct};

use tokenizers::Tokenizer;

use super::calib::{CalibShape, record_sequences, sequences};
use super::llama::{InputNorms, LinearInput};
use super::{Model, ModelError, Result};

/// A linear with its bias.
#[derive(Debug, Clone)]
struct Linear {
    w: Tensor,
    b: Tensor,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.w.t()?)?.broadcast_add(&self.b)
    }
}

/// A LayerNorm's weight and bias.
#[derive(Debug, Clone)]
struct Norm {
    w: Tensor,
    b: Tensor,
}

/// The weights of one encoder layer.
#[derive(Debug, Clone)]
struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    attn_norm: Norm,
    up: Linear,
    down: Linear,
    out_norm: Norm,
}

/// A BERT encoder ready to run.
#[derive(Debug, Clone)]
pub struct BertForward {
    heads: usize,
    head_dim: usize,
    eps: f64,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    embed_norm: Norm,
    layers: Vec<Layer>,
}

/// Splits `encoder.layer.{i}.{part}` (optionally under `bert.`) into `(i, part)`.
pub fn split_layer(name: &str) -> Option<(usize, &str)> {
    let rest = name
        .strip_prefix("bert.")
        .unwrap_or(name)
        .strip_prefix("encoder.layer.")?;
    let (layer, part) = rest.split_once('.')?;
    Some((layer.parse().ok()?, part))
}

/// The statistics every linear input of `cfg`'s layers gets recorded into.
pub fn input_norms(cfg: &BertConfig) -> InputNorms {
    InputNorms::for_widths(
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.intermediate_size,
    )
}

/// LayerNorm in f32 over the last dimension.
fn layer_norm(x: &Tensor, n: &Norm, eps: f64) -> candle_core::Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let c = x.broadcast_sub(&mean)?;
    let var = c.sqr()?.mean_keepdim(D::Minus1)?;
    c.broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(&n.w)?
        .broadcast_add(&n.b)
}

impl BertForward {
    /// Builds the encoder from Hugging Face named tensors (`embeddings.*`,
    /// `encoder.layer.N.*`, with or without a `bert.` prefix), computing in f32.
    /// Only the erf GELU of `hidden_act = "gelu"` and absolute positions are run.
    pub fn new(cfg: &BertConfig, tensors: &HashMap<String, Tensor>) -> Result<Self> {
        if !matches!(cfg.hidden_act, HiddenAct::Gelu) {
            return Err(ModelError::Config {
                field: "hidden_act",
                reason: "only \"gelu\" (erf) is run for BERT".into(),
            });
        }
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        if cfg.num_attention_heads == 0 || h % cfg.num_attention_heads != 0 {
            return Err(ModelError::Config {
                field: "num_attention_heads",
                reason: format!(
                    "{} does not divide hidden_size {h}",
                    cfg.num_attention_heads
                ),
            });
        }
        let prefix = if tensors.contains_key("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let get = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let name = format!("{prefix}{name}");
            let t = tensors
                .get(&name)
                .ok_or_else(|| ModelError::MissingTensor {
                    tensor: name.clone(),
                })?;
            if t.dims() != shape {
                return Err(ModelError::Shape {
                    tensor: name,
                    expected: shape.to_vec(),
                    actual: t.dims().to_vec(),
                });
            }
            Ok(t.to_dtype(DType::F32)?)
        };
        let linear = |name: &str, out: usize, inp: usize| -> Result<Linear> {
            Ok(Linear {
                w: get(&format!("{name}.weight"), &[out, inp])?,
                b: get(&format!("{name}.bias"), &[out])?,
            })
        };
        let norm = |name: &str| -> Result<Norm> {
            Ok(Norm {
                w: get(&format!("{name}.weight"), &[h])?,
                b: get(&format!("{name}.bias"), &[h])?,
            })
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                let p = format!("encoder.layer.{l}");
                Ok(Layer {
                    q: linear(&format!("{p}.attention.self.query"), h, h)?,
                    k: linear(&format!("{p}.attention.self.key"), h, h)?,
                    v: linear(&format!("{p}.attention.self.value"), h, h)?,
                    o: linear(&format!("{p}.attention.output.dense"), h, h)?,
                    attn_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                    up: linear(&format!("{p}.intermediate.dense"), i, h)?,
                    down: linear(&format!("{p}.output.dense"), h, i)?,
                    out_norm: norm(&format!("{p}.output.LayerNorm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
            eps: cfg.layer_norm_eps,
            word: get("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?,
            position: get(
                "embeddings.position_embeddings.weight",
                &[cfg.max_position_embeddings, h],
            )?,
            token_type: get(
                "embeddings.token_type_embeddings.weight",
                &[cfg.type_vocab_size, h],
            )?,
            embed_norm: norm("embeddings.LayerNorm")?,
            layers,
        })
    }

    /// Replaces the weight of the linear `name` (a Hugging Face BERT linear name,
    /// `encoder.layer.N.*.weight`) with `w` of the same shape; its bias stays.
    pub fn set_linear(&mut self, name: &str, w: Tensor) -> Result<()> {
        let (layer, part) = super::llama::layer_named(&mut self.layers, name, split_layer)?;
        let not_linear = || ModelError::NotLinear {
            name: name.to_owned(),
        };
        let slot = match part {
            "attention.self.query.weight" => &mut layer.q.w,
            "attention.self.key.weight" => &mut layer.k.w,
            "attention.self.value.weight" => &mut layer.v.w,
            "attention.output.dense.weight" => &mut layer.o.w,
            "intermediate.dense.weight" => &mut layer.up.w,
            "output.dense.weight" => &mut layer.down.w,
            _ => return Err(not_linear()),
        };
        super::llama::replace_weight(slot, name, w)
    }

    /// The sentence embedding of `tokens`: the last hidden states' mean over the
    /// tokens, at unit length (sentence-transformers' mean pooling).
    pub fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut v: Vec<f32> = self.hidden(tokens, None)?.mean(0)?.to_vec1()?;
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= norm);
        Ok(v)
    }

    /// The last layer's hidden states `[tokens, hidden]` for `tokens` (token type 0,
    /// no padding), recording every linear's input into `record` when given.
    pub fn hidden(&self, tokens: &[u32], mut record: Option<&mut InputNorms>) -> Result<Tensor> {
        let t = tokens.len();
        // The embedding tables' rows are the positions and the vocabulary.
        let (max_positions, vocab) = (self.position.dim(0)?, self.word.dim(0)?);
        if t == 0 || t > max_positions {
            return Err(ModelError::SequenceLength {
                tokens: t,
                max: max_positions,
            });
        }
        super::calib::check_vocab(tokens, vocab)?;
        let dev = Device::Cpu;
        let ids = Tensor::new(tokens, &dev)?;
        let x = self
            .word
            .index_select(&ids, 0)?
            .broadcast_add(&self.position.narrow(0, 0, t)?)?
            .broadcast_add(&self.token_type.narrow(0, 0, 1)?)?;
        let mut x = layer_norm(&x, &self.embed_norm, self.eps)?;
        let hd = self.head_dim;
        for (l, layer) in self.layers.iter().enumerate() {
            if let Some(r) = record.as_deref_mut() {
                r.record(l, LinearInput::Attn, &x)?;
            }
            let split = |y: Tensor| {
                y.reshape((t, self.heads, hd))?
                    .transpose(0, 1)?
                    .contiguous()
            };
            let q = split(layer.q.forward(&x)?)?;
            let k = split(layer.k.forward(&x)?)?;
            let v = split(layer.v.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = probs
                .matmul(&v)?
                .transpose(0, 1)?
                .reshape((t, self.heads * hd))?;
            if let Some(r) = record.as_deref_mut() {
                r.record(l, LinearInput::AttnOut, &ctx)?;
            }
            let a = layer_norm(&(layer.o.forward(&ctx)? + &x)?, &layer.attn_norm, self.eps)?;
            if let Some(r) = record.as_deref_mut() {
                r.record(l, LinearInput::Mlp, &a)?;
            }
            let mid = layer.up.forward(&a)?.gelu_erf()?;
            if let Some(r) = record.as_deref_mut() {
                r.record(l, LinearInput::MlpHidden, &mid)?;
            }
            x = layer_norm(
                &(layer.down.forward(&mid)? + &a)?,
                &layer.out_norm,
                self.eps,
            )?;
        }
        if let Some(r) = record {
            r.end_sample(t);
        }
        Ok(x)
    }
}

/// The BERT config beside `model` (`config.json` in its folder).
pub fn config_of(model: &Model) -> Result<BertConfig> {
    let dir = if model.source.is_dir() {
        model.source.clone()
    } else {
        model
            .source
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default()
    };
    let path = dir.join("config.json");
    let len = std::fs::metadata(&path)
        .map_err(|source| ModelError::Io {
            action: "reading",
            path: path.clone(),
            source,
        })?
        .len();
    if len > super::hf::MAX_CONFIG_BYTES {
        return Err(ModelError::TooLarge {
            what: "config",
            path,
            len,
            max: super::hf::MAX_CONFIG_BYTES,
        });
    }
    let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
        action: "reading",
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ModelError::Json {
        what: "not a BERT config",
        path,
        source,
    })
}

/// Calibration of a BERT model: `text` tokenised by `tok` (its padding and
/// truncation turned off) and cut into sequences of at most `shape.seq_len` tokens,
/// [CLS] and [SEP] included (capped at the model's positions), at most
/// `shape.max_samples` of them, each run through `forward` with every linear's
/// input recorded. Returns the statistics and the sequences.
pub fn calibrate(
    cfg: &BertConfig,
    forward: &BertForward,
    tok: &Tokenizer,
    text: &str,
    shape: CalibShape,
    progress: impl FnMut(usize, usize),
) -> Result<(InputNorms, Vec<Vec<u32>>)> {
    let len = shape.seq_len.min(cfg.max_position_embeddings);
    if len < 3 {
        return Err(ModelError::Parameter {
            name: "--calib-seq-len",
            value: shape.seq_len.to_string(),
            expected: "at least 3 for BERT ([CLS], a token, [SEP])".into(),
        });
    }
    let special = |t: &str| {
        tok.token_to_id(t).ok_or_else(|| ModelError::Parameter {
            name: "tokenizer",
            value: format!("without `{t}`"),
            expected: "a BERT tokenizer with [CLS] and [SEP]".into(),
        })
    };
    let (cls, sep) = (special("[CLS]")?, special("[SEP]")?);
    let mut tok = tok.clone();
    tok.with_padding(None);
    tok.with_truncation(None)
        .map_err(|source| ModelError::Tokenize {
            what: "the calibration text (turning truncation off)".into(),
            source,
        })?;
    let inner = sequences(
        &tok,
        text,
        CalibShape {
            seq_len: len - 2,
            max_samples: shape.max_samples,
        },
        cfg.vocab_size,
    )?;
    let seqs: Vec<Vec<u32>> = inner
        .into_iter()
        .map(|s| {
            let mut v = Vec::with_capacity(s.len() + 2);
            v.push(cls);
            v.extend(s);
            v.push(sep);
            v
        })
        .collect();
    let mut stats = input_norms(cfg);
    record_sequences(
        &seqs,
        &mut stats,
        |s, r| forward.hidden(s, Some(r)),
        progress,
    )?;
    Ok((stats, seqs))
}

/// Short sequences for probing a BERT model, from [`calibrate`]'s: their tokens
/// between [CLS] and [SEP], at most `max_tokens` of them, cut into pieces of
/// `len - 2` and wrapped again (sentence embeddings are of short texts; the
/// calibration sequences are long).
pub fn short_sequences(seqs: &[Vec<u32>], len: usize, max_tokens: usize) -> Vec<Vec<u32>> {
    let Some(first) = seqs.iter().find(|s| s.len() >= 3) else {
        return Vec::new();
    };
    let (cls, sep) = (first[0], first[first.len() - 1]);
    let inner: Vec<u32> = seqs
        .iter()
        .filter(|s| s.len() >= 3)
        .flat_map(|s| s[1..s.len() - 1].iter().copied())
        .take(max_tokens)
        .collect();
    inner
        .chunks(len.max(3) - 2)
        .map(|c| {
            let mut v = Vec::with_capacity(c.len() + 2);
            v.push(cls);
            v.extend_from_slice(c);
            v.push(sep);
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use candle_nn::VarBuilder;
    use candle_transformers::models::bert::BertModel;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn tiny() -> BertConfig {
        serde_json::from_value(serde_json::json!({
            "vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 48, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "max_position_embeddings": 24,
            "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12,
            "pad_token_id": 0, "model_type": "bert"
        }))
        .expect("a BERT config")
    }

    fn weights(cfg: &BertConfig, seed: u64) -> HashMap<String, Tensor> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        // (name, shape, spread, centre) of every tensor.
        let mut spec: Vec<(String, Vec<usize>, f32, f32)> = vec![
            (
                "embeddings.word_embeddings.weight".into(),
                vec![cfg.vocab_size, h],
                1.0,
                0.0,
            ),
            (
                "embeddings.position_embeddings.weight".into(),
                vec![cfg.max_position_embeddings, h],
                0.5,
                0.0,
            ),
            (
                "embeddings.token_type_embeddings.weight".into(),
                vec![cfg.type_vocab_size, h],
                0.5,
                0.0,
            ),
        ];
        let norm = |spec: &mut Vec<_>, p: &str| {
            spec.push((format!("{p}.weight"), vec![h], 0.2, 1.0));
            spec.push((format!("{p}.bias"), vec![h], 0.2, 0.0));
        };
        let lin = |spec: &mut Vec<_>, p: &str, o: usize, n: usize| {
            spec.push((format!("{p}.weight"), vec![o, n], 0.4, 0.0));
            spec.push((format!("{p}.bias"), vec![o], 0.1, 0.0));
        };
        norm(&mut spec, "embeddings.LayerNorm");
        for l in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            for part in ["query", "key", "value"] {
                lin(&mut spec, &format!("{p}.attention.self.{part}"), h, h);
            }
            lin(&mut spec, &format!("{p}.attention.output.dense"), h, h);
            norm(&mut spec, &format!("{p}.attention.output.LayerNorm"));
            lin(&mut spec, &format!("{p}.intermediate.dense"), i, h);
            lin(&mut spec, &format!("{p}.output.dense"), h, i);
            norm(&mut spec, &format!("{p}.output.LayerNorm"));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        spec.into_iter()
            .map(|(name, shape, spread, centre)| {
                let n: usize = shape.iter().product();
                let v: Vec<f32> = (0..n)
                    .map(|_| centre + spread * (rng.random::<f32>() - 0.5))
                    .collect();
                let t = Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).expect("shape");
                (name, t)
            })
            .collect()
    }

    #[test]
    fn hidden_states_match_candle_transformers_bert() {
        let cfg = tiny();
        let w = weights(&cfg, 3);
        let ours = BertForward::new(&cfg, &w).expect("weights complete");
        let vb = VarBuilder::from_tensors(w.clone(), DType::F32, &Device::Cpu);
        let theirs = BertModel::load(vb, &cfg).expect("loads");
        let tokens: Vec<u32> = (0..17u32).map(|i| (i * 7 + 3) % 50).collect();
        let mut stats = input_norms(&cfg);
        let got = ours.hidden(&tokens, Some(&mut stats)).expect("runs");
        let input = Tensor::new(tokens.as_slice(), &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .expect("ids");
        let types = input.zeros_like().expect("types");
        let mask = input.ones_like().expect("mask");
        let want = theirs
            .forward(&input, &types, Some(&mask))
            .and_then(|t| t.squeeze(0))
            .expect("runs");
        let diff: f32 = (got - want)
            .and_then(|d| d.abs())
            .and_then(|d| d.max_all())
            .and_then(|d| d.to_scalar())
            .expect("diff");
        assert!(diff < 1e-4, "max difference {diff}");
        // Every linear of every layer has its input's statistics, of its width.
        for l in 0..cfg.num_hidden_layers {
            for (part, width) in [
                ("attention.self.query", 32),
                ("attention.self.value", 32),
                ("attention.output.dense", 32),
                ("intermediate.dense", 32),
                ("output.dense", 48),
            ] {
                let name = format!("encoder.layer.{l}.{part}.weight");
                let m = stats.mean_square(&name).expect("recorded");
                assert_eq!(m.len(), width, "{name}");
                assert!(m.iter().all(|&v| v > 0.0 && v.is_finite()), "{name}");
            }
        }
        assert_eq!(stats.samples(), 1);
        assert!(stats.mean_square("pooler.dense.weight").is_none());
    }

    #[test]
    fn set_linear_changes_the_embedding_and_checks_names_and_shapes() {
        let cfg = tiny();
        let w = weights(&cfg, 6);
        let mut model = BertForward::new(&cfg, &w).expect("complete");
        let tokens = [1u32, 7, 9, 4, 2];
        let before = model.embed(&tokens).expect("embeds");
        let norm: f32 = before.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        let name = "encoder.layer.1.intermediate.dense.weight";
        let zero = Tensor::zeros((48, 32), DType::F32, &Device::Cpu).expect("zeros");
        model.set_linear(name, zero).expect("same shape");
        assert_ne!(model.embed(&tokens).expect("embeds"), before);
        // Putting the weight back restores the embedding exactly.
        model.set_linear(name, w[name].clone()).expect("same shape");
        assert_eq!(model.embed(&tokens).expect("embeds"), before);
        let wrong = Tensor::zeros((3, 3), DType::F32, &Device::Cpu).expect("zeros");
        assert!(model.set_linear(name, wrong.clone()).is_err());
        assert!(
            model
                .set_linear("pooler.dense.weight", wrong.clone())
                .is_err()
        );
        assert!(
            model
                .set_linear("encoder.layer.5.output.dense.weight", wrong)
                .is_err()
        );
    }

    #[test]
    fn short_sequences_rewrap_the_calibration_tokens() {
        let seqs = vec![vec![101, 1, 2, 3, 4, 5, 102], vec![101, 6, 7, 102]];
        assert_eq!(
            short_sequences(&seqs, 4, 100),
            vec![
                vec![101, 1, 2, 102],
                vec![101, 3, 4, 102],
                vec![101, 5, 6, 102],
                vec![101, 7, 102]
            ]
        );
        assert_eq!(
            short_sequences(&seqs, 5, 4),
            vec![vec![101, 1, 2, 3, 102], vec![101, 4, 102]]
        );
        assert!(short_sequences(&[vec![1, 2]], 5, 4).is_empty());
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        let cfg = tiny();
        let mut w = weights(&cfg, 4);
        let ours = BertForward::new(&cfg, &w).expect("complete");
        assert!(ours.hidden(&[], None).is_err());
        assert!(ours.hidden(&[1; 25], None).is_err());
        let e = ours
            .hidden(&[1, 50], None)
            .expect_err("past the vocabulary");
        assert!(e.to_string().contains("50"), "{e}");
        w.remove("encoder.layer.1.output.dense.bias");
        let e = BertForward::new(&cfg, &w).expect_err("missing").to_string();
        assert!(e.contains("encoder.layer.1.output.dense.bias"), "{e}");
    }
}
