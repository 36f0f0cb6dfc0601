//! `octet weights sweep`: perplexity against bits per weight for one model and one
//! text, every method applied to the same linear layers in one process: the
//! reference, round-to-nearest (the naive baseline), llama.cpp's k-quants (the peer),
//! Octet palettes and an Octet BitStack ladder read from one stacked file.
//!
//! Every method replaces exactly the linears `--include/--exclude` select (by default
//! q, k, v, o, gate, up and down of every layer); the embedding (tied to the LM head
//! in SmolLM2) and the norms stay the reference tensors for every method, so bits per
//! weight are counted over the replaced linears only, the same way for all of them.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use clap::{Args, ValueEnum};
use octet_quant::bitstack::{BitStackConfig, OrderPolicy, RankPolicy, decompose};
use octet_quant::checkpoint::MappedCheckpoint;
use octet_quant::checkpoint::{BlockOrdering, Budget, CheckpointWriter, Reader};
use octet_quant::palette::{
    JointFit, NestedPalette, PaletteConfig, UpperRescaleBits, nest_rescaled_joint, nest_scaled_at,
};
use octet_tools::model::calib;
use octet_tools::model::llama::LlamaForward;
use octet_tools::model::peers::{KQuant, Rtn};
use octet_tools::model::ppl::{perplexity, tokenize_text};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::eval::WindowArgs;
use super::inspect::{budget_row, budgets_within};
use super::palette::palettize_linear;
use super::prepare::{Prepared, prepare};
use super::probe::{Grain, hot_linears, probe_gains, set_gains};
use super::{CalibArgs, GptqArgs, InputArgs, bar};

/// `--kquants`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KQuantArg {
    /// Q2_K, 2.625 bits per weight.
    Q2k,
    /// Q3_K, 3.4375 bits per weight.
    Q3k,
    /// Q4_K, 4.5 bits per weight.
    Q4k,
    /// Q5_K, 5.5 bits per weight.
    Q5k,
    /// Q6_K, 6.5625 bits per weight.
    Q6k,
}

impl From<KQuantArg> for KQuant {
    fn from(k: KQuantArg) -> KQuant {
        match k {
            KQuantArg::Q2k => KQuant::Q2K,
            KQuantArg::Q3k => KQuant::Q3K,
            KQuantArg::Q4k => KQuant::Q4K,
            KQuantArg::Q5k => KQuant::Q5K,
            KQuantArg::Q6k => KQuant::Q6K,
        }
    }
}

/// `--adaptive-order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AdaptiveOrder {
    /// By calibration-weighted error removed per byte.
    Greedy,
    /// Level by level, by error removed per byte within a level.
    Balanced,
    /// Level by level; within a level, layers by the perplexity their step
    /// removes on calibration text (one probe per layer and level), each layer's
    /// share split over its linears by error removed.
    Probe,
    /// As `probe`, with the first level probed twice: from every linear at the
    /// base, and again halfway up (the layers the first pass favours given their
    /// step); each layer ordered by the log-perplexity its step moves at both.
    ProbeTwice,
    /// The same probes as `probe`, in log-perplexity, ordered across levels by
    /// log-perplexity removed per byte (each linear's steps in turn): a sensitive
    /// layer's second step may come before a robust layer's first, as llama.cpp's
    /// `--target-bpw` allocates bits by measured error.
    ProbeGreedy,
}

/// `--adaptive-mix FIT:RESCALE:SHARE`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    fit: u8,
    rescale_bits: u8,
    share: f64,
}

impl std::str::FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let [fit, rb, share] = parts[..] else {
            return Err(format!("`{s}`: expected FIT:RESCALE:SHARE, e.g. 4:2:0.3"));
        };
        let fit = fit
            .parse()
            .map_err(|e| format!("FIT `{fit}` in `{s}`: {e}"))?;
        let rescale_bits: u8 = rb
            .parse()
            .map_err(|e| format!("RESCALE `{rb}` in `{s}`: {e}"))?;
        if !(1..=8).contains(&rescale_bits) {
            return Err(format!("RESCALE `{rb}` in `{s}`: expected 1..=8"));
        }
        let share: f64 = share
            .parse()
            .map_err(|e| format!("SHARE `{share}` in `{s}`: {e}"))?;
        if !(0.0..=1.0).contains(&share) {
            return Err(format!("SHARE `{share}` in `{s}`: expected 0..=1"));
        }
        Ok(Mix {
            fit,
            rescale_bits,
            share,
        })
    }
}

