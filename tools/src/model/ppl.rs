//! Perplexity over a long text with sliding windows, the method of Hugging Face's
//! "Perplexity of fixed-length models" guide.
//!
//! Window `k` feeds tokens `[k * stride, k * stride + ctx)` (cut at the end of the
//! text) and scores only the tokens it is the first to reach: those past the previous
//! window's end, each predicted from the tokens before it inside the window. Token 0
//! has no context and is never scored. With `stride < ctx` every other token is
//! scored exactly once, with at least `ctx - stride` tokens of context (fewer only in
//! the first window); with `stride == ctx` the windows do not overlap and the first
//! token of each window after the first is not scored either (it has no context
//! inside its window), as in the guide. Perplexity is `exp(sum of NLL / tokens
//! scored)`.
//!
//! The forward pass is [`LlamaForward`]: candle-transformers' `Llama::forward`
//! returns the logits of the last position only, and perplexity needs every
//! position's; ours is checked against candle-transformers' logits in `llama.rs`'s
//! tests, and `tests/weights_eval.rs` checks the perplexity against one computed from
//! candle-transformers prefix by prefix.

use std::path::Path;

use serde::Serialize;
use tokenizers::Tokenizer;

use super::llama::LlamaForward;
use super::{ModelError, Result};

/// One window of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First token fed.
    pub begin: usize,
    /// One past the last token fed.
    pub end: usize,
    /// First token scored (`begin < first_scored <= end`; equal to `end` when the
    /// window scores nothing).
    pub first_scored: usize,
}

/// The windows covering `n` tokens with context `ctx` and stride `stride`.
pub fn windows(n: usize, ctx: usize, stride: usize) -> Result<Vec<Window>> {
    if ctx < 2 {
        return Err(ModelError::Parameter {
            name: "--ctx",
            value: ctx.to_string(),
            expected: "at least 2 (a window needs 2 tokens)".into(),
        });
    }
    if stride == 0 || stride > ctx {
        return Err(ModelError::Parameter {
            name: "--stride",
            value: stride.to_string(),
            expected: format!("1..={ctx} (the context length)"),
        });
    }
    let mut out = Vec::new();
    let mut prev_end = 0;
    let mut begin = 0;
    while begin < n && prev_end < n {
        let end = (begin + ctx).min(n);
        let first_scored = prev_end.max(begin + 1).min(end);
        if first_scored < end {
            out.push(Window {
                begin,
                end,
                first_scored,
            });
        }
        prev_end = end;
        begin += stride;
    }
    Ok(out)
}

/// What one perplexity run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Perplexity {
    /// Tokens scored.
    pub tokens: usize,
    /// Windows run.
    pub windows: usize,
    /// Sum of the scored tokens' negative log-likelihoods, in nats.
    pub nll_sum: f64,
    /// `exp(nll_sum / tokens)`.
    pub perplexity: f64,
}

/// Perplexity of `forward` on `ids` (see the module docs). `progress(done, total)`
/// is called after each window.
pub fn perplexity(
    forward: &LlamaForward,
    ids: &[u32],
    ctx: usize,
    stride: usize,
    progress: impl FnMut(usize, usize),
) -> Result<Perplexity> {
    let plan = windows(ids.len(), ctx, stride)?;
    score(
        ids,
        &plan,
        |_, w| forward.token_nlls(&ids[w.begin..w.end]),
        progress,
    )
}

/// Scores the windows of `plan` over `ids`, `nlls(i, window)` giving window `i`'s
/// negative log-likelihoods as [`LlamaForward::token_nlls`] does.
fn score(
    ids: &[u32],
    plan: &[Window],
    mut nlls: impl FnMut(usize, &Window) -> Result<Vec<f64>>,
    mut progress: impl FnMut(usize, usize),
) -> Result<Perplexity> {
    if plan.is_empty() {
        return Err(ModelError::TooFewTokens {
            what: "the text".into(),
            got: ids.len(),
            needed: 2,
        });
    }
    let mut nll_sum = 0.0;
    let mut tokens = 0;
    for (i, w) in plan.iter().enumerate() {
        let nll = nlls(i, w).map_err(|e| ModelError::Window {
            index: i,
            begin: w.begin,
            end: w.end,
            source: Box::new(e),
        })?;
        // nll[j] scores token begin + 1 + j.
        let skip = w.first_scored - w.begin - 1;
        for v in &nll[skip..] {
            nll_sum += v;
            tokens += 1;
        }
        progress(i + 1, plan.len());
    }
    Ok(Perplexity {
        tokens,
        windows: plan.len(),
        nll_sum,
        perplexity: (nll_sum / tokens as f64).exp(),
    })
}

