//! The error type of `octet-quant`.

use std::path::PathBuf;

/// Everything that can go wrong in `octet-quant`. Variants carry the facts a user
/// needs to fix the input: the field, the expected and the actual value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuantError {
    /// A vector or a batch does not have the dimension the codec was fitted for.
    #[error("dimension mismatch in {what}: expected {expected}, got {actual}")]
    DimMismatch {
        /// What was being checked ("query", "batch of vectors", ...).
        what: &'static str,
        /// The dimension the codec expects.
        expected: usize,
        /// The dimension (or length) that was given.
        actual: usize,
    },
    /// A value is NaN or infinite.
    #[error("non-finite value {value} at row {row}, column {col}")]
    NonFinite {
        /// Row (vector index) of the bad value.
        row: usize,
        /// Column (component index) of the bad value.
        col: usize,
        /// The value itself.
        value: f32,
    },
    /// A configuration value is out of range or inconsistent.
    #[error("invalid {field}: {reason}")]
    InvalidConfig {
        /// The field at fault, as a user would name it.
        field: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A codec specification string could not be parsed.
    #[error("unknown codec `{spec}`: {reason}")]
    UnknownCodec {
        /// The string the user gave.
        spec: String,
        /// What is expected instead.
        reason: String,
    },
    /// Fitting needs more data than was given.
    #[error("not enough samples to fit {what}: need at least {needed}, got {got}")]
    NotEnoughSamples {
        /// What was being fitted.
        what: &'static str,
        /// The minimum number of samples.
        needed: usize,
        /// The number given.
        got: usize,
    },
    /// A numeric routine (eigendecomposition, SVD) failed.
    #[error("numerical failure in {what}: {reason}")]
    Numerical {
        /// The routine.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A file is malformed: bad magic, version, checksum, or a length out of bounds.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file (or a description of the byte source).
        path: PathBuf,
        /// What is wrong, naming the field and the expected value.
        reason: String,
    },
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A candle tensor operation failed (allocation or copy on the device).
    #[cfg(feature = "candle")]
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias for `octet-quant`.
pub type Result<T, E = QuantError> = std::result::Result<T, E>;

/// Checks that `values` holds whole rows of `dim` finite values.
pub fn check_batch(what: &'static str, values: &[f32], dim: usize) -> Result<usize> {
    if dim == 0 || !values.len().is_multiple_of(dim) {
        return Err(QuantError::DimMismatch {
            what,
            expected: dim,
            actual: values.len(),
        });
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(QuantError::NonFinite {
            row: i / dim,
            col: i % dim,
            value: values[i],
        });
    }
    Ok(values.len() / dim)
}
