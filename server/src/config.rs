//! `octet serve` / `octet-server` settings, from three sources: flags, their
//! `OCTET_*` environment variables, and an optional TOML file (`--config`).
//! A flag beats its variable, the variable beats the file, the file beats the
//! built-in default. With nothing set the server keeps its data in
//! `./octet-data` and listens on `127.0.0.1:6334` without an API key.
//!
//! The file's keys are the flags' long names with `_` for `-`:
//!
//! ```toml
//! addr = "0.0.0.0:6334"
//! data = "/var/lib/octet"
//! api_key = "s3cret"
//! max_message_mib = 64
//! max_concurrent = 512
//! request_timeout_secs = 60
//! drain_secs = 5
//! tls_cert = "/etc/octet/server.pem"
//! tls_key = "/etc/octet/server.key"
//! http_addr = "127.0.0.1:6333"
//! metrics_addr = "127.0.0.1:9464"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;

/// The address served when nothing else is set.
pub const DEFAULT_ADDR: &str = "127.0.0.1:6334";
/// The data directory used when nothing else is set.
pub const DEFAULT_DATA: &str = "./octet-data";
const DEFAULT_MAX_MESSAGE_MIB: usize = 64;
const DEFAULT_MAX_CONCURRENT: usize = 512;
const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 60;
const DEFAULT_DRAIN_SECS: u64 = 5;
/// A config file larger than this is not a config file.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Server settings as given on the command line (each with an `OCTET_*`
/// variable). Unset ones come from `--config` or the defaults: see
/// [`ServeArgs::resolve`].
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys: the long flag names with
    /// `_` for `-`); flags and OCTET_* variables override it.
    #[arg(long, env = "OCTET_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port; the bound address is
    /// printed) [default: 127.0.0.1:6334].
    #[arg(long, env = "OCTET_ADDR")]
    pub addr: Option<SocketAddr>,
    /// Data directory, created if absent [default: ./octet-data].
    #[arg(long, env = "OCTET_DATA")]
    pub data: Option<PathBuf>,
    /// API key that clients send as `authorization: Bearer KEY` or `api-key: KEY`.
    /// Required when listening on a non-loopback address unless `--no-auth`.
    #[arg(long, env = "OCTET_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Accept unauthenticated requests on a non-loopback address.
    #[arg(long, env = "OCTET_NO_AUTH")]
    pub no_auth: bool,
    /// Largest request or response message, in MiB; larger requests get
    /// RESOURCE_EXHAUSTED [default: 64].
    #[arg(long, env = "OCTET_MAX_MESSAGE_MIB")]
    pub max_message_mib: Option<usize>,
    /// Requests served at once; more are refused with RESOURCE_EXHAUSTED
    /// [default: 512].
    #[arg(long, env = "OCTET_MAX_CONCURRENT")]
    pub max_concurrent: Option<usize>,
    /// Deadline of a request that sets none itself (`grpc-timeout` wins when
    /// shorter) [default: 60].
    #[arg(long, env = "OCTET_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<u64>,
    /// On SIGINT/SIGTERM, how long to wait for requests in flight and open
    /// connections before syncing the WALs and exiting [default: 5].
    #[arg(long, env = "OCTET_DRAIN_SECS")]
    pub drain_secs: Option<u64>,
    /// Serve TLS with this PEM certificate chain (needs `--tls-key`).
    #[arg(long, env = "OCTET_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, env = "OCTET_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Also serve the REST endpoints Qdrant clients probe (`GET /` for the
    /// version check, `/healthz`, `/livez`, `/readyz`) on this address, plain
    /// HTTP; Qdrant's own REST port is 6333 [default: off].
    #[arg(long, env = "OCTET_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Serve Prometheus metrics at `GET /metrics` on this address, plain HTTP,
    /// behind the API key when one is set [default: off].
    #[arg(long, env = "OCTET_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// The settings of a config file; every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    addr: Option<SocketAddr>,
    data: Option<PathBuf>,
    api_key: Option<String>,
    no_auth: Option<bool>,
    max_message_mib: Option<usize>,
    max_concurrent: Option<usize>,
    request_timeout_secs: Option<u64>,
    drain_secs: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    http_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
}

