//! Binding, serving and shutting down: opens the store, serves `octet.v1` and
//! `qdrant` with health and reflection beside them (and, when asked, the REST
//! probes and Prometheus metrics over HTTP), and on the shutdown signal stops
//! accepting, drains requests in flight, then syncs every collection's WAL.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use octet_store::Store;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::auth::ApiKey;
use crate::config::{ServeArgs, ServeConfig, TlsFiles};
use crate::metrics::{Metrics, MetricsLayer};
use crate::pb;
use crate::service::{AdminService, AppState, CollectionsService, PointsService, SearchService};

/// The `octet.v1` service names, as health reports them.
const SERVICES: [&str; 4] = [
    "octet.v1.Collections",
    "octet.v1.Points",
    "octet.v1.Search",
    "octet.v1.Admin",
];

/// A server with its store open and its socket bound, not yet serving.
#[derive(Debug)]
pub struct Bound {
    args: ServeConfig,
    tls: Option<ServerTlsConfig>,
    key: Option<String>,
    store: Arc<Store>,
    listener: TcpListener,
    local_addr: SocketAddr,
    /// `--http-addr` and `--metrics-addr`, bound (one listener when they are
    /// the same address).
    http: Vec<HttpListener>,
}

#[derive(Debug)]
struct HttpListener {
    listener: TcpListener,
    /// The address the flag asked for (port 0 included).
    requested: SocketAddr,
    local_addr: SocketAddr,
    rest: bool,
    metrics: bool,
}

impl Bound {
    /// Merges the settings' sources (flags, variables, `--config`), then
    /// [`Bound::bind_config`].
    pub async fn bind(args: ServeArgs) -> anyhow::Result<Bound> {
        Bound::bind_config(args.resolve()?).await
    }

    /// Checks the settings, reads the TLS files, opens the data directory and
    /// binds the address.
    pub async fn bind_config(args: ServeConfig) -> anyhow::Result<Bound> {
        let key = args.effective_key()?;
        let tls = args.tls.as_ref().map(tls_config).transpose()?;
        let data = args.data.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&data))
            .await
            .context("opening the store")?
            .with_context(|| format!("opening data directory {}", args.data.display()))?;
        let listener = TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("binding {}", args.addr))?;
        let local_addr = listener.local_addr().context("reading the bound address")?;
        let mut http = Vec::new();
        for (addr, rest, metrics, flag) in [
            (args.http_addr, true, false, "--http-addr"),
            (args.metrics_addr, false, true, "--metrics-addr"),
        ] {
            let Some(addr) = addr else { continue };
            // Two flags naming the same address share one listener.
            if let Some(same) = http
                .iter_mut()
                .find(|h: &&mut HttpListener| h.requested == addr)
            {
                same.rest |= rest;
                same.metrics |= metrics;
                continue;
            }
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {flag} {addr}"))?;
            let local_addr = listener
                .local_addr()
                .with_context(|| format!("reading the address bound for {flag}"))?;
            http.push(HttpListener {
                listener,
                requested: addr,
                local_addr,
                rest,
                metrics,
            });
        }
        Ok(Bound {
            args,
            tls,
            key,
            store: Arc::new(store),
            listener,
            local_addr,
            http,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address bound for `--http-addr`, when given.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.iter().find(|h| h.rest).map(|h| h.local_addr)
    }

    /// The address bound for `--metrics-addr`, when given.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.http.iter().find(|h| h.metrics).map(|h| h.local_addr)
    }

    /// Serves until `shutdown` completes, then drains and syncs the WALs.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Bound {
            args,
            tls,
            key,
            store,
            listener,
            local_addr,
            http,
        } = self;
        let state = Arc::new(AppState::new(Arc::clone(&store), args.max_concurrent));
        let auth = ApiKey::new(key.clone());
        let metrics = args
            .metrics_addr
            .map(|_| Arc::new(Metrics::new(Arc::clone(&store))));
        let mut http_tasks = Vec::new();
        for h in http {
            let router = crate::http::router(
                h.rest.then(|| (Arc::clone(&state), local_addr)),
                metrics
                    .as_ref()
                    .filter(|_| h.metrics)
                    .map(|m| (Arc::clone(m), auth.clone())),
            );
            tracing::info!(addr = %h.local_addr, rest = h.rest, metrics = h.metrics, "http listening");
            let addr = h.local_addr;
            http_tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(h.listener, router).await {
                    tracing::error!(%addr, "http server stopped: {e}");
                }
            }));
        }
        let max = args.max_message_bytes();
        let check = move |req| auth.check(req);

        let (health, health_service) = tonic_health::server::health_reporter();
        for s in SERVICES {
            health.set_service_status(s, ServingStatus::Serving).await;
        }
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("building the reflection service")?;

        let collections =
            pb::collections_server::CollectionsServer::new(CollectionsService(Arc::clone(&state)))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max);
        let points = pb::points_server::PointsServer::new(PointsService(Arc::clone(&state)))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let search = pb::search_server::SearchServer::new(SearchService(Arc::clone(&state)))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let admin = pb::admin_server::AdminServer::new(AdminService(Arc::clone(&state)))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);

        let qdrant = crate::qdrant::Services::new(&state, max);
        for s in crate::qdrant::SERVICES {
            health.set_service_status(s, ServingStatus::Serving).await;
        }

        tracing::info!(
            addr = %local_addr,
            data = %args.data.display(),
            auth = key.is_some(),
            tls = tls.is_some(),
            max_message_bytes = max,
            max_concurrent = args.max_concurrent,
            "octet server listening"
        );
        let drain_state = Arc::clone(&state);
        let drain_health = health.clone();
        let fired = Arc::new(tokio::sync::Notify::new());
        let fired_tx = Arc::clone(&fired);
        let signal = async move {
            shutdown.await;
            fired_tx.notify_one();
            tracing::info!("shutdown requested: draining requests in flight");
            drain_state.draining.store(true, Ordering::Release);
            for s in SERVICES {
                drain_health
                    .set_service_status(s, ServingStatus::NotServing)
                    .await;
            }
        };
        let mut builder = Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).context("configuring TLS")?;
        }
        // Outermost first: the metrics see the status after the oversize rewrite.
        let layers = tower::ServiceBuilder::new()
            .layer(MetricsLayer(metrics))
            .layer(tower::util::MapResponseLayer::new(
                |mut resp: http::Response<tonic::body::Body>| {
                    crate::oversize::rewrite_headers(resp.headers_mut());
                    resp
                },
            ))
            .into_inner();
        let serve = builder
            .layer(layers)
            .timeout(args.request_timeout())
            .trace_fn(|req| tracing::info_span!("rpc", path = %req.uri().path()))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(InterceptedService::new(collections, check.clone()))
            .add_service(InterceptedService::new(points, check.clone()))
            .add_service(InterceptedService::new(search, check.clone()))
            .add_service(InterceptedService::new(admin, check.clone()))
            // Qdrant's API; HealthCheck stays open like grpc.health.v1.
            .add_service(qdrant.root)
            .add_service(InterceptedService::new(qdrant.collections, check.clone()))
            .add_service(InterceptedService::new(qdrant.points, check))
            .serve_with_incoming_shutdown(incoming(listener), signal);
        // Graceful shutdown waits for clients to close their connections; an idle
        // client that keeps its channel open would hold the server forever, so the
        // drain is bounded. Writes already acknowledged are in the WAL either way.
        let drain = args.drain_timeout();
        tokio::select! {
            r = serve => r.context("serving")?,
            () = async { fired.notified().await; tokio::time::sleep(drain).await } => {
                tracing::warn!(secs = drain.as_secs(), "drain timed out; closing open connections");
            }
        }

        for t in &http_tasks {
            t.abort();
        }
        // Every request has finished: make every acknowledged write durable.
        drop(state);
        let flushed = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
            let names = store.list();
            for n in &names {
                store
                    .collection(n)
                    .and_then(|c| c.flush())
                    .with_context(|| format!("syncing the WAL of collection `{n}`"))?;
            }
            Ok(names.len())
        })
        .await
        .context("syncing the WALs")??;
        tracing::info!(collections = flushed, "WALs synced; server stopped");
        Ok(())
    }
}

