//! The probe order of a nested palette file: which linears get a refinement level
//! first, measured on calibration text instead of assumed from the weight error
//! (`octet weights palette --nested-probe`, `octet weights sweep --adaptive-order
//! probe`): by perplexity for a llama-family language model, by how far the
//! sentence embeddings move for a BERT embedding model.

use std::time::Instant;

use anyhow::{Result, bail};
use candle_core::{Device, Tensor};
use octet_quant::bitstack::Seam;
use octet_quant::kernels::dot_f32;
use octet_quant::palette::NestedPalette;
use octet_tools::model::bert::{self, BertForward};
use octet_tools::model::llama::LinearInput;
use octet_tools::model::llama::LlamaForward;
use octet_tools::model::ppl::SavedRun;

use super::prepare::Prepared;

/// Calibration tokens the probes score (4 windows of 256), taken from the
/// calibration sequences, never from the evaluated text.
const PROBE_TOKENS: usize = 1024;
/// Calibration tokens of the first level's probes under [`Grain::LinearFirst`]
/// (2 windows): there a step moves the perplexity most, and 210 probes at
/// [`PROBE_TOKENS`] would cost SmolLM2 about 7 minutes.
const FIRST_LEVEL_TOKENS: usize = 512;
const PROBE_CTX: usize = 256;
/// Weight of a step's own (proxy) gain beside its measured share: a tie-break only.
const PROBE_TIE: f64 = 1e-12;

/// The layer a linear belongs to: the first all-digit component of its name
/// (`blk.7.attn_q.weight`, `model.layers.7.mlp.up_proj.weight`); `None` for none.
fn layer_of(name: &str) -> Option<usize> {
    name.split('.').find_map(|c| c.parse().ok())
}

/// The kind of a linear: its name with the layer number left out
/// (`blk.*.attn_q.weight`), the same for its peers in every layer.
fn kind_of(name: &str) -> String {
    name.split('.')
        .map(|c| match c.parse::<usize>() {
            Ok(_) => "*",
            Err(_) => c,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Calibration tokens the probes of a BERT model embed, in short sentences of
/// [`PROBE_SENTENCE`] tokens ([CLS] and [SEP] included).
const PROBE_BERT_TOKENS: usize = 4096;
const PROBE_SENTENCE: usize = 64;

/// What the probes run and score, lower being better: a language model's
/// perplexity on the first [`PROBE_TOKENS`] calibration tokens, or how far a
/// sentence-embedding model's embeddings of short calibration sentences move from
/// the unmodified model's (mean of `1 - cosine`).
enum Net<'a> {
    Llama {
        forward: &'a LlamaForward,
        ids: Vec<u32>,
    },
    Bert {
        forward: &'a BertForward,
        sentences: Vec<Vec<u32>>,
        reference: Vec<Vec<f32>>,
    },
}

/// A model of [`Net`] with some linears replaced.
#[derive(Clone)]
enum Probe {
    Llama(LlamaForward),
    Bert(BertForward),
}

impl Probe {
    fn set_linear(&mut self, name: &str, w: Tensor) -> Result<()> {
        match self {
            Probe::Llama(f) => f.set_linear(name, w)?,
            // A BERT linear outside the encoder layers (the pooler) does not reach
            // a mean-pooled embedding: its probe removes nothing.
            Probe::Bert(_) if bert::split_layer(name).is_none() => {}
            Probe::Bert(f) => f.set_linear(name, w)?,
        }
        Ok(())
    }
}

/// What the probes from one baseline reuse: a language model's saved streams.
enum Saved {
    Llama(SavedRun),
    Bert,
}

/// What one probe changes: every linear of a layer at once, or one linear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    /// A layer's linears together (30 probes a level on SmolLM2, 7 on MiniLM).
    Layer,
    /// Each linear alone (210 probes a level on SmolLM2, 37 on MiniLM).
    Linear,
    /// A layer's linears together, and each kind of linear (`q_proj`, `v_proj`,
    /// ...) in every layer together: a layer's measured gain is split over its
    /// linears by what their kind removed per weight, not by their weight-error
    /// proxies (37 probes a level on SmolLM2, 13 on MiniLM).
    LayerKind,
    /// Each linear alone at the first level (2 to 3 bits, where a step moves
    /// the score most and which decides the smallest budgets), on
    /// [`FIRST_LEVEL_TOKENS`] of a language model's calibration tokens; each
    /// layer's linears together at the levels above.
    LinearFirst,
}

impl Grain {
    /// [`Grain::Linear`] with `each_linear` (`--nested-probe-each-linear`,
    /// `--adaptive-probe-each-linear`), [`Grain::LinearFirst`] with
    /// `linear_first` (`--nested-probe-each-linear-first`), [`Grain::LayerKind`]
    /// with `kinds` (`--nested-probe-kinds`, `--adaptive-probe-kinds`), else
    /// [`Grain::Layer`]. The flags exclude each other; the first set wins.
    pub fn from_flags(each_linear: bool, linear_first: bool, kinds: bool) -> Grain {
        if each_linear {
            Grain::Linear
        } else if linear_first {
            Grain::LinearFirst
        } else if kinds {
            Grain::LayerKind
        } else {
            Grain::Layer
        }
    }
}

/// A group of linears one probe changes: its label and members.
type Group = (String, Vec<usize>);

/// Probes of a model, the linears grouped by layer or one by one: each group's
/// label and members, in order.
struct Prober<'a> {
    prep: &'a Prepared,
    net: Net<'a>,
    grain: Grain,
    groups: Vec<Group>,
    /// With [`Grain::LayerKind`], the linears of each kind, else none.
    kinds: Vec<Group>,
}

