//! Sealed segments: immutable files written once by a seal or a compaction.
//!
//! | file | holds |
//! |---|---|
//! | `seg-N.codes` | compact codes, memory-mapped |
//! | `seg-N.rescore` | the rescore tier, memory-mapped |
//! | `seg-N.graph` | the search graph |
//! | `seg-N.ids` | point ids in storage order |
//! | `seg-N.payload` | payload offsets and JSON |
//! | `seg-N-gG.tomb` | the tombstone bitset as of manifest generation G |
//!
//! Every file ends in a footer with its kind, version and CRC32C ([`mod@file`]), and the
//! manifest repeats each file's length and checksum.

pub mod file;
pub(crate) mod sealed;
pub(crate) mod writer;