/// A perplexity run that kept every window's residual stream at every layer, so
/// that a model differing from it only from some layer on is scored by running
/// those layers alone ([`SavedRun::perplexity_from`]): a probe that changes layer
/// `l` of `L` costs `(L - l) / L` of a full run's layers.
#[derive(Debug)]
pub struct SavedRun {
    ids: Vec<u32>,
    plan: Vec<Window>,
    /// Per window, [`LlamaForward::nll_states`].
    states: Vec<Vec<candle_core::Tensor>>,
}

impl SavedRun {
    /// Runs `forward` on `ids` as [`perplexity`] does, keeping the streams; returns
    /// the run and its perplexity.
    pub fn new(
        forward: &LlamaForward,
        ids: &[u32],
        ctx: usize,
        stride: usize,
    ) -> Result<(Self, Perplexity)> {
        let plan = windows(ids.len(), ctx, stride)?;
        let mut states = Vec::with_capacity(plan.len());
        for (i, w) in plan.iter().enumerate() {
            let s = forward
                .nll_states(&ids[w.begin..w.end])
                .map_err(|e| ModelError::Window {
                    index: i,
                    begin: w.begin,
                    end: w.end,
                    source: Box::new(e),
                })?;
            states.push(s);
        }
        let run = SavedRun {
            ids: ids.to_vec(),
            plan,
            states,
        };
        let layers = run.states.first().map_or(0, |s| s.len().saturating_sub(1));
        let ppl = run.perplexity_from(forward, layers)?;
        Ok((run, ppl))
    }

    /// The perplexity of `forward` on the saved run's tokens, running only its
    /// layers from `from` on: the same as [`perplexity`] when `forward`'s layers
    /// before `from` are those of the model the run was saved from.
    pub fn perplexity_from(&self, forward: &LlamaForward, from: usize) -> Result<Perplexity> {
        score(
            &self.ids,
            &self.plan,
            |i, w| forward.token_nlls_from(&self.ids[w.begin..w.end], from, &self.states[i]),
            |_, _| {},
        )
    }
}

/// Tokenises the evaluation text at `path` (no special tokens added), keeping at
/// most `max_tokens`, and checks every id against the vocabulary.
pub fn tokenize_text(
    tok: &Tokenizer,
    path: &Path,
    max_tokens: Option<usize>,
    vocab: usize,
) -> Result<Vec<u32>> {
    let text = super::calib::read_text(Some(path))?;
    let enc = tok
        .encode(text.as_str(), false)
        .map_err(|source| ModelError::Tokenize {
            what: path.display().to_string(),
            source,
        })?;
    let mut ids = enc.get_ids().to_vec();
    super::calib::check_vocab(&ids, vocab)?;
    if let Some(m) = max_tokens {
        ids.truncate(m);
    }
    if ids.len() < 2 {
        return Err(ModelError::TooFewTokens {
            what: path.display().to_string(),
            got: ids.len(),
            needed: 2,
        });
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every token after the first is scored at most once, exactly once when the
    /// windows overlap, always with its own prefix inside the window.
    #[test]
    fn windows_score_each_token_once() {
        for n in [2usize, 3, 10, 37, 100, 513] {
            for ctx in [2usize, 5, 16, 64] {
                for stride in 1..=ctx {
                    let plan = windows(n, ctx, stride).expect("valid");
                    let mut seen = vec![0u32; n];
                    for w in &plan {
                        assert!(w.end - w.begin <= ctx && w.begin < w.first_scored);
                        for s in &mut seen[w.first_scored..w.end] {
                            *s += 1;
                        }
                    }
                    assert_eq!(seen[0], 0);
                    assert!(
                        seen.iter().all(|&c| c <= 1),
                        "n {n} ctx {ctx} stride {stride}"
                    );
                    if stride < ctx {
                        assert!(
                            seen[1..].iter().all(|&c| c == 1),
                            "n {n} ctx {ctx} stride {stride}: {seen:?}"
                        );
                    } else {
                        // Non-overlapping windows lose the first token of each window.
                        let missed = seen[1..].iter().filter(|&&c| c == 0).count();
                        assert_eq!(missed, (n - 1) / ctx, "n {n} ctx {ctx}");
                    }
                }
            }
        }
        assert!(windows(10, 1, 1).is_err());
        assert!(windows(10, 4, 5).is_err());
        assert!(windows(10, 4, 0).is_err());
        assert!(windows(0, 4, 2).expect("valid").is_empty());
    }
}
