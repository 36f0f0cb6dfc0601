//! The client verbs over gRPC (`octet.v1`): `collection`, `upsert`, `search` and
//! `snapshot`, sharing one set of connection flags.
//!
//! A failed call prints `error: CODE: message` (the gRPC status code by its
//! canonical name, then the server's message, which names the field) and exits
//! non-zero.

pub mod collection;
pub mod filter;
pub mod search;
pub mod snapshot;
pub mod upsert;

use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use octet_server::pb;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

/// The largest message a client accepts (the server's default limit).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// How to reach the server. Global, so `octet collection list --addr ...` and
/// `octet collection --addr ... list` both work.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Server URL, `http://HOST:PORT` (a bare `HOST:PORT` means http).
    #[arg(
        long,
        global = true,
        env = "OCTET_URL",
        default_value = "http://127.0.0.1:6334"
    )]
    pub addr: String,
    /// API key, sent as `authorization: Bearer KEY`.
    #[arg(long, global = true, env = "OCTET_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Deadline of each call, in seconds (sent to the server as `grpc-timeout`).
    #[arg(long, global = true, default_value_t = 60.0, value_name = "SECS")]
    pub timeout: f64,
}

impl ConnectArgs {
    /// The URL with a scheme.
    pub fn url(&self) -> String {
        if self.addr.contains("://") {
            self.addr.clone()
        } else {
            format!("http://{}", self.addr)
        }
    }

    fn deadline(&self) -> Result<Duration> {
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            bail!(
                "--timeout must be a positive number of seconds, got {}",
                self.timeout
            );
        }
        Ok(Duration::from_secs_f64(self.timeout))
    }

    /// Opens one channel (one HTTP/2 connection) to the server.
    pub async fn channel(&self) -> Result<Channel> {
        let url = self.url();
        let deadline = self.deadline()?;
        let endpoint = Endpoint::from_shared(url.clone())
            .with_context(|| format!("--addr `{url}` is not a URL"))?
            .connect_timeout(deadline.min(Duration::from_secs(10)))
            .tcp_nodelay(true);
        endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to {url}"))
    }

    /// Connects and returns the four service clients over one channel.
    pub async fn connect(&self) -> Result<Clients> {
        let channel = self.channel().await?;
        Clients::new(channel, self)
    }
}

/// Adds the API key and the deadline to every call.
#[derive(Debug, Clone)]
pub struct Auth {
    bearer: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    deadline: Duration,
}

impl Auth {
    /// From the connection flags; the key must be printable ASCII.
    pub fn new(args: &ConnectArgs) -> Result<Auth> {
        let bearer = match &args.api_key {
            None => None,
            Some(k) if k.is_empty() => bail!("--api-key / OCTET_API_KEY is empty"),
            Some(k) => Some(
                format!("Bearer {k}")
                    .parse()
                    .context("--api-key / OCTET_API_KEY must be printable ASCII")?,
            ),
        };
        Ok(Auth {
            bearer,
            deadline: args.deadline()?,
        })
    }
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(b) = &self.bearer {
            req.metadata_mut().insert("authorization", b.clone());
        }
        req.set_timeout(self.deadline);
        Ok(req)
    }
}

/// A channel with the API key and deadline applied.
pub type Ch = InterceptedService<Channel, Auth>;

/// One client per `octet.v1` service, sharing a channel.
#[derive(Debug, Clone)]
pub struct Clients {
    /// Collections: create, get, list, delete.
    pub collections: pb::collections_client::CollectionsClient<Ch>,
    /// Points: upsert, get, delete, count, scroll.
    pub points: pb::points_client::PointsClient<Ch>,
    /// Search and batch search.
    pub search: pb::search_client::SearchClient<Ch>,
    /// Snapshots and stats.
    pub admin: pb::admin_client::AdminClient<Ch>,
}

impl Clients {
    /// Clients over an open channel.
    pub fn new(channel: Channel, args: &ConnectArgs) -> Result<Clients> {
        let auth = Auth::new(args)?;
        let ch = InterceptedService::new(channel, auth);
        Ok(Clients {
            collections: pb::collections_client::CollectionsClient::new(ch.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            points: pb::points_client::PointsClient::new(ch.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            search: pb::search_client::SearchClient::new(ch.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            admin: pb::admin_client::AdminClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        })
    }

    /// The collection's description, or its status as an error.
    pub async fn info(&mut self, name: &str) -> Result<pb::CollectionInfo> {
        let info = self
            .collections
            .get(pb::GetCollectionRequest { name: name.into() })
            .await
            .map_err(grpc)?
            .into_inner();
        Ok(info)
    }
}

/// The canonical name of a status code (`INVALID_ARGUMENT`), as gRPC documents it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A failed call: shown as `CODE: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcError {
    /// The status code.
    pub code: Code,
    /// The server's message, with the transport's cause when there is one.
    pub message: String,
}

impl fmt::Display for GrpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", code_name(self.code), self.message)
    }
}

impl std::error::Error for GrpcError {}

impl From<Status> for GrpcError {
    fn from(s: Status) -> Self {
        let mut message = s.message().to_string();
        // Transport failures (connection refused, reset) carry their cause as the
        // source; the message alone would only say "transport error".
        let mut source = std::error::Error::source(&s);
        while let Some(e) = source {
            let text = e.to_string();
            if !message.contains(&text) {
                message = if message.is_empty() {
                    text
                } else {
                    format!("{message}: {text}")
                };
            }
            source = e.source();
        }
        GrpcError {
            code: s.code(),
            message,
        }
    }
}

/// A status as an `anyhow` error that prints `CODE: message`.
pub fn grpc(s: Status) -> anyhow::Error {
    GrpcError::from(s).into()
}

/// A single-threaded runtime for one verb (the calls are sequential).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// `cosine`, `dot` or `l2` as the proto's enum.
pub fn parse_metric(s: &str) -> Result<pb::Metric, String> {
    match s.to_ascii_lowercase().as_str() {
        "cosine" => Ok(pb::Metric::Cosine),
        "dot" => Ok(pb::Metric::Dot),
        "l2" => Ok(pb::Metric::L2),
        _ => Err(format!("unknown metric `{s}` (expected cosine, dot or l2)")),
    }
}

/// The metric's name as the flags spell it.
pub fn metric_name(raw: i32) -> &'static str {
    match pb::Metric::try_from(raw) {
        Ok(pb::Metric::Dot) => "dot",
        Ok(pb::Metric::L2) => "l2",
        Ok(pb::Metric::Unspecified | pb::Metric::Cosine) => "cosine",
        Err(_) => "unknown",
    }
}

/// At most `max` characters of `s`, with an ellipsis when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_prints_code_name_and_message() {
        let e = GrpcError::from(Status::invalid_argument(
            "vector: expected dimension 4, got 3",
        ));
        assert_eq!(
            e.to_string(),
            "INVALID_ARGUMENT: vector: expected dimension 4, got 3"
        );
        assert_eq!(code_name(Code::NotFound), "NOT_FOUND");
    }

    #[test]
    fn bare_address_gets_a_scheme() {
        let mut a = ConnectArgs {
            addr: "127.0.0.1:6334".into(),
            api_key: None,
            timeout: 1.0,
        };
        assert_eq!(a.url(), "http://127.0.0.1:6334");
        a.addr = "https://db:1".into();
        assert_eq!(a.url(), "https://db:1");
        a.timeout = 0.0;
        assert!(Auth::new(&a).is_err());
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("héllo", 10), "héllo");
        assert_eq!(truncate("héllo wörld", 6), "héllo…");
    }
}
