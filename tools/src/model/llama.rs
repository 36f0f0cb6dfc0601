//! A compact llama-family forward pass over candle tensors (RMSNorm, RoPE in the
//! Hugging Face half-rotation layout, grouped-query attention, SwiGLU MLP) that can
//! record what every linear layer sees at its input.
//!
//! candle-transformers' llama keeps its linears private, so BitStack's
//! activation-aware scales (DESIGN.md, "LLM weights", step 1: s_j = mean over
//! samples of ||x_j||_2 over tokens) need a forward pass of our own. It is checked
//! against candle-transformers' logits in the tests below. One sequence at a time,
//! no KV cache: it runs calibration and perplexity, not generation.

use std::collections::HashMap;

use candle_core::{D, DType, Device, Tensor};

use super::{LlamaConfig, ModelError, Result};

/// The weights of one decoder layer.
#[derive(Debug, Clone)]
struct Layer {
    attn_norm: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    mlp_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// A llama decoder ready to run.
#[derive(Debug, Clone)]
pub struct LlamaForward {
    cfg: LlamaConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
}

/// The four distinct linear inputs of a layer, in the order [`InputNorms`] keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearInput {
    /// RMSNorm output feeding q, k and v.
    Attn = 0,
    /// Attention output feeding o_proj.
    AttnOut = 1,
    /// RMSNorm output feeding gate and up.
    Mlp = 2,
    /// silu(gate) * up feeding down_proj.
    MlpHidden = 3,
}

impl LinearInput {
    /// Which input a Hugging Face linear name reads, and its layer: llama's
    /// (`model.layers.N.*`) or BERT's (`encoder.layer.N.*`, optionally under
    /// `bert.`), whose four inputs are the same four.
    pub fn of(name: &str) -> Option<(usize, LinearInput)> {
        if let Some((layer, part)) = super::bert::split_layer(name) {
            let input = match part {
                "attention.self.query.weight"
                | "attention.self.key.weight"
                | "attention.self.value.weight" => LinearInput::Attn,
                "attention.output.dense.weight" => LinearInput::AttnOut,
                "intermediate.dense.weight" => LinearInput::Mlp,
                "output.dense.weight" => LinearInput::MlpHidden,
                _ => return None,
            };
            return Some((layer, input));
        }
        let (layer, part) = split_layer(name)?;
        let input = match part {
            "self_attn.q_proj.weight" | "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => {
                LinearInput::Attn
            }
            "self_attn.o_proj.weight" => LinearInput::AttnOut,
            "mlp.gate_proj.weight" | "mlp.up_proj.weight" => LinearInput::Mlp,
            "mlp.down_proj.weight" => LinearInput::MlpHidden,
            _ => return None,
        };
        Some((layer, input))
    }
}

/// Splits `model.layers.{i}.{part}` into `(i, part)`.
fn split_layer(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    Some((layer.parse().ok()?, part))
}

/// Per-channel input statistics: for each layer and [`LinearInput`], the sum over
/// samples of the per-channel L2 norm over that sample's tokens, and the mean
/// square (for palette importance).
#[derive(Debug, Clone)]
pub struct InputNorms {
    samples: usize,
    tokens: usize,
    /// `[layer][input]` -> per-channel sum over samples of ||x_j||_2.
    norm_sums: Vec<[Vec<f64>; 4]>,
    /// `[layer][input]` -> per-channel sum over tokens of x_j^2.
    sq_sums: Vec<[Vec<f64>; 4]>,
    /// `[layer][input]` -> sum over tokens of x x^T (`width x width` row-major), when
    /// asked for (GPTQ palettes): 4 x 8 x width^2 bytes per layer.
    grams: Option<Vec<[Vec<f64>; 4]>>,
}

impl InputNorms {
    /// Empty statistics for `cfg`'s layers and widths.
    pub fn new(cfg: &LlamaConfig) -> Self {
        Self::for_widths(
            cfg.num_hidden_layers,
            cfg.hidden_size,
            cfg.intermediate_size,
        )
    }