/// One group's probe at one level: the linears that have a step there and the
/// perplexity giving them that step removes (clamped at 0).
struct LayerProbe {
    /// The layer's number (`-` for linears outside any layer), or the linear's name.
    label: String,
    members: Vec<usize>,
    removed: f64,
    /// How `removed` is split over `members` (one non-negative weight each, in
    /// proportion; equal shares where all are 0): their own proxy gains, or with
    /// [`Grain::LayerKind`] what their kinds removed per weight times their size.
    split: Vec<f64>,
}

impl LayerProbe {
    /// The perplexity removed as log-perplexity, `ln(baseline / probe)`, from the
    /// probe's `baseline`. `removed` is clamped to `[0, baseline)` (a probe's
    /// perplexity is above zero).
    fn log_removed(&self, baseline: f64) -> f64 {
        log_removed(baseline, self.removed)
    }
}

/// Each probe of `out` splits what it removed over its members by
/// `per_weight[i] * size(i)` (linear `i`'s value per weight times its weights),
/// unless all its members' values are 0: then it keeps its split.
fn split_by_value(out: &mut [LayerProbe], per_weight: &[f64], size: impl Fn(usize) -> f64) {
    for p in out {
        let split: Vec<f64> = p.members.iter().map(|&i| per_weight[i] * size(i)).collect();
        if split.iter().sum::<f64>() > 0.0 {
            p.split = split;
        }
    }
}

/// `removed` from a score of `baseline` as log-score, `ln(baseline / (baseline -
/// removed))`, the probe's score kept above zero.
fn log_removed(baseline: f64, removed: f64) -> f64 {
    (baseline / (baseline - removed).max(f64::MIN_POSITIVE)).ln()
}

