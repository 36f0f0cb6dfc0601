//! Feeds arbitrary bytes to the WAL record parser: it must never panic, never
//! claim more valid bytes than it was given, and re-encoding what it decoded must
//! give back exactly the valid prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    octet_store::wal::fuzz_one(data);
});