impl FileConfig {
    fn read(path: &Path) -> anyhow::Result<FileConfig> {
        let len = std::fs::metadata(path)
            .with_context(|| format!("reading config file {}", path.display()))?
            .len();
        anyhow::ensure!(
            len <= MAX_CONFIG_BYTES,
            "config file {} is {len} bytes; at most {MAX_CONFIG_BYTES} expected",
            path.display()
        );
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let mut file: FileConfig =
            toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?;
        // Relative paths in the file are relative to the file, not to wherever
        // the server happens to be started.
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut file.data, &mut file.tls_cert, &mut file.tls_key]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(file)
    }
}

/// PEM files for TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// Settings with every source merged: what the server runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Data directory.
    pub data: PathBuf,
    /// API key, when set.
    pub api_key: Option<String>,
    /// Serve without a key on a non-loopback address.
    pub no_auth: bool,
    /// Largest message, MiB.
    pub max_message_mib: usize,
    /// Requests served at once.
    pub max_concurrent: usize,
    /// Default request deadline, seconds.
    pub request_timeout_secs: u64,
    /// Longest drain on shutdown, seconds.
    pub drain_secs: u64,
    /// TLS certificate and key, when serving TLS.
    pub tls: Option<TlsFiles>,
    /// Address of the REST compatibility endpoints, when served.
    pub http_addr: Option<SocketAddr>,
    /// Address of the Prometheus endpoint, when served.
    pub metrics_addr: Option<SocketAddr>,
}

impl ServeArgs {
    /// Args that set only the address and data directory (tests, embedding).
    pub fn new(addr: SocketAddr, data: impl Into<PathBuf>) -> ServeArgs {
        ServeArgs {
            addr: Some(addr),
            data: Some(data.into()),
            ..ServeArgs::default()
        }
    }

    /// Merges flags/variables over the `--config` file over the defaults, and
    /// checks the result.
    pub fn resolve(&self) -> anyhow::Result<ServeConfig> {
        let file = match &self.config {
            Some(p) => FileConfig::read(p)?,
            None => FileConfig::default(),
        };
        let default_addr: SocketAddr = DEFAULT_ADDR.parse().context("the default address")?;
        let tls = match (
            self.tls_cert.clone().or(file.tls_cert),
            self.tls_key.clone().or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => anyhow::bail!("tls_cert is set but tls_key is not: TLS needs both"),
            (None, Some(_)) => anyhow::bail!("tls_key is set but tls_cert is not: TLS needs both"),
        };
        let config = ServeConfig {
            addr: self.addr.or(file.addr).unwrap_or(default_addr),
            data: self
                .data
                .clone()
                .or(file.data)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA)),
            api_key: self.api_key.clone().or(file.api_key),
            no_auth: self.no_auth || file.no_auth.unwrap_or(false),
            max_message_mib: self
                .max_message_mib
                .or(file.max_message_mib)
                .unwrap_or(DEFAULT_MAX_MESSAGE_MIB),
            max_concurrent: self
                .max_concurrent
                .or(file.max_concurrent)
                .unwrap_or(DEFAULT_MAX_CONCURRENT),
            request_timeout_secs: self
                .request_timeout_secs
                .or(file.request_timeout_secs)
                .unwrap_or(DEFAULT_REQUEST_TIMEOUT_SECS),
            drain_secs: self
                .drain_secs
                .or(file.drain_secs)
                .unwrap_or(DEFAULT_DRAIN_SECS),
            tls,
            http_addr: self.http_addr.or(file.http_addr),
            metrics_addr: self.metrics_addr.or(file.metrics_addr),
        };
        anyhow::ensure!(
            (1..=4096).contains(&config.max_message_mib),
            "max_message_mib is {}; expected 1..=4096",
            config.max_message_mib
        );
        anyhow::ensure!(
            config.max_concurrent >= 1,
            "max_concurrent is 0; expected at least 1"
        );
        Ok(config)
    }
}

impl ServeConfig {
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

