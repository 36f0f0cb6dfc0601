//! Qdrant's gRPC API (package `qdrant`, the subset in `proto/qdrant/`) over the
//! same store, port, limits and API key as `octet.v1`, so an application written
//! against `qdrant-client` (or LangChain's `QdrantVectorStore`) with
//! `prefer_grpc=True` runs unchanged.
//!
//! Served: `Qdrant/HealthCheck`; `Collections` Create, Get, List, Delete,
//! CollectionExists; `Points` Upsert, Delete, Get, SetPayload, OverwritePayload,
//! DeletePayload, CreateFieldIndex, Search, SearchBatch, Query (nearest), Scroll,
//! Count. Point ids: see [`ids`]. What Octet lacks (named, sparse and
//! multi-vectors, geo and full-text filters, prefetch and the other query kinds)
//! answers UNIMPLEMENTED naming the field.

mod collections;
mod convert;
mod ids;
mod points;

use std::sync::Arc;

use crate::qdrant_pb as q;
use crate::service::AppState;

/// The three services, ready for the router (the caller adds limits and auth).
pub(crate) struct Services {
    pub root: q::qdrant_server::QdrantServer<collections::RootService>,
    pub collections: q::collections_server::CollectionsServer<collections::CollectionsService>,
    pub points: q::points_server::PointsServer<points::PointsService>,
}

/// The health-check names of the Qdrant services.
pub(crate) const SERVICES: [&str; 3] = ["qdrant.Qdrant", "qdrant.Collections", "qdrant.Points"];

impl Services {
    pub fn new(state: &Arc<AppState>, max_message_bytes: usize) -> Self {
        let max = max_message_bytes;
        Services {
            root: q::qdrant_server::QdrantServer::new(collections::RootService),
            collections: q::collections_server::CollectionsServer::new(
                collections::CollectionsService(Arc::clone(state)),
            )
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
            points: q::points_server::PointsServer::new(points::PointsService(Arc::clone(state)))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        }
    }
}
