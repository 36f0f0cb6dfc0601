//! `octet weights palette`: every linear weight becomes a k-means palette (a lookup
//! table of `2^bits` f16 centroids per tensor or per group of output channels, and
//! packed `bits`-bit indices), clustered by uniquified weighted optimal 1-D k-means
//! (DESIGN.md, "LLM weights", eDKM). For llama-family models the k-means counts are
//! weighted by each input channel's mean x^2 over the calibration text, so
//! centroids favour weights whose errors the activations amplify. With `--gptq` the
//! palettes are fitted to each layer's output instead (GPTQ error feedback and a
//! least-squares table refit under the calibration Gram matrix,
//! [`octet_quant::palette::palettize_gptq`]); the file format is the same.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::builder::ArgPredicate;
use clap::{ArgGroup, Args};
use octet_quant::bitstack::{MatrixBlocks, OrderPolicy, Seam, global_order, seam_order};
use octet_quant::checkpoint::{BlockOrdering, CheckpointWriter};
use octet_quant::palette::rescaled::MAX_RESCALE_BITS;
use octet_quant::palette::{
    Corrections, GptqConfig, GptqReport, JointFit, NestedPalette, PaletteConfig, PaletteTensor,
    ScaledPalette, UpperRescaleBits, nest_rescaled_joint, nest_scaled, palettize, palettize_gptq,
    palettize_scaled, scaled_gptq,
};
use serde::Serialize;

use super::inspect::{BudgetRow, budget_rows, print_budget_table};
use super::prepare::{Prepared, WriteSummary, finish_to, prepare, spill_for};
use super::size::human_bytes;
use super::{CalibArgs, GptqArgs, InputArgs, bar};

