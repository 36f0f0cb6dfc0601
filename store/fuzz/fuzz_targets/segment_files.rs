//! Carves a sealed segment's files (codes, rescore tier, graph, ids, payloads) out
//! of arbitrary bytes, writes them with valid footers and opens them, then reads
//! every point and searches the graph; also checks the bytes as one whole
//! component file against its footer. None of it may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    octet_store::fuzz::segment_one(data);
    octet_store::fuzz::component_one(data);
});
