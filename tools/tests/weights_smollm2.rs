//! `octet weights` on the real SmolLM2-135M GGUF fetched by `scripts/fetch_models.sh`
//! (into `$OCTET_MODELS`, default /tmp/octet-models). Skips with a message when the
//! file is absent; unit tests never need it. Only a few matrices are decomposed so
//! the test stays short in a debug build.

mod weights_common;

use octet_tools::model::locate::smollm2;
use weights_common::*;

#[test]
fn stack_a_real_gguf_and_export_it() {
    let Some(gguf) = smollm2() else { return };
    let dir = tmp();
    let file = path_in(&dir, "smol.octet");
    let report = json(&run_ok(&[
        "weights",
        "stack",
        "--input",
        p(&gguf),
        "--output",
        p(&file),
        "--n-iter",
        "3",
        "--include",
        r"model\.layers\.(0|29)\.self_attn\.[qk]_proj",
        "--calib-samples",
        "2",
        "--json",
    ]));
    assert_eq!(report["compressed_tensors"], 4);
    assert_eq!(report["resident_tensors"], 272 - 4);
    assert!(
        report["scales"]
            .as_str()
            .expect("string")
            .starts_with("activation-aware")
    );
    for m in report["matrices"].as_array().expect("matrices") {
        let errs = m["relative_error"].as_array().expect("errors");
        let last = errs[errs.len() - 1].as_f64().expect("f64");
        assert!(last < 0.5, "{}: {last}", m["name"]);
    }
    let inspect = json(&run_ok(&["weights", "inspect", p(&file), "--json"]));
    let cfg: serde_json::Value = serde_json::from_str(
        inspect["metadata"]["model.config"]
            .as_str()
            .expect("config"),
    )
    .expect("json");
    assert_eq!(cfg["num_hidden_layers"], 30);
    assert_eq!(cfg["hidden_size"], 576);
    let out = path_in(&dir, "smol.safetensors");
    run_ok(&[
        "weights",
        "export",
        p(&file),
        "--bits",
        "16",
        "--to",
        p(&out),
    ]);
    let bytes = std::fs::read(&out).expect("exported");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid");
    assert_eq!(st.len(), 272);
    assert_eq!(
        st.tensor("model.layers.0.self_attn.q_proj.weight")
            .expect("present")
            .shape(),
        &[576, 576]
    );
}
