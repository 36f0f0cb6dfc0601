//! The probe order of a nested palette file: which linears get a refinement level
//! first, measured by perplexity on calibration tokens instead of assumed from the
//! weight error (`octet weights palette --nested-probe`, `octet weights sweep
//! --adaptive-order probe`).

use std::time::Instant;

use anyhow::{Result, bail};
use candle_core::{Device, Tensor};
use octet_quant::palette::NestedPalette;
use octet_tools::model::llama::LlamaForward;
use octet_tools::model::ppl::perplexity;

use super::prepare::Prepared;

/// Calibration tokens the probes score (4 windows of 256), taken from the
/// calibration sequences, never from the evaluated text.
const PROBE_TOKENS: usize = 1024;
const PROBE_CTX: usize = 256;
/// Weight of a step's own (proxy) gain beside its measured share: a tie-break only.
const PROBE_TIE: f64 = 1e-12;

/// The layer a linear belongs to: the first all-digit component of its name
/// (`blk.7.attn_q.weight`, `model.layers.7.mlp.up_proj.weight`); `None` for none.
fn layer_of(name: &str) -> Option<usize> {
    name.split('.').find_map(|c| c.parse().ok())
}

/// Perplexity-measured gains for the steps of `nested` (the linears of `prep`, in
/// order), one per step, for the level-balanced order ([`set_gains`] puts them in
/// place): at each level `l`, with every linear at `l - 1` steps, each layer in turn
/// gets its linears' step `l`, and the perplexity that removes on calibration text
/// (clamped at 0) is split over those linears in proportion to their own gains
/// (which also break ties, at [`PROBE_TIE`]). Costs one baseline and one probe per
/// layer and level.
pub fn probe_gains(prep: &Prepared, nested: &[&NestedPalette]) -> Result<Vec<Vec<f64>>> {
    let Some(calib) = &prep.calib else {
        bail!("the probe order needs calibration text (--calib, not --no-calib)");
    };
    let ids: Vec<u32> = calib
        .seqs
        .iter()
        .flatten()
        .copied()
        .take(PROBE_TOKENS)
        .collect();
    let linears = &prep.linears;
    let mut groups: std::collections::BTreeMap<Option<usize>, Vec<usize>> = Default::default();
    for (i, name) in linears.iter().enumerate() {
        groups.entry(layer_of(name)).or_default().push(i);
    }
    let tensor = |i: usize, steps: usize| -> Result<Tensor> {
        let shape = &prep.model.tensors[&linears[i]].shape;
        Ok(Tensor::from_vec(
            nested[i].decode(steps),
            shape.as_slice(),
            &Device::Cpu,
        )?)
    };
    let ppl = |f: &LlamaForward| -> Result<f64> {
        Ok(perplexity(f, &ids, PROBE_CTX, PROBE_CTX, |_, _| {})?.perplexity)
    };
    let levels = nested.iter().map(|p| p.steps.len()).max().unwrap_or(0);
    let mut out: Vec<Vec<f64>> = nested
        .iter()
        .map(|p| p.steps.iter().map(|s| s.gain).collect())
        .collect();
    let t0 = Instant::now();
    for level in 1..=levels {
        let mut baseline = calib.forward.clone();
        for (i, name) in linears.iter().enumerate() {
            baseline.set_linear(name, tensor(i, level - 1)?)?;
        }
        let base_ppl = ppl(&baseline)?;
        let mut line = Vec::new();
        for (layer, members) in &groups {
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
                probe.set_linear(&linears[i], tensor(i, level)?)?;
            }
            let removed = (base_ppl - ppl(&probe)?).max(0.0);
            line.push(format!(
                "{}:{removed:.3}",
                layer.map_or("-".into(), |l| l.to_string())
            ));
            let total: f64 = members
                .iter()
                .map(|&i| nested[i].steps[level - 1].gain.max(0.0))
                .sum();
            for &i in &members {
                let own = nested[i].steps[level - 1].gain.max(0.0);
                let share = if total > 0.0 {
                    own / total
                } else {
                    1.0 / members.len() as f64
                };
                // The proxy gain, scaled far below any measured perplexity, breaks
                // ties: where no layer's probe moves the perplexity (high levels),
                // the order within the level is the balanced one.
                out[i][level - 1] = removed * share + own * PROBE_TIE;
            }
        }
        eprintln!(
            "probe level {level}: baseline perplexity {base_ppl:.3}; removed per layer {}",
            line.join(" ")
        );
    }
    eprintln!("probes: {:.0}s", t0.elapsed().as_secs_f64());
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
}
