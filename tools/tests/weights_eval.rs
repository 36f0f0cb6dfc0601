//! `octet weights eval` and `octet weights sweep` on the synthetic llama: the
//! perplexity matches one computed independently with candle-transformers' llama,
//! prefix by prefix, and the sweep writes every method's row, CSV and SVG.

mod weights_common;

use candle_core::{D, Device, Tensor};
use weights_common::*;

const TEXT: &str = "The quick brown fox jumps over the lazy dog; then it naps in the sun, \
dreaming of rabbits, hedges and a very long afternoon by the river bank.";

/// A fresh directory holding a tiny llama (`seed`) as a Hugging Face folder and a
/// short text: what the sweep tests measure.
fn sweep_inputs(seed: u64) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tmp();
    let input = path_in(&dir, "model");
    write_hf_folder(&input, &tiny_llama(seed, None));
    let text = path_in(&dir, "text.txt");
    std::fs::write(&text, TEXT.repeat(2)).expect("text");
    (dir, input, text)
}

/// Sweep flags that skip every family but the adaptive one.
const ONLY_ADAPTIVE: [&str; 5] = [
    "--rtn-bits",
    "--kquants",
    "--palette-rows",
    "--scaled-group-cols",
    "--stack-bits",
];

/// `octet weights sweep` on `input` and `text` with a small window and calibration.
fn sweep_args<'a>(input: &'a std::path::Path, text: &'a std::path::Path) -> Vec<&'a str> {
    vec![
        "weights",
        "sweep",
        "--input",
        p(input),
        "--text",
        p(text),
        "--ctx",
        "64",
        "--calib-seq-len",
        "32",
        "--calib-samples",
        "4",
    ]
}

/// -log p(ids[t] | ids[begin..t]) from candle-transformers' last-position logits.
fn nll_of(tensors: &std::collections::HashMap<String, Tensor>, ctx: &[u32], next: u32) -> f64 {
    let logits = llama_logits(tensors.clone(), ctx);
    let t = Tensor::new(logits.as_slice(), &Device::Cpu).expect("tensor");
    let logp: Vec<f32> = candle_nn::ops::log_softmax(&t, D::Minus1)
        .and_then(|t| t.to_vec1())
        .expect("log softmax");
    -f64::from(logp[next as usize])
}

#[test]
fn eval_perplexity_matches_candle_transformers_prefix_by_prefix() {
    let dir = tmp();
    let model = tiny_llama(21, None);
    let input = path_in(&dir, "model");
    write_hf_folder(&input, &model);
    let text = path_in(&dir, "text.txt");
    std::fs::write(&text, TEXT).expect("text");
    let out = path_in(&dir, "eval.json");
    let (ctx, stride) = (32usize, 12usize);
    let stdout = run_ok(&[
        "weights",
        "eval",
        "--model",
        p(&input),
        "--text",
        p(&text),
        "--ctx",
        &ctx.to_string(),
        "--stride",
        &stride.to_string(),
        "--json",
        p(&out),
    ]);
    assert!(stdout.contains("perplexity:"), "{stdout}");
    let report = json(&std::fs::read_to_string(&out).expect("json written"));

    // The character-level tokenizer maps each ASCII byte to its code.
    let ids: Vec<u32> = TEXT.bytes().map(u32::from).collect();
    assert_eq!(report["tokens"].as_u64(), Some(ids.len() as u64 - 1));
    // Independently: token t is scored by the first window reaching past it, with
    // that window's tokens before t as context.
    let tensors = to_candle(&model);
    let mut nll = 0.0;
    for t in 1..ids.len() {
        let k = (0..).find(|k| k * stride + ctx > t).expect("some window");
        nll += nll_of(&tensors, &ids[k * stride..t], ids[t]);
    }
    let expected = (nll / (ids.len() - 1) as f64).exp();
    let got = report["perplexity"].as_f64().expect("f64");
    assert!(
        (got - expected).abs() / expected < 1e-4,
        "eval {got} vs candle-transformers {expected}"
    );
    assert!(
        report["linear_bits_per_weight"].is_null(),
        "HF folder: unknown"
    );

    // Non-overlapping windows score fewer tokens (each window's first is lost).
    let out2 = path_in(&dir, "eval2.json");
    run_ok(&[
        "weights",
        "eval",
        "--model",
        p(&input),
        "--text",
        p(&text),
        "--ctx",
        "32",
        "--max-tokens",
        "100",
        "--json",
        p(&out2),
    ]);
    let r2 = json(&std::fs::read_to_string(&out2).expect("json written"));
    assert_eq!(r2["tokens"].as_u64(), Some(99 - 99 / 32));
    assert_eq!(r2["stride"].as_u64(), Some(32));
}

