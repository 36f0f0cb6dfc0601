//! # octet-store
//!
//! Octet's embedded, durable vector engine.
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
pub mod graph;
mod growing;
pub mod manifest;
mod payload_index;
pub mod point;
pub mod segment;
mod snapshot;
mod store;
pub mod wal;

pub use collection::{Collection, CollectionInfo, ScoredPoint, SearchRequest, WriteReceipt};
pub use config::{CollectionConfig, HnswConfig, RescoreConfig, SegmentConfig};
pub use error::{Result, StoreError};
pub use filter::{Condition, Filter, MatchValue, Range};
pub use point::{Payload, Point, PointId, Record};
pub use snapshot::SnapshotInfo;
pub use store::Store;
