//! # octet-server
//!
//! The tonic gRPC service `octet.v1` over [`octet_store`]: collections, points,
//! search and admin (snapshots, stats), plus `grpc.health.v1` and server
//! reflection, API keys, optional TLS, message-size and concurrency limits,
//! per-request deadlines and a graceful shutdown that drains requests and syncs
//! every WAL. Settings come from flags, `OCTET_*` variables and a TOML file.
//!
//! Proto types meet engine types only in [`convert`]. Payloads travel as JSON text
//! (`payload_json`), filters as typed messages.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use clap::Parser;
//!
//! // `ServeArgs` is a set of clap arguments; embed it in any command line.
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     serve: octet_server::ServeArgs,
//! }
//! let args = Cli::parse_from(["octet-server", "--addr", "127.0.0.1:0"]).serve;
//! let bound = octet_server::Bound::bind(args).await?;
//! println!("listening on {}", bound.local_addr());
//! bound.serve(octet_server::shutdown_signal()).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod auth;
pub mod codec;
mod config;
pub mod convert;
mod error;
mod http;
pub mod metrics;
mod oversize;
mod qdrant;
mod server;
mod service;

pub use auth::ApiKey;
pub use config::{ServeArgs, ServeConfig, TlsFiles};
pub use error::status_of;
pub use http::QDRANT_API_VERSION;
pub use server::{Bound, run_blocking, shutdown_signal};

/// The generated `octet.v1` messages, clients and servers.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod pb {
    tonic::include_proto!("octet.v1");

    /// The encoded file descriptor set of `octet.v1`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/octet_descriptor.bin"));
}

/// The generated `qdrant` messages, clients and servers: Octet's wire-compatible
/// subset of Qdrant's gRPC API (see `proto/qdrant/`).
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod qdrant_pb {
    tonic::include_proto!("qdrant");
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second call (tests, embedding) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