    /// Empty statistics for `layers` layers whose first three inputs are `hidden`
    /// wide and whose last (the MLP's hidden activation) is `intermediate` wide.
    pub fn for_widths(layers: usize, hidden: usize, intermediate: usize) -> Self {
        let (h, i) = (hidden, intermediate);
        let widths = || [vec![0.0; h], vec![0.0; h], vec![0.0; h], vec![0.0; i]];
        Self {
            samples: 0,
            tokens: 0,
            norm_sums: (0..layers).map(|_| widths()).collect(),
            sq_sums: (0..layers).map(|_| widths()).collect(),
            grams: None,
        }
    }

    /// Like [`InputNorms::new`], also accumulating each input's Gram matrix `sum x
    /// x^T` (what [`octet_quant::palette::palettize_gptq`] needs).
    pub fn with_gram(cfg: &LlamaConfig) -> Self {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let squares = || {
            [
                vec![0.0; h * h],
                vec![0.0; h * h],
                vec![0.0; h * h],
                vec![0.0; i * i],
            ]
        };
        Self {
            grams: Some((0..cfg.num_hidden_layers).map(|_| squares()).collect()),
            ..Self::new(cfg)
        }
    }

    /// Closes a recorded sequence of `tokens` tokens.
    pub(crate) fn end_sample(&mut self, tokens: usize) {
        self.samples += 1;
        self.tokens += tokens;
    }

    /// Number of sequences recorded.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Adds `x`, `[tokens, channels]`, the input `input` of layer `layer` saw.
    pub(crate) fn record(&mut self, layer: usize, input: LinearInput, x: &Tensor) -> Result<()> {
        // x is [tokens, channels]: per-channel sum of squares over the tokens.
        let sq: Vec<f32> = x.sqr()?.sum(0)?.to_vec1()?;
        let idx = input as usize;
        for ((n, s), v) in self.norm_sums[layer][idx]
            .iter_mut()
            .zip(self.sq_sums[layer][idx].iter_mut())
            .zip(sq)
        {
            *n += f64::from(v).sqrt();
            *s += f64::from(v);
        }
        if let Some(grams) = &mut self.grams {
            let x = x.contiguous()?;
            let g: Vec<f32> = x.t()?.matmul(&x)?.flatten_all()?.to_vec1()?;
            for (acc, v) in grams[layer][idx].iter_mut().zip(g) {
                *acc += f64::from(v);
            }
        }
        Ok(())
    }

    /// `sum x x^T` over all recorded tokens of the input of linear `name` (`cols x
    /// cols` row-major), when recorded with [`InputNorms::with_gram`].
    pub fn gram(&self, name: &str) -> Option<&[f64]> {
        let (layer, input) = LinearInput::of(name)?;
        Some(
            self.grams
                .as_ref()?
                .get(layer)?
                .get(input as usize)?
                .as_slice(),
        )
    }

    /// BitStack's activation-aware scale of the linear `name`:
    /// s_j = mean over samples of ||x_j||_2 over tokens, + 1e-3.
    pub fn scales(&self, name: &str) -> Option<Vec<f32>> {
        let (layer, input) = LinearInput::of(name)?;
        let sums = self.norm_sums.get(layer)?.get(input as usize)?;
        let n = self.samples.max(1) as f64;
        Some(sums.iter().map(|s| (s / n + 1e-3) as f32).collect())
    }

    /// Mean of x_j^2 over all recorded tokens: the per-input-channel importance that
    /// palettes weight their k-means with.
    pub fn mean_square(&self, name: &str) -> Option<Vec<f32>> {
        let (layer, input) = LinearInput::of(name)?;
        let sums = self.sq_sums.get(layer)?.get(input as usize)?;
        let n = self.tokens.max(1) as f64;
        Some(sums.iter().map(|s| (s / n) as f32).collect())
    }
}

/// `x @ w^T` for `x` of `[tokens, in]` and a linear weight `w` of `[out, in]`. A
/// weight held in f16 or bf16 ([`LlamaForward::with_linear_dtype`]) multiplies `x`
/// rounded to its dtype and the product comes back as `x`'s dtype, so everything
/// between the linears (norms, RoPE, softmax, the residual stream) stays f32.
fn linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    if x.dtype() == w.dtype() {
        return x.matmul(&w.t()?);
    }
    x.to_dtype(w.dtype())?.matmul(&w.t()?)?.to_dtype(x.dtype())
}

/// RMSNorm in f32: x * rsqrt(mean(x^2) + eps) * w.
fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
}

