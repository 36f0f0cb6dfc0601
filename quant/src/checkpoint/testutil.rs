//! A tiny synthetic llama-shaped model and helpers to write it as a checkpoint.

use rand::{Rng, SeedableRng};

use super::{BlockOrdering, Budget, BudgetLimit, CheckpointWriter, Manifest};
use crate::bitstack::{BitStackConfig, BitStackMatrix, decompose};
use crate::palette::{
    NestedPalette, PaletteConfig, PaletteTensor, ScaledPalette, nest_scaled, palettize,
    palettize_scaled,
};

/// How a synthetic tensor is stored.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    F16,
    F32,
    BitStack {
        scales: Option<Vec<f32>>,
    },
    Palette {
        bits: u8,
        group_rows: usize,
    },
    ScaledPalette {
        bits: u8,
        group_cols: usize,
    },
    NestedPalette {
        base: u8,
        top: u8,
        group_cols: usize,
    },
    RescaledNestedPalette {
        base: u8,
        fit: u8,
        top: u8,
        group_cols: usize,
        rescale: u8,
        /// Step `i` carries no correction where bit `i` is set (a lean palette,
        /// format version 5).
        strip: u64,
        /// The code width of the corrections of the steps above the fit width
        /// (`None`: `rescale`); another width than `rescale` with `fit` above
        /// `base` is format version 6.
        upper: Option<u8>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct SynthTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub w: Vec<f32>,
    pub kind: Kind,
}

/// What was written, kept in memory to compare the file against.
#[derive(Debug)]
pub(crate) enum Encoded {
    Dense(Vec<f32>),
    BitStack(BitStackMatrix),
    Palette(PaletteTensor),
    ScaledPalette(ScaledPalette),
    NestedPalette(NestedPalette),
}

/// Gaussian-ish weights with per-input-channel scales (a few outlier channels) and a
/// rank-one component: the structure real linear layers show.
pub(crate) fn structured(rows: usize, cols: usize, rng: &mut impl Rng) -> Vec<f32> {
    let col: Vec<f32> = (0..cols)
        .map(|j| {
            if j % 13 == 5 {
                3.0
            } else {
                rng.random_range(0.4f32..1.4)
            }
        })
        .collect();
    let a: Vec<f32> = (0..rows).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let b: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    (0..rows * cols)
        .map(|i| {
            let (r, c) = (i / cols, i % cols);
            let g: f32 = (0..3).map(|_| rng.random_range(-1.0f32..1.0)).sum();
            0.02 * (g * col[c] + 0.5 * a[r] * b[c])
        })
        .collect()
}

fn scales(cols: usize, rng: &mut impl Rng) -> Vec<f32> {
    (0..cols)
        .map(|_| rng.random_range(0.3f32..2.5) + 1e-3)
        .collect()
}

fn tensor(name: &str, shape: &[usize], kind: Kind, rng: &mut impl Rng) -> SynthTensor {
    let (rows, cols) = match shape {
        [r, c] => (*r, *c),
        [n] => (1, *n),
        _ => (shape.iter().product(), 1),
    };
    let kind = match kind {
        Kind::BitStack { scales: Some(_) } => Kind::BitStack {
            scales: Some(scales(cols, rng)),
        },
        k => k,
    };
    SynthTensor {
        name: name.into(),
        shape: shape.to_vec(),
        w: structured(rows, cols, rng),
        kind,
    }
}

const SCALED: Kind = Kind::BitStack {
    scales: Some(Vec::new()),
};
const PLAIN: Kind = Kind::BitStack { scales: None };

/// Two llama-like layers at hidden 64, intermediate 176.
pub(crate) fn llama_like(seed: u64) -> Vec<SynthTensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let r = &mut rng;
    let mut t = vec![
        tensor("model.embed_tokens.weight", &[48, 64], Kind::F16, r),
        tensor("model.norm.weight", &[64], Kind::F32, r),
    ];
    for l in 0..2 {
        let p = format!("model.layers.{l}");
        t.push(tensor(
            &format!("{p}.self_attn.q_proj.weight"),
            &[64, 64],
            SCALED,
            r,
        ));
        t.push(tensor(
            &format!("{p}.self_attn.o_proj.weight"),
            &[64, 64],
            PLAIN,
            r,
        ));
        t.push(tensor(
            &format!("{p}.mlp.up_proj.weight"),
            &[176, 64],
            SCALED,
            r,
        ));
        t.push(tensor(
            &format!("{p}.mlp.down_proj.weight"),
            &[64, 176],
            SCALED,
            r,
        ));
    }
    t.push(tensor(
        "model.layers.0.mlp.gate_proj.weight",
        &[176, 64],
        Kind::Palette {
            bits: 4,
            group_rows: 16,
        },
        r,
    ));
    t.push(tensor(
        "model.layers.1.mlp.gate_proj.weight",
        &[176, 64],
        Kind::ScaledPalette {
            bits: 3,
            group_cols: 32,
        },
        r,
    ));
    t
}

