//! `octet`: the command-line front of Octet.
//!
//! `octet advise` measures which vector codec fits a dataset and `octet bench` the
//! store's recall and speed on it; `octet serve` runs the database and the client
//! verbs (`collection`, `upsert`, `search`, `snapshot`, `bench-grpc`) talk to it
//! over gRPC; `octet weights` converts LLM checkpoints.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod advise;
mod bench;
mod bench_grpc;
mod client;
mod serve;
mod weights;

/// Octet: compressed vector search and memory-budget-adaptive LLM checkpoints.
#[derive(Debug, Parser)]
#[command(name = "octet", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure every vector codec on your embeddings and recommend the smallest that
    /// reaches a target recall.
    Advise(advise::AdviseArgs),
    /// Build an octet-store collection per codec / rescore configuration from base
    /// vectors and measure bytes per vector, build time, recall@k and QPS at several ef.
    Bench(bench::BenchArgs),
    /// Compress LLM checkpoints into memory-budget-adaptive .octet files, inspect,
    /// plan and export them.
    Weights(weights::WeightsArgs),
    /// Serve the gRPC API (octet.v1) over a data directory (default ./octet-data on
    /// 127.0.0.1:6334).
    Serve(serve::ServeArgs),
    /// Create, list, inspect and drop collections on a server.
    Collection(client::collection::CollectionArgs),
    /// Write points from .fvecs, raw f32 or JSONL (with payloads) in batches.
    Upsert(client::upsert::UpsertArgs),
    /// Search a collection: one query, optional payload filter, table or JSON.
    Search(client::search::SearchArgs),
    /// Create, list and restore snapshots on a server.
    Snapshot(client::snapshot::SnapshotArgs),
    /// Load a server with concurrent clients (mixed search / upsert), or compare
    /// batch search over gRPC with the same search in-process.
    BenchGrpc(bench_grpc::BenchGrpcArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Advise(args) => advise::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Weights(args) => weights::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Collection(args) => client::collection::run(args),
        Command::Upsert(args) => client::upsert::run(args),
        Command::Search(args) => client::search::run(args),
        Command::Snapshot(args) => client::snapshot::run(args),
        Command::BenchGrpc(args) => bench_grpc::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A closed pipe (`octet ... | head`) is the reader's choice, not a failure.
            if err
                .chain()
                .filter_map(|e| e.downcast_ref::<std::io::Error>())
                .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
