//! The error type of `octet-store`.

use std::path::PathBuf;

use octet_quant::QuantError;

/// Everything that can go wrong in `octet-store`. Variants carry the facts a caller
/// needs: the collection, the file, the field, the expected and actual values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A configuration value is out of range or inconsistent.
    #[error("invalid {field}: {reason}")]
    InvalidConfig {
        /// The field at fault, as a user would name it.
        field: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A collection name uses characters or a length that is not allowed.
    #[error("invalid collection name `{name}`: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A snapshot file name is not one the store hands out.
    #[error("invalid snapshot name `{name}`: {reason}")]
    InvalidSnapshotName {
        /// The rejected name.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// No snapshot of that name exists for the collection.
    #[error("snapshot `{name}` of collection `{collection}` not found")]
    SnapshotNotFound {
        /// The collection.
        collection: String,
        /// The snapshot file name.
        name: String,
    },
    /// No collection of that name exists.
    #[error("collection `{name}` not found")]
    CollectionNotFound {
        /// The name asked for.
        name: String,
    },
    /// A collection of that name already exists.
    #[error("collection `{name}` already exists")]
    CollectionExists {
        /// The name asked for.
        name: String,
    },
    /// A vector in a batch has the wrong dimension.
    #[error("point {index} of the batch (id {id}): expected dimension {expected}, got {actual}")]
    DimMismatch {
        /// Position of the point in the batch.
        index: usize,
        /// Its id.
        id: u64,
        /// The collection's dimension.
        expected: usize,
        /// The dimension given.
        actual: usize,
    },
    /// A vector holds NaN or an infinity.
    #[error(
        "point {index} of the batch (id {id}): non-finite value {value} at component {component}"
    )]
    NonFinite {
        /// Position of the point in the batch (0 for a query).
        index: usize,
        /// Its id (0 for a query).
        id: u64,
        /// The component index.
        component: usize,
        /// The bad value.
        value: f32,
    },
    /// A batch encodes to more bytes than one WAL record may hold.
    #[error("batch too large: {bytes} bytes encoded, at most {max} per write")]
    BatchTooLarge {
        /// Encoded size of the batch.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A search request is out of range: its vector has the wrong dimension or bad
    /// values, or `k`, `ef` or `oversampling` exceed their limits
    /// ([`crate::SearchRequest::validate`]).
    #[error("{field}: {reason}")]
    InvalidQuery {
        /// The request field at fault (`k`, `ef`, `oversampling`, `vector`).
        field: &'static str,
        /// What is wrong, with the allowed range and the value given.
        reason: String,
    },
    /// A filter is malformed (empty key, empty any-of list, empty range...).
    #[error("invalid filter: {reason}")]
    InvalidFilter {
        /// What is wrong.
        reason: String,
    },
    /// A file on disk is malformed: bad magic, version, length or checksum.
    #[error("{}: corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What check failed.
        reason: String,
    },
    /// A file that the manifest references is missing.
    #[error("{}: missing file referenced by the manifest of collection `{collection}`", path.display())]
    MissingFile {
        /// The collection.
        collection: String,
        /// The missing file.
        path: PathBuf,
    },
    /// The WAL refuses writes after a failure that may have lost logged records;
    /// reopening the collection (restarting the server) replays what is on disk.
    #[error("{}: the write-ahead log refuses writes: {reason}; reopen the collection to recover", path.display())]
    WalFailed {
        /// The WAL file.
        path: PathBuf,
        /// What failed.
        reason: &'static str,
    },
    /// The data directory is used by another open store.
    #[error("{}: data directory is locked by another process or store", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A codec could not be fitted or used.
    #[error(transparent)]
    Quant(#[from] QuantError),
}

impl StoreError {
    /// Whether this is the file system running out of space (or quota): the
    /// write was refused and nothing changed; freeing space lets it through.
    pub fn is_disk_full(&self) -> bool {
        let StoreError::Io { source, .. } = self else {
            return false;
        };
        matches!(
            source.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        ) || source.raw_os_error() == Some(28)
    }
}

/// Result alias for `octet-store`.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attaches a path to an `io::Error`.
pub(crate) trait IoContext<T> {
    /// Wraps the error as [`StoreError::Io`] naming `path`.
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| StoreError::Io {
            path: path.into(),
            source,
        })
    }
}

/// Shorthand for a [`StoreError::Corrupt`].
pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.into(),
        reason: reason.into(),
    }
}