#[test]
fn eval_of_an_exact_palette_equals_the_reference_and_reports_bits() {
    let dir = tmp();
    let model = tiny_llama(22, Some(200));
    let input = path_in(&dir, "model");
    write_hf_folder(&input, &model);
    let text = path_in(&dir, "text.txt");
    std::fs::write(&text, TEXT).expect("text");
    let file = path_in(&dir, "m.octet");
    run_ok(&[
        "weights",
        "palette",
        "--input",
        p(&input),
        "--output",
        p(&file),
        "--bits",
        "8",
        "--json",
    ]);
    let eval = |m: &std::path::Path, extra: &[&str]| {
        let out = path_in(&dir, "e.json");
        let mut a = vec![
            "weights",
            "eval",
            "--model",
            p(m),
            "--text",
            p(&text),
            "--ctx",
            "40",
            "--json",
            p(&out),
        ];
        a.extend_from_slice(extra);
        run_ok(&a);
        json(&std::fs::read_to_string(&out).expect("json"))
    };
    let tok = input.join("tokenizer.json");
    let reference = eval(&input, &[]);
    let palette = eval(&file, &["--tokenizer", p(&tok)]);
    assert_eq!(reference["perplexity"], palette["perplexity"]);
    let bits = palette["linear_bits_per_weight"].as_f64().expect("known");
    assert!((8.0..9.0).contains(&bits), "{bits}");
    assert!(palette["bits_per_weight"].as_f64().expect("known") > 8.0);
    // A .octet carries no tokenizer; a reference takes no budget.
    let err = run_err(&["weights", "eval", "--model", p(&file), "--text", p(&text)]);
    assert!(err.contains("--tokenizer"), "{err}");
    let err = run_err(&[
        "weights",
        "eval",
        "--model",
        p(&input),
        "--text",
        p(&text),
        "--bits",
        "3",
    ]);
    assert!(err.contains(".octet files only"), "{err}");
}

#[test]
fn sweep_tabulates_every_method_on_the_same_linears() {
    let (dir, input, text) = sweep_inputs(23);
    let (js, csv, svg) = (
        path_in(&dir, "s.json"),
        path_in(&dir, "s.csv"),
        path_in(&dir, "s.svg"),
    );
    let mut args = sweep_args(&input, &text);
    args.extend([
        "--rtn-bits",
        "4,2",
        "--rtn-groups",
        "32",
        "--kquants",
        "q4k,q2k",
        "--imatrix",
        "--palette-bits",
        "4",
        "--gptq",
        "--stack-bits",
        "3,6",
        "--n-iter",
        "4",
        "--adaptive-bits",
        "3.5,5,7",
        "--adaptive-top",
        "5",
        "--json",
        p(&js),
        "--csv",
        p(&csv),
        "--svg",
        p(&svg),
    ]);
    let stdout = run_ok(&args);
    assert!(
        stdout.contains("RTN g32") && stdout.contains("BitStack"),
        "{stdout}"
    );
    let r = json(&std::fs::read_to_string(&js).expect("json"));
    assert_eq!(r["linears"], 14);
    let rows = r["rows"].as_array().expect("rows");
    let find = |m: &str, s: &str| {
        rows.iter()
            .find(|x| x["method"] == m && x["setting"] == s)
            .unwrap_or_else(|| panic!("no row {m} {s}: {rows:?}"))
    };
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().expect("f64");
    assert_eq!(rows.len(), 1 + 2 + 4 + 2 + 2 + 2 + 3);
    let reference = find("reference", "dequantised");
    assert_eq!(f(reference, "delta_percent"), 0.0);
    assert_eq!(f(reference, "relative_error"), 0.0);
    assert_eq!(f(find("RTN g32", "4 bits"), "bits_per_weight"), 5.0);
    assert_eq!(f(find("RTN g32", "2 bits"), "bits_per_weight"), 3.0);
    assert!(
        f(find("RTN g32", "4 bits"), "relative_error")
            < f(find("RTN g32", "2 bits"), "relative_error")
    );
    assert_eq!(f(find("k-quants", "Q4_K"), "bits_per_weight"), 4.5);
    assert!(
        f(find("k-quants", "Q4_K"), "relative_error")
            < f(find("k-quants", "Q2_K"), "relative_error")
    );
    find("k-quants + imatrix", "Q2_K");
    let pal = find("palette 1 row/table", "4 bits");
    // 4-bit codes plus a 16-entry f16 table per row of 64 or 96 columns.
    let pb = f(pal, "bits_per_weight");
    assert!(pb > 4.0 && pb < 4.0 + 256.0 / 64.0 + 0.5, "{pb}");
    // GPTQ changes the indices, not the format: same bits.
    assert_eq!(
        pb,
        f(
            find("palette+GPTQ 1 row/table", "4 bits"),
            "bits_per_weight"
        )
    );
    // Scaled: 4-bit codes, 12 bits per 32 weights, two f16 per row, one table.
    let sb = f(find("scaled palette g32", "4 bits"), "bits_per_weight");
    assert!(sb > 4.375 && sb < 4.375 + 32.0 / 64.0 + 0.1, "{sb}");
    assert_eq!(
        sb,
        f(find("scaled palette+GPTQ g32", "4 bits"), "bits_per_weight")
    );
    let stack: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|x| x["method"] == "BitStack (proxy)")
        .collect();
    assert_eq!(stack.len(), 2);
    assert!(f(stack[0], "bits_per_weight") <= 3.0 && f(stack[1], "bits_per_weight") <= 6.0);
    assert!(f(stack[0], "relative_error") > f(stack[1], "relative_error"));
    // Adaptive: one nested-palette file, each budget at most its target, error
    // falling as the budget grows.
    let adaptive: Vec<&serde_json::Value> =
        rows.iter().filter(|x| x["method"] == "adaptive").collect();
    assert_eq!(adaptive.len(), 3);
    for (a, target) in adaptive.iter().zip([3.5, 5.0, 7.0]) {
        assert!(f(a, "bits_per_weight") <= target, "{a}");
    }
    assert!(f(adaptive[0], "relative_error") > f(adaptive[1], "relative_error"));
    assert!(f(adaptive[1], "relative_error") > f(adaptive[2], "relative_error"));
    let csv_path = csv;
    let csv = std::fs::read_to_string(&csv_path).expect("csv");
    assert_eq!(csv.lines().count(), 1 + rows.len());
    let svg = std::fs::read_to_string(&svg).expect("svg");
    assert!(
        svg.starts_with("<svg") && svg.contains("k-quants"),
        "{}",
        &svg[..100]
    );
    // The plot and table can be redrawn from the JSON alone.
    let svg2 = path_in(&dir, "again.svg");
    let table = run_ok(&["weights", "sweep-plot", "--json", p(&js), "--svg", p(&svg2)]);
    assert!(table.contains("scaled palette+GPTQ g32"), "{table}");
    assert!(
        std::fs::read_to_string(&svg2)
            .expect("svg")
            .contains("BitStack")
    );
    let err = run_err(&[
        "weights",
        "sweep-plot",
        "--json",
        p(&csv_path),
        "--svg",
        p(&svg2),
    ]);
    assert!(err.contains("not a report"), "{err}");
}

