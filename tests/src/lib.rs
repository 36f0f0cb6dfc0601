//! # octet-tests
//!
//! The kit every integration test of the workspace uses instead of its own
//! copy: a real server process on a free loopback port ([`ServerProc`]), a
//! runner for a binary's command line ([`Cli`]), gRPC clients and request
//! builders for `octet.v1` ([`grpc`]), a plain HTTP GET ([`http_get`]),
//! Python helpers ([`python`]) and where test data lives ([`data`]).
//!
//! A test crate names its binaries (`env!("CARGO_BIN_EXE_...")` exists only
//! there), so the kit takes them as arguments:
//!
//! ```no_run
//! # let dir = std::path::Path::new("/tmp/d");
//! // server/tests: the server binary itself
//! let s = octet_tests::ServerProc::start(&["target/debug/octet-server"], dir, &[]);
//! // tools/tests: `octet serve`
//! let s = octet_tests::ServerProc::start(&["target/debug/octet", "serve"], dir, &[]);
//! ```
#![allow(clippy::unwrap_used)]

pub mod data;
pub mod grpc;
pub mod python;

mod cli;
mod http;
mod process;

pub use cli::{Cli, path_str, text};
pub use http::http_get;
pub use process::ServerProc;
