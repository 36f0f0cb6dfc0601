//! `octet weights` round trips on a synthetic llama written as a safetensors folder:
//! stack / palette -> inspect / plan / export, plus the errors a user meets.

mod weights_common;

use std::collections::HashMap;

use weights_common::*;

/// Relative Frobenius error of every exported linear against the original.
fn linear_errors(exported: &std::path::Path, model: &[Tiny]) -> f64 {
    let bytes = std::fs::read(exported).expect("exported file");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let (mut num, mut den) = (0f64, 0f64);
    for t in model
        .iter()
        .filter(|t| t.shape.len() == 2 && t.name.contains("layers"))
    {
        let v = st.tensor(&t.name).expect("tensor exported");
        assert_eq!(v.shape(), t.shape.as_slice(), "{}", t.name);
        assert_eq!(v.dtype(), safetensors::Dtype::F32);
        for (c, x) in v.data().chunks_exact(4).zip(&t.data) {
            let y = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            num += f64::from(y - x).powi(2);
            den += f64::from(*x).powi(2);
        }
    }
    (num / den).sqrt()
}

#[test]
fn stack_inspect_plan_export_round_trip() {
    let dir = tmp();
    let model = tiny_llama(11, None);
    let input = path_in(&dir, "model");
    write_hf_folder(&input, &model);
    let file = path_in(&dir, "m.octet");
    let report = json(&run_ok(&[
        "weights",
        "stack",
        "--input",
        p(&input),
        "--output",
        p(&file),
        "--n-iter",
        "6",
        "--calib-seq-len",
        "64",
        "--calib-samples",
        "6",
        "--json",
    ]));
    assert_eq!(report["compressed_tensors"], 14);
    assert_eq!(report["resident_tensors"], 7);
    assert!(
        report["scales"]
            .as_str()
            .expect("string")
            .starts_with("activation-aware: 6 sequences"),
        "{}",
        report["scales"]
    );
    for m in report["matrices"].as_array().expect("matrices") {
        let errs: Vec<f64> = m["relative_error"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|v| v.as_f64().expect("f64"))
            .collect();
        assert_eq!(errs.len(), 6);
        assert!(
            errs.windows(2).all(|w| w[1] < w[0]),
            "{}: residual must shrink every block: {errs:?}",
            m["name"]
        );
    }
    assert_eq!(
        report["file_bytes"].as_u64(),
        Some(std::fs::metadata(&file).expect("written").len())
    );

    let inspect = json(&run_ok(&["weights", "inspect", p(&file), "--json"]));
    assert_eq!(inspect["block_count"], 14 * 6);
    assert_eq!(inspect["min_blocks"], 14);
    assert_eq!(inspect["tensors_by_encoding"]["bitstack"]["tensors"], 14);
    assert_eq!(inspect["tensors_by_encoding"]["f16"]["tensors"], 7);
    assert_eq!(inspect["metadata"]["octet.method"], "bitstack");
    assert_eq!(inspect["metadata"]["model.architecture"], "llama");
    let budgets = inspect["budgets"].as_array().expect("budget table");
    let prefixes: Vec<u64> = budgets
        .iter()
        .map(|b| b["prefix_bytes"].as_u64().expect("u64"))
        .collect();
    assert!(prefixes.windows(2).all(|w| w[0] < w[1]), "{prefixes:?}");
    let table = run_ok(&["weights", "inspect", p(&file)]);
    assert!(
        table.contains("bits/w") && table.contains("bitstack"),
        "{table}"
    );

    // A byte budget halfway between the smallest and the full file.
    let mid = (prefixes[0] + prefixes[prefixes.len() - 1]) / 2;
    let plan = json(&run_ok(&[
        "weights",
        "plan",
        p(&file),
        "--budget",
        &mid.to_string(),
        "--json",
    ]));
    let prefix = plan["budget"]["prefix_bytes"].as_u64().expect("u64");
    assert!(prefix <= mid && prefix > prefixes[0], "{prefix} vs {mid}");
    let groups = plan["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 3, "two layers and the rest");
    let bits = json(&run_ok(&[
        "weights",
        "plan",
        p(&file),
        "--bits",
        "5.5",
        "--json",
    ]));
    assert!(bits["budget"]["bits_per_weight"].as_f64().expect("f64") <= 5.5);
    // Over the compressed tensors only: the largest budget within, named as asked.
    let full = json(&run_ok(&["weights", "plan", p(&file), "--json"]));
    let all_linear = full["budget"]["compressed_bits_per_weight"]
        .as_f64()
        .expect("f64");
    let target = (all_linear * 0.6).to_string();
    let linear = json(&run_ok(&[
        "weights",
        "plan",
        p(&file),
        "--linear-bits",
        &target,
        "--json",
    ]));
    let got = linear["budget"]["compressed_bits_per_weight"]
        .as_f64()
        .expect("f64");
    assert!(got <= all_linear * 0.6 && got > 0.0, "{linear}");
    assert_eq!(linear["limit"], format!("LinearBits({target})"));
    let human = run_ok(&[
        "weights",
        "plan",
        p(&file),
        "--device-memory",
        "1MiB",
        "--reserve",
        "50",
    ]);
    assert!(
        human.contains("layer   0") && human.contains("bits/w"),
        "{human}"
    );

    // Export at the smallest and the full budget: the error of the rebuilt linears
    // shrinks; resident tensors come back exactly (they are f16-exact).
    let small = path_in(&dir, "small.safetensors");
    let full = path_in(&dir, "full.safetensors");
    run_ok(&[
        "weights",
        "export",
        p(&file),
        "--blocks",
        "14",
        "--to",
        p(&small),
        "--dtype",
        "f32",
    ]);
    let ex = json(&run_ok(&[
        "weights",
        "export",
        p(&file),
        "--to",
        p(&full),
        "--dtype",
        "f32",
        "--write-config",
        "--json",
    ]));
    assert_eq!(ex["blocks"], 14 * 6);
    let (e_small, e_full) = (linear_errors(&small, &model), linear_errors(&full, &model));
    assert!(e_full < e_small && e_full < 0.5, "{e_small} -> {e_full}");
    let bytes = std::fs::read(&full).expect("exported");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid");
    let emb = model
        .iter()
        .find(|t| t.name == "model.embed_tokens.weight")
        .expect("embeddings");
    let got: Vec<f32> = st
        .tensor(&emb.name)
        .expect("exported")
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(got, emb.data);
    // The exported folder is a Hugging Face model again: config.json + safetensors.
    let cfg: HashMap<String, serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(path_in(&dir, "config.json")).expect("config written"),
    )
    .expect("json");
    assert_eq!(cfg["hidden_size"], HIDDEN);
    assert_eq!(cfg["model_type"], "llama");
    std::fs::remove_file(&small).expect("remove");
    let again = path_in(&dir, "again.octet");
    run_ok(&[
        "weights",
        "palette",
        "--input",
        p(dir.path()),
        "--output",
        p(&again),
        "--bits",
        "4",
        "--include",
        "q_proj",
    ]);
    let inspect = json(&run_ok(&["weights", "inspect", p(&again), "--json"]));
    assert_eq!(inspect["tensors_by_encoding"]["palette"]["tensors"], 2);
    // The exported folder has no tokenizer: uniform importances, said so.
    let scales = inspect["metadata"]["octet.scales"]
        .as_str()
        .expect("string");
    assert!(scales.starts_with("uniform: no tokenizer"), "{scales}");
}

