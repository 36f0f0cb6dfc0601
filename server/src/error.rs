//! Store errors as gRPC statuses: the code says what class of mistake it was, the
//! message names the field and the values.

use octet_quant::QuantError;
use octet_store::StoreError;
use tonic::Status;

/// The status a store error becomes.
pub fn status_of(err: StoreError) -> Status {
    let msg = err.to_string();
    if err.is_disk_full() {
        tracing::error!(error = %msg, "disk full: write refused");
        return Status::resource_exhausted(format!("disk full: {msg}"));
    }
    match err {
        StoreError::InvalidConfig { field, reason } => {
            Status::invalid_argument(format!("config.{field}: {reason}"))
        }
        StoreError::InvalidName { .. } => Status::invalid_argument(format!("name: {msg}")),
        StoreError::InvalidSnapshotName { .. } => Status::invalid_argument(format!("name: {msg}")),
        StoreError::SnapshotNotFound { .. } => Status::not_found(msg),
        StoreError::DimMismatch { index, .. } => {
            Status::invalid_argument(format!("points[{index}].vector: {msg}"))
        }
        StoreError::NonFinite { index, .. } => {
            Status::invalid_argument(format!("points[{index}].vector: {msg}"))
        }
        // The message names the field already (`k: must be in 1..=10000, got 0`).
        StoreError::InvalidQuery { .. } => Status::invalid_argument(msg),
        StoreError::InvalidFilter { .. } => Status::invalid_argument(format!("filter: {msg}")),
        StoreError::CollectionNotFound { .. } => Status::not_found(msg),
        StoreError::CollectionExists { .. } => Status::already_exists(msg),
        StoreError::BatchTooLarge { .. } => Status::resource_exhausted(format!("points: {msg}")),
        StoreError::Locked { .. } => Status::failed_precondition(msg),
        StoreError::WalFailed { .. } => {
            tracing::error!(error = %msg, "write-ahead log failed");
            Status::unavailable(msg)
        }
        StoreError::Corrupt { .. } | StoreError::MissingFile { .. } => Status::data_loss(msg),
        StoreError::Quant(QuantError::InvalidConfig { field, reason }) => {
            Status::invalid_argument(format!("config.{field}: {reason}"))
        }
        StoreError::Quant(QuantError::UnknownCodec { .. }) => {
            Status::invalid_argument(format!("config.codec: {msg}"))
        }
        _ => {
            tracing::error!(error = %msg, "internal error");
            Status::internal(msg)
        }
    }
}

/// The status of a store error about request field `field` (a rejected name
/// says which field held it).
pub fn field_status(field: &str, err: StoreError) -> Status {
    match err {
        StoreError::InvalidName { .. } | StoreError::InvalidSnapshotName { .. } => {
            Status::invalid_argument(format!("{field}: {err}"))
        }
        other => status_of(other),
    }
}