/// The model the committed v1 fixture was written from: a few KB.
pub(crate) fn fixture_model() -> Vec<SynthTensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2024);
    let r = &mut rng;
    vec![
        tensor("embed.weight", &[12, 16], Kind::F16, r),
        tensor("norm.weight", &[16], Kind::F32, r),
        tensor("layers.0.attn.q_proj.weight", &[16, 16], SCALED, r),
        tensor("layers.0.mlp.up_proj.weight", &[40, 16], PLAIN, r),
        tensor(
            "layers.0.mlp.down_proj.weight",
            &[16, 40],
            Kind::Palette {
                bits: 3,
                group_rows: 8,
            },
            r,
        ),
    ]
}

/// The model the committed v2 fixture was written from: the v1 fixture's kinds plus a
/// scaled palette, the encoding version 2 introduced.
pub(crate) fn fixture_model_v2() -> Vec<SynthTensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let r = &mut rng;
    vec![
        tensor("embed.weight", &[8, 16], Kind::F16, r),
        tensor("norm.weight", &[16], Kind::F32, r),
        tensor("layers.0.attn.q_proj.weight", &[16, 16], SCALED, r),
        tensor(
            "layers.0.mlp.up_proj.weight",
            &[24, 16],
            Kind::Palette {
                bits: 2,
                group_rows: 8,
            },
            r,
        ),
        tensor(
            "layers.0.mlp.down_proj.weight",
            &[16, 40],
            Kind::ScaledPalette {
                bits: 3,
                group_cols: 16,
            },
            r,
        ),
    ]
}

/// The model the committed v3 fixture was written from: a BitStack tensor beside two
/// nested palettes, the encoding version 3 introduced.
pub(crate) fn fixture_model_v3() -> Vec<SynthTensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2027);
    let r = &mut rng;
    vec![
        tensor("embed.weight", &[4, 16], Kind::F16, r),
        tensor(
            "layers.0.attn.q_proj.weight",
            &[16, 16],
            Kind::BitStack { scales: None },
            r,
        ),
        tensor(
            "layers.0.mlp.up_proj.weight",
            &[12, 33],
            Kind::NestedPalette {
                base: 2,
                top: 4,
                group_cols: 16,
            },
            r,
        ),
        tensor(
            "layers.0.mlp.down_proj.weight",
            &[9, 40],
            Kind::NestedPalette {
                base: 3,
                top: 5,
                group_cols: 32,
            },
            r,
        ),
    ]
}

/// The model of the committed v4 fixture: an f16 tensor and two rescaled nested
/// palettes, one fitted at its base width, one above it (with a base correction).
pub(crate) fn fixture_model_v4() -> Vec<SynthTensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2028);
    let r = &mut rng;
    vec![
        tensor("embed.weight", &[4, 16], Kind::F16, r),
        tensor(
            "layers.0.mlp.up_proj.weight",
            &[12, 33],
            Kind::RescaledNestedPalette {
                base: 2,
                fit: 2,
                top: 4,
                group_cols: 16,
                rescale: 2,
                strip: 0,
                upper: None,
            },
            r,
        ),
        tensor(
            "layers.0.mlp.down_proj.weight",
            &[9, 40],
            Kind::RescaledNestedPalette {
                base: 2,
                fit: 3,
                top: 4,
                group_cols: 16,
                rescale: 1,
                strip: 0,
                upper: None,
            },
            r,
        ),
    ]
}

/// The model of the committed v5 fixture: an f16 tensor and two lean rescaled
/// nested palettes, one fitted above its base width (a base correction, its fit
/// width's step without a correction), one at its base width (its second step
/// without).
pub(crate) fn fixture_model_v5() -> Vec<SynthTensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2029);
    let r = &mut rng;
    vec![
        tensor("embed.weight", &[4, 16], Kind::F16, r),
        tensor(
            "layers.0.mlp.up_proj.weight",
            &[10, 40],
            Kind::RescaledNestedPalette {
                base: 2,
                fit: 3,
                top: 5,
                group_cols: 16,
                rescale: 2,
                strip: 0b1,
                upper: None,
            },
            r,
        ),
        tensor(
            "layers.0.mlp.down_proj.weight",
            &[8, 33],
            Kind::RescaledNestedPalette {
                base: 2,
                fit: 2,
                top: 5,
                group_cols: 16,
                rescale: 1,
                strip: 0b10,
                upper: None,
            },
            r,
        ),
    ]
}

