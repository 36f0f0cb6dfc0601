//! `octet advise` driven as a user would: the real binary on the committed fixture of
//! real MiniLM embeddings, and on broken files.

use std::process::Output;

use octet_tests::data::fixture;
use octet_tests::{Cli, text};

fn octet(args: &[&str]) -> Output {
    Cli::new(env!("CARGO_BIN_EXE_octet")).run(args)
}

#[test]
fn advise_measures_and_recommends_on_real_embeddings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("advice.json");
    let svg = dir.path().join("advice.svg");
    let base = fixture("minilm-base-1k.fvecs");
    let queries = fixture("minilm-queries-100.fvecs");
    let out = octet(&[
        "advise",
        "--base",
        base.to_str().expect("utf-8 path"),
        "--queries",
        queries.to_str().expect("utf-8 path"),
        "--codecs",
        "f16,i8,e4m3,pca96+e4m3,transform96,transform48,transform-auto",
        "--target-recall",
        "0.95",
        "--quiet",
        "--json",
        json.to_str().expect("utf-8 path"),
        "--svg",
        svg.to_str().expect("utf-8 path"),
    ]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("transform96") && stdout.contains("alone:"),
        "{stdout}"
    );

    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("valid json");
    let results = doc["results"].as_array().expect("results array");
    assert_eq!(results.len(), 7);
    // transform-auto checks its small size only on 1,024 sample rows or more: the
    // 1,000 here get half a byte per dimension, and the row says so.
    let auto = results
        .iter()
        .find(|r| r["codec"] == "transform-auto")
        .expect("transform-auto row");
    assert_eq!(auto["fitted"], "transform192", "{auto}");
    assert_eq!(auto["bytes_per_vector"], 192, "{auto}");
    assert!(stdout.contains("transform-auto (transform192)"), "{stdout}");
    assert!(
        results.iter().filter(|r| r.get("fitted").is_some()).count() == 1,
        "only a codec that picks its size names what it was fitted as"
    );
    let recall = |codec: &str| {
        results
            .iter()
            .find(|r| r["codec"] == codec)
            .and_then(|r| r["recall"].as_f64())
            .unwrap_or_else(|| panic!("no recall for {codec}"))
    };
    // Real embeddings, exact neighbours: half precision loses almost nothing and
    // every codec is ordered sensibly by size.
    assert!(recall("f16") >= 0.99, "f16 recall {}", recall("f16"));
    assert!(recall("i8") >= 0.95, "i8 recall {}", recall("i8"));
    assert!(recall("transform96") > recall("transform48"));
    assert_eq!(
        results
            .iter()
            .find(|r| r["codec"] == "transform96")
            .map(|r| r["bytes_per_vector"].clone()),
        Some(96.into())
    );
    let standalone = &doc["recommendation"]["standalone"];
    assert!(
        standalone["recall"].as_f64().is_some_and(|r| r >= 0.95),
        "{standalone}"
    );
    assert!(
        std::fs::read_to_string(&svg)
            .expect("svg written")
            .contains("<svg")
    );
}

#[test]
fn advise_names_the_bad_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queries = fixture("minilm-queries-100.fvecs");
    let bytes = std::fs::read(&queries).expect("fixture");

    // Truncated.
    let truncated = dir.path().join("truncated.fvecs");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).expect("write");
    // A NaN in row 2, column 5.
    let nan = dir.path().join("nan.fvecs");
    let mut poisoned = bytes.clone();
    let at = 2 * (4 + 384 * 4) + 4 + 5 * 4;
    poisoned[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&nan, &poisoned).expect("write");
    // Raw f32 of another dimension than the base.
    let raw = dir.path().join("queries.f32");
    std::fs::write(&raw, vec![0u8; 4 * 100 * 3]).expect("write");

    let base = fixture("minilm-base-1k.fvecs");
    let base = base.to_str().expect("utf-8 path");
    for (bad, expect) in [
        (truncated.to_str().expect("utf-8"), "truncated.fvecs"),
        (nan.to_str().expect("utf-8"), "row 2, column 5"),
        (raw.to_str().expect("utf-8"), "queries.f32"),
    ] {
        let out = octet(&[
            "advise",
            "--base",
            base,
            "--queries",
            bad,
            "--quiet",
            "--codecs",
            "f16",
        ]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{bad} accepted");
        assert!(stderr.contains(expect), "{bad}: {stderr}");
    }
    let out = octet(&[
        "advise",
        "--base",
        base,
        "--queries",
        base,
        "--codecs",
        "pca999+e4m3",
    ]);
    assert!(
        !out.status.success() && text(&out.stderr).contains("pca dims"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn advise_help_documents_every_flag() {
    let out = octet(&["advise", "--help"]);
    let help = text(&out.stdout);
    for flag in [
        "--base",
        "--queries",
        "--dim",
        "--metric",
        "--k",
        "--target-recall",
        "--codecs",
        "--max-queries",
        "--fit-sample",
        "--json",
        "--svg",
        "--quiet",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}