#[test]
fn perplexity_ordering_runs_the_reference_protocol() {
    let dir = tmp();
    let input = path_in(&dir, "model");
    write_hf_folder(&input, &tiny_llama(12, None));
    let file = path_in(&dir, "m.octet");
    let report = json(&run_ok(&[
        "weights",
        "stack",
        "--input",
        p(&input),
        "--output",
        p(&file),
        "--n-iter",
        "3",
        "--ordering",
        "ppl",
        "--calib-seq-len",
        "32",
        "--calib-samples",
        "2",
        "--json",
    ]));
    assert_eq!(report["ordering"], "ppl");
    // (n_iter - 1) x (matrices + 1) evaluations.
    assert_eq!(report["ordering_evaluations"], 2 * 15);
    // Balanced order: at every budget block counts differ by at most one.
    let plan = json(&run_ok(&[
        "weights",
        "plan",
        p(&file),
        "--blocks",
        "20",
        "--per-tensor",
        "--json",
    ]));
    let counts: Vec<u64> = plan["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["blocks"].as_array().map(|b| b[0].as_u64().expect("u64")))
        .collect();
    assert_eq!(counts.len(), 14);
    let (lo, hi) = (
        counts.iter().min().expect("some"),
        counts.iter().max().expect("some"),
    );
    assert!(hi - lo <= 1, "{counts:?}");
}

#[test]
fn palette_reproduces_few_valued_tensors_exactly() {
    let dir = tmp();
    let model = tiny_llama(13, Some(4));
    let input = path_in(&dir, "model");
    write_hf_folder(&input, &model);
    let file = path_in(&dir, "m.octet");
    let report = json(&run_ok(&[
        "weights",
        "palette",
        "--input",
        p(&input),
        "--output",
        p(&file),
        "--bits",
        "2",
        "--group",
        "16",
        "--json",
    ]));
    assert!(
        report["matrices"]
            .as_array()
            .expect("matrices")
            .iter()
            .all(|m| m["relative_error"] == 0.0)
    );
    let out = path_in(&dir, "x.safetensors");
    run_ok(&[
        "weights",
        "export",
        p(&file),
        "--to",
        p(&out),
        "--dtype",
        "f32",
    ]);
    assert_eq!(linear_errors(&out, &model), 0.0);
}

#[test]
fn clear_errors_on_bad_input() {
    let dir = tmp();
    let input = path_in(&dir, "model");
    write_hf_folder(&input, &tiny_llama(14, None));
    let file = path_in(&dir, "m.octet");

    let e = run_err(&[
        "weights",
        "stack",
        "--input",
        p(&path_in(&dir, "nothing")),
        "--output",
        p(&file),
    ]);
    assert!(e.contains("nothing"), "{e}");

    std::fs::write(
        input.join("config.json"),
        r#"{"model_type": "llama", "hidden_size": 64}"#,
    )
    .expect("write");
    let e = run_err(&[
        "weights",
        "stack",
        "--input",
        p(&input),
        "--output",
        p(&file),
    ]);
    assert!(
        e.contains("config.json") && e.contains("intermediate_size"),
        "{e}"
    );
    write_hf_folder(&input, &tiny_llama(14, None));

    let e = run_err(&[
        "weights",
        "stack",
        "--input",
        p(&input),
        "--output",
        p(&file),
        "--include",
        "(",
    ]);
    assert!(e.contains("--include"), "{e}");
    let e = run_err(&[
        "weights",
        "stack",
        "--input",
        p(&input),
        "--output",
        p(&file),
        "--include",
        "nomatch",
    ]);
    assert!(e.contains("no tensor selected"), "{e}");
    let e = run_err(&[
        "weights",
        "stack",
        "--input",
        p(&input),
        "--output",
        p(&file),
        "--rank",
        "0",
    ]);
    assert!(e.contains("--rank"), "{e}");

    // A corrupt safetensors file names the file.
    let bad = path_in(&dir, "bad");
    std::fs::create_dir_all(&bad).expect("dir");
    std::fs::write(
        bad.join("model.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\x7fjunk",
    )
    .expect("write");
    let e = run_err(&["weights", "stack", "--input", p(&bad), "--output", p(&file)]);
    assert!(e.contains("model.safetensors"), "{e}");

    // A truncated checkpoint: inspect still reads the manifest, a full export cannot.
    run_ok(&[
        "weights",
        "stack",
        "--input",
        p(&input),
        "--output",
        p(&file),
        "--n-iter",
        "2",
        "--no-calib",
    ]);
    let bytes = std::fs::read(&file).expect("written");
    let cut = path_in(&dir, "cut.octet");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).expect("write");
    let e = run_err(&[
        "weights",
        "export",
        p(&cut),
        "--to",
        p(&path_in(&dir, "x.safetensors")),
    ]);
    assert!(e.contains("cut.octet") && e.contains("truncated"), "{e}");
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x55;
    std::fs::write(&cut, &flipped).expect("write");
    let e = run_err(&[
        "weights",
        "export",
        p(&cut),
        "--to",
        p(&path_in(&dir, "x.safetensors")),
    ]);
    assert!(e.contains("checksum"), "{e}");
    let e = run_err(&["weights", "plan", p(&file), "--budget", "1KB"]);
    assert!(e.contains("minimum"), "{e}");
    let e = run_err(&["weights", "plan", p(&file), "--budget", "12 parsecs"]);
    assert!(e.contains("unit"), "{e}");
}
