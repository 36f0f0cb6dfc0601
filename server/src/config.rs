//! `octet serve` / `octet-server` settings: flags, each with an `OCTET_*`
//! environment variable. With no flags the server keeps its data in
//! `./octet-data` and listens on `127.0.0.1:6334` without an API key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Server settings.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, env = "OCTET_ADDR", default_value = "127.0.0.1:6334")]
    pub addr: SocketAddr,
    /// Data directory (created if absent).
    #[arg(long, env = "OCTET_DATA", default_value = "./octet-data")]
    pub data: PathBuf,
    /// API key that clients send as `authorization: Bearer KEY` or `api-key: KEY`.
    /// Required when listening on a non-loopback address unless `--no-auth`.
    #[arg(long, env = "OCTET_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Accept unauthenticated requests on a non-loopback address.
    #[arg(long, env = "OCTET_NO_AUTH")]
    pub no_auth: bool,
    /// Largest request or response message, in MiB.
    #[arg(long, env = "OCTET_MAX_MESSAGE_MIB", default_value_t = 64)]
    pub max_message_mib: usize,
    /// Requests served at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "OCTET_MAX_CONCURRENT", default_value_t = 512)]
    pub max_concurrent: usize,
    /// Deadline of a request that sets none itself (`grpc-timeout` wins when shorter).
    #[arg(long, env = "OCTET_REQUEST_TIMEOUT_SECS", default_value_t = 60)]
    pub request_timeout_secs: u64,
    /// On SIGINT/SIGTERM, how long to wait for requests in flight and open
    /// connections before syncing the WALs and exiting.
    #[arg(long, env = "OCTET_DRAIN_SECS", default_value_t = 5)]
    pub drain_secs: u64,
}

impl ServeArgs {
    /// The largest message in bytes.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_mib.saturating_mul(1 << 20)
    }

    /// The default per-request deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.max(1))
    }

    /// The longest graceful drain.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
    }

    /// The API key to enforce, or an error when a non-loopback address has none
    /// and `--no-auth` was not given.
    pub fn effective_key(&self) -> anyhow::Result<Option<String>> {
        match &self.api_key {
            Some(k) if k.is_empty() => anyhow::bail!("--api-key / OCTET_API_KEY is empty"),
            Some(k) => Ok(Some(k.clone())),
            None if self.addr.ip().is_loopback() || self.no_auth => Ok(None),
            None => anyhow::bail!(
                "listening on {} (not loopback) needs --api-key / OCTET_API_KEY, \
                 or --no-auth / OCTET_NO_AUTH=true to serve without one",
                self.addr
            ),
        }
    }
}
