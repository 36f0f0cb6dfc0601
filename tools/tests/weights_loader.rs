//! The budget loader end to end: `.octet` files written by `octet weights` from a
//! synthetic llama, loaded by `octet_quant::candle_load`, fed to candle-transformers'
//! llama through `VarBuilder::from_tensors`.

mod weights_common;

use candle_core::Device;
use octet_quant::candle_load::{BudgetLimit, MappedCheckpoint};
use weights_common::*;

/// Logits of the model loaded from `file` at `limit`.
fn loaded_logits(file: &std::path::Path, limit: BudgetLimit) -> Vec<f32> {
    let ckpt = MappedCheckpoint::open(file).expect("maps");
    let loaded = ckpt.load(limit, &Device::Cpu).expect("loads");
    llama_logits(loaded.tensors, &tokens())
}

#[test]
fn palette_that_holds_every_value_gives_the_original_logits() {
    let dir = tmp();
    let model = tiny_llama(1, Some(200));
    write_hf_folder(&path_in(&dir, "model"), &model);
    let file = path_in(&dir, "m.octet");
    run_ok(&[
        "weights",
        "palette",
        "--input",
        p(&path_in(&dir, "model")),
        "--output",
        p(&file),
        "--bits",
        "8",
        "--json",
    ]);
    let original = llama_logits(to_candle(&model), &tokens());
    let loaded = loaded_logits(&file, BudgetLimit::Full);
    // Every linear has <= 200 distinct f16 values and resident tensors are f16-exact,
    // so the rebuilt weights are the original ones bit for bit.
    assert_eq!(loaded, original);
}

#[test]
fn full_rank_bitstack_at_full_budget_matches_the_dequantised_reference() {
    let dir = tmp();
    let model = tiny_llama(2, None);
    write_hf_folder(&path_in(&dir, "model"), &model);
    let file = path_in(&dir, "m.octet");
    // Rank 96 >= min(rows, cols) of every matrix: each block is an exact SVD of |W'|,
    // so the full budget is the original up to the f16 rounding of the factors.
    run_ok(&[
        "weights",
        "stack",
        "--input",
        p(&path_in(&dir, "model")),
        "--output",
        p(&file),
        "--n-iter",
        "3",
        "--rank",
        "96",
        "--exact-svd",
        "--no-calib",
        "--json",
    ]);
    let full = loaded_logits(&file, BudgetLimit::Full);

    // The dequantised reference: `octet weights export` at the full budget, read back
    // through candle's own safetensors loader.
    let exported = path_in(&dir, "ref.safetensors");
    run_ok(&[
        "weights",
        "export",
        p(&file),
        "--to",
        p(&exported),
        "--dtype",
        "f32",
    ]);
    let reference = candle_core::safetensors::load(&exported, &Device::Cpu).expect("loads");
    let reference = llama_logits(reference, &tokens());
    assert!(
        rel_max_diff(&full, &reference) < 1e-5,
        "{}",
        rel_max_diff(&full, &reference)
    );

    let original = llama_logits(to_candle(&model), &tokens());
    let err_full = rel_max_diff(&full, &original);
    assert!(err_full < 2e-2, "full budget vs original: {err_full}");
    let min_blocks = MappedCheckpoint::open(&file)
        .and_then(|c| c.reader().map(|r| r.manifest().min_blocks as usize))
        .expect("valid");
    let err_min = rel_max_diff(
        &loaded_logits(&file, BudgetLimit::Blocks(min_blocks)),
        &original,
    );
    assert!(
        err_full < err_min,
        "full {err_full} vs smallest budget {err_min}"
    );
}

#[test]
fn logits_error_shrinks_as_the_budget_grows() {
    let dir = tmp();
    let model = tiny_llama(3, None);
    write_hf_folder(&path_in(&dir, "model"), &model);
    let file = path_in(&dir, "m.octet");
    run_ok(&[
        "weights",
        "stack",
        "--input",
        p(&path_in(&dir, "model")),
        "--output",
        p(&file),
        "--n-iter",
        "8",
        "--calib-seq-len",
        "64",
        "--calib-samples",
        "4",
    ]);
    let original = llama_logits(to_candle(&model), &tokens());
    let ckpt = MappedCheckpoint::open(&file).expect("maps");
    let (min, total) = {
        let r = ckpt.reader().expect("valid");
        (
            r.manifest().min_blocks as usize,
            r.manifest().block_order.len(),
        )
    };
    let errs: Vec<f32> = [min, (min + total) / 2, total]
        .iter()
        .map(|&n| rel_max_diff(&loaded_logits(&file, BudgetLimit::Blocks(n)), &original))
        .collect();
    assert!(errs[0] > errs[1] && errs[1] > errs[2], "{errs:?}");
}