/// Arguments of `octet weights palette`.
#[derive(Debug, Args)]
// `--adaptive` fills in the flags of its recipe as defaults, which `requires` does
// not see: a flag that requires one of them is satisfied by `--adaptive` too.
#[command(group(ArgGroup::new("group_cols_or_adaptive").args(["group_cols", "adaptive"]).multiple(true)))]
#[command(group(ArgGroup::new("nested_top_or_adaptive").args(["nested_top", "adaptive"]).multiple(true)))]
#[command(group(ArgGroup::new("nested_rescale_bits_or_adaptive").args(["nested_rescale_bits", "adaptive"]).multiple(true)))]
#[command(group(ArgGroup::new("nested_fit_or_adaptive").args(["nested_fit", "adaptive"]).multiple(true)))]
#[command(group(ArgGroup::new("nested_joint_rounds_or_adaptive").args(["nested_joint_rounds", "adaptive"]).multiple(true)))]
#[command(group(ArgGroup::new("nested_probe_or_adaptive").args(["nested_probe", "adaptive"]).multiple(true)))]
#[command(group(ArgGroup::new("nested_joint_upper_weight_or_adaptive").args(["nested_joint_upper_weight", "adaptive"]).multiple(true)))]
pub struct PaletteArgs {
    #[command(flatten)]
    input: InputArgs,
    /// The .octet file to write.
    #[arg(long, short = 'o', value_name = "FILE.octet")]
    output: PathBuf,
    /// One budget-adaptive file with the measured recipe (README, "Adaptive"):
    /// a 2-bit scaled palette base in blocks of 32, refinement steps up to 8 bits
    /// with block corrections where they pay (2 bits wide up to the fit width, 3
    /// above it in a llama model: format v6), fitted at 3 bits jointly with
    /// the widths below it and the one above (3 rounds, block codes included,
    /// upper weight 1), ordered level by level by perplexity probes: per linear
    /// at the first level, per layer at the second, by weight error above.
    /// Shorthand for `--bits 2 --group-cols 32 --nested-top 8
    /// --nested-rescale-bits 2 [--nested-upper-rescale-bits 3 for a llama model]
    /// --nested-fit 3 --nested-joint-rounds 3
    /// --nested-joint-params --nested-joint-upper-weight 1 --nested-probe
    /// --nested-probe-each-linear-first --nested-probe-levels 2`; any of those
    /// given explicitly wins; with --nested-balanced the order is level by level
    /// without probes (a few minutes instead of about ten on SmolLM2-135M).
    /// A BERT model is probed per linear at its first four levels
    /// (--nested-probe-each-linear --nested-probe-levels 4), its level ends open
    /// (--nested-probe-seams 0.25) and its upper weight 4 over two widths
    /// (--nested-joint-upper-weight 4 --nested-joint-upper-widths 2).
    /// Needs calibration.
    #[arg(long, conflicts_with_all = ["group", "gptq", "no_calib"])]
    adaptive: bool,
    /// Bits per index, 2..=8 (a table of 2^bits centroids).
    #[arg(
        long,
        default_value_t = 4,
        default_value_if("adaptive", ArgPredicate::Equals("true".into()), "2")
    )]
    bits: u8,
    /// Output channels (rows) per lookup table; without it, one table per tensor.
    #[arg(long, value_name = "N", conflicts_with = "group_cols")]
    group: Option<usize>,
    /// Scaled palettes: one table per tensor applied to every block of N weights of
    /// a row through the block's own 6-bit scale and offset (32 follows llama.cpp's
    /// block size; 4 bits then cost about 4.4 bits per weight).
    #[arg(
        long,
        value_name = "N",
        default_value_if("adaptive", ArgPredicate::Equals("true".into()), "32")
    )]
    group_cols: Option<usize>,
    /// Budget-adaptive (format version 3): a scaled palette of --bits bits as the
    /// always-loaded base, plus refinement steps of one bit per weight up to this many
    /// bits, stored after every base in one order by calibration-weighted error
    /// removed per byte, so any budget between base and top is a prefix of the file
    /// (`plan`, `eval --budget`). Needs --group-cols; not with --gptq.
    #[arg(
        long,
        value_name = "BITS",
        requires = "group_cols_or_adaptive",
        conflicts_with = "gptq",
        default_value_if("adaptive", ArgPredicate::Equals("true".into()), "8")
    )]
    nested_top: Option<u8>,
    /// With --nested-top: every refinement step also re-fits the block scales and
    /// offsets for its width, as an N-bit code per block into a per-step table of
    /// corrections (1..=8; format version 4). Without it the steps keep the base's.
    #[arg(
        long,
        value_name = "N",
        requires = "nested_top_or_adaptive",
        default_value_if("adaptive", ArgPredicate::Equals("true".into()), "2")
    )]
    nested_rescale_bits: Option<u8>,
    /// With --nested-rescale-bits: the code widths of the corrections of the steps
    /// above --nested-fit (each 1..=8), one per step from the fit + 1 up, the last
    /// repeating (`3` gives every upper step 3 bits, `3,4` the first 3 and the rest
    /// 4); the base's and the fit's keep --nested-rescale-bits. A width other than
    /// theirs is format version 6.
    #[arg(
        long,
        value_name = "N[,N...]",
        requires = "nested_rescale_bits_or_adaptive",
        value_parser = parse_upper_rescale_bits
    )]
    nested_upper_rescale_bits: Option<UpperRescaleBits>,
    /// With --nested-rescale-bits: a second code width (1..=8) the first step above
    /// --nested-fit may take instead, linear by linear. The step is fitted at both
    /// widths and keeps the dearer correction where the error it removes beyond the
    /// cheaper one's, per extra byte, is at least what the next step is estimated
    /// to remove per byte (this step's rate times the share of error it leaves).
    #[arg(
        long,
        value_name = "N",
        requires = "nested_rescale_bits_or_adaptive",
        value_parser = rescale_width()
    )]
    nested_upper_rescale_choice: Option<u8>,
    /// With --nested-rescale-bits: also fit the first step above --nested-fit with
    /// N-bit corrections (1..=8) that are not stored, and split the next width in
    /// their coordinates, its own correction starting from them.
    #[arg(
        long,
        value_name = "N",
        requires = "nested_rescale_bits_or_adaptive",
        value_parser = rescale_width()
    )]
    nested_upper_seed_bits: Option<u8>,
    /// With --nested-rescale-bits: fit the block scales, offsets and index tree at
    /// this width (--bits..=--nested-top; default --bits): the palette at this width
    /// is the fixed scaled palette, narrower widths merge its levels (each with its
    /// own corrections, the base's resident), wider ones split them.
    #[arg(
        long,
        value_name = "BITS",
        requires = "nested_rescale_bits_or_adaptive",
        default_value_if("adaptive", ArgPredicate::Equals("true".into()), "3")
    )]
    nested_fit: Option<u8>,
    /// With --nested-fit above --bits: rounds that re-choose the fit width's levels
    /// for every width from --bits to the fit together (the sum of their weighted
    /// squared errors), instead of each weight's nearest level at the fit.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        requires = "nested_fit_or_adaptive",
        default_value_if("adaptive", ArgPredicate::Equals("true".into()), "3")
    )]
    nested_joint_rounds: usize,
    /// With --nested-joint-rounds: the rounds also re-fit the stored block scales
    /// and offsets to every width from --bits to the fit together.
    #[arg(
        long,
        requires = "nested_joint_rounds_or_adaptive",
        default_value_if("adaptive", ArgPredicate::Equals("true".into()), "true")
    )]
    nested_joint_params: bool,
    /// With --nested-joint-rounds: the weight of the fit width's error in that sum,
    /// each narrower width's being 1 (above 1 the fit width and the wider ones keep
    /// closer to the fixed palette at the fit).
    #[arg(
        long,
        value_name = "W",
        default_value_t = 1.0,
        requires = "nested_joint_rounds_or_adaptive"
    )]
    nested_joint_fit_weight: f64,
    /// With --nested-joint-rounds: the weight in that sum of the width one bit
    /// above the fit, as splitting the fit width's levels gives it (0, the
    /// default: left out; --adaptive: 1, and 4 for a BERT model).
    #[arg(long, value_name = "W", requires = "nested_joint_rounds_or_adaptive")]
    nested_joint_upper_weight: Option<f64>,
    /// With --nested-joint-upper-weight: how many widths above the fit it serves,
    /// 1 (the default) or 2 (the second split from the first as the file splits
    /// it; --adaptive gives a BERT model 2).
    #[arg(
        long,
        value_name = "N",
        requires = "nested_joint_upper_weight_or_adaptive"
    )]
    nested_joint_upper_widths: Option<u8>,
    /// With --nested-rescale-bits: every refinement step carries its own block
    /// correction (format version 4), as files before the twelfth session did.
    /// Without it a step carries one only where it removes at least as much error
    /// per byte as the step's table and plane (format version 5 when one has none):
    /// only the last loaded correction applies, so the others are bytes no budget
    /// uses.
    #[arg(long, requires = "nested_rescale_bits_or_adaptive")]
    nested_every_correction: bool,
    /// With --nested-top: load the refinement steps level by level (every linear
    /// gets its n-th step before any gets its n+1-th; within a level, by error
    /// removed per byte) instead of purely by error removed per byte.
    #[arg(
        long,
        requires = "nested_top_or_adaptive",
        conflicts_with_all = ["nested_probe_each_linear", "nested_probe_kinds", "nested_probe_each_linear_first", "nested_probe_levels", "nested_probe_twice", "nested_probe_greedy", "nested_probe_seams"]
    )]
    nested_balanced: bool,
    /// With --nested-top: level by level as --nested-balanced, but within a level
    /// the layers are ordered by the perplexity their step removes on the
    /// calibration text (a BERT model: how far its step moves the embeddings of
    /// short calibration sentences toward the unmodified model's); one probe per
    /// layer and level, needs calibration. Each layer's share is split over its
    /// linears by error removed.
    #[arg(
        long,
        requires = "nested_top_or_adaptive",
        conflicts_with = "nested_balanced",
        default_value_if("adaptive", ArgPredicate::Equals("true".into()), "true")
    )]
    nested_probe: bool,
    /// With --nested-probe: probe each linear alone instead of each layer's
    /// together (7x the probes on a llama model, 6x on BERT).
    #[arg(long, requires = "nested_probe_or_adaptive")]
    nested_probe_each_linear: bool,
    /// With --nested-probe: besides each layer, probe each kind of linear
    /// (`q_proj`, `v_proj`, ... of every layer at once), and split a layer's
    /// measured gain over its linears by what their kinds removed per weight
    /// instead of by their weight-error proxies (one more probe per kind and
    /// level: 37 a level on SmolLM2 instead of 30).
    #[arg(
        long,
        requires = "nested_probe_or_adaptive",
        conflicts_with = "nested_probe_each_linear"
    )]
    nested_probe_kinds: bool,
    /// With --nested-probe: probe each linear alone at the first level (2 to 3
    /// bits, which decides the smallest budgets; a language model's probes there
    /// score 512 calibration tokens instead of 1,024), each layer's linears
    /// together above it.
    #[arg(
        long,
        requires = "nested_probe_or_adaptive",
        conflicts_with_all = ["nested_probe_each_linear", "nested_probe_kinds"]
    )]
    nested_probe_each_linear_first: bool,
    /// With --nested-probe: probe only the first N levels (1 is the step from
    /// --bits to one bit more); the levels above keep the balanced order's
    /// weight-error gains, where probes on a small text measure little. Not with
    /// --nested-probe-greedy (it compares gains across levels).
    #[arg(
        long,
        value_name = "N",
        requires = "nested_probe_or_adaptive",
        conflicts_with = "nested_probe_greedy",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    nested_probe_levels: Option<u32>,
    /// With --nested-probe: probe every level a second time halfway up (the
    /// probes the first pass favours given their step), and order each level by
    /// the log-score each step moves at both points (twice the probes).
    #[arg(
        long,
        requires = "nested_probe_or_adaptive",
        conflicts_with = "nested_probe_greedy"
    )]
    nested_probe_twice: bool,
    /// With --nested-probe: order across levels instead of level by level, by the
    /// log-score each step removes per byte (each linear's steps in turn), so a
    /// sensitive linear's second step may come before a robust one's first.
    #[arg(long, requires = "nested_probe_or_adaptive")]
    nested_probe_greedy: bool,
    /// With --nested-probe: open each level end. The linears holding this share
    /// of the weights whose step at a level removed the least are probed again
    /// at the level's end (what unloading the step costs there), beside the next
    /// level's first probes from the same model; those last steps and as many
    /// bytes of the next level's first are then ordered together by value per
    /// byte, so where the next level's best step gains more than a late one
    /// costs, it comes first (each linear's steps stay in order). 0 keeps the
    /// levels closed (the default, but 0.25 for a BERT model under --adaptive).
    /// At most 0.5.
    #[arg(
        long,
        value_name = "SHARE",
        requires = "nested_probe_or_adaptive",
        conflicts_with = "nested_probe_greedy",
        value_parser = parse_seam_share
    )]
    nested_probe_seams: Option<f64>,
    #[command(flatten)]
    calib: CalibArgs,
    #[command(flatten)]
    gptq: GptqArgs,
    /// Print a JSON report on stdout instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct PaletteReport {
    #[serde(flatten)]
    summary: WriteSummary,
    bits: u8,
    group_rows: Option<usize>,
    group_cols: Option<usize>,
    gptq: bool,
    matrices: Vec<MatrixReport>,
    budgets: Vec<BudgetRow>,
}