impl<'a> Prober<'a> {
    /// Probes of `prep` at `grain` ([`Grain::LinearFirst`] probes as
    /// [`Grain::Linear`]), a language model's on its first `tokens` calibration
    /// tokens.
    fn new(prep: &'a Prepared, grain: Grain, tokens: usize) -> Result<Self> {
        let Some(calib) = &prep.calib else {
            bail!(
                "probes (the probe order, --adaptive-mix) need calibration text (--calib, not --no-calib)"
            );
        };
        let net = match (&calib.forward, &calib.bert) {
            (Some(forward), _) => Net::Llama {
                forward,
                ids: calib.seqs.iter().flatten().copied().take(tokens).collect(),
            },
            (None, Some(forward)) => {
                let sentences =
                    bert::short_sequences(&calib.seqs, PROBE_SENTENCE, PROBE_BERT_TOKENS);
                if sentences.is_empty() {
                    bail!("the calibration text gave no sentence to probe with");
                }
                let reference = sentences
                    .iter()
                    .map(|s| forward.embed(s))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Net::Bert {
                    forward,
                    sentences,
                    reference,
                }
            }
            (None, None) => bail!(
                "probes run llama-family language models and BERT embedding models; {} is `{}`",
                prep.model.source.display(),
                prep.model.arch.name()
            ),
        };
        // The linears grouped by `key`, labelled by `label`, in key order.
        fn grouped<K: Ord>(
            linears: &[String],
            key: impl Fn(&str) -> K,
            label: impl Fn(K) -> String,
        ) -> Vec<Group> {
            let mut by: std::collections::BTreeMap<K, Vec<usize>> = Default::default();
            for (i, name) in linears.iter().enumerate() {
                by.entry(key(name)).or_default().push(i);
            }
            by.into_iter().map(|(k, m)| (label(k), m)).collect()
        }
        let by_layer = || {
            grouped(&prep.linears, layer_of, |l| {
                l.map_or("-".into(), |l| l.to_string())
            })
        };
        let (groups, kinds) = match grain {
            Grain::Layer => (by_layer(), Vec::new()),
            Grain::LayerKind => (by_layer(), grouped(&prep.linears, kind_of, |k| k)),
            Grain::Linear | Grain::LinearFirst => (
                prep.linears
                    .iter()
                    .enumerate()
                    .map(|(i, name)| (name.clone(), vec![i]))
                    .collect(),
                Vec::new(),
            ),
        };
        Ok(Prober {
            prep,
            net,
            grain,
            groups,
            kinds,
        })
    }

    /// A score or a change of score, printed: perplexities to 3 decimals,
    /// embedding distances (about 0.001-0.3) to 6.
    fn fmt(&self, v: f64) -> String {
        match self.net {
            Net::Llama { .. } => format!("{v:.3}"),
            Net::Bert { .. } => format!("{v:.6}"),
        }
    }

