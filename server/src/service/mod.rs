//! The four `octet.v1` services over one shared [`AppState`].
//!
//! Store calls block (fsync, search over mapped files), so each runs on tokio's
//! blocking pool; a semaphore caps requests in flight and answers
//! RESOURCE_EXHAUSTED past it instead of queueing without bound.

mod admin;
mod collections;
mod points;
mod search;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use octet_store::{CollectionName, Store};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::error::field_status;

pub(crate) use admin::AdminService;
pub(crate) use collections::CollectionsService;
pub(crate) use points::PointsService;
pub(crate) use search::SearchService;

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    pub store: Arc<Store>,
    limiter: Arc<Semaphore>,
    max_concurrent: usize,
    pub draining: AtomicBool,
}

impl AppState {
    pub fn new(store: Arc<Store>, max_concurrent: usize) -> Self {
        let max_concurrent = max_concurrent.max(1);
        AppState {
            store,
            limiter: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            draining: AtomicBool::new(false),
        }
    }

    /// A slot for one request, or RESOURCE_EXHAUSTED when all are taken, or
    /// UNAVAILABLE once shutdown has begun.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, Status> {
        if self.draining.load(Ordering::Acquire) {
            return Err(Status::unavailable("server is shutting down"));
        }
        Arc::clone(&self.limiter).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "overloaded: {} requests in flight (--max-concurrent)",
                self.max_concurrent
            ))
        })
    }
}

/// Runs a blocking store call on the blocking pool, mapping its error.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, Status>
where
    F: FnOnce() -> Result<T, Status> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("worker task failed: {e}")))?
}

/// Checks a collection-name field: set, and a valid [`CollectionName`] (the
/// store's one name check, so `../x`, `/etc` and the like are INVALID_ARGUMENT
/// on every RPC before any lookup or path).
pub(crate) fn need_name(name: &str, field: &str) -> Result<(), Status> {
    collection_name(name, field).map(drop)
}

/// `field` of a request as a checked collection name.
pub(crate) fn collection_name(name: &str, field: &str) -> Result<CollectionName, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument(format!("{field}: empty")));
    }
    CollectionName::parse(name).map_err(|e| field_status(field, e))
}
