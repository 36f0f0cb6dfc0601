//! Octet store: an embedded, durable, segment-based vector engine (WAL, sealed segments of compact codes, HNSW, filters, rescore tier, compaction, snapshots). Filled in by the store issue.
