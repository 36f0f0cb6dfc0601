//! Calibration: tokenise a text, cut it into sequences, and run the llama forward
//! pass over them to collect the per-input-channel statistics BitStack scales by
//! (and palettes weight by).
//!
//! The tokenizer comes from `--tokenizer tokenizer.json`, a `tokenizer.json` next
//! to a safetensors checkpoint, or a GGUF file's byte-level BPE vocabulary and
//! merges. The text is a user file or a small built-in English sample (about 1,500
//! tokens: enough to exercise the path, too little for best results; pass `--calib`
//! with a few hundred KB of text representative of the model's use).

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use candle_core::{Device, Tensor};
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, DecoderWrapper, Tokenizer};

use super::llama::{InputNorms, LlamaForward};
use super::{LlamaConfig, Model, ModelError, Result, TokenizerSource};

/// The built-in calibration text.
pub const BUILTIN_TEXT: &str = include_str!("calib_text.txt");
/// The largest calibration text read (64 MiB).
const MAX_TEXT_BYTES: u64 = 64 << 20;

/// How calibration sequences are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalibShape {
    /// Tokens per sequence.
    pub seq_len: usize,
    /// The most sequences used.
    pub max_samples: usize,
}

impl Default for CalibShape {
    fn default() -> Self {
        Self {
            seq_len: 256,
            max_samples: 32,
        }
    }
}

/// Reads the calibration text: the user's file, or the built-in sample.
pub fn read_text(path: Option<&Path>) -> Result<String> {
    let Some(path) = path else {
        return Ok(BUILTIN_TEXT.to_owned());
    };
    let io = |action| {
        move |source| ModelError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    let len = fs::metadata(path).map_err(io("reading text"))?.len();
    if len > MAX_TEXT_BYTES {
        return Err(ModelError::TooLarge {
            what: "text",
            path: path.to_path_buf(),
            len,
            max: MAX_TEXT_BYTES,
        });
    }
    fs::read_to_string(path).map_err(io("reading text (UTF-8 expected)"))
}

/// The tokenizer for `model`: `override_json` first, then what the checkpoint carries.
pub fn load_tokenizer(model: &Model, override_json: Option<&Path>) -> Result<Tokenizer> {
    if let Some(p) = override_json {
        return json_tokenizer(p);
    }
    match &model.tokenizer {
        Some(TokenizerSource::Json(p)) => json_tokenizer(p),
        Some(TokenizerSource::GgufBpe {
            tokens,
            merges,
            pre,
            special,
        }) => {
            let mut tok = gguf_bpe(tokens, merges, pre.as_deref())?;
            let special: Vec<AddedToken> = special
                .iter()
                .map(|s| AddedToken::from(s.clone(), true))
                .collect();
            tok.add_special_tokens(&special);
            Ok(tok)
        }
        None => Err(ModelError::NoTokenizer {
            path: model.source.clone(),
        }),
    }
}

/// A Hugging Face `tokenizer.json`.
fn json_tokenizer(path: &Path) -> Result<Tokenizer> {
    Tokenizer::from_file(path).map_err(|source| ModelError::TokenizerFile {
        path: path.to_path_buf(),
        source,
    })
}

/// The tokenizer in `path`: a `.gguf` file's byte-level BPE vocabulary, or a
/// Hugging Face `tokenizer.json`.
pub fn tokenizer_file(path: &Path) -> Result<Tokenizer> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        let source =
            super::gguf::read_tokenizer(path)?.ok_or_else(|| ModelError::NoBpeVocabulary {
                path: path.to_path_buf(),
            })?;
        let holder = Model {
            source: path.to_path_buf(),
            arch: super::Architecture::Other {
                name: "tokenizer only".into(),
            },
            tensors: Default::default(),
            tokenizer: Some(source),
            left_out: Vec::new(),
        };
        return load_tokenizer(&holder, None);
    }
    json_tokenizer(path)
}

