//! Where test data lives: the committed fixtures and `../shared/data`.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A committed fixture of real MiniLM embeddings in `tests/data/`
/// (`minilm-base-1k.fvecs`, `minilm-queries-100.fvecs`, `minilm-gt-100.ivecs`).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// `../shared/data` (20k MiniLM passages, queries, ground truth) when it holds
/// every one of `files`; otherwise prints `SKIPPED <test>: ...` and returns
/// `None`, so the caller returns.
pub fn shared_data(test: &str, files: &[&str]) -> Option<PathBuf> {
    let dir = repo().join("..").join("shared").join("data");
    match files.iter().find(|f| !dir.join(f).exists()) {
        None => Some(dir),
        Some(missing) => {
            eprintln!(
                "SKIPPED {test}: no {missing} in {} (the shared MiniLM data)",
                dir.display()
            );
            None
        }
    }
}