impl AdaptiveOrder {
    fn policy(self) -> OrderPolicy {
        match self {
            AdaptiveOrder::Greedy | AdaptiveOrder::ProbeGreedy => {
                OrderPolicy::Greedy { min_levels: 0 }
            }
            AdaptiveOrder::Balanced | AdaptiveOrder::Probe | AdaptiveOrder::ProbeTwice => {
                OrderPolicy::Balanced
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            AdaptiveOrder::Greedy => "greedy",
            AdaptiveOrder::Balanced => "balanced",
            AdaptiveOrder::Probe => "probe",
            AdaptiveOrder::ProbeTwice => "probe-twice",
            AdaptiveOrder::ProbeGreedy => "probe-greedy",
        }
    }
}

/// Arguments of `octet weights sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    input: InputArgs,
    /// The text to measure (UTF-8); keep it apart from the calibration text.
    #[arg(long, value_name = "FILE")]
    text: PathBuf,
    #[command(flatten)]
    window: WindowArgs,
    #[command(flatten)]
    calib: CalibArgs,
    /// RTN bit widths (the bare flag skips them).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "4,3,2")]
    rtn_bits: Vec<u8>,
    /// RTN group sizes (weights per f16 scale and minimum).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "32,64")]
    rtn_groups: Vec<usize>,
    /// k-quant types (the bare flag skips them).
    #[arg(long, value_enum, value_delimiter = ',', num_args = 0.., default_value = "q4k,q3k,q2k")]
    kquants: Vec<KQuantArg>,
    /// Also run the k-quants with the calibration importance matrix (llama.cpp's
    /// --imatrix: per-input-channel mean x^2, the statistic palettes weight by).
    #[arg(long)]
    imatrix: bool,
    /// Palette bit widths (the bare flag skips them).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "4,3,2")]
    palette_bits: Vec<u8>,
    /// Rows per palette table, one curve each (1: a table per output channel; the
    /// bare flag skips plain palettes).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "1")]
    palette_rows: Vec<usize>,
    /// Scaled palettes (a table per tensor, a 6-bit scale and offset per block of
    /// this many weights along a row), one curve each, at --palette-bits (the bare
    /// flag skips them).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "32")]
    scaled_group_cols: Vec<usize>,
    /// With --gptq, palettes are also fitted to each layer's output (a second curve).
    #[command(flatten)]
    gptq: GptqArgs,
    /// BitStack budgets, in bits per weight over the linears (the bare flag skips them).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "1.5,2,2.5,3,3.5,4,4.5,5")]
    stack_bits: Vec<f64>,
    /// Adaptive budgets, in bits per weight over the linears, all read from one
    /// nested-palette file (the bare flag skips them): every linear a scaled palette
    /// of --adaptive-base bits plus one-bit refinement steps up to --adaptive-top,
    /// the steps of all linears in one order by calibration-weighted error removed
    /// per byte.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "2.5,2.75,3,3.25,3.5,3.75,4,4.5,5,6")]
    adaptive_bits: Vec<f64>,
    /// Bits of the adaptive file's base palette.
    #[arg(long, default_value_t = 2)]
    adaptive_base: u8,
    /// Bits at which the adaptive file's block scales and offsets are fitted (the
    /// palette at this width is a prefix of the file exactly; narrower prefixes merge
    /// its levels, wider ones split them); default: --adaptive-base. With block
    /// corrections every narrower width, the base included, gets its own.
    #[arg(long)]
    adaptive_fit: Option<u8>,
    /// Rounds that re-choose the fit width's levels for every width from the base
    /// to the fit together (`nest_rescaled_joint`; needs --adaptive-fit above the
    /// base and block corrections): 0 keeps the fit width's own nearest levels.
    #[arg(long, default_value_t = 0)]
    adaptive_joint_rounds: usize,
    /// With --adaptive-joint-rounds: the rounds also re-fit the stored block scales
    /// and offsets to every width from the base to the fit together.
    #[arg(long)]
    adaptive_joint_params: bool,
    /// With --adaptive-joint-rounds: the weight of the fit width's error in that
    /// sum, each narrower width's being 1.
    #[arg(long, default_value_t = 1.0)]
    adaptive_joint_fit_weight: f64,
    /// With --adaptive-joint-rounds: the weight in that sum of the width one bit
    /// above the fit, as splitting the fit width's levels gives it (0: left out).
    #[arg(long, default_value_t = 0.0)]
    adaptive_joint_upper_weight: f64,
    /// With --adaptive-joint-upper-weight: how many widths above the fit it
    /// serves, 1 or 2.
    #[arg(long, default_value_t = 1)]
    adaptive_joint_upper_widths: u8,
    /// Every refinement step of a rescaled adaptive file carries its own block
    /// correction (as files before the twelfth session did); see
    /// `octet weights palette --nested-every-correction`.
    #[arg(long)]
    adaptive_every_correction: bool,
    /// Bits of each block's scale/offset correction in every refinement step (0:
    /// none, the steps keep the base's block parameters; 1..=8: format version 4, 5
    /// where a step carries none, see --adaptive-every-correction),
    /// one adaptive curve per value.
    #[arg(long, value_delimiter = ',', num_args = 1.., default_value = "0")]
    adaptive_rescale_bits: Vec<u8>,
    /// With --adaptive-rescale-bits above 0: the code widths of the corrections of
    /// the steps above --adaptive-fit, one per step from the fit + 1 up, the last
    /// repeating (each 1..=8; default: the same as below it).
    #[arg(
        long,
        value_name = "N[,N...]",
        value_parser = super::palette::parse_upper_rescale_bits
    )]
    adaptive_upper_rescale_bits: Option<UpperRescaleBits>,
    /// With --adaptive-rescale-bits above 0: a second code width (1..=8) the first
    /// step above --adaptive-fit may take instead, linear by linear, where its extra
    /// bytes remove at least as much error per byte as the next step is estimated to.
    #[arg(long, value_name = "N", value_parser = super::palette::rescale_width())]
    adaptive_upper_rescale_choice: Option<u8>,
    /// With --adaptive-rescale-bits above 0: also fit the first step above
    /// --adaptive-fit with N-bit corrections (1..=8) that are not stored, and split
    /// the next width in their coordinates.
    #[arg(long, value_name = "N", value_parser = super::palette::rescale_width())]
    adaptive_upper_seed_bits: Option<u8>,
    /// How the adaptive file orders its steps across linears, one curve per value:
    /// `greedy` (error removed per byte) or `balanced` (every linear gets its n-th
    /// step before any gets its n+1-th; within a level, error removed per byte).
    #[arg(long, value_enum, value_delimiter = ',', num_args = 1.., default_value = "greedy")]
    adaptive_order: Vec<AdaptiveOrder>,
    /// With a probe order: probe each linear alone instead of each layer's linears
    /// together (7x the probes on a llama model).
    #[arg(long)]
    adaptive_probe_each_linear: bool,
    /// With a probe order: split each layer's measured gain over its linears by
    /// what each kind of linear removes per weight, measured by one more probe per
    /// kind (`palette --nested-probe-kinds`).
    #[arg(long, conflicts_with = "adaptive_probe_each_linear")]
    adaptive_probe_kinds: bool,
    /// With a probe order: probe each linear alone at the first level (on 512
    /// calibration tokens), each layer's linears together above it (`palette
    /// --nested-probe-each-linear-first`, the llama recipe of `palette --adaptive`).
    #[arg(long, conflicts_with_all = ["adaptive_probe_each_linear", "adaptive_probe_kinds"])]
    adaptive_probe_each_linear_first: bool,
    /// With `probe` or `probe-twice`: probe only the first N levels, the levels
    /// above in the balanced order (`palette --nested-probe-levels`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    adaptive_probe_levels: Option<u32>,
    /// `FIT:RESCALE:SHARE`, e.g. `4:2:0.3`: after fitting every linear as the other
    /// --adaptive-* flags say, probe the first refinement step of each layer on the
    /// calibration text, and refit the linears of the layers it helps most (per
    /// weight), up to SHARE of the linear weights, at FIT bits with RESCALE-bit block
    /// corrections (a mixed file: a good narrow base where steps come late, the
    /// fixed FIT-bit palette where they come early).
    #[arg(long)]
    adaptive_mix: Option<Mix>,
    /// Also measure each adaptive file's relative weight error with every linear
    /// at each width, calibration-weighted and plain (stderr and the JSON's
    /// `adaptive_width_errors`): which widths its nesting serves well.
    #[arg(long)]
    adaptive_width_errors: bool,
    /// Also measure BitStack on what each adaptive file's palettes leave: at every
    /// width, every linear at that width plus one activation-aware BitStack block
    /// of its residual (sign bits and rank-k factors, the default rank policy;
    /// method `adaptive + bitstack`), beside every linear at that width alone
    /// (method `adaptive width`): whether a block beats the palette's next step.
    #[arg(long)]
    adaptive_bitstack_residual: bool,
    /// The rank of those blocks' factors (default: the BitStack ladder's policy,
    /// a quarter of a block's bytes in factors, at most 16).
    #[arg(long, value_name = "K", requires = "adaptive_bitstack_residual",
          value_parser = clap::value_parser!(u32).range(1..))]
    adaptive_bitstack_rank: Option<u32>,
    /// Bits the adaptive file's last refinement step reaches.
    #[arg(long, default_value_t = 6)]
    adaptive_top: u8,
    /// Weights per scale/offset block of the adaptive file's base palette.
    #[arg(long, default_value_t = 32)]
    adaptive_group_cols: usize,
    /// Blocks per matrix of the BitStack decomposition.
    #[arg(long, default_value_t = 16)]
    n_iter: usize,
    /// Read the BitStack ladder from this stacked .octet (made by `octet weights
    /// stack` from the same model) instead of decomposing here.
    #[arg(long, value_name = "FILE.octet")]
    stack: Option<PathBuf>,
    /// Write every row as JSON to this file.
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
    /// Write every row as CSV to this file.
    #[arg(long, value_name = "OUT")]
    csv: Option<PathBuf>,
    /// Plot perplexity against bits per weight, one curve per method, to this SVG.
    #[arg(long, value_name = "OUT")]
    svg: Option<PathBuf>,
}