#[derive(Debug, Serialize)]
struct MatrixReport {
    name: String,
    rows: usize,
    cols: usize,
    bits_per_weight: f64,
    /// ||W - decode||_F / ||W||_F.
    relative_error: f64,
    /// With --gptq: the layer's relative output error on the calibration text,
    /// `sum (w - q)^T H (w - q) / sum w^T H w`, of the plain palette and of the fitted one.
    #[serde(skip_serializing_if = "Option::is_none")]
    output_error_plain: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_error: Option<f64>,
}

/// A fitted linear: a plain or a scaled palette.
#[derive(Debug, Clone)]
pub enum Fitted {
    /// Tables per row group.
    Plain(PaletteTensor),
    /// One table, scale and offset per block.
    Scaled(ScaledPalette),
    /// A scaled palette base with refinement steps (measured here with all steps).
    Nested(NestedPalette),
}

impl Fitted {
    /// Bits per weight including tables and parameters.
    pub fn bits_per_weight(&self) -> f64 {
        match self {
            Fitted::Plain(p) => p.bits_per_weight(),
            Fitted::Scaled(p) => p.bits_per_weight(),
            Fitted::Nested(p) => {
                let numel = p.base.layout.rows * p.base.layout.cols;
                let steps: usize = p
                    .steps
                    .iter()
                    .map(|s| {
                        2 * s.table.len()
                            + s.plane.len()
                            + s.rescale
                                .as_ref()
                                .map_or(0, |r| 4 * r.entries.len() + r.codes.len())
                    })
                    .sum();
                p.base.bits_per_weight() + 8.0 * steps as f64 / numel.max(1) as f64
            }
        }
    }