#[test]
fn the_probe_order_relays_the_same_steps_with_measured_gains() {
    // `--adaptive-order probe`: the same file's steps, level-balanced, ordered within
    // a level by perplexity probes per layer. Each budget within its target; the
    // whole file is the same weights in either order.
    let (dir, input, text) = sweep_inputs(29);
    let js = path_in(&dir, "s.json");
    let mut args = sweep_args(&input, &text);
    args.extend(ONLY_ADAPTIVE);
    args.extend([
        "--adaptive-bits",
        "3.5,5,7",
        "--adaptive-top",
        "5",
        "--json",
        p(&js),
    ]);
    let mut orders = args.clone();
    orders.extend([
        "--adaptive-order",
        "balanced,probe,probe-twice,probe-greedy",
    ]);
    run_ok(&orders);
    let r = json(&std::fs::read_to_string(&js).expect("json"));
    let rows = r["rows"].as_array().expect("rows");
    let curve = |order: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|x| x["method"].as_str().is_some_and(|m| m.ends_with(order)))
            .map(|x| {
                let f = |k: &str| x[k].as_f64().expect("f64");
                (f("bits_per_weight"), f("relative_error"))
            })
            .collect()
    };
    let (balanced, probe, twice, greedy) = (
        curve("balanced"),
        curve("probe"),
        curve("probe-twice"),
        curve("probe-greedy"),
    );
    for c in [&balanced, &probe, &twice, &greedy] {
        assert_eq!(c.len(), 3, "{rows:?}");
        for (point, target) in c.iter().zip([3.5, 5.0, 7.0]) {
            assert!(point.0 <= target, "{point:?} at {target}");
        }
        // 7 bits: the whole file, every step of every linear, in any order.
        assert_eq!(c[2], balanced[2]);
    }
    // The llama recipe of `palette --adaptive`: each linear probed at the first
    // level, layers at the second, the balanced order above.
    let mut first = args.clone();
    first.extend([
        "--adaptive-order",
        "probe",
        "--adaptive-probe-each-linear-first",
        "--adaptive-probe-levels",
        "2",
    ]);
    run_ok(&first);
    let r = json(&std::fs::read_to_string(&js).expect("json"));
    let rows = r["rows"].as_array().expect("rows");
    // One curve: named `adaptive`, as the JSON asks.
    let probe: Vec<f64> = rows
        .iter()
        .filter(|x| x["method"] == "adaptive")
        .map(|x| x["bits_per_weight"].as_f64().expect("f64"))
        .collect();
    assert_eq!(probe.len(), 3, "{rows:?}");
    assert!(probe.iter().zip([3.5, 5.0, 7.0]).all(|(b, t)| *b <= t));
    assert_eq!(probe[2], balanced[2].0);
    // A level count cannot go with an order across levels.
    let mut greedy_levels = args.clone();
    greedy_levels.extend([
        "--adaptive-order",
        "probe-greedy",
        "--adaptive-probe-levels",
        "2",
    ]);
    let err = run_err(&greedy_levels);
    assert!(err.contains("--adaptive-probe-levels"), "{err}");
    // Without calibration text there is nothing to probe with.
    let mut no_calib = orders.clone();
    no_calib.push("--no-calib");
    let err = run_err(&no_calib);
    assert!(err.contains("need calibration text"), "{err}");
}