    /// What one probe changes, in words.
    fn per(&self) -> &'static str {
        match self.grain {
            Grain::Layer | Grain::LayerKind => "layer",
            Grain::Linear | Grain::LinearFirst => "linear",
        }
    }

    /// What a probe's score is, in words.
    fn what(&self) -> &'static str {
        match self.net {
            Net::Llama { .. } => "perplexity",
            Net::Bert { .. } => "embedding distance",
        }
    }

    /// Linear `i` rebuilt with `steps` steps.
    fn tensor(&self, nested: &[&NestedPalette], i: usize, steps: usize) -> Result<Tensor> {
        let shape = &self.prep.model.tensors[&self.prep.linears[i]].shape;
        Ok(Tensor::from_vec(
            nested[i].decode(steps),
            shape.as_slice(),
            &Device::Cpu,
        )?)
    }

    /// The model with every linear at `steps` steps.
    fn all_at(&self, nested: &[&NestedPalette], steps: usize) -> Result<Probe> {
        let mut f = match &self.net {
            Net::Llama { forward, .. } => Probe::Llama((*forward).clone()),
            Net::Bert { forward, .. } => Probe::Bert((*forward).clone()),
        };
        for (i, name) in self.prep.linears.iter().enumerate() {
            f.set_linear(name, self.tensor(nested, i, steps)?)?;
        }
        Ok(f)
    }

    /// The mean `1 - cosine` of `f`'s embeddings of the probe sentences to the
    /// unmodified model's (at least `f64::MIN_POSITIVE`, a score above zero).
    fn distance(&self, f: &BertForward) -> Result<f64> {
        let Net::Bert {
            sentences,
            reference,
            ..
        } = &self.net
        else {
            bail!("an embedding distance needs a BERT model");
        };
        let mut sum = 0.0;
        for (s, r) in sentences.iter().zip(reference) {
            let e = f.embed(s)?;
            sum += 1.0 - f64::from(dot_f32(&e, r));
        }
        Ok((sum / sentences.len().max(1) as f64).max(f64::MIN_POSITIVE))
    }

    /// A probe's baseline: its score, and (for a language model) its streams saved
    /// for the probes.
    fn baseline(&self, f: &Probe) -> Result<(Saved, f64)> {
        match (f, &self.net) {
            (Probe::Llama(f), Net::Llama { ids, .. }) => {
                let (run, p) = SavedRun::new(f, ids, PROBE_CTX, PROBE_CTX)?;
                Ok((Saved::Llama(run), p.perplexity))
            }
            (Probe::Bert(f), _) => Ok((Saved::Bert, self.distance(f)?)),
            (Probe::Llama(_), Net::Bert { .. }) => bail!("a llama probe of a BERT model"),
        }
    }

    /// The score of `probe`, which differs from the baseline `saved` came from only
    /// in the linears `changed`: a language model's layers before the first of them
    /// are not run again.
    fn ppl_from(&self, saved: &Saved, probe: &Probe, changed: &[usize]) -> Result<f64> {
        match (saved, probe) {
            (Saved::Llama(run), Probe::Llama(f)) => {
                let from = changed
                    .iter()
                    .map(|&i| LinearInput::of(&self.prep.linears[i]).map(|(l, _)| l))
                    .min()
                    .flatten()
                    .unwrap_or(0);
                Ok(run.perplexity_from(f, from)?.perplexity)
            }
            (_, Probe::Bert(f)) => self.distance(f),
            (Saved::Bert, Probe::Llama(_)) => bail!("a llama probe from a BERT baseline"),
        }
    }

    /// With every linear at `level - 1` steps, each layer in turn gets its
    /// linears' step `level`: the baseline perplexity and one probe per layer.
    fn level(&self, nested: &[&NestedPalette], level: usize) -> Result<(f64, Vec<LayerProbe>)> {
        let (base_ppl, out, _) = self.level_with(nested, level, &[])?;
        Ok((base_ppl, out))
    }

    /// As [`Prober::level`], and from the same baseline each group of `tail` (a
    /// group's members, all with step `level - 1`) loses its step `level - 1`: what
    /// that costs, one probe per group (the seams of [`probe_gains`]).
    fn level_with(
        &self,
        nested: &[&NestedPalette],
        level: usize,
        tail: &[Group],
    ) -> Result<(f64, Vec<LayerProbe>, Vec<LayerProbe>)> {
        let linears = &self.prep.linears;
        let tensor = |i: usize, steps: usize| self.tensor(nested, i, steps);
        let baseline = self.all_at(nested, level - 1)?;
        let (run, base_ppl) = self.baseline(&baseline)?;
        let mut removals = Vec::with_capacity(tail.len());
        for (label, members) in tail {
            let mut probe = baseline.clone();
            for &i in members {
                probe.set_linear(&linears[i], tensor(i, level - 2)?)?;
            }
            let cost = (self.ppl_from(&run, &probe, members)? - base_ppl).max(0.0);
            removals.push(LayerProbe {
                label: label.clone(),
                members: members.clone(),
                removed: cost,
                split: members
                    .iter()
                    .map(|&i| nested[i].steps[level - 2].gain.max(0.0))
                    .collect(),
            });
        }
        if !removals.is_empty() {
            eprintln!(
                "probe level {level}, seam: {} per {} its step {} costs {}",
                self.what(),
                self.per(),
                level - 1,
                removals
                    .iter()
                    .map(|p| format!("{}:{}", p.label, self.fmt(p.removed)))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        let mut out = self.gain_probes(nested, level, &baseline, &run, base_ppl, &self.groups)?;
        if !self.kinds.is_empty() {
            let kinds = self.gain_probes(nested, level, &baseline, &run, base_ppl, &self.kinds)?;
            self.split_by_kind(level, base_ppl, &kinds, &mut out);
        }
        let line: Vec<String> = out
            .iter()
            .map(|p| format!("{}:{}", p.label, self.fmt(p.removed)))
            .collect();
        eprintln!(
            "probe level {level}: baseline {} {}; removed per {} {}",
            self.what(),
            self.fmt(base_ppl),
            self.per(),
            line.join(" ")
        );
        Ok((base_ppl, out, removals))
    }

    /// From the level's `baseline` (score `base_ppl`, saved as `run`), each of
    /// `groups` gets its members' step `level` (members without one left out, a
    /// group without any skipped): what that removes, split by the members' own
    /// proxy gains.
    fn gain_probes(
        &self,
        nested: &[&NestedPalette],
        level: usize,
        baseline: &Probe,
        run: &Saved,
        base_ppl: f64,
        groups: &[Group],
    ) -> Result<Vec<LayerProbe>> {
        let mut out = Vec::new();
        for (label, members) in groups {
            let members: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&i| nested[i].steps.len() >= level)
                .collect();
            if members.is_empty() {
                continue;
            }
            let mut probe = baseline.clone();
            for &i in &members {
                probe.set_linear(&self.prep.linears[i], self.tensor(nested, i, level)?)?;
            }
            let removed = (base_ppl - self.ppl_from(run, &probe, &members)?).max(0.0);
            let split = members
                .iter()
                .map(|&i| nested[i].steps[level - 1].gain.max(0.0))
                .collect();
            out.push(LayerProbe {
                label: label.clone(),
                members,
                removed,
                split,
            });
        }
        Ok(out)
    }

    /// With [`Grain::LayerKind`]: the layer probes `out` of level `level` split
    /// what they removed by what their members' kinds removed per weight (as
    /// log-score from `base_ppl`) in the probes `kinds`, times the members'
    /// sizes. A layer whose kinds all removed nothing keeps its proxy split.
    fn split_by_kind(
        &self,
        level: usize,
        base_ppl: f64,
        kinds: &[LayerProbe],
        out: &mut [LayerProbe],
    ) {
        let mut per_weight = vec![0.0; self.prep.linears.len()];
        let mut line = Vec::with_capacity(self.kinds.len());
        for kind in kinds {
            // Per weight in log-score: a kind's probe moves every layer at once,
            // and log-scores of changes add where scores do not.
            let value = kind.log_removed(base_ppl) / self.weights(&kind.members);
            for &i in &kind.members {
                per_weight[i] = value;
            }
            line.push(format!("{}:{}", kind.label, self.fmt(kind.removed)));
        }
        eprintln!("probe level {level}: removed per kind {}", line.join(" "));
        split_by_value(out, &per_weight, |i| self.weights(&[i]));
    }

    /// The groups whose step `level` (every member has it) removed the least per
    /// weight by `gains` (one per linear and step, as [`probe_gains`] builds them),
    /// taken from the least until they hold `share` of the weights with that step.
    fn tail(
        &self,
        nested: &[&NestedPalette],
        level: usize,
        gains: &[Vec<f64>],
        share: f64,
    ) -> Vec<Group> {
        let mut at: Vec<(f64, f64, &Group)> = self
            .groups
            .iter()
            .filter(|(_, m)| !m.is_empty() && m.iter().all(|&i| nested[i].steps.len() >= level))
            .map(|g| {
                let w = self.weights(&g.1);
                let gain: f64 = g.1.iter().map(|&i| gains[i][level - 1]).sum();
                (gain / w, w, g)
            })
            .collect();
        at.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total: f64 = at.iter().map(|a| a.1).sum();
        let mut taken = 0.0;
        let mut out = Vec::new();
        for (_, w, g) in at {
            if taken + w > share * total {
                break;
            }
            taken += w;
            out.push(g.clone());
        }
        out
    }

    /// Weights in the linears `members` (at least 1).
    fn weights(&self, members: &[usize]) -> f64 {
        let size = |i: usize| self.prep.model.tensors[&self.prep.linears[i]].data.len() as f64;
        members.iter().map(|&i| size(i)).sum::<f64>().max(1.0)
    }

    /// Indices of `probes`, the most perplexity removed per weight first.
    fn best_per_weight(&self, probes: &[LayerProbe]) -> Vec<usize> {
        let per_weight = |p: &LayerProbe| p.removed / self.weights(&p.members);
        let mut rank: Vec<usize> = (0..probes.len()).collect();
        rank.sort_by(|&a, &b| per_weight(&probes[b]).total_cmp(&per_weight(&probes[a])));
        rank
    }

    /// Level `level` probed a second time, halfway up: the layers whose step removed
    /// the most per weight in `first` (the probes from the all-narrow baseline) get
    /// it, up to half the layers, and from there each layer's step is measured as
    /// what removing it costs (a layer that has it) or what adding it gains (one
    /// that has not). Each layer's result is the sum of the log-perplexity its step
    /// moves at the two points: the order at the budgets between them.
    fn second_pass(
        &self,
        nested: &[&NestedPalette],
        level: usize,
        base_ppl: f64,
        first: &[LayerProbe],
    ) -> Result<Vec<LayerProbe>> {
        let linears = &self.prep.linears;
        let rank = self.best_per_weight(first);
        let mut up = vec![false; first.len()];
        for &r in &rank[..first.len() / 2] {
            up[r] = true;
        }
        let tensor = |i: usize, steps: usize| self.tensor(nested, i, steps);
        let mut half = self.all_at(nested, level - 1)?;
        for (p, &u) in first.iter().zip(&up) {
            if u {
                for &i in &p.members {
                    half.set_linear(&linears[i], tensor(i, level)?)?;
                }
            }
        }
        let (run, half_ppl) = self.baseline(&half)?;
        let mut out = Vec::with_capacity(first.len());
        for (p, &u) in first.iter().zip(&up) {
            let mut probe = half.clone();
            // A layer that has the step loses it; one that has not gains it.
            let steps = if u { level - 1 } else { level };
            for &i in &p.members {
                probe.set_linear(&linears[i], tensor(i, steps)?)?;
            }
            let ppl = self.ppl_from(&run, &probe, &p.members)?;
            // ln(without / with) at the halfway point.
            let second = if u {
                (ppl / half_ppl).ln()
            } else {
                (half_ppl / ppl).ln()
            };
            let first_log = p.log_removed(base_ppl);
            out.push(LayerProbe {
                label: p.label.clone(),
                members: p.members.clone(),
                removed: (first_log + second).max(0.0),
                split: p.split.clone(),
            });
        }
        eprintln!(
            "probe level {level}, second pass: halfway {} {}; log-{} per {} {}",
            self.what(),
            self.fmt(half_ppl),
            self.what(),
            self.per(),
            out.iter()
                .map(|p| format!("{}:{:.4}", p.label, p.removed))
                .collect::<Vec<_>>()
                .join(" ")
        );
        Ok(out)
    }
}