/// Hugging Face RoPE on `[heads, tokens, head_dim]`: rotates pairs (i, i + d/2).
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let r1 = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
    let r2 = (x2.broadcast_mul(cos)? + x1.broadcast_mul(sin)?)?;
    Tensor::cat(&[r1, r2], D::Minus1)
}

impl LlamaForward {
    /// Builds the model from Hugging Face named tensors (any float dtype, on one
    /// device), computing in f32. The LM head falls back to the embeddings when the
    /// config ties them.
    pub fn new(cfg: &LlamaConfig, tensors: &HashMap<String, Tensor>) -> Result<Self> {
        Self::with_linear_dtype(cfg, tensors, DType::F32)
    }

    /// [`LlamaForward::new`] with the linear weights, the embeddings and the LM head
    /// held as `dtype` (f16 or bf16: half the memory of f32, and the matmuls run in
    /// it through candle's gemm); norms and activations between the linears stay
    /// f32.
    pub fn with_linear_dtype(
        cfg: &LlamaConfig,
        tensors: &HashMap<String, Tensor>,
        dtype: DType,
    ) -> Result<Self> {
        cfg.validate()?;
        let get_as = |name: &str, shape: &[usize], dtype: DType| -> Result<Tensor> {
            let t = tensors.get(name).ok_or_else(|| ModelError::MissingTensor {
                tensor: name.to_owned(),
            })?;
            if t.dims() != shape {
                return Err(ModelError::Shape {
                    tensor: name.to_owned(),
                    expected: shape.to_vec(),
                    actual: t.dims().to_vec(),
                });
            }
            Ok(t.to_dtype(dtype)?)
        };
        let get = |name: &str, shape: &[usize]| get_as(name, shape, DType::F32);
        let lin = |name: &str, shape: &[usize]| get_as(name, shape, dtype);
        let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let kv = cfg.kv_heads() * cfg.head_dim();
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                let p = format!("model.layers.{l}");
                Ok(Layer {
                    attn_norm: get(&format!("{p}.input_layernorm.weight"), &[h])?,
                    q: lin(&format!("{p}.self_attn.q_proj.weight"), &[h, h])?,
                    k: lin(&format!("{p}.self_attn.k_proj.weight"), &[kv, h])?,
                    v: lin(&format!("{p}.self_attn.v_proj.weight"), &[kv, h])?,
                    o: lin(&format!("{p}.self_attn.o_proj.weight"), &[h, h])?,
                    mlp_norm: get(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                    gate: lin(&format!("{p}.mlp.gate_proj.weight"), &[i, h])?,
                    up: lin(&format!("{p}.mlp.up_proj.weight"), &[i, h])?,
                    down: lin(&format!("{p}.mlp.down_proj.weight"), &[h, i])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let embed = lin("model.embed_tokens.weight", &[v, h])?;
        let lm_head = if cfg.tie_word_embeddings && !tensors.contains_key("lm_head.weight") {
            embed.clone()
        } else {
            lin("lm_head.weight", &[v, h])?
        };
        Ok(Self {
            cfg: cfg.clone(),
            embed,
            layers,
            norm: get("model.norm.weight", &[h])?,
            lm_head,
        })
    }

    fn device(&self) -> &Device {
        self.embed.device()
    }

    fn rope_tables(&self, tokens: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let hd = self.cfg.head_dim();
        let theta = f64::from(self.cfg.rope_theta);
        let inv: Vec<f32> = (0..hd / 2)
            .map(|i| (1.0 / theta.powf(2.0 * i as f64 / hd as f64)) as f32)
            .collect();
        let angles: Vec<f32> = (0..tokens)
            .flat_map(|p| inv.iter().map(move |f| p as f32 * f))
            .collect();
        let a = Tensor::from_vec(angles, (tokens, hd / 2), self.device())?;
        Ok((a.cos()?, a.sin()?))
    }

    fn causal_mask(&self, tokens: usize) -> candle_core::Result<Tensor> {
        let m: Vec<f32> = (0..tokens)
            .flat_map(|i| (0..tokens).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        Tensor::from_vec(m, (tokens, tokens), self.device())
    }

    /// Runs `tokens` and returns the final normalised hidden states `[tokens, hidden]`,
    /// recording every linear's input into `record` when given.
    pub fn hidden(&self, tokens: &[u32], record: Option<&mut InputNorms>) -> Result<Tensor> {
        let x = self.stream(tokens, 0, None, record, None)?;
        Ok(rms_norm(&x, &self.norm, self.cfg.rms_norm_eps)?)
    }

    /// The residual stream after the last layer for `tokens`, running the layers
    /// from `from` on: from `x`, the stream entering layer `from`, or from the
    /// embeddings when `x` is `None` (then `from` is 0). Records every linear's
    /// input into `record`, and pushes the stream entering each layer run (and the
    /// one leaving the last) onto `keep`, when given.
    fn stream(
        &self,
        tokens: &[u32],
        from: usize,
        x: Option<Tensor>,
        mut record: Option<&mut InputNorms>,
        mut keep: Option<&mut Vec<Tensor>>,
    ) -> Result<Tensor> {
        let t = tokens.len();
        if t == 0 || t > self.cfg.max_position_embeddings {
            return Err(ModelError::SequenceLength {
                tokens: t,
                max: self.cfg.max_position_embeddings,
            });
        }
        super::calib::check_vocab(tokens, self.cfg.vocab_size)?;
        let (heads, kvh, hd) = (
            self.cfg.num_attention_heads,
            self.cfg.kv_heads(),
            self.cfg.head_dim(),
        );
        let eps = self.cfg.rms_norm_eps;
        let (cos, sin) = self.rope_tables(t)?;
        let mask = self.causal_mask(t)?;
        let mut x = match x {
            Some(x) => x,
            None => {
                let ids = Tensor::new(tokens, self.device())?;
                self.embed.index_select(&ids, 0)?.to_dtype(DType::F32)?
            }
        };
        for (l, layer) in self.layers.iter().enumerate().skip(from) {
            if let Some(k) = keep.as_deref_mut() {
                k.push(x.clone());
            }
            let a = rms_norm(&x, &layer.attn_norm, eps)?;
            if let Some(r) = record.as_deref_mut() {
                r.record(l, LinearInput::Attn, &a)?;
            }
            let split = |y: Tensor, n: usize| y.reshape((t, n, hd))?.transpose(0, 1)?.contiguous();
            let q = rope(&split(linear(&a, &layer.q)?, heads)?, &cos, &sin)?;
            let k = rope(&split(linear(&a, &layer.k)?, kvh)?, &cos, &sin)?;
            let v = split(linear(&a, &layer.v)?, kvh)?;
            // Grouped-query attention: query head h reads kv head h / (heads / kvh).
            let rep = heads / kvh;
            let k = k
                .unsqueeze(1)?
                .expand((kvh, rep, t, hd))?
                .reshape((heads, t, hd))?;
            let v = v
                .unsqueeze(1)?
                .expand((kvh, rep, t, hd))?
                .reshape((heads, t, hd))?;
            let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(&mask)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let att = probs
                .matmul(&v)?
                .transpose(0, 1)?
                .reshape((t, heads * hd))?;
            if let Some(r) = record.as_deref_mut() {
                r.record(l, LinearInput::AttnOut, &att)?;
            }
            x = (x + linear(&att, &layer.o)?)?;
            let m = rms_norm(&x, &layer.mlp_norm, eps)?;
            if let Some(r) = record.as_deref_mut() {
                r.record(l, LinearInput::Mlp, &m)?;
            }
            let g = candle_nn::ops::silu(&linear(&m, &layer.gate)?)?;
            let hmid = (g * linear(&m, &layer.up)?)?;
            if let Some(r) = record.as_deref_mut() {
                r.record(l, LinearInput::MlpHidden, &hmid)?;
            }
            x = (x + linear(&hmid, &layer.down)?)?;
        }
        if let Some(k) = keep {
            k.push(x.clone());
        }
        if let Some(r) = record {
            r.end_sample(t);
        }
        Ok(x)
    }

    /// Logits `[tokens, vocab]` for every position.
    pub fn logits(&self, tokens: &[u32]) -> Result<Tensor> {
        Ok(linear(&self.hidden(tokens, None)?, &self.lm_head)?)
    }

    /// Mean negative log-likelihood (nats per token) of predicting each token from
    /// its prefix; exp of it is the perplexity.
    pub fn mean_nll(&self, tokens: &[u32]) -> Result<f64> {
        let nll = self.token_nlls(tokens)?;
        Ok(nll.iter().sum::<f64>() / nll.len() as f64)
    }

    /// Negative log-likelihood (nats) of each of `tokens[1..]` given the tokens
    /// before it: entry `i` is `-log p(tokens[i + 1] | tokens[..=i])`.
    pub fn token_nlls(&self, tokens: &[u32]) -> Result<Vec<f64>> {
        let n = Self::fed(tokens)?;
        let x = self.stream(&tokens[..n], 0, None, None, None)?;
        self.nlls_of(tokens, &x)
    }

    /// What [`LlamaForward::token_nlls_from`] resumes from: the residual stream
    /// entering each layer and the one leaving the last (`layers + 1` tensors of
    /// `[tokens.len() - 1, hidden]`) when [`LlamaForward::token_nlls`] runs `tokens`.
    pub fn nll_states(&self, tokens: &[u32]) -> Result<Vec<Tensor>> {
        let n = Self::fed(tokens)?;
        let mut keep = Vec::with_capacity(self.layers.len() + 1);
        self.stream(&tokens[..n], 0, None, None, Some(&mut keep))?;
        Ok(keep)
    }

    /// [`LlamaForward::token_nlls`] with the layers before `from` skipped: `states`
    /// are [`LlamaForward::nll_states`] of the same tokens from a model whose layers
    /// before `from` are this one's, so the result is the same as running them all.
    /// `from` may be the layer count (only the final norm and the LM head run).
    pub fn token_nlls_from(
        &self,
        tokens: &[u32],
        from: usize,
        states: &[Tensor],
    ) -> Result<Vec<f64>> {
        let n = Self::fed(tokens)?;
        let layers = self.layers.len();
        if states.len() != layers + 1 || from > layers {
            return Err(ModelError::Parameter {
                name: "resume layer",
                value: format!("{from} with {} saved states", states.len()),
                expected: format!("a layer in 0..={layers} and {} saved states", layers + 1),
            });
        }
        let x = &states[from];
        let expected = [n, self.cfg.hidden_size];
        if x.dims() != expected {
            return Err(ModelError::Shape {
                tensor: format!("saved residual stream entering layer {from}"),
                expected: expected.to_vec(),
                actual: x.dims().to_vec(),
            });
        }
        let x = self.stream(&tokens[..n], from, Some(x.clone()), None, None)?;
        self.nlls_of(tokens, &x)
    }

    /// The tokens a scoring run feeds (all but the last), at least 2 given.
    fn fed(tokens: &[u32]) -> Result<usize> {
        if tokens.len() < 2 {
            return Err(ModelError::TooFewTokens {
                what: "a perplexity sequence".into(),
                got: tokens.len(),
                needed: 2,
            });
        }
        Ok(tokens.len() - 1)
    }

    /// The negative log-likelihoods of `tokens[1..]` from `x`, the residual
    /// stream after the last layer for `tokens[..len - 1]`.
    fn nlls_of(&self, tokens: &[u32], x: &Tensor) -> Result<Vec<f64>> {
        let h = rms_norm(x, &self.norm, self.cfg.rms_norm_eps)?;
        let logits = linear(&h, &self.lm_head)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let targets = Tensor::new(&tokens[1..], self.device())?.unsqueeze(1)?;
        let picked: Vec<f32> = logp.gather(&targets, 1)?.squeeze(1)?.to_vec1()?;
        Ok(picked.iter().map(|&v| -f64::from(v)).collect())
    }

    /// Replaces the weight `name` (a Hugging Face linear name) with `w` of the same
    /// shape, for evaluating one compressed layer at a time.
    pub fn set_linear(&mut self, name: &str, w: Tensor) -> Result<()> {
        let (layer, part) = layer_named(&mut self.layers, name, split_layer)?;
        let not_linear = || ModelError::NotLinear {
            name: name.to_owned(),
        };
        let slot = match part {
            "self_attn.q_proj.weight" => &mut layer.q,
            "self_attn.k_proj.weight" => &mut layer.k,
            "self_attn.v_proj.weight" => &mut layer.v,
            "self_attn.o_proj.weight" => &mut layer.o,
            "mlp.gate_proj.weight" => &mut layer.gate,
            "mlp.up_proj.weight" => &mut layer.up,
            "mlp.down_proj.weight" => &mut layer.down,
            _ => return Err(not_linear()),
        };
        replace_weight(slot, name, w)
    }
}

/// The layer the weight `name` belongs to, as `split` reads its number, and the
/// rest of the name.
pub(crate) fn layer_named<'a, 'n, T>(
    layers: &'a mut [T],
    name: &'n str,
    split: fn(&str) -> Option<(usize, &str)>,
) -> Result<(&'a mut T, &'n str)> {
    let (l, part) = split(name).ok_or_else(|| ModelError::NotLinear {
        name: name.to_owned(),
    })?;
    let layer = layers.get_mut(l).ok_or_else(|| ModelError::NoLayer {
        name: name.to_owned(),
        layer: l,
    })?;
    Ok((layer, part))
}

/// Puts `w` in `slot` (the weight `name`), in `slot`'s dtype, after checking that
/// their shapes agree.
pub(crate) fn replace_weight(slot: &mut Tensor, name: &str, w: Tensor) -> Result<()> {
    if slot.dims() != w.dims() {
        return Err(ModelError::Shape {
            tensor: name.to_owned(),
            expected: slot.dims().to_vec(),
            actual: w.dims().to_vec(),
        });
    }
    *slot = w.to_dtype(slot.dtype())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    pub(crate) fn tiny_config() -> LlamaConfig {
        LlamaConfig {
            hidden_size: 64,
            intermediate_size: 96,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            vocab_size: 128,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            max_position_embeddings: 64,
            tie_word_embeddings: false,
        }
    }

    fn random_weights(cfg: &LlamaConfig, seed: u64) -> HashMap<String, Tensor> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut t = |shape: &[usize], scale: f32, offset: f32| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|_| offset + scale * (rng.random::<f32>() * 2.0 - 1.0))
                .collect();
            Tensor::from_vec(v, shape, &Device::Cpu).expect("shape matches")
        };
        let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let kv = cfg.kv_heads() * cfg.head_dim();
        let mut m = HashMap::new();
        m.insert("model.embed_tokens.weight".to_owned(), t(&[v, h], 1.0, 0.0));
        m.insert("lm_head.weight".to_owned(), t(&[v, h], 0.2, 0.0));
        m.insert("model.norm.weight".to_owned(), t(&[h], 0.1, 1.0));
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let shapes: [(&str, Vec<usize>); 7] = [
                ("self_attn.q_proj", vec![h, h]),
                ("self_attn.k_proj", vec![kv, h]),
                ("self_attn.v_proj", vec![kv, h]),
                ("self_attn.o_proj", vec![h, h]),
                ("mlp.gate_proj", vec![i, h]),
                ("mlp.up_proj", vec![i, h]),
                ("mlp.down_proj", vec![h, i]),
            ];
            for (n, s) in shapes {
                m.insert(format!("{p}.{n}.weight"), t(&s, 0.3, 0.0));
            }
            m.insert(format!("{p}.input_layernorm.weight"), t(&[h], 0.1, 1.0));
            m.insert(
                format!("{p}.post_attention_layernorm.weight"),
                t(&[h], 0.1, 1.0),
            );
        }
        m
    }

