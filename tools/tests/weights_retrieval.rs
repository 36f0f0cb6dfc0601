//! `octet weights retrieval` on the real all-MiniLM-L6-v2 (fetched by
//! `scripts/fetch_models.sh`) and the shared MiniLM data; skips with a message when
//! either is absent.

mod weights_common;

use octet_tests::data::shared_data;
use octet_tools::model::locate::minilm;
use weights_common::*;

/// `weights retrieval` of `model` with the shared data's queries, base vectors and
/// exact neighbours.
fn retrieval_args<'a>(model: &'a str, q: &'a str, b: &'a str, g: &'a str) -> Vec<&'a str> {
    vec![
        "weights",
        "retrieval",
        "--input",
        model,
        "--queries",
        q,
        "--base",
        b,
        "--gt",
        g,
    ]
}

#[test]
fn the_forward_pass_reproduces_the_shared_embeddings_and_kquants_lose_recall() {
    let Some(model) = minilm() else { return };
    let files = ["queries.jsonl", "queries.fvecs", "base.fvecs", "gt.ivecs"];
    let Some(data) = shared_data("retrieval", &files) else {
        return;
    };
    let dir = tmp();
    let js = path_in(&dir, "r.json");
    let d = |f: &str| data.join(f).to_str().expect("utf-8").to_owned();
    let (q, qv, b, g) = (d(files[0]), d(files[1]), d(files[2]), d(files[3]));
    let common = retrieval_args(p(&model), &q, &b, &g);
    let mut args = common.clone();
    args.extend([
        "--query-vectors",
        &qv,
        "--max-queries",
        "12",
        "--kquants",
        "q2k",
    ]);
    args.extend(["--json", p(&js)]);
    let out = run_ok(&args);
    // The reference forward pass is sentence-transformers' embedding, to float
    // rounding: its search finds the exact neighbours.
    let line = out
        .lines()
        .find(|l| l.contains("mean cosine"))
        .expect("check line");
    let cos: f64 = line
        .split("mean cosine ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("cosine");
    assert!(cos > 0.9999, "{line}");
    let rows = json(&std::fs::read_to_string(&js).expect("json"));
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["method"], "reference (fp32)");
    assert!(rows[0]["recall"].as_f64().expect("recall") >= 0.99);
    let q2k = &rows[1];
    assert_eq!(q2k["method"], "Q2_K");
    assert!((q2k["bits_per_weight"].as_f64().expect("bits") - 2.625).abs() < 1e-9);
    let cos2 = q2k["cosine_mean"].as_f64().expect("cos");
    assert!(cos2 < 0.999 && cos2 > 0.3, "{q2k}");
    assert!(q2k["recall"].as_f64().expect("recall") < rows[0]["recall"].as_f64().expect("r"));
    // A k past the ground truth's width is named.
    let mut args = common.clone();
    args.extend(["--k", "101"]);
    let err = run_err(&args);
    assert!(err.contains("--k 101: expected 1..=100"), "{err}");
}

/// With calibration text, MiniLM's linears get activation statistics from its own
/// BERT encoder: the palettes weight by them and the k-quants take them as their
/// importance matrix.
#[test]
fn a_bert_model_is_calibrated_for_palettes_and_kquants() {
    let Some(model) = minilm() else { return };
    let files = ["queries.jsonl", "base.fvecs", "gt.ivecs"];
    let Some(data) = shared_data("retrieval", &files) else {
        return;
    };
    let text = concat!(env!("CARGO_MANIFEST_DIR"), "/src/model/calib_text.txt");
    let calib = [
        "--calib",
        text,
        "--calib-samples",
        "4",
        "--calib-seq-len",
        "64",
    ];
    let dir = tmp();
    let out = path_in(&dir, "ml.octet");
    let mut args = vec![
        "weights",
        "palette",
        "--input",
        p(&model),
        "--output",
        p(&out),
        "--bits",
        "3",
        "--group-cols",
        "32",
    ];
    args.extend(calib);
    run_ok(&args);
    let meta = run_ok(&["weights", "inspect", p(&out)]);
    assert!(
        meta.contains("octet.scales: activation-aware: 4 sequences, 256 tokens"),
        "{meta}"
    );
    // The probe order of a nested file: each layer's step (or each linear's)
    // scored by how far the embeddings of short calibration sentences move (the
    // pooler moves none). Returns the first level's probe line and the file's
    // metadata.
    let nested = path_in(&dir, "nested.octet");
    let probe = |extra: &[&str]| -> (String, String) {
        let out = octet()
            .args([
                "weights",
                "palette",
                "--input",
                p(&model),
                "--output",
                p(&nested),
                "--bits",
                "2",
                "--group-cols",
                "32",
                "--nested-top",
                "3",
                "--nested-rescale-bits",
                "2",
                "--nested-probe",
            ])
            .args(extra)
            .args(calib)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("probe level 1: baseline embedding distance"))
            .unwrap_or_else(|| panic!("{stderr}"))
            .to_owned();
        (line, run_ok(&["weights", "inspect", p(&nested)]))
    };
    let (line, meta) = probe(&[]);
    assert!(line.contains("removed per layer -:0.000000 0:"), "{line}");
    assert!(meta.contains("palette.nested_order: probe"), "{meta}");
    let (line, meta) = probe(&["--nested-probe-each-linear"]);
    assert!(
        line.contains("removed per linear encoder.layer.0.attention.output.dense.weight:"),
        "{line}"
    );
    assert_eq!(line.matches(".weight:").count(), 37, "{line}");
    assert!(
        meta.contains("palette.nested_order: probe, each linear"),
        "{meta}"
    );
    // `--adaptive` probes a BERT model's linears one by one, opens its level
    // ends and serves two widths above the fit at weight 4.
    let (line, meta) = probe(&["--adaptive"]);
    assert_eq!(line.matches(".weight:").count(), 37, "{line}");
    for kv in [
        "palette.nested_order: probe, each linear, 4 levels, seams 0.25",
        "palette.nested_joint_upper_weight: 4",
        "palette.nested_joint_upper_widths: 2",
    ] {
        assert!(meta.contains(kv), "{kv}: {meta}");
    }
    let d = |f: &str| data.join(f).to_str().expect("utf-8").to_owned();
    let (q, b, g) = (d(files[0]), d(files[1]), d(files[2]));
    let run = |calibrated: bool| {
        let js = path_in(&dir, if calibrated { "c.json" } else { "u.json" });
        let mut args = retrieval_args(p(&model), &q, &b, &g);
        args.extend(["--max-queries", "12", "--kquants", "q3k", "--json", p(&js)]);
        if calibrated {
            args.extend(calib);
        }
        let stdout = run_ok(&args);
        if calibrated {
            assert!(
                stdout.contains("importance matrix: 4 sequences"),
                "{stdout}"
            );
        }
        json(&std::fs::read_to_string(&js).expect("json"))
    };
    let (plain, calibrated) = (run(false), run(true));
    assert_eq!(plain[1]["method"], "Q3_K");
    assert_eq!(calibrated[1]["method"], "Q3_K + imatrix");
    // The importance matrix changes the quantisation, so the embeddings move.
    let cos = |r: &serde_json::Value| r[1]["cosine_mean"].as_f64().expect("cosine");
    assert_ne!(cos(&plain), cos(&calibrated));
    // --calib-samples without --calib is refused by name.
    let mut args = retrieval_args(p(&model), &q, &b, &g);
    args.extend(["--calib-samples", "4"]);
    let err = run_err(&args);
    assert!(err.contains("--calib"), "{err}");
}