#[test]
fn a_bitstack_block_on_the_palette_residual_is_measured_at_every_width() {
    // `--adaptive-bitstack-residual`: at each width, every linear at that width
    // alone and with one BitStack block of its residual, both evaluated.
    let (dir, input, text) = sweep_inputs(37);
    let js = path_in(&dir, "b.json");
    let mut args = sweep_args(&input, &text);
    args.extend(ONLY_ADAPTIVE);
    args.extend([
        "--adaptive-bits",
        "3.5",
        "--adaptive-top",
        "4",
        "--adaptive-rescale-bits",
        "2",
        "--adaptive-order",
        "balanced",
        "--adaptive-bitstack-residual",
        "--json",
        p(&js),
    ]);
    let rows = |extra: &[&str]| -> Vec<(String, String, f64, f64)> {
        let mut a = args.clone();
        a.extend(extra);
        run_ok(&a);
        let r = json(&std::fs::read_to_string(&js).expect("json"));
        r["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .filter(|x| x["method"] != "reference" && x["method"] != "adaptive")
            .map(|x| {
                let f = |k: &str| x[k].as_f64().expect("f64");
                let s = |k: &str| x[k].as_str().expect("str").to_owned();
                (
                    s("method"),
                    s("setting"),
                    f("bits_per_weight"),
                    f("relative_error"),
                )
            })
            .collect()
    };
    let r = rows(&[]);
    let settings: Vec<(&str, &str)> = r.iter().map(|x| (x.0.as_str(), x.1.as_str())).collect();
    assert_eq!(
        settings,
        [
            ("adaptive width", "2 bits"),
            ("adaptive + bitstack", "2 bits + 1 block"),
            ("adaptive width", "3 bits"),
            ("adaptive + bitstack", "3 bits + 1 block"),
            ("adaptive width", "4 bits"),
            ("adaptive + bitstack", "4 bits + 1 block"),
        ],
        "{r:?}"
    );
    for pair in r.chunks(2) {
        let (alone, block) = (&pair[0], &pair[1]);
        // A block costs at least a sign bit per weight, and takes error away.
        assert!(block.2 >= alone.2 + 1.0, "{pair:?}");
        assert!(block.3 < alone.3, "{pair:?}");
    }
    for pair in r.iter().step_by(2).collect::<Vec<_>>().windows(2) {
        assert!(pair[1].2 > pair[0].2 && pair[1].3 < pair[0].3, "{pair:?}");
    }
    // A rank-2 block costs more bits than a rank-1 one; the palette rows stay.
    let r1 = rows(&["--adaptive-bitstack-rank", "1"]);
    let r2 = rows(&["--adaptive-bitstack-rank", "2"]);
    assert!(r2[1].2 > r1[1].2, "{r2:?} vs {r1:?}");
    assert_eq!(r1[0], r2[0]);
    // The rank needs the measurement, and is at least 1.
    let mut no_flag: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| *a != "--adaptive-bitstack-residual")
        .collect();
    no_flag.extend(["--adaptive-bitstack-rank", "1"]);
    let err = run_err(&no_flag);
    assert!(err.contains("--adaptive-bitstack-residual"), "{err}");
    let mut zero = args.clone();
    zero.extend(["--adaptive-bitstack-rank", "0"]);
    let err = run_err(&zero);
    assert!(err.contains("--adaptive-bitstack-rank"), "{err}");
}

