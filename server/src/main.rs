//! `octet-server`: the gRPC server alone (`octet serve` runs the same thing).

use std::process::ExitCode;

use clap::Parser;

/// Serve Octet's gRPC API (octet.v1) over a data directory.
#[derive(Debug, Parser)]
#[command(name = "octet-server", version, about)]
struct Cli {
    #[command(flatten)]
    serve: octet_server::ServeArgs,
}

fn main() -> ExitCode {
    octet_server::init_tracing();
    match octet_server::run_blocking(Cli::parse().serve) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
