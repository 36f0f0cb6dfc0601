//! # octet-store
//!
//! Octet's embedded, durable vector engine: an LSM-like store of immutable segments
//! (the shape Lucene, Milvus and Qdrant use) holding vectors as compact codes from
//! `octet-quant`, searched through HNSW graphs and rescored from a second tier.
//!
//! - A [`Store`] is a data directory with any number of [`Collection`]s; handles are
//!   `Clone + Send + Sync`, for many readers and writers at once.
//! - Writes go to a write-ahead log first ([`wal`]: length + CRC32C per record, one
//!   record per batch, group commit, `fsync` before a durable write returns), then
//!   to the growing segment (f32 in memory, searched exactly).
//! - A background worker seals the growing segment at a size threshold into files
//!   ([`segment`]): compact codes and the rescore tier (memory-mapped), the graph,
//!   ids, payloads and tombstones, listed with checksums in an atomically replaced
//!   [`manifest`]. The first seal fits the collection's codec; later seals reuse it.
//! - Search scores the query against codes in each sealed segment's graph (or
//!   exactly over a selective filter's matches), exactly over the growing segment,
//!   merges `k x oversampling` candidates and rescores them from the rescore tier.
//! - Deletes are tombstones; compaction rewrites segments without them and merges
//!   small ones, in the background. Snapshots copy a collection consistently.
//!
//! ```
//! use octet_store::{CollectionConfig, Condition, Filter, Point, SearchRequest, Store};
//! use octet_quant::Metric;
//!
//! # fn main() -> octet_store::Result<()> {
//! # let dir = tempfile::tempdir().map_err(|e| octet_store::StoreError::Io { path: "tmp".into(), source: e })?;
//! let store = Store::open(dir.path())?;
//! // Defaults: the transform codec at dim/2 bytes, an i8 rescore tier, HNSW m=16.
//! let docs = store.create_collection("docs", CollectionConfig::new(4, Metric::Cosine))?;
//! let mut payload = octet_store::Payload::new();
//! payload.insert("tenant".into(), "acme".into());
//! docs.upsert(
//!     &[
//!         Point::with_payload(1, vec![1.0, 0.0, 0.0, 0.0], payload),
//!         Point::new(2, vec![0.0, 1.0, 0.0, 0.0]),
//!     ],
//!     true, // durable: fsynced before upsert returns
//! )?;
//! let hits = docs.search(
//!     &SearchRequest::new(vec![0.9, 0.1, 0.0, 0.0], 5)
//!         .filter(Filter::must(vec![Condition::keyword("tenant", "acme")]))
//!         .with_payload(),
//! )?;
//! assert_eq!(hits.len(), 1);
//! assert_eq!(hits[0].id, 1);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

#[cfg(target_endian = "big")]
compile_error!("octet-store's file formats are little-endian and it maps them in place");

pub mod bitset;
mod codec_fit;
pub mod collection;
pub mod config;
pub mod error;
pub mod filter;
mod fsutil;
#[doc(hidden)]
pub mod fuzz;
pub mod graph;
mod growing;
pub mod manifest;
pub mod name;
mod payload_index;
pub mod point;
pub mod segment;
mod snapshot;
mod store;
pub mod telemetry;
pub mod wal;

pub use collection::{Collection, CollectionInfo, MAX_K, ScoredPoint, SearchRequest, WriteReceipt};
pub use config::{CollectionConfig, HnswConfig, RescoreConfig, SegmentConfig};
pub use error::{Result, StoreError};
pub use filter::{Condition, Filter, MatchValue, Range};
pub use name::{CollectionName, SnapshotName};
pub use point::{Payload, PayloadJson, Point, PointId, Record};
pub use snapshot::SnapshotInfo;
pub use store::{SnapshotFile, Store};
pub use telemetry::{Histogram, HistogramSnapshot, Telemetry};

#[cfg(test)]
mod tests {
    /// The server shares one store across tokio tasks: handles must be `Send + Sync`.
    #[test]
    fn handles_are_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<crate::Store>();
        check::<crate::Collection>();
        check::<crate::SearchRequest>();
        check::<crate::StoreError>();
    }
}