/// The model of the committed v6 fixture: an f16 tensor and two rescaled nested
/// palettes fitted at 3 bits whose steps above the fit have wider corrections than
/// the base's and the fit's, one of them lean (its 4-bit step without a
/// correction).
pub(crate) fn fixture_model_v6() -> Vec<SynthTensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2030);
    let r = &mut rng;
    vec![
        tensor("embed.weight", &[4, 16], Kind::F16, r),
        tensor(
            "layers.0.mlp.up_proj.weight",
            &[10, 40],
            Kind::RescaledNestedPalette {
                base: 2,
                fit: 3,
                top: 5,
                group_cols: 16,
                rescale: 2,
                strip: 0,
                upper: Some(3),
            },
            r,
        ),
        tensor(
            "layers.0.mlp.down_proj.weight",
            &[8, 33],
            Kind::RescaledNestedPalette {
                base: 2,
                fit: 3,
                top: 5,
                group_cols: 16,
                rescale: 1,
                strip: 0b10,
                upper: Some(2),
            },
            r,
        ),
    ]
}

/// Every fixture model (v1 to v6) written once, with every budget its manifest
/// allows, from the smallest to the whole file.
pub(crate) fn every_fixture_budget() -> Vec<(Vec<u8>, Manifest, Vec<Budget>)> {
    [
        fixture_model(),
        fixture_model_v2(),
        fixture_model_v3(),
        fixture_model_v4(),
        fixture_model_v5(),
        fixture_model_v6(),
    ]
    .iter()
    .map(|model| {
        let (bytes, m, _) = write(model, 4, &BlockOrdering::default());
        let budgets = (m.min_blocks as usize..=m.block_order.len())
            .map(|n| Budget::fit(&m, BudgetLimit::Blocks(n)).expect("budget"))
            .collect();
        (bytes, m, budgets)
    })
    .collect()
}

/// Encodes and writes `model`; returns the file, its manifest and what was encoded.
pub(crate) fn write(
    model: &[SynthTensor],
    n_iter: usize,
    ordering: &BlockOrdering,
) -> (Vec<u8>, Manifest, Vec<Encoded>) {
    let mut wr = CheckpointWriter::in_memory();
    let cfg = BitStackConfig {
        n_iter,
        ..Default::default()
    };
    let mut enc = Vec::new();
    for t in model {
        match &t.kind {
            Kind::F16 => {
                wr.add_f16(&t.name, &t.shape, &t.w).expect("add f16");
                let r =
                    t.w.iter()
                        .map(|&x| half::f16::from_f32(x).to_f32())
                        .collect();
                enc.push(Encoded::Dense(r));
            }
            Kind::F32 => {
                wr.add_f32(&t.name, &t.shape, &t.w).expect("add f32");
                enc.push(Encoded::Dense(t.w.clone()));
            }
            Kind::BitStack { scales } => {
                let m = decompose(&t.w, t.shape[0], t.shape[1], scales.as_deref(), &cfg)
                    .expect("decompose");
                wr.add_bitstack(&t.name, &m).expect("add bitstack");
                enc.push(Encoded::BitStack(m));
            }
            Kind::Palette { bits, group_rows } => {
                let p = palettize(
                    &t.w,
                    t.shape[0],
                    t.shape[1],
                    None,
                    &PaletteConfig {
                        bits: *bits,
                        group_rows: Some(*group_rows),
                    },
                )
                .expect("palettize");
                wr.add_palette(&t.name, &p).expect("add palette");
                enc.push(Encoded::Palette(p));
            }
            Kind::ScaledPalette { bits, group_cols } => {
                let p = palettize_scaled(&t.w, t.shape[0], t.shape[1], None, *bits, *group_cols)
                    .expect("scaled palette");
                wr.add_scaled_palette(&t.name, &p)
                    .expect("add scaled palette");
                enc.push(Encoded::ScaledPalette(p));
            }
            Kind::NestedPalette {
                base,
                top,
                group_cols,
            } => {
                let p = nest_scaled(&t.w, t.shape[0], t.shape[1], None, *base, *top, *group_cols)
                    .expect("nested palette");
                wr.add_nested_palette(&t.name, &p)
                    .expect("add nested palette");
                enc.push(Encoded::NestedPalette(p));
            }
            Kind::RescaledNestedPalette {
                base,
                fit,
                top,
                group_cols,
                rescale,
                strip,
                upper,
            } => {
                let mut p = crate::palette::nest_rescaled_joint(
                    &t.w,
                    t.shape[0],
                    t.shape[1],
                    None,
                    *base,
                    *fit,
                    *top,
                    *group_cols,
                    *rescale,
                    crate::palette::JointFit {
                        upper_rescale_bits: (*upper).into(),
                        ..Default::default()
                    },
                )
                .expect("rescaled nested palette");
                for (i, step) in p.steps.iter_mut().enumerate() {
                    if strip >> i & 1 == 1 {
                        step.rescale = None;
                    }
                }
                wr.add_nested_palette(&t.name, &p)
                    .expect("add rescaled nested palette");
                enc.push(Encoded::NestedPalette(p));
            }
        }
    }
    wr.add_metadata("architecture", "llama").expect("metadata");
    let mut file = Vec::new();
    let manifest = wr.finish(ordering, &mut file).expect("finish");
    assert_eq!(file.len() as u64, manifest.file_len);
    (file, manifest, enc)
}