/// One measured point.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepRow {
    /// The curve it belongs to.
    pub method: String,
    /// Its setting on that curve.
    pub setting: String,
    /// Bits per weight over the replaced linears.
    pub bits_per_weight: f64,
    /// Perplexity on the text.
    pub perplexity: f64,
    /// Relative to the reference's perplexity, in percent.
    pub delta_percent: f64,
    /// ||W - W_hat||_F / ||W||_F over all replaced linears together.
    pub relative_error: f64,
    /// Seconds spent quantising (0 for the reference).
    pub quantise_s: f64,
    /// Seconds spent evaluating.
    pub eval_s: f64,
}

/// The whole sweep, as written to JSON.
#[derive(Debug, Serialize, Deserialize)]
pub struct SweepReport {
    /// The model.
    pub model: PathBuf,
    /// The text.
    pub text: PathBuf,
    /// Tokens scored per evaluation.
    pub tokens: usize,
    /// Context length.
    pub ctx: usize,
    /// Stride.
    pub stride: usize,
    /// Linears replaced by every method.
    pub linears: usize,
    /// Weights in them.
    pub linear_weights: u64,
    /// How palette importances and BitStack scales were obtained.
    pub calibration: String,
    /// Every point.
    pub rows: Vec<SweepRow>,
    /// With `--adaptive-width-errors`: each adaptive file's relative weight error
    /// with every linear at each width.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adaptive_width_errors: Vec<WidthErrors>,
}