#[test]
fn a_mixed_fit_refits_what_the_probes_favour_and_reports_width_errors() {
    // `--adaptive-mix FIT:RESCALE:SHARE` refits the layers whose first step the
    // probes favour at FIT bits; `--adaptive-width-errors` reports every width.
    let (dir, input, text) = sweep_inputs(31);
    let js = path_in(&dir, "m.json");
    let mut args = sweep_args(&input, &text);
    args.extend(ONLY_ADAPTIVE);
    args.extend([
        "--adaptive-bits",
        "3.5,7",
        "--adaptive-top",
        "5",
        "--adaptive-rescale-bits",
        "2",
        "--adaptive-order",
        "probe",
        "--adaptive-width-errors",
        "--json",
        p(&js),
    ]);
    let widths = |extra: &[&str]| -> Vec<(u64, f64, f64)> {
        let mut a = args.clone();
        a.extend(extra);
        run_ok(&a);
        let r = json(&std::fs::read_to_string(&js).expect("json"));
        let rows = r["rows"].as_array().expect("rows");
        let adaptive = rows.iter().filter(|x| x["method"] == "adaptive").count();
        assert_eq!(adaptive, 2, "{rows:?}");
        let w = &r["adaptive_width_errors"][0];
        assert_eq!(w["method"], "adaptive", "{r}");
        w["widths"]
            .as_array()
            .expect("widths")
            .iter()
            .map(|x| {
                let f = |k: &str| x[k].as_f64().expect("f64");
                (x["bits"].as_u64().expect("bits"), f("weighted"), f("plain"))
            })
            .collect()
    };
    let plain = widths(&[]);
    assert_eq!(
        plain.iter().map(|w| w.0).collect::<Vec<_>>(),
        [2, 3, 4, 5],
        "{plain:?}"
    );
    for pair in plain.windows(2) {
        assert!(pair[1].1 < pair[0].1 && pair[1].2 < pair[0].2, "{plain:?}");
    }
    // A share of 0 changes nothing; a share of 1 refits every linear at 4 bits,
    // whose 4-bit prefix is then the fixed 4-bit palette: closer than splits of
    // the 2-bit one.
    assert_eq!(widths(&["--adaptive-mix", "4:2:0"]), plain);
    let all = widths(&["--adaptive-mix", "4:2:1"]);
    assert!(
        all[2].1 < plain[2].1 && all[2].2 < plain[2].2,
        "{all:?} vs {plain:?}"
    );
    for (bad, says) in [
        ("4:2", "FIT:RESCALE:SHARE"),
        ("4:9:0.3", "RESCALE"),
        ("4:2:1.5", "SHARE"),
        ("x:2:0.3", "FIT"),
    ] {
        let mut a = args.clone();
        a.extend(["--adaptive-mix", bad]);
        let err = run_err(&a);
        assert!(err.contains(says) && err.contains(bad), "{bad}: {err}");
    }
}

#[test]
fn scaled_gptq_palettes_write_a_file_that_loads_and_evaluates() {
    let dir = tmp();
    let model = tiny_llama(24, None);
    let input = path_in(&dir, "model");
    write_hf_folder(&input, &model);
    let text = path_in(&dir, "text.txt");
    std::fs::write(&text, TEXT).expect("text");
    let file = path_in(&dir, "s.octet");
    let report = json(&run_ok(&[
        "weights",
        "palette",
        "--input",
        p(&input),
        "--output",
        p(&file),
        "--bits",
        "4",
        "--group-cols",
        "32",
        "--gptq",
        "--calib-seq-len",
        "32",
        "--calib-samples",
        "4",
        "--json",
    ]));
    assert_eq!(report["gptq"], true);
    assert_eq!(report["group_cols"], 32);
    let matrices = report["matrices"].as_array().expect("matrices");
    assert_eq!(matrices.len(), 14);
    for m in matrices {
        let (plain, fitted) = (
            m["output_error_plain"].as_f64().expect("plain"),
            m["output_error"].as_f64().expect("fitted"),
        );
        assert!(fitted <= plain, "{m}");
    }
    let inspect = json(&run_ok(&["weights", "inspect", p(&file), "--json"]));
    assert_eq!(
        inspect["tensors_by_encoding"]["scaled palette"]["tensors"],
        14
    );
    let eval = |m: &std::path::Path, extra: &[&str]| {
        let out = path_in(&dir, "e.json");
        let mut a = vec![
            "weights",
            "eval",
            "--model",
            p(m),
            "--text",
            p(&text),
            "--ctx",
            "40",
            "--json",
            p(&out),
        ];
        a.extend_from_slice(extra);
        run_ok(&a);
        json(&std::fs::read_to_string(&out).expect("json"))
    };
    let reference = eval(&input, &[]);
    let scaled = eval(&file, &["--tokenizer", p(&input.join("tokenizer.json"))]);
    let (r, s) = (
        reference["perplexity"].as_f64().expect("ppl"),
        scaled["perplexity"].as_f64().expect("ppl"),
    );
    assert!(s.is_finite() && (s / r - 1.0).abs() < 0.1, "{s} vs {r}");
    let bits = scaled["linear_bits_per_weight"].as_f64().expect("known");
    // Tiny matrices: the 64-byte alignment of each part weighs in.
    assert!((4.375..6.0).contains(&bits), "{bits}");
    // Tables per row group and blocks per row do not mix; GPTQ needs calibration.
    let err = run_err(&[
        "weights",
        "palette",
        "--input",
        p(&input),
        "--output",
        p(&file),
        "--group",
        "4",
        "--group-cols",
        "32",
    ]);
    assert!(err.contains("cannot be used with"), "{err}");
    let err = run_err(&[
        "weights",
        "palette",
        "--input",
        p(&input),
        "--output",
        p(&file),
        "--gptq",
        "--no-calib",
    ]);
    assert!(err.contains("--gptq"), "{err}");
}