/// The accepted connections, each with `TCP_NODELAY` set. `Server::tcp_nodelay`
/// only reaches sockets tonic binds itself; with our own listener, Nagle's
/// algorithm would hold a reply's last small segment until the client's delayed
/// ACK (about 40 ms on Linux), which is what a few-KB reply with payloads hit.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Largest PEM file read.
const MAX_PEM_BYTES: u64 = 1 << 20;

fn read_pem(path: &std::path::Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading the TLS {what} {}", path.display()))?
        .len();
    anyhow::ensure!(
        len <= MAX_PEM_BYTES,
        "TLS {what} {} is {len} bytes; at most {MAX_PEM_BYTES} expected",
        path.display()
    );
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading the TLS {what} {}", path.display()))?;
    anyhow::ensure!(
        bytes.windows(11).any(|w| w == b"-----BEGIN "),
        "TLS {what} {} holds no PEM block (expected -----BEGIN ...)",
        path.display()
    );
    Ok(bytes)
}

/// Reads and checks the PEM files, so a bad certificate or key fails at start
/// with the file named rather than at the first handshake.
fn tls_config(files: &TlsFiles) -> anyhow::Result<ServerTlsConfig> {
    let cert = read_pem(&files.cert, "certificate")?;
    let key = read_pem(&files.key, "key")?;
    let config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    // Building the acceptor parses both files; do it once now to report errors.
    Server::builder()
        .tls_config(config.clone())
        .with_context(|| {
            format!(
                "TLS certificate {} / key {} do not form a usable identity",
                files.cert.display(),
                files.key.display()
            )
        })?;
    Ok(config)
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Runs a server to completion on a new multi-threaded runtime: binds, prints
/// `listening on ADDR` to stdout (scripts and tests read the port from it), then
/// `http on ADDR` and `metrics on ADDR` for the endpoints asked for, serves
/// until SIGINT/SIGTERM.
pub fn run_blocking(args: ServeArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        let bound = Bound::bind(args).await?;
        println!("listening on {}", bound.local_addr());
        if let Some(a) = bound.http_addr() {
            println!("http on {a}");
        }
        if let Some(a) = bound.metrics_addr() {
            println!("metrics on {a}");
        }
        bound.serve(shutdown_signal()).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn accepted_sockets_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut accepted = incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let socket = accepted
            .next()
            .await
            .expect("a connection")
            .expect("accept");
        assert!(socket.nodelay().expect("read TCP_NODELAY"));
    }
}
