//! The model library's error: every variant names what a user needs to find the
//! fault (the file, the tensor, the metadata or config field, the flag, the expected
//! and the actual value) and keeps the error underneath as its source, so the CLI
//! prints the whole chain (`error: ...` then `caused by: ...`).

use std::path::PathBuf;

use thiserror::Error;

/// An error from the model library.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// The error a tokenizer library call returns (the `tokenizers` crate boxes them).
pub type TokenizerError = tokenizers::Error;

/// What went wrong reading, calibrating or running a model.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A file or folder could not be opened, listed or read.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done: `opening`, `reading`, `listing`...
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is larger than this reader accepts.
    #[error("{}: {len} bytes, more than the {max} a {what} may have", path.display())]
    TooLarge {
        /// What the file is (`calibration text`, `config`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The cap.
        max: u64,
    },
    /// A JSON file (`config.json`) could not be parsed as what it should be.
    #[error("{}: {what}", path.display())]
    Json {
        /// What it failed to be: `not valid JSON`, `not a llama config`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A GGUF file's header or a tensor in it could not be read.
    #[error("{}: {what}", path.display())]
    Gguf {
        /// What failed: `malformed GGUF header`, `reading tensor ...`.
        what: String,
        /// The file.
        path: PathBuf,
        /// candle's GGUF reader error (boxed: it is large).
        #[source]
        source: Box<candle_core::Error>,
    },
    /// A safetensors file's header is malformed.
    #[error("{}: malformed safetensors header", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// A GGUF metadata field is missing, of the wrong type or out of range.
    #[error("{}: metadata field `{key}` {problem}", path.display())]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The metadata key (`llama.block_count`).
        key: String,
        /// What is wrong with it: `is missing`, `is U8, expected a string`...
        problem: String,
    },
    /// Neither the vocabulary size nor the embedding tensor says how large the
    /// vocabulary is.
    #[error("{}: neither `llama.vocab_size` nor tensor `token_embd.weight`", path.display())]
    NoVocabSize {
        /// The file.
        path: PathBuf,
    },
    /// A checkpoint lists more tensors than any real model has.
    #[error("{}: more than {max} tensors", path.display())]
    TooManyTensors {
        /// The file.
        path: PathBuf,
        /// The cap.
        max: usize,
    },
    /// A folder holds no safetensors file.
    #[error("{}: no *.safetensors file found", path.display())]
    NoSafetensors {
        /// The folder (or file) given.
        path: PathBuf,
    },
    /// A tensor is stored in a type the reader does not decode.
    #[error("{}: tensor `{tensor}` has dtype {dtype}; only F32, F16 and BF16 are read", path.display())]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its stored type.
        dtype: String,
    },
    /// Two files of one checkpoint hold the same tensor.
    #[error("{}: tensor `{tensor}` appears in two files", path.display())]
    DuplicateTensor {
        /// The second file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
    },
    /// An error about something inside `path` (a tensor shape, the config).
    #[error("{}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// The error inside it.
        #[source]
        source: Box<ModelError>,
    },
    /// A checkpoint's llama hyper-parameters are inconsistent.
    #[error("{}: invalid llama {what}", path.display())]
    InvalidLlama {
        /// `config` (config.json) or `metadata` (GGUF).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Which field is wrong.
        #[source]
        source: Box<ModelError>,
    },
    /// A llama config field is out of range or inconsistent with another.
    #[error("config field `{field}` {reason}")]
    Config {
        /// The field (Hugging Face `config.json` naming).
        field: &'static str,
        /// What is wrong, with the values.
        reason: String,
    },
    /// A tensor has more dimensions than supported.
    #[error("tensor `{tensor}`: {dims} dimensions, at most {max} are supported")]
    TooManyDims {
        /// The tensor.
        tensor: String,
        /// Its dimension count.
        dims: usize,
        /// The cap.
        max: usize,
    },
    /// A tensor's shape holds more elements than the cap.
    #[error("tensor `{tensor}`: shape {shape:?} exceeds the cap of {max} elements")]
    TooManyElements {
        /// The tensor.
        tensor: String,
        /// Its shape.
        shape: Vec<usize>,
        /// The cap.
        max: u64,
    },
    /// A tensor's data does not fill its shape.
    #[error("tensor `{tensor}`: shape {shape:?} needs {expected} values, got {actual}")]
    DataLen {
        /// The tensor.
        tensor: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Elements the shape holds.
        expected: usize,
        /// Values given.
        actual: usize,
    },
    /// A tensor has another shape than the model needs.
    #[error("tensor `{tensor}` has shape {actual:?}, expected {expected:?}")]
    Shape {
        /// The tensor.
        tensor: String,
        /// The shape needed.
        expected: Vec<usize>,
        /// The shape found.
        actual: Vec<usize>,
    },
    /// A tensor that should be a matrix is not 2-D.
    #[error("tensor `{tensor}`: expected 2 dimensions, got {shape:?}")]
    NotMatrix {
        /// The tensor.
        tensor: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A q/k projection's rows do not split into heads of even width.
    #[error("tensor `{tensor}`: {rows} rows do not split into {heads} heads of even width")]
    HeadSplit {
        /// The tensor.
        tensor: String,
        /// Its rows.
        rows: usize,
        /// The head count.
        heads: usize,
    },
    /// A tensor the llama forward pass needs is absent.
    #[error("llama weights: tensor `{tensor}` is missing")]
    MissingTensor {
        /// The tensor.
        tensor: String,
    },
    /// A name that is not one of a layer's linear weights (llama or BERT).
    #[error("`{name}` is not a linear weight of the model's layers")]
    NotLinear {
        /// The name given.
        name: String,
    },
    /// A linear weight of a layer the model does not have.
    #[error("`{name}`: layer {layer} does not exist")]
    NoLayer {
        /// The name given.
        name: String,
        /// Its layer.
        layer: usize,
    },
    /// A `--include`/`--exclude` pattern is not a valid regex.
    #[error("{flag} `{pattern}`")]
    Pattern {
        /// The flag.
        flag: &'static str,
        /// The pattern.
        pattern: String,
        /// The regex error.
        #[source]
        source: regex::Error,
    },
    /// A tokenizer could not be loaded from `path`.
    #[error("tokenizer {}", path.display())]
    TokenizerFile {
        /// The file.
        path: PathBuf,
        /// The tokenizers library's error.
        #[source]
        source: TokenizerError,
    },
    /// The checkpoint carries no tokenizer the tool can rebuild.
    #[error(
        "{}: no tokenizer found (no tokenizer.json beside it, or a GGUF vocabulary that is not byte-level BPE); pass --tokenizer tokenizer.json",
        path.display()
    )]
    NoTokenizer {
        /// The checkpoint.
        path: PathBuf,
    },
    /// A GGUF file named as a tokenizer has no byte-level BPE vocabulary.
    #[error(
        "{}: no byte-level BPE vocabulary in its metadata (tokenizer.ggml.model `gpt2` with tokens and merges)",
        path.display()
    )]
    NoBpeVocabulary {
        /// The file.
        path: PathBuf,
    },
    /// A GGUF merge rule is not two tokens separated by a space.
    #[error("GGUF tokenizer merge {index} `{merge}` is not `a b`")]
    BadMerge {
        /// Its position in `tokenizer.ggml.merges`.
        index: usize,
        /// The rule.
        merge: String,
    },
    /// The BPE model could not be built from a GGUF vocabulary.
    #[error("GGUF tokenizer")]
    GgufTokenizer {
        /// The tokenizers library's error.
        #[source]
        source: TokenizerError,
    },
    /// A text could not be tokenised.
    #[error("tokenising {what}")]
    Tokenize {
        /// The text (`the calibration text`, a path).
        what: String,
        /// The tokenizers library's error.
        #[source]
        source: TokenizerError,
    },
    /// A token id outside the model's vocabulary.
    #[error(
        "the tokenizer produced id {id}, outside the model's vocabulary of {vocab}: wrong tokenizer?"
    )]
    TokenOutOfVocab {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// A text or sequence gives fewer tokens than the computation needs.
    #[error("{what}: {got} tokens, at least {needed} needed")]
    TooFewTokens {
        /// The text or sequence.
        what: String,
        /// Tokens it gives.
        got: usize,
        /// Tokens needed.
        needed: usize,
    },
    /// A sequence longer than the model's context (or empty).
    #[error("sequence of {tokens} tokens: must be between 1 and max_position_embeddings = {max}")]
    SequenceLength {
        /// Its length.
        tokens: usize,
        /// `max_position_embeddings`.
        max: usize,
    },
    /// A parameter (a CLI flag or a method's setting) out of its range.
    #[error("{name} {value}: expected {expected}")]
    Parameter {
        /// The parameter (`--ctx`, `RTN bits`).
        name: &'static str,
        /// The value given.
        value: String,
        /// The allowed values.
        expected: String,
    },
    /// A matrix handed to a quantizer does not match its stated size.
    #[error("{method}: a {rows}x{cols} matrix needs {expected} values, got {actual}")]
    MatrixLen {
        /// The quantizer (`RTN`, `Q4_K`).
        method: &'static str,
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// `rows * cols`.
        expected: usize,
        /// Values given.
        actual: usize,
    },
    /// A matrix handed to a k-quant is not a whole number of super-blocks.
    #[error(
        "{method}: a {rows}x{cols} matrix is not a whole number of {block}-weight super-blocks"
    )]
    SuperBlocks {
        /// The k-quant.
        method: &'static str,
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// Weights per super-block.
        block: usize,
    },
    /// An importance vector of the wrong length.
    #[error("{method}: importance has {actual} values, the matrix {cols} columns")]
    ImportanceLen {
        /// The k-quant.
        method: &'static str,
        /// Values given.
        actual: usize,
        /// Columns of the matrix.
        cols: usize,
    },
    /// A matrix holds NaN or an infinity.
    #[error("{method}: the matrix holds a non-finite value")]
    NonFinite {
        /// The quantizer.
        method: &'static str,
    },
    /// A calibration sequence failed in the forward pass.
    #[error("calibration sequence {index}")]
    CalibSequence {
        /// The sequence.
        index: usize,
        /// What failed.
        #[source]
        source: Box<ModelError>,
    },
    /// A perplexity window failed in the forward pass.
    #[error("window {index} (tokens {begin}..{end})")]
    Window {
        /// The window.
        index: usize,
        /// First token fed.
        begin: usize,
        /// One past the last token fed.
        end: usize,
        /// What failed.
        #[source]
        source: Box<ModelError>,
    },
    /// A tensor operation failed (candle: a device error, an out-of-memory).
    #[error("{what}")]
    Tensor {
        /// What was being done (`tensor `x``, `Q4_K quantisation`).
        what: String,
        /// candle's error (boxed: it is large).
        #[source]
        source: Box<candle_core::Error>,
    },
    /// A tensor operation of the forward pass failed.
    #[error(transparent)]
    Candle(Box<candle_core::Error>),
}

impl From<candle_core::Error> for ModelError {
    fn from(e: candle_core::Error) -> Self {
        ModelError::Candle(Box::new(e))
    }
}

impl ModelError {
    /// Wraps `self` as an error about something inside `path`.
    pub(crate) fn in_file(self, path: impl Into<PathBuf>) -> ModelError {
        ModelError::InFile {
            path: path.into(),
            source: Box::new(self),
        }
    }
}
