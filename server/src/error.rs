//! Store errors as gRPC statuses: the code says what class of mistake it was, the
//! message names the field and the values.

use octet_quant::QuantError;
use octet_store::StoreError;
use tonic::Status;

/// The status a store error becomes.
pub fn status_of(err: StoreError) -> Status {
    let msg = err.to_string();
    match err {
        StoreError::InvalidConfig { field, reason } => {
            Status::invalid_argument(format!("config.{field}: {reason}"))
        }
        StoreError::InvalidName { .. } => Status::invalid_argument(format!("name: {msg}")),
        StoreError::DimMismatch { index, .. } => {
            Status::invalid_argument(format!("points[{index}].vector: {msg}"))
        }
        StoreError::NonFinite { index, .. } => {
            Status::invalid_argument(format!("points[{index}].vector: {msg}"))
        }
        StoreError::InvalidQuery { .. } => Status::invalid_argument(format!("vector: {msg}")),
        StoreError::InvalidFilter { .. } => Status::invalid_argument(format!("filter: {msg}")),
        StoreError::CollectionNotFound { .. } => Status::not_found(msg),
        StoreError::CollectionExists { .. } => Status::already_exists(msg),
        StoreError::BatchTooLarge { .. } => Status::resource_exhausted(format!("points: {msg}")),
        StoreError::Locked { .. } => Status::failed_precondition(msg),
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