/// One adaptive file's nested palettes with every linear at one width after
/// another (`--adaptive-width-errors`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WidthErrors {
    /// The adaptive method (its correction width; the order does not change the
    /// palettes).
    pub method: String,
    /// One entry per width, from the base up.
    pub widths: Vec<WidthError>,
}

/// The error of every linear at one width.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WidthError {
    /// Index bits per weight.
    pub bits: u8,
    /// `sqrt(sum m_j (w - w_hat)^2 / sum m_j w^2)` over all linears, `m_j` the
    /// calibration mean square of the weight's input column (1 uncalibrated):
    /// the diagonal of the output error.
    pub weighted: f64,
    /// The same with every `m_j = 1`.
    pub plain: f64,
}

/// Replacement linears of one method, in the order of `Prepared::linears`.
type Replaced = Vec<Vec<f32>>;

struct Ctx<'a> {
    prep: &'a Prepared,
    base: LlamaForward,
    ids: Vec<u32>,
    window: WindowArgs,
    reference: Option<f64>,
    rows: Vec<SweepRow>,
    weights: u64,
    width_errors: Vec<WidthErrors>,
}

impl Ctx<'_> {
    /// Evaluates a method's linears and records the row.
    fn record(
        &mut self,
        method: &str,
        setting: String,
        bits: f64,
        linears: Option<Replaced>,
        quantise_s: f64,
    ) -> Result<()> {
        let t0 = Instant::now();
        let mut forward = self.base.clone();
        let (mut num, mut den) = (0f64, 0f64);
        if let Some(lin) = &linears {
            for (name, w) in self.prep.linears.iter().zip(lin) {
                let orig = &self.prep.model.tensors[name];
                for (a, b) in orig.data.iter().zip(w) {
                    num += f64::from(a - b).powi(2);
                    den += f64::from(*a).powi(2);
                }
                let t = Tensor::from_slice(w, orig.shape.as_slice(), &Device::Cpu)?;
                forward.set_linear(name, t)?;
            }
        }
        drop(linears);
        let pb = bar(0, "perplexity windows");
        let ppl = perplexity(
            &forward,
            &self.ids,
            self.window.ctx,
            self.window.stride(),
            |d, n| {
                pb.set_length(n as u64);
                pb.set_position(d as u64);
            },
        )
        .with_context(|| format!("{method} {setting}"))?;
        pb.finish_and_clear();
        let reference = *self.reference.get_or_insert(ppl.perplexity);
        let row = SweepRow {
            method: method.to_owned(),
            setting,
            bits_per_weight: bits,
            perplexity: ppl.perplexity,
            delta_percent: 100.0 * (ppl.perplexity / reference - 1.0),
            relative_error: (num / den.max(f64::MIN_POSITIVE)).sqrt(),
            quantise_s,
            eval_s: t0.elapsed().as_secs_f64(),
        };
        eprintln!(
            "{:<24} {:<22} {:>7.3} bits/w  ppl {:>10.3}  ({:+.2}%)  rel.err {:.4}  [{:.0}s + {:.0}s]",
            row.method,
            row.setting,
            row.bits_per_weight,
            row.perplexity,
            row.delta_percent,
            row.relative_error,
            row.quantise_s,
            row.eval_s
        );
        self.rows.push(row);
        Ok(())
    }

    /// Applies `f` to every linear in parallel.
    fn map_linears(
        &self,
        f: impl Fn(&str, &[f32], usize, usize) -> Result<Vec<f32>> + Sync,
    ) -> Result<Replaced> {
        self.prep
            .linears
            .par_iter()
            .map(|name| {
                let t = &self.prep.model.tensors[name];
                f(name, &t.data, t.shape[0], t.shape[1]).with_context(|| format!("`{name}`"))
            })
            .collect()
    }

    fn importance(&self, name: &str) -> Option<Vec<f32>> {
        self.prep
            .calib
            .as_ref()
            .and_then(|c| c.stats.mean_square(name))
    }
}

