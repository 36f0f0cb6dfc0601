//! Feeds arbitrary bytes to the collection manifest parser, as given and with its
//! header re-sealed: it must never panic, and what parses must re-encode to the
//! same manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    octet_store::fuzz::manifest_one(data);
});
