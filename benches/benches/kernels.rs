//! Scoring throughput of the element codecs, and each fast kernel against its
//! scalar twin.
//!
//! ```text
//! cargo bench -p octet-benches --bench kernels -- --quick
//! ```
//!
//! - `score_batch/<codec>`: one 384-d query against 10,000 codes with the codec's
//!   fast scorer (inner product). Throughput is bytes of codes per second; vectors per
//!   second is 10,000 / time. To bench another codec, add it to [`codecs`].
//! - `scorer_setup/<codec>`: building one query's scorer (what every search pays
//!   before its first code is scored: the query's rotation and folded weights for the
//!   transform codecs).
//! - `kernel/<name>/{fast,scalar}`: one call on 384 values, the dispatched kernel
//!   against its scalar twin (`dot_b1_table` reads a per-query table built outside
//!   the timed call, as the b1 scorer does).
//!
//! After the criterion runs, a short table repeats the scans with a plain timer and
//! prints vectors per second and the speed relative to the f32 scan, the number
//! to compare across machines (absolute times on shared 2-core machines are noisy).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use half::{bf16, f16};
use octet_quant::kernels;
use octet_quant::{CodecSpec, ElementCodec, ElementSpec, Metric, ScalarQuantizer, VectorCodec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DIM: usize = 384;
const ROWS: usize = 10_000;

/// Unit-length vectors whose dimensions differ in offset and spread, like sentence
/// embeddings (values mostly within +-0.2).
fn embeddings(rows: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centre: Vec<f32> = (0..DIM).map(|_| rng.random_range(-0.5f32..0.5)).collect();
    let spread: Vec<f32> = (0..DIM).map(|_| rng.random_range(0.2f32..1.5)).collect();
    let mut data = Vec::with_capacity(rows * DIM);
    for _ in 0..rows {
        let row: Vec<f32> = (0..DIM)
            .map(|d| centre[d] + spread[d] * rng.random_range(-1.0f32..1.0))
            .collect();
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        data.extend(row.iter().map(|v| v / norm));
    }
    data
}

/// The codecs to bench, fitted on `sample`. Add a line here to bench another codec.
fn codecs(sample: &[f32]) -> Vec<(&'static str, Box<dyn VectorCodec>)> {
    let element = |spec: ElementSpec| -> Box<dyn VectorCodec> {
        match ElementCodec::fit(spec, sample, DIM) {
            Ok(codec) => Box::new(codec),
            Err(e) => panic!("fitting {} on the bench sample: {e}", spec.name()),
        }
    };
    vec![
        ("f32", element(ElementSpec::F32)),
        ("f16", element(ElementSpec::F16)),
        ("bf16", element(ElementSpec::Bf16)),
        ("e4m3", element(ElementSpec::E4m3)),
        ("e4m3-scaled", element(ElementSpec::E4m3Scaled)),
        ("e5m2", element(ElementSpec::E5m2)),
        ("i8", element(ElementSpec::I8)),
        ("b1", element(ElementSpec::B1)),
    ]
}

/// A fitted codec, its codes for the bench data, and a prepared query.
struct Scan {
    name: &'static str,
    codec: Box<dyn VectorCodec>,
    codes: Vec<u8>,
}

fn scans() -> (Vec<Scan>, Vec<f32>) {
    let data = embeddings(ROWS, 1);
    let query = embeddings(1, 2);
    let scans = codecs(&data)
        .into_iter()
        .map(|(name, codec)| {
            let codes = match codec.encode(&data) {
                Ok(codes) => codes,
                Err(e) => panic!("encoding the bench data with {name}: {e}"),
            };
            Scan { name, codec, codes }
        })
        .collect();
    (scans, query)
}

fn bench_score_batch(c: &mut Criterion) {
    let (scans, query) = scans();
    let mut group = c.benchmark_group("score_batch");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group.sample_size(20);
    let mut out = vec![0f32; ROWS];
    for scan in &scans {
        let scorer = scan.codec.scorer(&query, Metric::Dot);
        group.throughput(Throughput::Bytes(scan.codes.len() as u64));
        group.bench_function(scan.name, |b| {
            b.iter(|| scorer.score_batch(black_box(&scan.codes), black_box(&mut out)));
        });
    }
    group.finish();
}

/// Per-query scorer construction for the element codec the store rescores with and
/// the transform codecs at `dim/4` and `dim/2` bytes.
fn bench_scorer_setup(c: &mut Criterion) {
    let data = embeddings(ROWS, 1);
    let query = embeddings(1, 2);
    let mut group = c.benchmark_group("scorer_setup");
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(1));
    group.sample_size(20);
    let specs = [
        ("i8", CodecSpec::element(ElementSpec::I8)),
        ("transform96", transform(DIM / 4)),
        ("transform192", transform(DIM / 2)),
    ];
    for (name, spec) in specs {
        let codec = match spec.fit(&data, DIM) {
            Ok(codec) => codec,
            Err(e) => panic!("fitting {name} on the bench sample: {e}"),
        };
        group.bench_function(name, |b| {
            b.iter(|| black_box(codec.scorer(black_box(&query), Metric::Cosine)));
        });
    }
    group.finish();
}

fn transform(bytes: usize) -> CodecSpec {
    CodecSpec::Transform {
        bytes,
        quantizer: ScalarQuantizer::Uniform,
    }
}

/// Benches `fast` and `scalar` on the same inputs; `bytes` is what one call reads.
fn pair(
    c: &mut Criterion,
    name: &str,
    bytes: usize,
    fast: impl Fn() -> f32,
    scalar: impl Fn() -> f32,
) {
    let mut group = c.benchmark_group(format!("kernel/{name}"));
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_millis(700));
    group.sample_size(20);
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(BenchmarkId::from_parameter("fast"), |b| b.iter(&fast));
    group.bench_function(BenchmarkId::from_parameter("scalar"), |b| b.iter(&scalar));
    group.finish();
}