/// Runs `octet weights sweep`.
pub fn run(args: SweepArgs) -> Result<()> {
    let gptq = args.gptq.config();
    let prep = prepare(&args.input, &args.calib, false, gptq.is_some())?;
    let octet_tools::model::Architecture::Llama(cfg) = &prep.model.arch else {
        bail!(
            "{}: architecture `{}`; the sweep runs llama-family models only",
            args.input.input.display(),
            prep.model.arch.name()
        );
    };
    let tok = calib::load_tokenizer(&prep.model, args.calib.tokenizer.as_deref())?;
    let ids = tokenize_text(&tok, &args.text, args.window.max_tokens, cfg.vocab_size)?;
    let base = match prep.calib.as_ref().and_then(|c| c.forward.as_ref()) {
        Some(f) => f.clone(),
        None => LlamaForward::new(cfg, &calib::to_candle(&prep.model, &Device::Cpu)?)?,
    };
    let weights: u64 = prep
        .linears
        .iter()
        .map(|n| prep.model.tensors[n].data.len() as u64)
        .sum();
    eprintln!(
        "{}: {} linears ({} weights) replaced by every method; {} tokens of {}; calibration: {}",
        args.input.input.display(),
        prep.linears.len(),
        weights,
        ids.len(),
        args.text.display(),
        prep.scales_note
    );
    let mut cx = Ctx {
        prep: &prep,
        base,
        ids,
        window: args.window,
        reference: None,
        rows: Vec::new(),
        weights,
        width_errors: Vec::new(),
    };
    let ref_bits = if args
        .input
        .input
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        octet_tools::model::gguf::storage_bits(&args.input.input)?.0
    } else {
        16.0
    };
    cx.record("reference", "dequantised".into(), ref_bits, None, 0.0)?;

    for &group in &args.rtn_groups {
        for &bits in &args.rtn_bits {
            let rtn = Rtn { bits, group };
            let t0 = Instant::now();
            let lin = cx.map_linears(|_, w, r, c| Ok(rtn.apply(w, r, c)?))?;
            let q = t0.elapsed().as_secs_f64();
            cx.record(
                &format!("RTN g{group}"),
                format!("{bits} bits"),
                rtn.bits_per_weight(),
                Some(lin),
                q,
            )?;
        }
    }

    let imatrix_runs: &[bool] = if args.imatrix && prep.calib.is_some() {
        &[false, true]
    } else {
        &[false]
    };
    for &with_imp in imatrix_runs {
        for &k in &args.kquants {
            let k = KQuant::from(k);
            let t0 = Instant::now();
            let lin = cx.map_linears(|name, w, r, c| {
                let imp = if with_imp { cx.importance(name) } else { None };
                Ok(k.apply(w, r, c, imp.as_deref())?)
            })?;
            let q = t0.elapsed().as_secs_f64();
            let method = if with_imp {
                "k-quants + imatrix"
            } else {
                "k-quants"
            };
            cx.record(method, k.name().into(), k.bits_per_weight(), Some(lin), q)?;
        }
    }

    // Plain palettes (a table per `rows` rows) then scaled ones (blocks of `cols`),
    // each without and (with --gptq) with GPTQ fitting.
    let layouts: Vec<(Option<usize>, Option<usize>)> = args
        .palette_rows
        .iter()
        .map(|&r| (Some(r), None))
        .chain(args.scaled_group_cols.iter().map(|&c| (None, Some(c))))
        .collect();
    let fits: Vec<(&str, Option<_>)> = std::iter::once(("palette", None))
        .chain(gptq.map(|g| ("palette+GPTQ", Some(g))))
        .collect();
    for &(group_rows, group_cols) in &layouts {
        for (label, fit) in &fits {
            for &bits in &args.palette_bits {
                let pc = PaletteConfig { bits, group_rows };
                let t0 = Instant::now();
                // Both fits parallelise within a matrix themselves.
                let mut total_bits = 0f64;
                let mut lin = Vec::with_capacity(prep.linears.len());
                let pb = bar(prep.linears.len() as u64, "palettizing");
                for name in &prep.linears {
                    let (p, _) = palettize_linear(&prep, name, &pc, group_cols, fit.as_ref())?;
                    total_bits += p.bits_per_weight() * prep.model.tensors[name].data.len() as f64;
                    lin.push(p.decode());
                    pb.inc(1);
                }
                pb.finish_and_clear();
                let method = match (group_rows, group_cols) {
                    (_, Some(c)) => format!("scaled {label} g{c}"),
                    (r, None) => format!("{label} {} row/table", r.unwrap_or(1)),
                };
                cx.record(
                    &method,
                    format!("{bits} bits"),
                    total_bits / weights as f64,
                    Some(lin),
                    t0.elapsed().as_secs_f64(),
                )?;
            }
        }
    }

    if !args.stack_bits.is_empty() {
        bitstack_ladder(&mut cx, &args)?;
    }
    if !args.adaptive_bits.is_empty() {
        adaptive_ladder(&mut cx, &args)?;
    }

    let report = SweepReport {
        model: args.input.input.clone(),
        text: args.text.clone(),
        tokens: cx.rows.first().map_or(0, |_| {
            octet_tools::model::ppl::windows(cx.ids.len(), args.window.ctx, args.window.stride())
                .map(|w| w.iter().map(|w| w.end - w.first_scored).sum())
                .unwrap_or(0)
        }),
        ctx: args.window.ctx,
        stride: args.window.stride(),
        linears: prep.linears.len(),
        linear_weights: cx.weights,
        calibration: prep.scales_note.clone(),
        rows: cx.rows,
        adaptive_width_errors: cx.width_errors,
    };
    print_table(&report);
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.csv {
        let mut s = String::from(
            "method,setting,bits_per_weight,perplexity,delta_percent,relative_error,quantise_s,eval_s\n",
        );
        for r in &report.rows {
            s.push_str(&format!(
                "{},{},{:.4},{:.4},{:.3},{:.5},{:.1},{:.1}\n",
                r.method,
                r.setting,
                r.bits_per_weight,
                r.perplexity,
                r.delta_percent,
                r.relative_error,
                r.quantise_s,
                r.eval_s
            ));
        }
        std::fs::write(p, s).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.svg {
        super::sweep_plot::write_svg(p, &report)?;
    }
    Ok(())
}