    /// The API key to enforce, or an error when a non-loopback address that
    /// serves data (gRPC, metrics) has none and no-auth was not asked for.
    pub fn effective_key(&self) -> anyhow::Result<Option<String>> {
        let exposed = std::iter::once(self.addr)
            .chain(self.metrics_addr)
            .find(|a| !a.ip().is_loopback());
        match (&self.api_key, exposed) {
            (Some(k), _) if k.is_empty() => {
                anyhow::bail!("the API key (--api-key / OCTET_API_KEY / api_key) is empty")
            }
            (Some(k), _) => Ok(Some(k.clone())),
            (None, None) => Ok(None),
            (None, Some(_)) if self.no_auth => Ok(None),
            (None, Some(addr)) => anyhow::bail!(
                "listening on {addr} (not loopback) needs --api-key / OCTET_API_KEY, \
                 or --no-auth / OCTET_NO_AUTH=true to serve without one"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("octet.toml");
        std::fs::write(&p, text).expect("test value");
        p
    }

    #[test]
    fn defaults_without_any_source() {
        let c = ServeArgs::default().resolve().expect("test value");
        assert_eq!(
            c.addr,
            DEFAULT_ADDR.parse::<SocketAddr>().expect("test value")
        );
        assert_eq!(c.data, PathBuf::from(DEFAULT_DATA));
        assert_eq!(c.max_message_mib, 64);
        assert_eq!(c.tls, None);
        assert_eq!(c.effective_key().expect("test value"), None);
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().expect("test value");
        let path = write(
            dir.path(),
            "addr = \"127.0.0.1:7000\"\ndata = \"db\"\nmax_concurrent = 8\n\
             tls_cert = \"c.pem\"\ntls_key = \"/abs/k.pem\"\n",
        );
        let args = ServeArgs {
            config: Some(path),
            addr: Some("127.0.0.1:9000".parse::<SocketAddr>().expect("test value")),
            ..ServeArgs::default()
        };
        let c = args.resolve().expect("test value");
        assert_eq!(
            c.addr,
            "127.0.0.1:9000".parse::<SocketAddr>().expect("test value")
        );
        assert_eq!(c.data, dir.path().join("db"));
        assert_eq!(c.max_concurrent, 8);
        assert_eq!(c.request_timeout_secs, 60);
        let tls = c.tls.expect("test value");
        assert_eq!(tls.cert, dir.path().join("c.pem"));
        assert_eq!(tls.key, PathBuf::from("/abs/k.pem"));
    }

    #[test]
    fn bad_files_name_the_problem() {
        let dir = tempfile::tempdir().expect("test value");
        let cases = [
            ("adress = \"x\"\n", "adress"),
            ("max_concurrent = \"many\"\n", "max_concurrent"),
            ("addr = \"not an address\"\n", "addr"),
            ("tls_cert = \"c.pem\"\n", "tls_key"),
            ("max_message_mib = 0\n", "max_message_mib"),
        ];
        for (text, word) in cases {
            let args = ServeArgs {
                config: Some(write(dir.path(), text)),
                ..ServeArgs::default()
            };
            let err = format!("{:#}", args.resolve().expect_err("an error"));
            assert!(err.contains(word), "{text:?}: {err}");
            assert!(
                err.contains("octet.toml") || word == "tls_key" || word == "max_message_mib",
                "{err}"
            );
        }
        let missing = ServeArgs {
            config: Some(dir.path().join("absent.toml")),
            ..ServeArgs::default()
        };
        assert!(format!("{:#}", missing.resolve().expect_err("an error")).contains("absent.toml"));
    }

    #[test]
    fn a_public_address_needs_a_key_or_no_auth() {
        let mut args = ServeArgs::new("0.0.0.0:6334".parse().expect("test value"), "d");
        assert!(args.resolve().expect("test value").effective_key().is_err());
        args.no_auth = true;
        assert_eq!(
            args.resolve()
                .expect("test value")
                .effective_key()
                .expect("test value"),
            None
        );
        args.api_key = Some("k".into());
        assert_eq!(
            args.resolve()
                .expect("test value")
                .effective_key()
                .expect("test value")
                .as_deref(),
            Some("k")
        );
    }

    #[test]
    fn a_public_metrics_address_needs_a_key_too() {
        let mut args = ServeArgs::new("127.0.0.1:6334".parse().expect("test value"), "d");
        args.metrics_addr = Some("0.0.0.0:9464".parse().expect("test value"));
        args.http_addr = Some("0.0.0.0:6333".parse().expect("test value"));
        let err = args
            .resolve()
            .expect("test value")
            .effective_key()
            .expect_err("metrics on a public address without a key");
        assert!(err.to_string().contains("0.0.0.0:9464"), "{err}");
        // The REST probe alone reveals nothing and needs no key.
        args.metrics_addr = None;
        assert_eq!(
            args.resolve()
                .expect("test value")
                .effective_key()
                .expect("test value"),
            None
        );
    }
}