    #[test]
    fn logits_match_candle_transformers_llama() {
        let cfg = tiny_config();
        let w = random_weights(&cfg, 7);
        let ours = LlamaForward::new(&cfg, &w).expect("weights complete");
        let tokens: Vec<u32> = (0..23u32).map(|i| (i * 37 + 5) % 128).collect();
        let logits = ours.logits(&tokens).expect("forward");
        let last: Vec<f32> = logits
            .get(tokens.len() - 1)
            .and_then(|t| t.to_vec1())
            .expect("row");

        let ccfg = cfg.to_candle();
        let vb = candle_nn::VarBuilder::from_tensors(w, DType::F32, &Device::Cpu);
        let theirs = candle_transformers::models::llama::Llama::load(vb, &ccfg).expect("load");
        let mut cache =
            candle_transformers::models::llama::Cache::new(false, DType::F32, &ccfg, &Device::Cpu)
                .expect("cache");
        let input = Tensor::new(tokens.as_slice(), &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .expect("ids");
        let reference: Vec<f32> = theirs
            .forward(&input, 0, &mut cache)
            .and_then(|t| t.squeeze(0))
            .and_then(|t| t.to_vec1())
            .expect("forward");
        let max_abs = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = last
            .iter()
            .zip(&reference)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(max_abs > 0.1, "degenerate logits");
        assert!(
            err <= 1e-4 * max_abs.max(1.0),
            "max |diff| {err} vs scale {max_abs}"
        );
    }

    /// Linears held in f16 / bf16 give the f32 model's logits up to their rounding
    /// (of the weights and of the activations entering each matmul), as f32.
    #[test]
    fn two_byte_linears_stay_close_to_f32() {
        let cfg = tiny_config();
        let w = random_weights(&cfg, 11);
        let tokens: Vec<u32> = (0..19u32).map(|i| (i * 29 + 3) % 128).collect();
        let rows = |m: &LlamaForward| -> Vec<Vec<f32>> {
            let l = m.logits(&tokens).expect("forward");
            assert_eq!(l.dtype(), DType::F32);
            l.to_vec2().expect("rows")
        };
        let full = rows(&LlamaForward::new(&cfg, &w).expect("weights complete"));
        let max_abs = full.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
        for (dtype, tol) in [(DType::F16, 2e-2), (DType::BF16, 1e-1)] {
            let m = LlamaForward::with_linear_dtype(&cfg, &w, dtype).expect("weights complete");
            let got = rows(&m);
            let err = got
                .iter()
                .flatten()
                .zip(full.iter().flatten())
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err > 0.0, "{dtype:?} should round something");
            assert!(
                err <= tol * max_abs,
                "{dtype:?}: max |diff| {err} vs scale {max_abs}"
            );
        }
    }