/// The BitStack rows: one stacked file, budgets picked by bits per weight over the
/// linears, proxy ordering (or whatever ordering `--stack` was written with).
fn bitstack_ladder(cx: &mut Ctx<'_>, args: &SweepArgs) -> Result<()> {
    let t0 = Instant::now();
    let (bytes, ordering) = match &args.stack {
        Some(path) => {
            let ckpt = MappedCheckpoint::open(path)?;
            let ordering = ckpt
                .reader()?
                .manifest()
                .metadata
                .iter()
                .find(|m| m.key == "bitstack.ordering")
                .map_or("unknown".to_owned(), |m| m.value.clone());
            (ckpt.bytes().to_vec(), ordering)
        }
        None => (stack_in_memory(cx.prep, args.n_iter)?, "proxy".to_owned()),
    };
    let stack_s = t0.elapsed().as_secs_f64();
    let reader = Reader::new(&bytes)?;
    let m = reader.manifest();
    for name in &cx.prep.linears {
        if m.tensor_index(name).is_none() {
            bail!(
                "the stacked file has no tensor `{name}`: was it made from this model with the same selection?"
            );
        }
    }
    let method = format!("BitStack ({ordering})");
    for budget in budgets_within(m, &args.stack_bits, "BitStack")? {
        let a = budget.n_blocks;
        let bits = budget_row(m, &budget).compressed_bits_per_weight;
        let t1 = Instant::now();
        let lin = rebuild_linears(&reader, &cx.prep.linears, &budget)?;
        let q = t1.elapsed().as_secs_f64()
            + if cx.rows.iter().any(|r| r.method == method) {
                0.0
            } else {
                stack_s
            };
        cx.record(&method, format!("{a} blocks"), bits, Some(lin), q)?;
    }
    Ok(())
}

/// Every linear of a ladder's file rebuilt at `budget`, in parallel.
fn rebuild_linears(reader: &Reader<'_>, linears: &[String], budget: &Budget) -> Result<Replaced> {
    linears
        .par_iter()
        .map(|n| Ok(reader.rebuild_tensor(n, budget)?))
        .collect()
}