/// Perplexity-measured gains for the steps of `nested` (the linears of `prep`, in
/// order), one per step, for the level-balanced order ([`set_gains`] puts them in
/// place): at each level `l`, with every linear at `l - 1` steps, each layer in turn
/// gets its linears' step `l`, and the perplexity that removes on calibration text
/// (clamped at 0) is split over those linears in proportion to their own gains
/// (which also break ties, at [`PROBE_TIE`]). Costs one baseline and one probe per
/// layer and level. The first `twice` levels are probed again halfway up
/// ([`Prober::second_pass`]; one more baseline and probe per layer and level).
///
/// With `log`, every level's gains are log-perplexities, `ln(baseline / probe)`:
/// one currency across levels, for an order that lets a sensitive layer's second
/// step come before a robust layer's first (`--adaptive-order probe-greedy`).
/// Without it they are perplexity, comparable only within a level (the second
/// pass's are log-perplexities either way). Only the first `max_levels` levels
/// are probed (`grain` says at what grain), as in [`probe_with_seams`].
pub fn probe_gains(
    prep: &Prepared,
    nested: &[&NestedPalette],
    twice: usize,
    log: bool,
    grain: Grain,
    max_levels: usize,
) -> Result<Vec<Vec<f64>>> {
    Ok(probe_with_seams(prep, nested, twice, log, grain, 0.0, max_levels)?.gains)
}

