//! Feeds arbitrary bytes to the `.octet` checkpoint reader: header, manifest, budget
//! planning and tensor rebuilds must never panic, whatever the input.
//!
//! Each input runs twice: as given, and with its header and manifest checksums
//! recomputed (`reseal`), so that mutations reach the rkyv validation and the semantic
//! checks behind the CRC instead of stopping at it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use octet_quant::checkpoint::{fuzz_one, reseal};

fuzz_target!(|data: &[u8]| {
    fuzz_one(data);
    let mut sealed = data.to_vec();
    if reseal(&mut sealed) {
        fuzz_one(&sealed);
    }
});