    #[test]
    fn records_scales_per_linear_input() {
        let cfg = tiny_config();
        let w = random_weights(&cfg, 3);
        let model = LlamaForward::new(&cfg, &w).expect("weights complete");
        let mut stats = InputNorms::new(&cfg);
        let a: Vec<u32> = (0..9).collect();
        let b: Vec<u32> = (20..40).collect();
        model.hidden(&a, Some(&mut stats)).expect("forward");
        model.hidden(&b, Some(&mut stats)).expect("forward");
        assert_eq!(stats.samples(), 2);
        let q = stats
            .scales("model.layers.1.self_attn.q_proj.weight")
            .expect("known linear");
        let k = stats
            .scales("model.layers.1.self_attn.k_proj.weight")
            .expect("known linear");
        let down = stats
            .scales("model.layers.0.mlp.down_proj.weight")
            .expect("known linear");
        assert_eq!(q, k, "q and k read the same input");
        assert_eq!(q.len(), cfg.hidden_size);
        assert_eq!(down.len(), cfg.intermediate_size);
        assert!(q.iter().chain(&down).all(|&s| s.is_finite() && s >= 1e-3));
        assert!(stats.scales("model.embed_tokens.weight").is_none());

        // The first layer's attention input is RMSNorm(embeddings): check s_j by hand.
        let emb = &w["model.embed_tokens.weight"];
        let norm_w = &w["model.layers.0.input_layernorm.weight"];
        let mut expect = vec![0f64; cfg.hidden_size];
        for seq in [&a, &b] {
            let ids = Tensor::new(seq.as_slice(), &Device::Cpu).expect("ids");
            let x = rms_norm(
                &emb.index_select(&ids, 0).expect("rows"),
                norm_w,
                cfg.rms_norm_eps,
            )
            .expect("norm");
            let sq: Vec<f32> = x
                .sqr()
                .and_then(|s| s.sum(0))
                .and_then(|s| s.to_vec1())
                .expect("sum");
            for (e, v) in expect.iter_mut().zip(sq) {
                *e += f64::from(v).sqrt() / 2.0;
            }
        }
        let got = stats
            .scales("model.layers.0.self_attn.v_proj.weight")
            .expect("known linear");
        for (g, e) in got.iter().zip(&expect) {
            assert!(
                (f64::from(*g) - (e + 1e-3)).abs() < 1e-4 * e.max(1.0),
                "{g} vs {e}"
            );
        }
    }

