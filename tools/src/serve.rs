//! `octet serve`: the gRPC server (see `octet-server`). With no flags it keeps its
//! data in `./octet-data` and listens on `127.0.0.1:6334`.

pub use octet_server::ServeArgs;

/// Runs the server until SIGINT/SIGTERM, then drains and syncs the WALs.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    octet_server::init_tracing();
    octet_server::run_blocking(args)
}