#[test]
fn nested_palettes_write_one_file_whose_prefixes_evaluate() {
    nested_file_prefixes_evaluate(&[], &["nested palette"]);
    // Format version 4: per-width block corrections in every step, fitted at 3
    // bits, balanced order.
    nested_file_prefixes_evaluate(
        &[
            "--nested-rescale-bits",
            "2",
            "--nested-fit",
            "3",
            "--nested-balanced",
            "--nested-every-correction",
        ],
        &["rescaled nested palette"],
    );
    // Format version 6: 2-bit corrections up to the fit width, 3-bit for the
    // step above it and 4-bit for the next.
    nested_file_prefixes_evaluate(
        &[
            "--nested-rescale-bits",
            "2",
            "--nested-upper-rescale-bits",
            "3,4",
            "--nested-fit",
            "3",
            "--nested-balanced",
            "--nested-every-correction",
        ],
        &["mixed rescaled nested palette"],
    );
    // The step above the fit width with 1-bit or 4-bit corrections, linear by
    // linear, as each pays; the next width split in unstored 8-bit corrections'
    // coordinates.
    nested_file_prefixes_evaluate(
        &[
            "--nested-rescale-bits",
            "2",
            "--nested-upper-rescale-bits",
            "1",
            "--nested-upper-rescale-choice",
            "4",
            "--nested-upper-seed-bits",
            "8",
            "--nested-fit",
            "3",
            "--nested-balanced",
            "--nested-every-correction",
        ],
        &["mixed rescaled nested palette"],
    );
    // Fitted at 3 bits for the widths 2 and 3 together (indices and block codes).
    nested_file_prefixes_evaluate(
        &[
            "--nested-rescale-bits",
            "2",
            "--nested-fit",
            "3",
            "--nested-joint-rounds",
            "2",
            "--nested-joint-params",
            "--nested-balanced",
        ],
        LEAN,
    );
    // The same, ordered within each level by perplexity probes per layer, with
    // the level ends opened (half of each level's weights probed again at its
    // end), and with each layer's gain split by the kinds' probes.
    for seams in [
        &[][..],
        &["--nested-probe-seams", "0.5"],
        &["--nested-probe-kinds"],
        &[
            "--nested-probe-each-linear-first",
            "--nested-probe-levels",
            "1",
        ],
    ] {
        let mut a = vec![
            "--nested-rescale-bits",
            "2",
            "--nested-fit",
            "3",
            "--nested-probe",
        ];
        a.extend_from_slice(seams);
        nested_file_prefixes_evaluate(&a, LEAN);
    }
}