    #[test]
    fn set_linear_changes_the_output_and_checks_shape() {
        let cfg = tiny_config();
        let w = random_weights(&cfg, 11);
        let mut model = LlamaForward::new(&cfg, &w).expect("weights complete");
        let tokens: Vec<u32> = (0..12).collect();
        let before = model.mean_nll(&tokens).expect("nll");
        assert!(before.is_finite() && before > 0.0);
        let zero = Tensor::zeros(
            (cfg.hidden_size, cfg.intermediate_size),
            DType::F32,
            &Device::Cpu,
        )
        .expect("zeros");
        model
            .set_linear("model.layers.1.mlp.down_proj.weight", zero)
            .expect("same shape");
        let after = model.mean_nll(&tokens).expect("nll");
        assert!((after - before).abs() > 1e-6);
        let wrong = Tensor::zeros((3, 3), DType::F32, &Device::Cpu).expect("zeros");
        assert!(
            model
                .set_linear("model.layers.0.mlp.up_proj.weight", wrong)
                .is_err()
        );
        let mut missing = w.clone();
        missing.remove("model.layers.1.mlp.up_proj.weight");
        let e = LlamaForward::new(&cfg, &missing)
            .expect_err("missing tensor")
            .to_string();
        assert!(e.contains("model.layers.1.mlp.up_proj.weight"), "{e}");
    }