/// The adaptive rows: one nested-palette file per (correction width, order) written
/// in memory, every budget a prefix of it, rebuilt from the file. The steps are
/// fitted once per correction width; each order re-lays the same steps out.
fn adaptive_ladder(cx: &mut Ctx<'_>, args: &SweepArgs) -> Result<()> {
    let several = args.adaptive_rescale_bits.len() * args.adaptive_order.len() > 1;
    for &rb in &args.adaptive_rescale_bits {
        let t0 = Instant::now();
        let mut nested = fit_nested(cx.prep, args, rb)?;
        if let Some(mix) = args.adaptive_mix {
            let hot = hot_linears(cx.prep, &nested.iter().collect::<Vec<_>>(), mix.share)?;
            eprintln!(
                "adaptive mix: {} linears refitted at {} bits with {}-bit corrections: {}",
                hot.len(),
                mix.fit,
                mix.rescale_bits,
                hot.iter()
                    .map(|&i| cx.prep.linears[i].as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let refit = hot
                .par_iter()
                .map(|&i| {
                    fit_one(
                        cx.prep,
                        args,
                        &cx.prep.linears[i],
                        mix.fit,
                        mix.rescale_bits,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            for (&i, p) in hot.iter().zip(refit) {
                nested[i] = p;
            }
        }
        let fit_s = t0.elapsed().as_secs_f64();
        if args.adaptive_width_errors {
            let method = if args.adaptive_rescale_bits.len() > 1 {
                format!("adaptive r{rb}")
            } else {
                "adaptive".to_owned()
            };
            let widths = width_errors(cx.prep, &nested, args.adaptive_base);
            eprintln!(
                "{method}: relative weight error with every linear at each width (calibration-weighted / plain): {}",
                widths
                    .iter()
                    .map(|w| format!("{} bits {:.4} / {:.4}", w.bits, w.weighted, w.plain))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            cx.width_errors.push(WidthErrors { method, widths });
        }
        if args.adaptive_bitstack_residual {
            bitstack_residual(cx, &nested, args.adaptive_base, args.adaptive_bitstack_rank)?;
        }
        for &order in &args.adaptive_order {
            let method = if several {
                format!("adaptive r{rb} {}", order.name())
            } else {
                "adaptive".to_owned()
            };
            let t1 = Instant::now();
            let probed;
            let steps = match order {
                AdaptiveOrder::Probe | AdaptiveOrder::ProbeTwice | AdaptiveOrder::ProbeGreedy => {
                    // probe-twice probes the first level twice.
                    let twice = usize::from(order == AdaptiveOrder::ProbeTwice);
                    let log = order == AdaptiveOrder::ProbeGreedy;
                    let levels = match (args.adaptive_probe_levels, log) {
                        (Some(_), true) => bail!(
                            "--adaptive-probe-levels orders levels one by one; `probe-greedy` compares gains across all of them"
                        ),
                        (Some(n), false) => n as usize,
                        (None, _) => usize::MAX,
                    };
                    let gains = probe_gains(
                        cx.prep,
                        &nested.iter().collect::<Vec<_>>(),
                        twice,
                        log,
                        Grain::from_flags(
                            args.adaptive_probe_each_linear,
                            args.adaptive_probe_each_linear_first,
                            args.adaptive_probe_kinds,
                        ),
                        levels,
                    )?;
                    let mut p = nested.clone();
                    p.iter_mut().zip(&gains).for_each(|(p, g)| set_gains(p, g));
                    probed = p;
                    &probed
                }
                _ => &nested,
            };
            let bytes = nested_file(cx.prep, steps, order.policy())?;
            let build_s = fit_s + t1.elapsed().as_secs_f64();
            let reader = Reader::new(&bytes)?;
            let m = reader.manifest();
            eprintln!(
                "{method}: one file of {} bytes ({} refinement steps, {rb}-bit block corrections, {} order) built in {build_s:.0}s",
                bytes.len(),
                m.block_order.len(),
                order.name()
            );
            let mut first = true;
            for budget in budgets_within(m, &args.adaptive_bits, &method)? {
                let bits = budget_row(m, &budget).compressed_bits_per_weight;
                let t2 = Instant::now();
                let lin = rebuild_linears(&reader, &cx.prep.linears, &budget)?;
                let q = t2.elapsed().as_secs_f64() + if first { build_s } else { 0.0 };
                first = false;
                cx.record(
                    &method,
                    format!("{} steps", budget.n_blocks),
                    bits,
                    Some(lin),
                    q,
                )?;
            }
        }
    }
    Ok(())
}

/// The relative error of `nested` (the linears of `prep`) with every linear at
/// each width from `base` bits up to the fewest steps any has.
fn width_errors(prep: &Prepared, nested: &[NestedPalette], base: u8) -> Vec<WidthError> {
    let levels = nested.iter().map(|p| p.steps.len()).min().unwrap_or(0);
    // Per linear and width: (weighted error, plain error, weighted norm, plain norm).
    let sums: Vec<Vec<[f64; 4]>> = prep
        .linears
        .par_iter()
        .zip(nested)
        .map(|(name, p)| {
            let t = &prep.model.tensors[name];
            let cols = t.shape[1].max(1);
            let imp = prep.calib.as_ref().and_then(|c| c.stats.mean_square(name));
            let m = |j: usize| imp.as_ref().map_or(1.0, |v| f64::from(v[j % cols]));
            (0..=levels)
                .map(|n| {
                    let d = p.decode(n);
                    let mut s = [0f64; 4];
                    for (j, (a, b)) in t.data.iter().zip(&d).enumerate() {
                        let (e, w) = (f64::from(a - b).powi(2), f64::from(*a).powi(2));
                        s[0] += m(j) * e;
                        s[1] += e;
                        s[2] += m(j) * w;
                        s[3] += w;
                    }
                    s
                })
                .collect()
        })
        .collect();
    (0..=levels)
        .map(|n| {
            let mut t = [0f64; 4];
            for linear in &sums {
                for (a, b) in t.iter_mut().zip(&linear[n]) {
                    *a += b;
                }
            }
            let rel = |e: f64, w: f64| if w > 0.0 { (e / w).sqrt() } else { 0.0 };
            WidthError {
                bits: base + n as u8,
                weighted: rel(t[0], t[2]),
                plain: rel(t[1], t[3]),
            }
        })
        .collect()
}

/// `--adaptive-bitstack-residual`: at each width of `nested`, every linear at
/// that width alone and with one BitStack block of its residual, evaluated; the
/// bits count the palette's loaded sections and the block's signs, factors and
/// f32 scales, over the replaced linears.
fn bitstack_residual(
    cx: &mut Ctx<'_>,
    nested: &[NestedPalette],
    base: u8,
    rank: Option<u32>,
) -> Result<()> {
    let prep = cx.prep;
    let levels = nested.iter().map(|p| p.steps.len()).min().unwrap_or(0);
    let bytes = nested_file(prep, nested, OrderPolicy::Balanced)?;
    let reader = Reader::new(&bytes)?;
    let m = reader.manifest();
    let index: Vec<usize> = prep
        .linears
        .iter()
        .map(|name| {
            m.tensor_index(name)
                .with_context(|| format!("`{name}` is not in the adaptive file"))
        })
        .collect::<Result<_>>()?;
    let weights: u64 = index.iter().map(|&t| m.tensors[t].numel()).sum();
    let mut cfg = BitStackConfig {
        n_iter: 1,
        ..Default::default()
    };
    if let Some(k) = rank {
        cfg.rank = RankPolicy::Fixed(k as usize);
    }
    for n in 0..=levels {
        let width = usize::from(base) + n;
        let palette_bytes: u64 = index
            .iter()
            .map(|&t| m.tensors[t].encoding.loaded_bytes(n))
            .sum();
        let t0 = Instant::now();
        let (alone, (with_block, block_bytes)): (Replaced, (Replaced, Vec<u64>)) = prep
            .linears
            .par_iter()
            .zip(nested)
            .map(|(name, p)| {
                let t = &prep.model.tensors[name];
                let (rows, cols) = (t.shape[0], t.shape[1]);
                let d = p.decode(n);
                let resid: Vec<f32> = t.data.iter().zip(&d).map(|(w, q)| w - q).collect();
                let scales = prep.calib.as_ref().and_then(|c| c.stats.scales(name));
                let s = decompose(&resid, rows, cols, scales.as_deref(), &cfg)
                    .with_context(|| format!("BitStack block of `{name}`'s residual"))?;
                let fix = s.rebuild(1)?;
                let both = d.iter().zip(&fix).map(|(a, b)| a + b).collect();
                let stored = s.block_bytes() + s.scales.as_ref().map_or(0, |v| 4 * v.len());
                Ok((d, (both, stored as u64)))
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        let quantise_s = t0.elapsed().as_secs_f64();
        let bits = |b: u64| 8.0 * b as f64 / weights.max(1) as f64;
        let block_total: u64 = block_bytes.iter().sum();
        cx.record(
            "adaptive width",
            format!("{width} bits"),
            bits(palette_bytes),
            Some(alone),
            0.0,
        )?;
        cx.record(
            "adaptive + bitstack",
            format!("{width} bits + 1 block"),
            bits(palette_bytes + block_total),
            Some(with_block),
            quantise_s,
        )?;
    }
    Ok(())
}

/// Fits a nested scaled palette to every linear (importance-weighted when
/// calibrated), with `rescale_bits`-bit block corrections in every step (0: none).
fn fit_nested(prep: &Prepared, args: &SweepArgs, rescale_bits: u8) -> Result<Vec<NestedPalette>> {
    let fit = args.adaptive_fit.unwrap_or(args.adaptive_base);
    let pb = bar(prep.linears.len() as u64, "nesting palettes");
    let nested = prep
        .linears
        .par_iter()
        .map(|name| {
            let p = fit_one(prep, args, name, fit, rescale_bits);
            pb.inc(1);
            p
        })
        .collect::<Result<Vec<_>>>()?;
    pb.finish_and_clear();
    Ok(nested)
}

/// One linear's nested palette, its tree and block parameters fitted at `fit` bits.
fn fit_one(
    prep: &Prepared,
    args: &SweepArgs,
    name: &str,
    fit: u8,
    rescale_bits: u8,
) -> Result<NestedPalette> {
    let (base, top, gc) = (
        args.adaptive_base,
        args.adaptive_top,
        args.adaptive_group_cols,
    );
    let t = &prep.model.tensors[name];
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let imp = prep.calib.as_ref().and_then(|c| c.stats.mean_square(name));
    match rescale_bits {
        0 => nest_scaled_at(&t.data, rows, cols, imp.as_deref(), base, fit, top, gc),
        rb => nest_rescaled_joint(
            &t.data,
            rows,
            cols,
            imp.as_deref(),
            base,
            fit,
            top,
            gc,
            rb,
            JointFit {
                rounds: args.adaptive_joint_rounds,
                params: args.adaptive_joint_params,
                fit_weight: args.adaptive_joint_fit_weight,
                corrections: super::palette::corrections(args.adaptive_every_correction),
                upper_weight: args.adaptive_joint_upper_weight,
                upper_widths: args.adaptive_joint_upper_widths,
                upper_rescale_bits: args.adaptive_upper_rescale_bits.unwrap_or_default(),
                upper_rescale_choice: args.adaptive_upper_rescale_choice,
                upper_seed_bits: args.adaptive_upper_seed_bits,
            },
        ),
    }
    .with_context(|| format!("nested palette of `{name}`"))
}

/// Writes the nested palettes to a file in memory, steps in `policy`'s order.
fn nested_file(prep: &Prepared, nested: &[NestedPalette], policy: OrderPolicy) -> Result<Vec<u8>> {
    let mut w = CheckpointWriter::in_memory();
    prep.add_resident(&mut w)?;
    for (name, p) in prep.linears.iter().zip(nested) {
        w.add_nested_palette(name, p)?;
    }
    prep.add_metadata(&mut w, "nested palette")?;
    let mut out = Vec::new();
    w.finish(&BlockOrdering::Policy(policy), &mut out)?;
    Ok(out)
}

/// Decomposes every linear (activation-aware scales when calibrated) and writes the
/// stacked file to memory, blocks in proxy order.
fn stack_in_memory(prep: &Prepared, n_iter: usize) -> Result<Vec<u8>> {
    let cfg = BitStackConfig {
        n_iter,
        ..Default::default()
    };
    cfg.validate()?;
    let pb = bar(prep.linears.len() as u64, "decomposing");
    let matrices = prep
        .linears
        .par_iter()
        .map(|name| {
            let t = &prep.model.tensors[name];
            let scales = prep.calib.as_ref().and_then(|c| c.stats.scales(name));
            let m = decompose(&t.data, t.shape[0], t.shape[1], scales.as_deref(), &cfg)
                .with_context(|| format!("decomposing `{name}`"));
            pb.inc(1);
            m
        })
        .collect::<Result<Vec<_>>>()?;
    pb.finish_and_clear();
    let mut w = CheckpointWriter::in_memory();
    prep.add_resident(&mut w)?;
    for (name, m) in prep.linears.iter().zip(&matrices) {
        w.add_bitstack(name, m)?;
    }
    prep.add_metadata(&mut w, "bitstack")?;
    let mut out = Vec::new();
    w.finish(&BlockOrdering::Policy(OrderPolicy::default()), &mut out)?;
    Ok(out)
}

/// Prints the table of `r` on stdout.
pub fn print_table(r: &SweepReport) {
    println!(
        "{}: perplexity on {} ({} tokens scored, context {}, stride {}); {} linears, {} weights; calibration: {}",
        r.model.display(),
        r.text.display(),
        r.tokens,
        r.ctx,
        r.stride,
        r.linears,
        r.linear_weights,
        r.calibration
    );
    println!(
        "{:<24} {:<14} {:>9} {:>11} {:>9} {:>9}",
        "method", "setting", "bits/w", "perplexity", "vs ref", "rel.err"
    );
    for row in &r.rows {
        println!(
            "{:<24} {:<14} {:>9.3} {:>11.3} {:>+8.2}% {:>9.4}",
            row.method,
            row.setting,
            row.bits_per_weight,
            row.perplexity,
            row.delta_percent,
            row.relative_error
        );
    }
    println!(
        "bits/w: over the replaced linear layers (embedding, LM head and norms are the reference's for every method)"
    );
}