/// What [`probe_with_seams`] measured.
pub struct Probed {
    /// One gain per linear and step, as [`probe_gains`] returns them.
    pub gains: Vec<Vec<f64>>,
    /// At each level end below the last: what unloading each tail linear's step
    /// there costs and what each linear's next step gains, both from the level
    /// end, the score moved split over a group's linears by their own gains
    /// ([`seam_order`](octet_quant::bitstack::seam_order); `matrix` is the index
    /// into the linears).
    pub seams: Vec<Seam>,
}

/// As [`probe_gains`], and with `seam_share` above 0 each level end is probed as
/// a seam: the groups holding the `seam_share` of the weights whose step at that
/// level removed the least per weight each lose it, from the same baseline as
/// the next level's first pass (one probe per such group and level end), so
/// that [`seam_order`](octet_quant::bitstack::seam_order) can weigh the last
/// steps of a level against the first of the next in one currency.
///
/// Only the first `max_levels` levels are probed; the steps above them keep
/// their own (proxy) gains, one currency within each of those levels, for the
/// level-by-level order (not for `log`'s order across levels).
pub fn probe_with_seams(
    prep: &Prepared,
    nested: &[&NestedPalette],
    twice: usize,
    log: bool,
    grain: Grain,
    seam_share: f64,
    max_levels: usize,
) -> Result<Probed> {
    // The first level's probes, where they differ from the others'.
    let (first, rest) = match grain {
        Grain::LinearFirst => (
            Some(Prober::new(prep, Grain::Linear, FIRST_LEVEL_TOKENS)?),
            Prober::new(prep, Grain::Layer, PROBE_TOKENS)?,
        ),
        g => (None, Prober::new(prep, g, PROBE_TOKENS)?),
    };
    let levels = nested
        .iter()
        .map(|p| p.steps.len())
        .max()
        .unwrap_or(0)
        .min(max_levels);
    let mut out: Vec<Vec<f64>> = nested
        .iter()
        .map(|p| p.steps.iter().map(|s| s.gain).collect())
        .collect();
    let mut seams = Vec::new();
    let t0 = Instant::now();
    // A group's measured score split over its linears by the probe's split.
    let split = |p: &LayerProbe| -> Vec<(usize, f64)> {
        let total: f64 = p.split.iter().sum();
        p.members
            .iter()
            .zip(&p.split)
            .map(|(&i, &own)| {
                let share = if total > 0.0 {
                    own / total
                } else {
                    1.0 / p.members.len() as f64
                };
                (i, p.removed * share)
            })
            .collect()
    };
    for level in 1..=levels {
        let prober = match (&first, level) {
            (Some(first), 1) => first,
            _ => &rest,
        };
        // A level end below this level: probed as a seam.
        let seam = seam_share > 0.0 && level >= 2;
        let tail = if seam {
            prober.tail(nested, level - 1, &out, seam_share)
        } else {
            Vec::new()
        };
        let (base_ppl, mut probes, removals) = prober.level_with(nested, level, &tail)?;
        if seam {
            let pairs = |v: Vec<(usize, f64)>| -> Vec<(u32, f64)> {
                v.into_iter().map(|(i, x)| (i as u32, x)).collect()
            };
            seams.push(Seam {
                level: (level - 2) as u32,
                tail: pairs(removals.iter().flat_map(split).collect()),
                head: pairs(probes.iter().flat_map(split).collect()),
            });
        }
        if level <= twice {
            probes = prober.second_pass(nested, level, base_ppl, &probes)?;
        } else if log {
            for p in &mut probes {
                p.removed = p.log_removed(base_ppl);
            }
        }
        for p in probes {
            for (i, v) in split(&p) {
                // The proxy gain, scaled far below any measured perplexity or
                // log-perplexity, breaks ties: where no layer's probe moves the
                // perplexity (high levels), the order within the level is the
                // balanced one.
                out[i][level - 1] = v + nested[i].steps[level - 1].gain.max(0.0) * PROBE_TIE;
            }
        }
    }
    eprintln!("probes: {:.0}s", t0.elapsed().as_secs_f64());
    Ok(Probed { gains: out, seams })
}

