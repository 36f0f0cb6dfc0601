//! Where the real checkpoints fetched by `scripts/fetch_models.sh` live. Tests and
//! harnesses that want a real model use these locators and skip, with the message
//! they print, when the file is absent: nothing in the default test run needs one.

use std::path::PathBuf;

/// The folder `scripts/fetch_models.sh` fills: `$OCTET_MODELS`, or
/// `/tmp/octet-models` when it is unset.
pub fn models_dir() -> PathBuf {
    std::env::var_os("OCTET_MODELS").map_or_else(|| "/tmp/octet-models".into(), PathBuf::from)
}

/// The SmolLM2-135M-Instruct GGUF (Q4_1), if it has been fetched. When it has not,
/// prints `skipping: <path> is absent (run scripts/fetch_models.sh)` to stderr and
/// returns `None`, so a test reads `let Some(path) = smollm2() else { return };`.
pub fn smollm2() -> Option<PathBuf> {
    let p = models_dir().join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "skipping: {} is absent (run scripts/fetch_models.sh)",
            p.display()
        );
        None
    }
}

/// The all-MiniLM-L6-v2 folder (fp32 `model.safetensors`, `config.json`,
/// `tokenizer.json`), if it has been fetched; as [`smollm2`] otherwise.
pub fn minilm() -> Option<PathBuf> {
    let dir = models_dir().join("minilm");
    if dir.join("model.safetensors").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: {} is absent (run scripts/fetch_models.sh)",
            dir.join("model.safetensors").display()
        );
        None
    }
}