fn bench_kernels(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let q: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let x: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let a: Vec<f32> = (0..DIM).map(|_| rng.random_range(0.0f32..255.0)).collect();
    let codes: Vec<u8> = (0..DIM).map(|_| rng.random()).collect();
    let bits: Vec<u8> = (0..DIM / 8).map(|_| rng.random()).collect();
    let other: Vec<u8> = (0..DIM / 8).map(|_| rng.random()).collect();
    let h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
    let bh: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
    let table = kernels::e4m3_table();

    pair(
        c,
        "dot_f32",
        DIM * 4,
        || kernels::dot_f32(black_box(&q), black_box(&x)),
        || kernels::dot_f32_scalar(black_box(&q), black_box(&x)),
    );
    pair(
        c,
        "l2sq_f32",
        DIM * 4,
        || kernels::l2sq_f32(black_box(&q), black_box(&x)),
        || kernels::l2sq_f32_scalar(black_box(&q), black_box(&x)),
    );
    pair(
        c,
        "dot_f16",
        DIM * 2,
        || kernels::dot_f16(black_box(&q), black_box(&h)),
        || kernels::dot_f16_scalar(black_box(&q), black_box(&h)),
    );
    pair(
        c,
        "dot_bf16",
        DIM * 2,
        || kernels::dot_bf16(black_box(&q), black_box(&bh)),
        || kernels::dot_bf16_scalar(black_box(&q), black_box(&bh)),
    );
    pair(
        c,
        "dot_u8",
        DIM,
        || kernels::dot_u8(black_box(&q), black_box(&codes)),
        || kernels::dot_u8_scalar(black_box(&q), black_box(&codes)),
    );
    pair(
        c,
        "l2sq_u8",
        DIM,
        || kernels::l2sq_u8(black_box(&q), black_box(&a), black_box(&codes)),
        || kernels::l2sq_u8_scalar(black_box(&q), black_box(&a), black_box(&codes)),
    );
    pair(
        c,
        "dot_lut8",
        DIM,
        || kernels::dot_lut8(black_box(&q), table, black_box(&codes)),
        || kernels::dot_lut8_scalar(black_box(&q), table, black_box(&codes)),
    );
    pair(
        c,
        "dot_e4m3",
        DIM,
        || kernels::dot_e4m3(black_box(&q), black_box(&codes)),
        || kernels::dot_e4m3_scalar(black_box(&q), black_box(&codes)),
    );
    pair(
        c,
        "l2sq_e4m3",
        DIM,
        || kernels::l2sq_e4m3(black_box(&q), black_box(&x), black_box(&codes)),
        || kernels::l2sq_e4m3_scalar(black_box(&q), black_box(&x), black_box(&codes)),
    );
    pair(
        c,
        "dot_e5m2",
        DIM,
        || kernels::dot_e5m2(black_box(&q), black_box(&codes)),
        || kernels::dot_e5m2_scalar(black_box(&q), black_box(&codes)),
    );
    pair(
        c,
        "dot_b1",
        DIM / 8,
        || kernels::dot_b1(black_box(&q), black_box(&bits)),
        || kernels::dot_b1_scalar(black_box(&q), black_box(&bits)),
    );
    // The table is built once per query, outside the timed call, as the b1 scorer does.
    let b1_table = kernels::b1_table(&q);
    pair(
        c,
        "dot_b1_table",
        DIM / 8,
        || kernels::dot_b1_table(black_box(&b1_table), black_box(&bits)),
        || kernels::dot_b1_scalar(black_box(&q), black_box(&bits)),
    );
    pair(
        c,
        "hamming",
        DIM / 8,
        || kernels::hamming(black_box(&bits), black_box(&other)) as f32,
        || kernels::hamming_scalar(black_box(&bits), black_box(&other)) as f32,
    );
}

/// Seconds per `score_batch` over all codes: the best of several timed rounds.
fn seconds_per_scan(scan: &Scan, query: &[f32]) -> f64 {
    let scorer = scan.codec.scorer(query, Metric::Dot);
    let mut out = vec![0f32; ROWS];
    let mut best = f64::INFINITY;
    for _ in 0..7 {
        let start = Instant::now();
        let mut reps = 0u32;
        while start.elapsed() < Duration::from_millis(40) {
            scorer.score_batch(black_box(&scan.codes), black_box(&mut out));
            reps += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() / f64::from(reps));
    }
    best
}

/// Prints vectors per second and the speed relative to the f32 scan.
fn summary() {
    let (scans, query) = scans();
    println!(
        "\nscore_batch, {DIM}-d, {ROWS} codes, one thread, CPU level {:?}",
        kernels::cpu_level()
    );
    println!("| codec | bytes/vector | GB/s of codes | Mvectors/s | speed vs f32 |");
    println!("|---|---|---|---|---|");
    let mut f32_time = None;
    for scan in &scans {
        let t = seconds_per_scan(scan, &query);
        let base = *f32_time.get_or_insert(t);
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2}x |",
            scan.name,
            scan.codec.code_len(),
            scan.codes.len() as f64 / t / 1e9,
            ROWS as f64 / t / 1e6,
            base / t
        );
    }
}

criterion_group!(
    benches,
    bench_score_batch,
    bench_scorer_setup,
    bench_kernels
);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Only under `cargo bench` (which passes --bench), not when `cargo test` runs
    // the benches once as smoke tests.
    if std::env::args().any(|a| a == "--bench") {
        summary();
    }
}