/// `--adaptive` writes the measured recipe in one flag; an explicit flag beside it
/// wins, `--nested-balanced` turns its probes off, and what it cannot combine with
/// is refused by name.
#[test]
fn the_adaptive_flag_writes_the_recipe() {
    let dir = tmp();
    let model = tiny_llama(25, None);
    let input = path_in(&dir, "model");
    write_hf_folder(&input, &model);
    let file = path_in(&dir, "a.octet");
    let palette = |extra: &[&str]| {
        let mut a = vec![
            "weights",
            "palette",
            "--input",
            p(&input),
            "--output",
            p(&file),
            "--adaptive",
            "--calib-seq-len",
            "32",
            "--calib-samples",
            "4",
            "--json",
        ];
        a.extend_from_slice(extra);
        json(&run_ok(&a))
    };
    let inspect = || json(&run_ok(&["weights", "inspect", p(&file), "--json"]));
    let report = palette(&[]);
    assert_eq!(report["bits"], 2);
    assert_eq!(report["group_cols"], 32);
    // Widths 2..=8: six steps for each of the 14 linears, none at the smallest
    // budget.
    let budgets = report["budgets"].as_array().expect("budgets");
    assert_eq!(budgets[0]["blocks"], 0);
    assert_eq!(budgets.last().expect("last")["blocks"], 14 * 6);
    let info = inspect();
    let meta = &info["metadata"];
    // A llama model: each linear probed at the first level, layers at the
    // second, weight error above.
    assert_eq!(
        meta["palette.nested_order"], "probe, each linear first, 2 levels",
        "{meta}"
    );
    assert_eq!(meta["palette.nested_joint_rounds"], "3", "{meta}");
    assert_eq!(meta["palette.nested_joint_upper_weight"], "1", "{meta}");
    assert_eq!(meta["palette.nested_corrections"], "where paying", "{meta}");
    // A llama model's corrections above the fit width are 3 bits wide (this tiny
    // model's upper corrections do not pay, so its file stays lean, v5).
    assert_eq!(meta["palette.nested_upper_rescale_bits"], "3", "{meta}");
    let by_encoding = info["tensors_by_encoding"].as_object().expect("encodings");
    let nested: u64 = [
        "lean rescaled nested palette",
        "rescaled nested palette",
        "mixed rescaled nested palette",
    ]
    .iter()
    .filter_map(|e| by_encoding.get(*e))
    .map(|c| c["tensors"].as_u64().expect("count"))
    .sum();
    assert_eq!(nested, 14, "{by_encoding:?}");
    // Every correction kept: 2-bit ones up to the fit width, 3-bit and then
    // 4-bit above it (an explicit list wins), so every linear is a mixed
    // rescaled nested palette (format v6).
    palette(&[
        "--nested-every-correction",
        "--nested-upper-rescale-bits",
        "3,4",
    ]);
    let info = inspect();
    assert_eq!(info["format_version"], 6, "{info}");
    assert_eq!(
        info["metadata"]["palette.nested_upper_rescale_bits"], "3,4",
        "{info}"
    );
    assert_eq!(
        info["tensors_by_encoding"]["mixed rescaled nested palette"]["tensors"], 14,
        "{info}"
    );
    // A second width for the first upper step is recorded beside the list.
    palette(&[
        "--nested-upper-rescale-choice",
        "4",
        "--nested-upper-seed-bits",
        "8",
    ]);
    let meta = &inspect()["metadata"];
    assert_eq!(meta["palette.nested_upper_rescale_choice"], "4", "{meta}");
    assert_eq!(meta["palette.nested_upper_seed_bits"], "8", "{meta}");
    assert_eq!(meta["palette.nested_upper_rescale_bits"], "3", "{meta}");
    // Explicit flags win; the balanced order replaces the probes.
    let report = palette(&["--nested-top", "4", "--nested-balanced"]);
    let budgets = report["budgets"].as_array().expect("budgets");
    assert_eq!(budgets.last().expect("last")["blocks"], 14 * 2);
    assert_eq!(inspect()["metadata"]["palette.nested_order"], "balanced");
    // Open level ends and the kind split are named in the order.
    for (flags, order) in [
        (
            &["--nested-probe-seams", "0.25"][..],
            "probe, each linear first, 2 levels, seams 0.25",
        ),
        (&["--nested-probe-kinds"], "probe, kinds, 2 levels"),
        (
            &["--nested-probe-levels", "1"],
            "probe, each linear first, 1 level",
        ),
        (
            &["--nested-probe-each-linear", "--nested-probe-levels", "3"],
            "probe, each linear, 3 levels",
        ),
    ] {
        let mut a = vec!["--nested-top", "4"];
        a.extend_from_slice(flags);
        palette(&a);
        assert_eq!(inspect()["metadata"]["palette.nested_order"], order);
    }
    // What cannot go with the recipe is refused by name, and so are probe flags
    // beside the balanced order (they would be ignored) and a seam share out of
    // range.
    let balanced = |probe| ["--nested-balanced", probe];
    for (bad, named) in [
        (
            &["--nested-probe-seams=0.6"][..],
            "expected a share from 0 to 0.5",
        ),
        (&["--no-calib"][..], "--no-calib"),
        (&["--gptq"][..], "--gptq"),
        (&["--group=4"][..], "--group"),
        (
            &balanced("--nested-probe-each-linear")[..],
            "--nested-probe-each-linear",
        ),
        (
            &balanced("--nested-probe-kinds")[..],
            "--nested-probe-kinds",
        ),
        (
            &["--nested-probe-kinds", "--nested-probe-each-linear"][..],
            "--nested-probe-kinds",
        ),
        (
            &["--nested-probe-each-linear-first", "--nested-probe-kinds"][..],
            "--nested-probe-each-linear-first",
        ),
        (
            &balanced("--nested-probe-levels=2")[..],
            "--nested-probe-levels",
        ),
        (
            &["--nested-probe-levels=2", "--nested-probe-greedy"][..],
            "--nested-probe-levels",
        ),
        (&["--nested-probe-levels=0"][..], "--nested-probe-levels"),
        (
            &["--nested-upper-rescale-bits=9"][..],
            "--nested-upper-rescale-bits",
        ),
        (
            &["--nested-upper-rescale-bits=3,9"][..],
            "--nested-upper-rescale-bits",
        ),
        (
            &["--nested-upper-rescale-choice=9"][..],
            "--nested-upper-rescale-choice",
        ),
        (
            &["--nested-upper-seed-bits=0"][..],
            "--nested-upper-seed-bits",
        ),
        // Eight widths: one more than there are steps above the narrowest fit.
        (
            &["--nested-upper-rescale-bits=3,3,3,3,3,3,3,4"][..],
            "--nested-upper-rescale-bits",
        ),
        (
            &balanced("--nested-probe-twice")[..],
            "--nested-probe-twice",
        ),
        (
            &balanced("--nested-probe-greedy")[..],
            "--nested-probe-greedy",
        ),
        (
            &balanced("--nested-probe-seams=0.5")[..],
            "--nested-probe-seams",
        ),
    ] {
        let mut a = vec![
            "weights",
            "palette",
            "--input",
            p(&input),
            "--output",
            p(&file),
            "--adaptive",
        ];
        a.extend_from_slice(bad);
        let err = run_err(&a);
        let why = named.starts_with("expected")
            || err.contains("cannot be used with")
            || err.contains("invalid value");
        assert!(why && err.contains(named), "{bad:?}: {err}");
    }
}

