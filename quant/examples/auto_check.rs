//! Prints the `transform-auto` check (candidate recall on held-out sample rows) for
//! each size on an fvecs file and on synthetic clustered white noise.
//!
//! ```text
//! cargo run --release -p octet-quant --example auto_check -- BASE.fvecs [ROWS]
//! ```

use octet_quant::codec::transform::TransformCodec;
use octet_quant::codec::transform::auto::{candidate_recall, candidates_for, fit_auto};
use octet_quant::vecio::read_fvecs;
use octet_quant::{Metric, ScalarQuantizer};
use rand::{Rng, SeedableRng};

fn report(name: &str, sample: &[f32], dim: usize, metric: Metric) -> octet_quant::Result<()> {
    for bytes in [dim / 8, dim / 4, 3 * dim / 8, dim / 2] {
        let codec = TransformCodec::fit(sample, dim, bytes.max(1), ScalarQuantizer::Uniform)?;
        let r: Vec<String> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .map(|&os| {
                let c = candidate_recall(&codec, sample, dim, metric, candidates_for(os));
                format!("os{os}: {:.4}", c.unwrap_or(f64::NAN))
            })
            .collect();
        println!("{name} transform{bytes}: {}", r.join("  "));
    }
    let t = std::time::Instant::now();
    let (_, rep) = fit_auto(sample, dim, ScalarQuantizer::Uniform, metric, 4.0)?;
    println!("{name} auto: {rep:?} in {:.2} s", t.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    if let Some(path) = args.next() {
        let base = read_fvecs(std::path::Path::new(&path), None)?;
        let rows: usize = args.next().map_or(Ok(base.len()), |s| s.parse())?;
        let dim = base.dim;
        let sample = &base.data[..rows.min(base.len()) * dim];
        report(&path, sample, dim, Metric::Cosine)?;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for (dim, n, noise) in [
        (32usize, 1500usize, 0.3f32),
        (24, 4000, 0.3),
        (64, 8000, 0.3),
        (384, 8000, 0.05),
    ] {
        let centres: Vec<Vec<f32>> = (0..8)
            .map(|_| (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect())
            .collect();
        let mut sample = Vec::with_capacity(n * dim);
        for i in 0..n {
            let c = &centres[i % 8];
            let v: Vec<f32> = c
                .iter()
                .map(|x| x + rng.random_range(-noise..noise))
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            sample.extend(v.iter().map(|x| x / norm));
        }
        report(
            &format!("clustered d{dim} n{n} noise{noise}"),
            &sample,
            dim,
            Metric::Cosine,
        )?;
    }
    Ok(())
}
