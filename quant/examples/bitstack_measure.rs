//! Measures BitStack decomposition: time per matrix (n_iter = 16) for the SVD methods,
//! and relative reconstruction error against bits per weight for several ranks.
//!
//! ```text
//! cargo run --release -p octet-quant --example bitstack_measure [model.safetensors]
//! ```
//!
//! Timing uses seeded synthetic llama-like matrices of SmolLM2-135M's shapes
//! (576x576 attention, 1536x576 MLP up/gate). The error table uses real weights when a
//! safetensors file (for example all-MiniLM-L6-v2's fp32 `model.safetensors`) is given,
//! and the synthetic matrices otherwise. No scales (uniform), so errors are plain
//! relative Frobenius errors.

use std::time::Instant;

use octet_quant::bitstack::{
    BitStackConfig, RankPolicy, ResidualFactors, SvdMethod, accumulate_signed_product_scalar,
    bits_per_weight_per_block, decompose,
};
use rand::{Rng, SeedableRng};

fn synthetic(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let col: Vec<f32> = (0..cols)
        .map(|j| {
            if j % 17 == 3 {
                4.0
            } else {
                rng.random_range(0.3f32..1.5)
            }
        })
        .collect();
    (0..rows * cols)
        .map(|i| {
            let g: f32 = (0..3).map(|_| rng.random_range(-1.0f32..1.0)).sum();
            0.02 * g * col[i % cols]
        })
        .collect()
}

/// The f32 2-D tensors of a safetensors file whose name contains `filter`.
fn safetensors_f32(path: &str, filter: &str) -> Vec<(String, usize, usize, Vec<f32>)> {
    let bytes = std::fs::read(path).expect("read safetensors");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let data = &bytes[8 + n..];
    let mut out = Vec::new();
    for (name, t) in header.as_object().expect("object") {
        if name == "__metadata__" || !name.contains(filter) || t["dtype"] != "F32" {
            continue;
        }
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().expect("dim") as usize)
            .collect();
        if shape.len() != 2 {
            continue;
        }
        let off = &t["data_offsets"];
        let (a, b) = (
            off[0].as_u64().expect("off") as usize,
            off[1].as_u64().expect("off") as usize,
        );
        let w: Vec<f32> = data[a..b]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        out.push((name.clone(), shape[0], shape[1], w));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn rel_err(w: &[f32], r: &[f32]) -> f64 {
    let e: f64 = w.iter().zip(r).map(|(a, b)| f64::from(a - b).powi(2)).sum();
    let n: f64 = w.iter().map(|a| f64::from(*a).powi(2)).sum();
    e / n
}

fn main() {
    println!(
        "## decompose time, n_iter = 16, default rank policy (release, {} rayon threads)",
        rayon::current_num_threads()
    );
    println!("| shape | k | bits/weight/block | svd | residual | seconds | rel err @16 |");
    println!("|---|---|---|---|---|---|---|");
    for (rows, cols) in [(576, 576), (1536, 576)] {
        let w = synthetic(rows, cols, 11);
        for svd in [SvdMethod::Exact, SvdMethod::default()] {
            for residual in [ResidualFactors::F32, ResidualFactors::Stored] {
                let cfg = BitStackConfig {
                    svd,
                    residual,
                    ..Default::default()
                };
                let t = Instant::now();
                let m = decompose(&w, rows, cols, None, &cfg).expect("decompose");
                let secs = t.elapsed().as_secs_f64();
                let e = rel_err(&w, &m.rebuild(16).expect("rebuild"));
                let name = match svd {
                    SvdMethod::Exact => "exact".to_string(),
                    SvdMethod::Randomized {
                        oversample,
                        power_iters,
                    } => {
                        format!("randomized p={oversample} q={power_iters}")
                    }
                };
                println!(
                    "| {rows}x{cols} | {} | {:.3} | {name} | {residual:?} | {secs:.3} | {e:.3e} |",
                    m.rank,
                    bits_per_weight_per_block(rows, cols, m.rank)
                );
            }
        }
    }

    println!("\n## rebuild (sum of 16 blocks, divide scales) vs the scalar twin kernel");
    println!("| shape | k | fast ms | scalar ms | ratio |");
    println!("|---|---|---|---|---|");
    for (rows, cols) in [(576, 576), (1536, 576)] {
        let w = synthetic(rows, cols, 11);
        let m = decompose(&w, rows, cols, None, &BitStackConfig::default()).expect("decompose");
        let t = Instant::now();
        let fast = m.rebuild(16).expect("rebuild");
        let fast_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let mut slow = vec![0f32; rows * cols];
        for b in &m.blocks {
            let u: Vec<f32> = b.u.iter().map(|x| x.to_f32()).collect();
            let vt: Vec<f32> = b.vt.iter().map(|x| x.to_f32()).collect();
            accumulate_signed_product_scalar(&mut slow, rows, cols, &b.signs, &u, &vt, m.rank);
        }
        let slow_ms = t.elapsed().as_secs_f64() * 1e3;
        assert!(
            fast.iter()
                .zip(&slow)
                .all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs()))
        );
        println!(
            "| {rows}x{cols} | {} | {fast_ms:.2} | {slow_ms:.2} | {:.1}x |",
            m.rank,
            slow_ms / fast_ms
        );
    }

    let arg = std::env::args().nth(1);
    let mats: Vec<(String, usize, usize, Vec<f32>)> = match &arg {
        Some(p) => safetensors_f32(p, "layer.0.")
            .into_iter()
            .filter(|m| m.0.ends_with("weight"))
            .collect(),
        None => vec![
            ("synthetic 576x576".into(), 576, 576, synthetic(576, 576, 1)),
            (
                "synthetic 1536x576".into(),
                1536,
                576,
                synthetic(1536, 576, 2),
            ),
        ],
    };
    println!(
        "\n## relative error vs cumulative bits per weight, by rank (randomized SVD, f32 residual)"
    );
    println!("| matrix | k | blocks | bits/weight | rel err |");
    println!("|---|---|---|---|---|");
    for (name, rows, cols, w) in &mats {
        for k in [2usize, 4, 8, 16] {
            let cfg = BitStackConfig {
                n_iter: 16,
                rank: RankPolicy::Fixed(k),
                ..Default::default()
            };
            let m = decompose(w, *rows, *cols, None, &cfg).expect("decompose");
            for n in [1usize, 2, 4, 8, 16] {
                let e = rel_err(w, &m.rebuild(n).expect("rebuild"));
                let bits = n as f64 * bits_per_weight_per_block(*rows, *cols, m.rank);
                println!(
                    "| {name} ({rows}x{cols}) | {} | {n} | {bits:.2} | {e:.4} |",
                    m.rank
                );
            }
        }
    }
}