    /// The decoded tensor.
    pub fn decode(&self) -> Vec<f32> {
        match self {
            Fitted::Plain(p) => p.decode(),
            Fitted::Scaled(p) => p.decode(),
            Fitted::Nested(p) => p.decode(p.steps.len()),
        }
    }

    fn shape(&self) -> (usize, usize) {
        match self {
            Fitted::Plain(p) => (p.layout.rows, p.layout.cols),
            Fitted::Scaled(p) => (p.layout.rows, p.layout.cols),
            Fitted::Nested(p) => (p.base.layout.rows, p.base.layout.cols),
        }
    }

    fn store<S: std::io::Read + std::io::Write + std::io::Seek>(
        &self,
        w: &mut CheckpointWriter<S>,
        name: &str,
    ) -> Result<()> {
        match self {
            Fitted::Plain(p) => w.add_palette(name, p),
            Fitted::Scaled(p) => w.add_scaled_palette(name, p),
            Fitted::Nested(p) => w.add_nested_palette(name, p),
        }
        .with_context(|| format!("storing `{name}`"))
    }
}

/// Which steps of a rescaled nested palette carry a block correction:
/// `--nested-every-correction` / `--adaptive-every-correction`.
pub(super) fn corrections(every: bool) -> Corrections {
    match every {
        true => Corrections::Every,
        false => Corrections::WherePaying,
    }
}