/// A byte-level BPE tokenizer (GPT-2 style) from GGUF's token list and merges.
fn gguf_bpe(tokens: &[String], merges: &[String], pre: Option<&str>) -> Result<Tokenizer> {
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| ModelError::BadMerge {
                    index: i,
                    merge: m.clone(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|source| ModelError::GgufTokenizer { source })?;
    let mut tok = Tokenizer::new(bpe);
    let byte_level = ByteLevel::new(false, true, true);
    // SmolLM's tokenizer.json splits digits one by one before the byte-level regex;
    // llama.cpp names that pre-tokenizer "smollm". Others get plain GPT-2 splitting,
    // which is close enough for calibration statistics.
    let pre_tok: PreTokenizerWrapper = if pre == Some("smollm") {
        Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
    } else {
        byte_level.into()
    };
    tok.with_pre_tokenizer(Some(pre_tok));
    tok.with_decoder(Some(DecoderWrapper::ByteLevel(byte_level)));
    Ok(tok)
}

/// Tokenises `text` and cuts it into at most `shape.max_samples` sequences of
/// `shape.seq_len` tokens (the last may be shorter, but at least 2 tokens).
pub fn sequences(
    tok: &Tokenizer,
    text: &str,
    shape: CalibShape,
    vocab: usize,
) -> Result<Vec<Vec<u32>>> {
    if shape.seq_len < 2 {
        return Err(ModelError::Parameter {
            name: "--calib-seq-len",
            value: shape.seq_len.to_string(),
            expected: "at least 2".into(),
        });
    }
    if shape.max_samples == 0 {
        return Err(ModelError::Parameter {
            name: "--calib-samples",
            value: "0".into(),
            expected: "at least 1".into(),
        });
    }
    let enc = tok
        .encode(text, false)
        .map_err(|source| ModelError::Tokenize {
            what: "the calibration text".into(),
            source,
        })?;
    let ids = enc.get_ids();
    check_vocab(ids, vocab)?;
    let seqs: Vec<Vec<u32>> = ids
        .chunks(shape.seq_len)
        .filter(|c| c.len() >= 2)
        .take(shape.max_samples)
        .map(<[u32]>::to_vec)
        .collect();
    if seqs.is_empty() {
        return Err(ModelError::TooFewTokens {
            what: "the calibration text".into(),
            got: ids.len(),
            needed: 2,
        });
    }
    Ok(seqs)
}

/// Checks that every id a tokenizer produced lies inside the model's vocabulary.
pub fn check_vocab(ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().find(|&&id| id as usize >= vocab) {
        Some(&id) => Err(ModelError::TokenOutOfVocab { id, vocab }),
        None => Ok(()),
    }
}

/// The checkpoint's tensors as f32 candle tensors on `device`.
pub fn to_candle(model: &Model, device: &Device) -> Result<HashMap<String, Tensor>> {
    model
        .tensors
        .values()
        .map(|t| {
            let x = Tensor::from_slice(&t.data, t.shape.as_slice(), device).map_err(|source| {
                ModelError::Tensor {
                    what: format!("tensor `{}`", t.name),
                    source: Box::new(source),
                }
            })?;
            Ok((t.name.clone(), x))
        })
        .collect()
}

/// Runs every sequence through the model and returns the recorded statistics.
/// `progress(done, total)` is called after each sequence.
pub fn collect_input_norms(
    cfg: &LlamaConfig,
    forward: &LlamaForward,
    seqs: &[Vec<u32>],
    gram: bool,
    progress: impl FnMut(usize, usize),
) -> Result<InputNorms> {
    let mut stats = if gram {
        InputNorms::with_gram(cfg)
    } else {
        InputNorms::new(cfg)
    };
    record_sequences(
        seqs,
        &mut stats,
        |s, r| forward.hidden(s, Some(r)),
        progress,
    )?;
    Ok(stats)
}

/// Runs every sequence through `run`, which records its linears' inputs into
/// `stats`; a failing sequence is named. `progress(done, total)` is called after
/// each sequence.
pub(crate) fn record_sequences(
    seqs: &[Vec<u32>],
    stats: &mut InputNorms,
    mut run: impl FnMut(&[u32], &mut InputNorms) -> Result<Tensor>,
    mut progress: impl FnMut(usize, usize),
) -> Result<()> {
    for (i, s) in seqs.iter().enumerate() {
        run(s, stats).map_err(|e| ModelError::CalibSequence {
            index: i,
            source: Box::new(e),
        })?;
        progress(i + 1, seqs.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Architecture;
    use crate::model::locate::smollm2;

    #[test]
    fn builtin_text_is_cut_into_sequences() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "abc", " ", "Ġ"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let merges = vec!["a b".to_owned(), "ab c".to_owned()];
        let tok = gguf_bpe(&tokens, &merges, None).expect("valid vocabulary");
        let enc = tok.encode("abcab", false).expect("encodes");
        assert_eq!(enc.get_ids(), &[4, 3]);
        let seqs = sequences(
            &tok,
            "abcabcabcab",
            CalibShape {
                seq_len: 2,
                max_samples: 10,
            },
            7,
        )
        .expect("cut");
        assert_eq!(seqs, vec![vec![4, 4], vec![4, 3]]);
        assert!(
            sequences(
                &tok,
                "abc",
                CalibShape {
                    seq_len: 2,
                    max_samples: 10
                },
                7
            )
            .is_err(),
            "one token"
        );
        assert!(
            sequences(
                &tok,
                "abcab",
                CalibShape {
                    seq_len: 4,
                    max_samples: 1
                },
                4
            )
            .is_err(),
            "id outside vocab"
        );
        assert!(gguf_bpe(&tokens, &["nospace".to_owned()], None).is_err());
    }

    /// The GGUF tokenizer is the authority for SmolLM2 (no tokenizer.json offline):
    /// decoding gives the text back byte for byte, control tokens match whole, digits
    /// split one by one (SmolLM2's pre-tokenizer), and English costs a plausible
    /// number of tokens.
    #[test]
    fn real_smollm2_gguf_tokenizer_round_trips() {
        let Some(path) = smollm2() else { return };
        let tok = tokenizer_file(&path).expect("GGUF BPE");
        let text = "Enter string in the table of \u{201c}interned\u{201d} strings; 12345 caf\u{e9}s \
                    \u{2014} na\u{ef}ve r\u{e9}sum\u{e9}s.\n\n  Tabs\tand    spaces. def f(x): return x**2";
        let ids = tok.encode(text, false).expect("encodes").get_ids().to_vec();
        assert_eq!(tok.decode(&ids, false).expect("decodes"), text);
        let words = text.split_whitespace().count();
        assert!(
            ids.len() > words && ids.len() < 3 * words,
            "{} tokens for {words} words",
            ids.len()
        );
        let digits = tok.encode("12345", false).expect("encodes");
        assert_eq!(digits.get_ids().len(), 5, "{:?}", digits.get_tokens());
        let chat = tok
            .encode("<|im_start|>user", false)
            .expect("encodes")
            .get_ids()
            .to_vec();
        assert_eq!(chat.len(), 2, "{chat:?}");
        let text = BUILTIN_TEXT;
        let ids = tok.encode(text, false).expect("encodes").get_ids().to_vec();
        assert_eq!(tok.decode(&ids, false).expect("decodes"), text);
    }

    /// The GGUF reader, the q/k un-permutation, the GGUF tokenizer and our forward
    /// pass together: a wrong permutation or tokenizer gives perplexities in the
    /// thousands on plain English.
    #[test]
    fn real_smollm2_reads_tokenizes_and_predicts_english() {
        let Some(path) = smollm2() else { return };
        let model = crate::model::gguf::read_gguf(&path, |_, _| {}).expect("reads");
        let Architecture::Llama(cfg) = &model.arch else {
            panic!("SmolLM2 is llama, got {:?}", model.arch)
        };
        assert_eq!(
            (
                cfg.num_hidden_layers,
                cfg.hidden_size,
                cfg.num_attention_heads,
                cfg.kv_heads()
            ),
            (30, 576, 9, 3)
        );
        assert!(cfg.tie_word_embeddings);
        let tok = load_tokenizer(&model, None).expect("GGUF BPE");
        let text = "The quick brown fox jumps over the lazy dog. In 1492, Columbus sailed across the Atlantic Ocean.";
        let ids = tok.encode(text, false).expect("encodes").get_ids().to_vec();
        assert_eq!(tok.decode(&ids, false).expect("decodes"), text);
        let seqs = sequences(
            &tok,
            BUILTIN_TEXT,
            CalibShape {
                seq_len: 128,
                max_samples: 1,
            },
            cfg.vocab_size,
        )
        .expect("cut");
        let forward = LlamaForward::new(cfg, &to_candle(&model, &Device::Cpu).expect("tensors"))
            .expect("complete");
        let ppl = forward.mean_nll(&seqs[0]).expect("nll").exp();
        eprintln!("SmolLM2 perplexity on the first 128 built-in tokens: {ppl:.2}");
        assert!(
            ppl < 60.0,
            "perplexity {ppl} on English: wrong weights layout or tokenizer"
        );
        let stats =
            collect_input_norms(cfg, &forward, &seqs, false, |_, _| {}).expect("calibrates");
        let s = stats
            .scales("model.layers.29.mlp.down_proj.weight")
            .expect("known linear");
        assert_eq!(s.len(), cfg.intermediate_size);
        assert!(s.iter().all(|v| v.is_finite() && *v >= 1e-3));
    }
}