/// A rescaled nested palette with corrections only where they pay (the default):
/// on this model some steps drop theirs, so it is lean (format version 5).
const LEAN: &[&str] = &["lean rescaled nested palette"];

fn nested_file_prefixes_evaluate(extra_args: &[&str], encodings: &[&str]) {
    let dir = tmp();
    let model = tiny_llama(25, None);
    let input = path_in(&dir, "model");
    write_hf_folder(&input, &model);
    let text = path_in(&dir, "text.txt");
    std::fs::write(&text, TEXT).expect("text");
    let file = path_in(&dir, "n.octet");
    let report = json(&run_ok(
        &[
            "weights",
            "palette",
            "--input",
            p(&input),
            "--output",
            p(&file),
            "--bits",
            "2",
            "--group-cols",
            "32",
            "--nested-top",
            "5",
            "--calib-seq-len",
            "32",
            "--calib-samples",
            "4",
            "--json",
        ]
        .into_iter()
        .chain(extra_args.iter().copied())
        .collect::<Vec<_>>(),
    ));
    // The smallest budget is the bases alone (no step), the largest every step.
    let budgets = report["budgets"].as_array().expect("budgets");
    assert_eq!(budgets[0]["blocks"], 0);
    assert_eq!(budgets.last().expect("last")["blocks"], 14 * 3);
    let inspect = json(&run_ok(&["weights", "inspect", p(&file), "--json"]));
    let by_encoding = inspect["tensors_by_encoding"]
        .as_object()
        .expect("by encoding");
    let listed: u64 = encodings
        .iter()
        .filter_map(|e| by_encoding.get(*e))
        .map(|c| c["tensors"].as_u64().expect("count"))
        .sum();
    assert_eq!(listed, 14, "{by_encoding:?}");
    // Load timing at bit budgets: the smallest, each target, the full file. Targets
    // at two budgets of the table select exactly those budgets.
    let pick = [&budgets[2], &budgets[budgets.len() - 2]];
    let targets = pick
        .iter()
        .map(|b| {
            b["compressed_bits_per_weight"]
                .as_f64()
                .expect("bits")
                .to_string()
        })
        .collect::<Vec<_>>()
        .join(",");
    let rows = json(&run_ok(&[
        "weights",
        "measure",
        p(&file),
        "--bits",
        &targets,
        "--repeat",
        "3",
        "--json",
    ]));
    let rows = rows.as_array().expect("rows");
    let blocks: Vec<&serde_json::Value> = rows.iter().map(|r| &r["blocks"]).collect();
    let want = [
        &budgets[0]["blocks"],
        &pick[0]["blocks"],
        &pick[1]["blocks"],
        &serde_json::json!(14 * 3),
    ];
    assert_eq!(blocks, want, "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r["load_s"].as_f64().expect("load") > 0.0)
    );
    let tokenizer = input.join("tokenizer.json");
    let out = path_in(&dir, "e.json");
    let eval_args = |extra: &[&str]| {
        let mut a = vec![
            "weights",
            "eval",
            "--model",
            p(&file),
            "--tokenizer",
            p(&tokenizer),
            "--text",
            p(&text),
            "--ctx",
            "40",
        ];
        a.extend_from_slice(extra);
        a.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let eval = |extra: &[&str]| {
        let mut a = eval_args(extra);
        a.extend(["--json".to_owned(), p(&out).to_owned()]);
        run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
        json(&std::fs::read_to_string(&out).expect("json"))
    };
    let (base, full) = (eval(&["--blocks", "0"]), eval(&[]));
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().expect("f64");
    assert!(f(&base, "perplexity").is_finite() && f(&full, "perplexity").is_finite());
    assert!(
        f(&base, "linear_bits_per_weight") + 2.5 < f(&full, "linear_bits_per_weight"),
        "{base} {full}"
    );
    // `--linear-bits` picks the budget `measure --bits` picked for the same target;
    // below the smallest budget it is refused with that budget's bits.
    let at = eval(&[
        "--linear-bits",
        &pick[0]["compressed_bits_per_weight"].to_string(),
    ]);
    assert_eq!(
        f(&at, "linear_bits_per_weight"),
        f(&rows[1], "compressed_bits_per_weight"),
        "{at}"
    );
    let err = run_err(
        &eval_args(&["--linear-bits", "1.5"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(
        err.contains("--linear-bits 1.5: below the smallest budget"),
        "{err}"
    );
}