fn relative_error(w: &[f32], p: &Fitted) -> f64 {
    let d = p.decode();
    let (mut num, mut den) = (0f64, 0f64);
    for (a, b) in w.iter().zip(&d) {
        num += f64::from(a - b).powi(2);
        den += f64::from(*a).powi(2);
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// Palettizes the linear `name` of `prep`: plain palettes by `cfg`, or scaled ones
/// with blocks of `group_cols`; importance-weighted, or with `gptq` fitted to the
/// layer's output under its calibration Gram matrix.
pub fn palettize_linear(
    prep: &Prepared,
    name: &str,
    cfg: &PaletteConfig,
    group_cols: Option<usize>,
    gptq: Option<&GptqConfig>,
) -> Result<(Fitted, Option<GptqReport>)> {
    let t = &prep.model.tensors[name];
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let gram = match gptq {
        None => None,
        Some(g) => match prep.calib.as_ref().and_then(|c| c.stats.gram(name)) {
            Some(h) => Some((g, h)),
            None => bail!(
                "--gptq needs the calibration Gram matrix of `{name}`, and there is none (calibration: {})",
                prep.scales_note
            ),
        },
    };
    let importance = || prep.calib.as_ref().and_then(|c| c.stats.mean_square(name));
    match (group_cols, gram) {
        (None, None) => {
            let p = palettize(&t.data, rows, cols, importance().as_deref(), cfg)
                .with_context(|| format!("palettizing `{name}`"))?;
            Ok((Fitted::Plain(p), None))
        }
        (None, Some((g, h))) => {
            let (p, r) = palettize_gptq(&t.data, rows, cols, h, cfg, g)
                .with_context(|| format!("palettizing `{name}` (GPTQ)"))?;
            Ok((Fitted::Plain(p), Some(r)))
        }
        (Some(gc), gram) => {
            let p = palettize_scaled(&t.data, rows, cols, importance().as_deref(), cfg.bits, gc)
                .with_context(|| format!("scaled palette of `{name}`"))?;
            match gram {
                None => Ok((Fitted::Scaled(p), None)),
                Some((g, h)) => {
                    let (p, r) = scaled_gptq(&t.data, h, &p, g)
                        .with_context(|| format!("scaled palette of `{name}` (GPTQ)"))?;
                    Ok((Fitted::Scaled(p), Some(r)))
                }
            }
        }
    }
}

/// Runs `octet weights palette`.
pub fn run(mut args: PaletteArgs) -> Result<()> {
    // `--adaptive --nested-balanced`: the recipe's probes give way to the balanced
    // order asked for (an explicit `--nested-probe` with it is refused by clap).
    if args.adaptive && args.nested_balanced {
        args.nested_probe = false;
    }
    let cfg = PaletteConfig {
        bits: args.bits,
        group_rows: args.group,
    };
    let gptq = args.gptq.config();
    let prep = prepare(&args.input, &args.calib, args.json, gptq.is_some())?;
    if !args.json {
        eprintln!(
            "{}: {} ({} tensors, {} to palettize); importance: {}",
            args.input.input.display(),
            prep.model.arch.name(),
            prep.model.tensors.len(),
            prep.linears.len(),
            prep.scales_note
        );
    }
    // `--adaptive` probes a BERT model's linears one by one: on MiniLM that order
    // was 1-6 recall points better at 5 of 7 budgets than the layer grain, for 148
    // probes (a llama model is probed so only at its first level, below). It also opens
    // a BERT model's level ends: on MiniLM 1.4 and 1.5 recall points more at 3.5
    // and 4.5 bits for about 70 s more probes (323 s), where SmolLM2's perplexity stayed
    // within 0.7% at every budget but 3.5 bits (2.5% worse there).
    // With the seams open, upper weight 4 over two widths puts MiniLM at or above
    // the k-quant line at all 9 budgets from 2.75 to 6 bits (weight 1: 7); a llama
    // model keeps weight 1 (SmolLM2: 3.6% lower perplexity in geometric mean).
    //
    // A llama model's corrections above the fit width are 3 bits wide (format v6),
    // the base's and the fit's 2: on SmolLM2 0.2-1.9% lower perplexity from 4 bits
    // up (4.0 bits 31.78 instead of 32.41, 6.5 bits 27.97 instead of 28.11, so 6 of
    // 10 budgets at or below the k-quant line instead of 5) and the same below 4 bits
    // (the wider codes are paid for inside each budget). 4-bit corrections: 6 of 10
    // too, better at 4.5-6.0 bits, worse at 4.0.
    //
    // A llama model's first level is probed linear by linear on 512 tokens and
    // only its first two levels are probed: on SmolLM2 72.5 at 2.75 bits instead
    // of 89.5 (the k-quant line: 77.6) and 55.6 at 3.0 instead of 60.75, the
    // budgets above as before, in under 10 minutes (each linear at every level:
    // 35 minutes). A probe flag given explicitly wins.
    //
    // Both go up to 8 bits. The two levels above 6 bits are ordered by weight
    // error in a BERT model too: on MiniLM within 0.3 recall points of probing
    // them (either way) at 6.5 to 8 bits, the levels below unchanged, in 302 s
    // instead of 488 s.
    let grain_given = args.nested_probe_each_linear
        || args.nested_probe_each_linear_first
        || args.nested_probe_kinds;
    if args.adaptive && prep.calib.as_ref().is_some_and(|c| c.bert.is_some()) {
        args.nested_probe_each_linear |= !grain_given;
        args.nested_probe_seams.get_or_insert(ADAPTIVE_BERT_SEAMS);
        if args.nested_joint_upper_weight.is_none() && args.nested_joint_upper_widths.is_none() {
            args.nested_joint_upper_weight = Some(ADAPTIVE_BERT_UPPER.0);
            args.nested_joint_upper_widths = Some(ADAPTIVE_BERT_UPPER.1);
        }
        if args.nested_probe && !args.nested_probe_greedy {
            args.nested_probe_levels
                .get_or_insert(ADAPTIVE_BERT_PROBE_LEVELS);
        }
    } else if args.adaptive {
        if let Some(rescale_bits) = args.nested_rescale_bits
            && args.nested_upper_rescale_bits.is_none()
        {
            let widths: Vec<u8> = ADAPTIVE_LLAMA_UPPER_RESCALE_BITS
                .iter()
                .map(|&b| b.max(rescale_bits))
                .collect();
            args.nested_upper_rescale_bits = Some(UpperRescaleBits::new(&widths)?);
        }
        if args.nested_probe {
            args.nested_probe_each_linear_first |= !grain_given;
            if !args.nested_probe_greedy {
                args.nested_probe_levels
                    .get_or_insert(ADAPTIVE_LLAMA_PROBE_LEVELS);
            }
        }
    }
    let seam_share = args.nested_probe_seams.unwrap_or(0.0);
    let upper_weight =
        args.nested_joint_upper_weight
            .unwrap_or(if args.adaptive { 1.0 } else { 0.0 });
    let upper_widths = args.nested_joint_upper_widths.unwrap_or(1);
    let t_compress = Instant::now();
    let pb = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        bar(prep.linears.len() as u64, "clustering")
    };
    // palettize parallelises over groups itself; matrices go one at a time so the
    // working memory stays one matrix's histograms per thread.
    let palettes: Vec<(Fitted, f64, Option<GptqReport>)> = prep
        .linears
        .iter()
        .map(|name| {
            let (p, rep) = match (args.nested_top, args.group_cols) {
                (Some(top), Some(gc)) => {
                    let t = &prep.model.tensors[name];
                    let imp = prep.calib.as_ref().and_then(|c| c.stats.mean_square(name));
                    let (rows, cols) = (t.shape[0], t.shape[1]);
                    let p = match args.nested_rescale_bits {
                        None => {
                            nest_scaled(&t.data, rows, cols, imp.as_deref(), args.bits, top, gc)
                        }
                        Some(rb) => nest_rescaled_joint(
                            &t.data,
                            rows,
                            cols,
                            imp.as_deref(),
                            args.bits,
                            args.nested_fit.unwrap_or(args.bits),
                            top,
                            gc,
                            rb,
                            JointFit {
                                rounds: args.nested_joint_rounds,
                                params: args.nested_joint_params,
                                fit_weight: args.nested_joint_fit_weight,
                                corrections: corrections(args.nested_every_correction),
                                upper_weight,
                                upper_widths,
                                upper_rescale_bits: args
                                    .nested_upper_rescale_bits
                                    .unwrap_or_default(),
                                upper_rescale_choice: args.nested_upper_rescale_choice,
                                upper_seed_bits: args.nested_upper_seed_bits,
                            },
                        ),
                    }
                    .with_context(|| format!("nested palette of `{name}`"))?;
                    (Fitted::Nested(p), None)
                }
                _ => palettize_linear(&prep, name, &cfg, args.group_cols, gptq.as_ref())?,
            };
            let err = relative_error(&prep.model.tensors[name].data, &p);
            pb.inc(1);
            Ok((p, err, rep))
        })
        .collect::<Result<_>>()?;
    pb.finish_and_clear();
    let mut palettes = palettes;
    // Level ends measured as seams (`--nested-probe-seams`), the linears by index.
    let mut seams = Vec::new();
    if args.nested_probe {
        let nested: Vec<&NestedPalette> = palettes
            .iter()
            .filter_map(|(p, _, _)| match p {
                Fitted::Nested(n) => Some(n),
                _ => None,
            })
            .collect();
        let probed = super::probe::probe_with_seams(
            &prep,
            &nested,
            if args.nested_probe_twice {
                usize::MAX
            } else {
                0
            },
            args.nested_probe_greedy,
            super::probe::Grain::from_flags(
                args.nested_probe_each_linear,
                args.nested_probe_each_linear_first,
                args.nested_probe_kinds,
            ),
            seam_share,
            args.nested_probe_levels.map_or(usize::MAX, |n| n as usize),
        )?;
        let nested = palettes.iter_mut().filter_map(|(p, _, _)| match p {
            Fitted::Nested(n) => Some(n),
            _ => None,
        });
        for (n, g) in nested.zip(&probed.gains) {
            super::probe::set_gains(n, g);
        }
        seams = probed.seams;
    }
    let compress_s = t_compress.elapsed().as_secs_f64();

    let t_write = Instant::now();
    let mut writer = CheckpointWriter::new(spill_for(&args.output)?);
    let resident_f32 = prep.add_resident(&mut writer)?;
    for (name, (p, _, _)) in prep.linears.iter().zip(&palettes) {
        p.store(&mut writer, name)?;
    }
    prep.add_metadata(&mut writer, "palette")?;
    writer.add_metadata("palette.bits", &args.bits.to_string())?;
    if let Some(gc) = args.group_cols {
        writer.add_metadata("palette.group_cols", &gc.to_string())?;
    }
    if let Some(g) = &gptq {
        writer.add_metadata(
            "palette.fit",
            &format!("gptq: {} rounds, damping {}, act order", g.rounds, g.damp),
        )?;
    }
    if let Some(top) = args.nested_top {
        writer.add_metadata("palette.nested_top", &top.to_string())?;
    }
    if let Some(rb) = args.nested_rescale_bits {
        writer.add_metadata("palette.nested_rescale_bits", &rb.to_string())?;
        if let Some(upper) = args.nested_upper_rescale_bits {
            writer.add_metadata("palette.nested_upper_rescale_bits", &upper.to_string())?;
        }
        if let Some(choice) = args.nested_upper_rescale_choice {
            writer.add_metadata("palette.nested_upper_rescale_choice", &choice.to_string())?;
        }
        if let Some(seed) = args.nested_upper_seed_bits {
            writer.add_metadata("palette.nested_upper_seed_bits", &seed.to_string())?;
        }
        let fit = args.nested_fit.unwrap_or(args.bits);
        writer.add_metadata("palette.nested_fit", &fit.to_string())?;
        if args.nested_joint_params {
            writer.add_metadata("palette.nested_joint_params", "true")?;
        }
        // Files with a correction in every step carry no key, as before it existed.
        if !args.nested_every_correction {
            writer.add_metadata("palette.nested_corrections", "where paying")?;
        }
        if args.nested_joint_rounds > 0 {
            writer.add_metadata(
                "palette.nested_joint_rounds",
                &args.nested_joint_rounds.to_string(),
            )?;
            if upper_weight != 0.0 {
                writer.add_metadata(
                    "palette.nested_joint_upper_weight",
                    &upper_weight.to_string(),
                )?;
                if upper_widths != 1 {
                    writer.add_metadata(
                        "palette.nested_joint_upper_widths",
                        &upper_widths.to_string(),
                    )?;
                }
            }
            if args.nested_joint_fit_weight != 1.0 {
                writer.add_metadata(
                    "palette.nested_joint_fit_weight",
                    &args.nested_joint_fit_weight.to_string(),
                )?;
            }
        }
    }
    // Nested palettes need no step at the smallest budget: their bases stand alone.
    let level_by_level = (args.nested_balanced || args.nested_probe) && !args.nested_probe_greedy;
    let ordering = match (args.nested_top, level_by_level) {
        (Some(_), true) if !seams.is_empty() => seam_ordering(&writer, &prep, &seams)?,
        (Some(_), true) => BlockOrdering::Policy(OrderPolicy::Balanced),
        (Some(_), false) => BlockOrdering::Policy(OrderPolicy::Greedy { min_levels: 0 }),
        (None, _) => BlockOrdering::default(),
    };
    if args.nested_top.is_some() {
        let name = if args.nested_probe {
            let variant = if args.nested_probe_greedy {
                "probe-greedy"
            } else if args.nested_probe_twice {
                "probe-twice"
            } else {
                "probe"
            };
            let mut name = variant.to_string();
            if args.nested_probe_each_linear {
                name.push_str(", each linear");
            }
            if args.nested_probe_kinds {
                name.push_str(", kinds");
            }
            if args.nested_probe_each_linear_first {
                name.push_str(", each linear first");
            }
            if let Some(n) = args.nested_probe_levels {
                let s = if n == 1 { "" } else { "s" };
                name.push_str(&format!(", {n} level{s}"));
            }
            if seam_share > 0.0 {
                name.push_str(&format!(", seams {seam_share}"));
            }
            name
        } else if args.nested_balanced {
            "balanced".to_string()
        } else {
            "greedy".to_string()
        };
        writer.add_metadata("palette.nested_order", &name)?;
    }
    let manifest = finish_to(writer, &ordering, &args.output)?;
    let write_s = t_write.elapsed().as_secs_f64();

    let matrices: Vec<MatrixReport> = prep
        .linears
        .iter()
        .zip(&palettes)
        .map(|(name, (p, err, rep))| MatrixReport {
            name: name.clone(),
            rows: p.shape().0,
            cols: p.shape().1,
            bits_per_weight: p.bits_per_weight(),
            relative_error: *err,
            output_error_plain: rep.as_ref().map(|r| r.initial),
            output_error: rep.as_ref().map(|r| r.best),
        })
        .collect();
    let report = PaletteReport {
        summary: WriteSummary {
            output: args.output.clone(),
            file_bytes: manifest.file_len,
            compressed_tensors: palettes.len(),
            resident_tensors: prep.model.tensors.len() - palettes.len(),
            resident_f32,
            scales: prep.scales_note.clone(),
            read_s: prep.read_s,
            calib_s: prep.calib_s,
            compress_s,
            write_s,
        },
        bits: args.bits,
        group_rows: args.group,
        group_cols: args.group_cols,
        gptq: gptq.is_some(),
        budgets: budget_rows(&manifest, if args.nested_top.is_some() { 9 } else { 2 }),
        matrices,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let weights: f64 = report
        .matrices
        .iter()
        .map(|m| (m.rows * m.cols) as f64)
        .sum();
    let mean_err = report
        .matrices
        .iter()
        .map(|m| m.relative_error * (m.rows * m.cols) as f64)
        .sum::<f64>()
        / weights.max(1.0);
    println!(
        "wrote {} ({}): {} palettes at {} bits{}, {} resident tensors",
        args.output.display(),
        human_bytes(manifest.file_len),
        palettes.len(),
        args.bits,
        match (args.group_cols, args.group) {
            (Some(gc), _) => format!(" (scaled: one table, a scale and offset per {gc} weights)"),
            (None, Some(g)) => format!(" ({g} rows per table)"),
            (None, None) => " (one table per tensor)".to_owned(),
        },
        report.summary.resident_tensors
    );
    if let Some(b) = report.budgets.first() {
        println!(
            "{:.3} bits/weight over all weights, {:.3} over the palettized tensors; weighted mean relative error {:.4}",
            b.bits_per_weight, b.compressed_bits_per_weight, mean_err
        );
    }
    if args.nested_top.is_some() {
        println!("budgets (every one a prefix of the file):");
        print_budget_table(&report.budgets);
    }
    if gptq.is_some() {
        let mean = |f: fn(&MatrixReport) -> Option<f64>| {
            report
                .matrices
                .iter()
                .filter_map(|m| f(m).map(|e| e * (m.rows * m.cols) as f64))
                .sum::<f64>()
                / weights.max(1.0)
        };
        println!(
            "GPTQ: weighted mean relative output error on the calibration text {:.3e} (plain palette {:.3e})",
            mean(|m| m.output_error),
            mean(|m| m.output_error_plain)
        );
    }
    println!(
        "time: read {:.1}s, calibrate {:.1}s, cluster {:.1}s, write {:.1}s",
        report.summary.read_s, report.summary.calib_s, compress_s, write_s
    );
    Ok(())
}

/// The correction widths `--adaptive` gives a llama model's steps above the fit
/// width (`--nested-upper-rescale-bits`), each at least the base's.
const ADAPTIVE_LLAMA_UPPER_RESCALE_BITS: &[u8] = &[3];
/// The levels `--adaptive` probes in a llama model (`--nested-probe-levels`).
const ADAPTIVE_LLAMA_PROBE_LEVELS: u32 = 2;
/// The levels `--adaptive` probes in a BERT model: those up to 6 bits.
const ADAPTIVE_BERT_PROBE_LEVELS: u32 = 4;
/// The seam share `--adaptive` gives a BERT model (`--nested-probe-seams`).
const ADAPTIVE_BERT_SEAMS: f64 = 0.25;
/// The upper weight and widths `--adaptive` gives a BERT model
/// (`--nested-joint-upper-weight`, `--nested-joint-upper-widths`).
const ADAPTIVE_BERT_UPPER: (f64, u8) = (4.0, 2);

/// `--nested-probe-seams`: a share of the weights from 0 to 0.5.
fn parse_seam_share(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|e| format!("`{s}`: expected a share from 0 to 0.5 ({e})"))?;
    if !(0.0..=0.5).contains(&v) {
        return Err(format!("`{s}`: expected a share from 0 to 0.5"));
    }
    Ok(v)
}

/// One correction code width, 1..=[`MAX_RESCALE_BITS`] (`--nested-upper-rescale-choice`,
/// `--nested-upper-seed-bits` and their `--adaptive-` twins in the sweep).
pub(super) fn rescale_width() -> clap::builder::RangedI64ValueParser<u8> {
    clap::value_parser!(u8).range(1..=i64::from(MAX_RESCALE_BITS))
}

/// `--nested-upper-rescale-bits`, `--adaptive-upper-rescale-bits`: a comma-separated
/// list of correction widths ([`UpperRescaleBits::new`] checks each and the count).
pub(super) fn parse_upper_rescale_bits(s: &str) -> std::result::Result<UpperRescaleBits, String> {
    let widths = s
        .split(',')
        .map(|w| {
            w.trim()
                .parse::<u8>()
                .map_err(|e| format!("`{w}`: expected a width from 1 to 8 ({e})"))
        })
        .collect::<std::result::Result<Vec<u8>, String>>()?;
    UpperRescaleBits::new(&widths).map_err(|e| e.to_string())
}

/// The level-by-level order with each measured level end opened
/// ([`seam_order`]): the probes' linear indices mapped to the writer's matrices.
fn seam_ordering<S: std::io::Read + std::io::Write + std::io::Seek>(
    writer: &CheckpointWriter<S>,
    prep: &Prepared,
    seams: &[Seam],
) -> Result<BlockOrdering> {
    let matrices = writer.bitstack_matrices();
    let index: std::collections::HashMap<&str, u32> = matrices
        .iter()
        .enumerate()
        .map(|(m, (name, _))| (name.as_str(), m as u32))
        .collect();
    let to_matrix = |v: &[(u32, f64)]| -> Result<Vec<(u32, f64)>> {
        v.iter()
            .map(|&(i, x)| {
                let name = &prep.linears[i as usize];
                index
                    .get(name.as_str())
                    .map(|&m| (m, x))
                    .with_context(|| format!("`{name}` has no refinement steps to order"))
            })
            .collect()
    };
    let seams = seams
        .iter()
        .map(|s| {
            Ok(Seam {
                level: s.level,
                tail: to_matrix(&s.tail)?,
                head: to_matrix(&s.head)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mbs: Vec<MatrixBlocks> = matrices.into_iter().map(|(_, m)| m).collect();
    let balanced = global_order(&mbs, OrderPolicy::Balanced)?;
    Ok(BlockOrdering::Explicit(seam_order(
        &balanced, &mbs, &seams,
    )?))
}
