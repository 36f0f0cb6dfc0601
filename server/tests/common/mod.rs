//! The shared test kit (`octet-tests`), with this crate's server binary.
#![allow(dead_code, unused_imports)]

pub use octet_tests::grpc::*;
pub use octet_tests::{ServerProc, http_get};

/// How the kit launches the server under test.
pub const SERVER: &[&str] = &[env!("CARGO_BIN_EXE_octet-server")];