/// The linears (indices into `prep.linears`) of the layers whose first refinement
/// step removes the most perplexity per weight on calibration text, probed on
/// `nested`, taken layer by layer until they hold at least `share` of the linear
/// weights (none for `share <= 0`).
pub fn hot_linears(prep: &Prepared, nested: &[&NestedPalette], share: f64) -> Result<Vec<usize>> {
    if share <= 0.0 {
        return Ok(Vec::new());
    }
    let prober = Prober::new(prep, Grain::Layer, PROBE_TOKENS)?;
    let total: f64 = prep
        .linears
        .iter()
        .map(|n| prep.model.tensors[n].data.len() as f64)
        .sum();
    let (_, layers) = prober.level(nested, 1)?;
    let mut out = Vec::new();
    let mut taken = 0.0;
    for r in prober.best_per_weight(&layers) {
        if taken >= share * total {
            break;
        }
        taken += prober.weights(&layers[r].members);
        out.extend_from_slice(&layers[r].members);
    }
    out.sort_unstable();
    Ok(out)
}

/// Replaces the gains of `p`'s steps by `gains` (one per step, as
/// [`probe_gains`] returns them).
pub fn set_gains(p: &mut NestedPalette, gains: &[f64]) {
    for (step, &g) in p.steps.iter_mut().zip(gains) {
        step.gain = g;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_read_from_either_naming() {
        assert_eq!(layer_of("blk.7.attn_q.weight"), Some(7));
        assert_eq!(layer_of("model.layers.12.mlp.up_proj.weight"), Some(12));
        assert_eq!(layer_of("lm_head.weight"), None);
    }

    #[test]
    fn a_layer_is_split_by_its_kinds_values_unless_all_are_zero() {
        let probe = |members: Vec<usize>| LayerProbe {
            label: "0".into(),
            members,
            removed: 1.0,
            split: vec![1.0, 1.0],
        };
        // Linears 0 and 1 in one layer, 2 and 3 in another; linear 1 holds 3x the
        // weights of linear 0, and its kind removed half as much per weight.
        let mut out = [probe(vec![0, 1]), probe(vec![2, 3])];
        let per_weight = [2.0, 1.0, 0.0, 0.0];
        let size = [1.0, 3.0, 1.0, 1.0];
        split_by_value(&mut out, &per_weight, |i| size[i]);
        assert_eq!(out[0].split, vec![2.0, 3.0]);
        // Kinds that removed nothing leave the proxy split in place.
        assert_eq!(out[1].split, vec![1.0, 1.0]);
    }

    #[test]
    fn kinds_leave_out_the_layer_number() {
        assert_eq!(kind_of("blk.7.attn_q.weight"), "blk.*.attn_q.weight");
        assert_eq!(
            kind_of("model.layers.12.mlp.up_proj.weight"),
            kind_of("model.layers.3.mlp.up_proj.weight")
        );
        assert_ne!(
            kind_of("model.layers.3.mlp.up_proj.weight"),
            kind_of("model.layers.3.mlp.down_proj.weight")
        );
        assert_eq!(kind_of("lm_head.weight"), "lm_head.weight");
    }
}
