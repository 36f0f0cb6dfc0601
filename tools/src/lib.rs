//! # octet-tools
//!
//! The `octet` binary's verbs live in `src/main.rs` and below it; this library holds
//! the code they share that others can reuse: [`model`], reading LLM checkpoints
//! (Hugging Face safetensors folders, GGUF) into one description, calibrating them,
//! running a llama forward pass, measuring perplexity, and the peer quantizers.
//! The compression and the `.octet` format themselves are `octet-quant`.

pub mod model;
