//! `octet bench` driven as a user would: the real binary on the committed fixture of
//! real MiniLM embeddings (1,000 base, 100 queries), and on broken input.

use std::process::Output;

use octet_tests::data::fixture;
use octet_tests::{Cli, path_str as path, text};

fn octet(args: &[&str]) -> Output {
    Cli::new(env!("CARGO_BIN_EXE_octet")).run(args)
}

#[test]
fn bench_builds_searches_and_reports_on_real_embeddings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("bench.json");
    let base = fixture("minilm-base-1k.fvecs");
    let queries = fixture("minilm-queries-100.fvecs");
    let out = octet(&[
        "bench",
        "--base",
        path(&base),
        "--queries",
        path(&queries),
        "--configs",
        "f32,transform96/i8,transform96",
        "--ef",
        "16,64",
        "--reps",
        "1",
        "--threads",
        "2",
        "--json",
        path(&json),
    ]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("transform96/i8"), "{stdout}");
    // Progress goes to stderr, the table to stdout.
    assert!(stderr.contains("sealed in"), "{stderr}");
    assert!(!stdout.contains("sealed in"), "{stdout}");

    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("valid json");
    assert_eq!(doc["n_base"], 1000);
    assert_eq!(doc["n_queries"], 100);
    assert_eq!(doc["k"], 10);
    let results = doc["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    let find = |config: &str| {
        results
            .iter()
            .find(|r| r["config"] == config)
            .unwrap_or_else(|| panic!("no {config} in {doc}"))
    };
    let best = |config: &str| {
        find(config)["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .map(|r| r["recall"].as_f64().expect("recall"))
            .fold(0.0, f64::max)
    };
    // f32 codes through HNSW on 1,000 points: near exact. An i8 rescore tier recovers
    // what 96-byte codes lose.
    assert!(best("f32") >= 0.97, "f32 recall {}", best("f32"));
    assert!(best("transform96/i8") >= 0.95, "{}", best("transform96/i8"));
    assert!(best("transform96/i8") > best("transform96"));

    let bytes = |config: &str, part: &str| {
        find(config)["bytes_per_vector"][part]
            .as_f64()
            .unwrap_or_else(|| panic!("{config} {part}"))
    };
    assert_eq!(bytes("f32", "codes"), 384.0 * 4.0);
    assert_eq!(bytes("transform96/i8", "codes"), 96.0);
    assert_eq!(bytes("transform96/i8", "rescore"), 384.0);
    assert_eq!(bytes("transform96", "rescore"), 0.0);
    let graph = bytes("transform96", "graph");
    // m = 16: up to 32 links of 4 bytes on layer 0, plus offsets and upper layers.
    assert!((8.0..=200.0).contains(&graph), "graph {graph} bytes/vector");
    assert!((bytes("transform96", "ram") - (96.0 + graph)).abs() < 1e-9);

    for r in results {
        let runs = r["runs"].as_array().expect("runs");
        assert_eq!(runs.len(), 2);
        for run in runs {
            for field in ["qps_1t", "qps_all"] {
                let q = run[field].as_f64().expect(field);
                assert!(q.is_finite() && q > 0.0, "{field} {q}");
            }
            assert!(run["ef_effective"].as_u64() >= run["ef"].as_u64());
        }
        assert!(r["seal_s"].as_f64().is_some_and(|s| s > 0.0));
    }
    // A rescore tier fetches k x oversampling = 40 candidates: ef 16 becomes 40.
    assert_eq!(find("transform96/i8")["runs"][0]["ef_effective"], 40);
}

#[test]
fn bench_names_the_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = fixture("minilm-base-1k.fvecs");
    let queries = fixture("minilm-queries-100.fvecs");
    let gt = fixture("minilm-gt-100.ivecs");
    let bytes = std::fs::read(&queries).expect("fixture");
    let truncated = dir.path().join("truncated.fvecs");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).expect("write");
    let nan = dir.path().join("nan.fvecs");
    let mut poisoned = bytes.clone();
    let at = 2 * (4 + 384 * 4) + 4 + 5 * 4;
    poisoned[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&nan, &poisoned).expect("write");
    let short = dir.path().join("short.jsonl");
    std::fs::write(&short, "{\"source\": \"a\"}\n{\"source\": \"b\"}\n").expect("write");
    let not_json = dir.path().join("not-json.jsonl");
    std::fs::write(&not_json, "{\"source\": \"a\"}\nnope\n").expect("write");

    let run = |extra: &[&str]| {
        let mut args = vec![
            "bench",
            "--base",
            path(&base),
            "--configs",
            "i8",
            "--ef",
            "16",
            "--reps",
            "1",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        octet(&args)
    };
    for (extra, expect) in [
        (
            vec!["--queries", path(&truncated)],
            "truncated.fvecs".to_string(),
        ),
        (vec!["--queries", path(&nan)], "row 2, column 5".to_string()),
        (
            vec!["--queries", path(&queries), "--configs", "transform192/b9"],
            "b9".to_string(),
        ),
        (
            vec!["--queries", path(&queries), "--ef", "0"],
            "--ef".to_string(),
        ),
        // The fixture's neighbours index the 1,000 base rows; --limit 500 cuts them.
        (
            vec![
                "--queries",
                path(&queries),
                "--gt",
                path(&gt),
                "--limit",
                "500",
            ],
            "minilm-gt-100.ivecs".to_string(),
        ),
        (
            vec!["--queries", path(&queries), "--gt", path(&truncated)],
            "truncated.fvecs".to_string(),
        ),
        // Payloads for keyword-filter runs: one line per base row, each JSON.
        (
            vec![
                "--queries",
                path(&queries),
                "--payloads",
                path(&short),
                "--filter-key",
                "source",
            ],
            "2 payload lines, the base has 1000 rows".to_string(),
        ),
        (
            vec![
                "--queries",
                path(&queries),
                "--payloads",
                path(&not_json),
                "--filter-key",
                "source",
            ],
            "not-json.jsonl line 2: not JSON".to_string(),
        ),
    ] {
        let out = run(&extra);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{extra:?} accepted");
        assert!(stderr.contains(&expect), "{extra:?}: {stderr}");
    }
}