    /// A run resumed from saved streams at any layer up to the first one changed
    /// scores exactly as a full run; resumed past it, it misses the change.
    #[test]
    fn resuming_from_saved_streams_matches_a_full_run() {
        use crate::model::ppl::{SavedRun, perplexity};
        let cfg = tiny_config();
        let layers = cfg.num_hidden_layers;
        let base = LlamaForward::new(&cfg, &random_weights(&cfg, 5)).expect("weights complete");
        let tokens: Vec<u32> = (0..50u32).map(|i| (i * 37 + 11) % 128).collect();
        let states = base.nll_states(&tokens[..20]).expect("states");
        assert_eq!(states.len(), layers + 1);
        let full = base.token_nlls(&tokens[..20]).expect("nll");
        for from in 0..=layers {
            let got = base
                .token_nlls_from(&tokens[..20], from, &states)
                .expect("resume");
            assert_eq!(got, full, "from {from}");
        }
        let mut changed = base.clone();
        let zero = Tensor::zeros(
            (cfg.hidden_size, cfg.intermediate_size),
            DType::F32,
            &Device::Cpu,
        )
        .expect("zeros");
        changed
            .set_linear("model.layers.1.mlp.down_proj.weight", zero)
            .expect("same shape");
        let want = changed.token_nlls(&tokens[..20]).expect("nll");
        for from in 0..=1 {
            let got = changed
                .token_nlls_from(&tokens[..20], from, &states)
                .expect("resume");
            assert_eq!(got, want, "from {from}");
        }
        let past = changed
            .token_nlls_from(&tokens[..20], 2, &states)
            .expect("resume");
        assert_eq!(past, full);
        assert_ne!(past, want);
        // Windowed perplexity, overlapping and not.
        for (ctx, stride) in [(16, 16), (16, 8)] {
            let (run, p) = SavedRun::new(&base, &tokens, ctx, stride).expect("run");
            let plain = perplexity(&base, &tokens, ctx, stride, |_, _| {}).expect("ppl");
            assert_eq!(p.nll_sum, plain.nll_sum);
            assert_eq!(p.tokens, plain.tokens);
            let want = perplexity(&changed, &tokens, ctx, stride, |_, _| {}).expect("ppl");
            for from in 0..=1 {
                let got = run.perplexity_from(&changed, from).expect("resume");
                assert_eq!(
                    got.nll_sum, want.nll_sum,
                    "ctx {ctx} stride {stride} from {from}"
                );
            }
        }
        // A layer past the end, too few states, states of other tokens: refused.
        let e = base
            .token_nlls_from(&tokens[..20], layers + 1, &states)
            .expect_err("no such layer")
            .to_string();
        assert!(e.contains("resume layer"), "{e}");
        assert!(
            base.token_nlls_from(&tokens[..20], 0, &states[..1])
                .is_err()
        );
        let e = base
            .token_nlls_from(&tokens[..12], 0, &states)
            .expect_err("other tokens")
            .to_string();
        assert!(e.contains("entering layer 0"), "{e}");
    }
}
