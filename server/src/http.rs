//! The HTTP side, each part off unless its address is given:
//!
//! - `--http-addr`: the few REST endpoints a Qdrant client calls even with
//!   `prefer_grpc=True`. `qdrant-client` asks `GET /` for the server's version
//!   before its first call (a compatibility check that otherwise warns), and
//!   orchestrators probe `/healthz`, `/livez`, `/readyz`. Every other path answers
//!   404 in Qdrant's error shape, naming the gRPC port: Octet serves Qdrant's API
//!   over gRPC only.
//! - `--metrics-addr`: `GET /metrics`, the Prometheus text of [`Metrics`],
//!   behind the API key when one is set.
//!
//! When both addresses are the same, one listener serves both.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::auth::ApiKey;
use crate::metrics::Metrics;
use crate::service::AppState;

/// The version of Qdrant's API that Octet's `qdrant` package follows (the
/// protos of qdrant-client 1.20.0); `GET /` reports it, so the client's
/// version check passes.
pub const QDRANT_API_VERSION: &str = "1.20.0";

#[derive(Clone)]
struct Rest {
    state: Arc<AppState>,
    grpc_addr: SocketAddr,
}

/// The router of one HTTP listener: the REST probes when `rest` is given, the
/// metrics when `metrics` is. Unknown paths get the REST 404 (naming the gRPC
/// port) on a REST listener, a plain 404 on a metrics-only one.
pub(crate) fn router(
    rest: Option<(Arc<AppState>, SocketAddr)>,
    metrics: Option<(Arc<Metrics>, ApiKey)>,
) -> Router {
    let mut router = Router::new();
    if let Some((metrics, key)) = metrics {
        router = router.merge(
            Router::new()
                .route("/metrics", get(scrape))
                .with_state(Scrape { metrics, key }),
        );
    }
    match rest {
        Some((state, grpc_addr)) => router.merge(
            Router::new()
                .route("/", get(root))
                .route("/healthz", get(alive))
                .route("/livez", get(alive))
                .route("/readyz", get(ready))
                .fallback(rest_not_served)
                .with_state(Rest { state, grpc_addr }),
        ),
        None => router.fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: metrics are at GET /metrics\n",
            )
        }),
    }
}

async fn root() -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "title": "octet - compact vector search (Qdrant-compatible gRPC API)",
        "version": QDRANT_API_VERSION,
        "octet_version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn alive() -> &'static str {
    "healthz check passed"
}

async fn ready(State(rest): State<Rest>) -> Response {
    if rest.state.draining.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    } else {
        "all shards are ready".into_response()
    }
}

async fn rest_not_served(State(rest): State<Rest>, uri: Uri) -> Response {
    let body = serde_json::json!({
        "status": {
            "error": format!(
                "Octet serves Qdrant's API over gRPC (port {}); REST path `{}` is not served \
                 (use QdrantClient(..., prefer_grpc=True))",
                rest.grpc_addr.port(),
                uri.path()
            )
        },
        "time": 0.0,
    });
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

#[derive(Clone)]
struct Scrape {
    metrics: Arc<Metrics>,
    key: ApiKey,
}

async fn scrape(State(s): State<Scrape>, headers: HeaderMap) -> Response {
    if let Err(why) = s.key.verify(&headers) {
        return (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response();
    }
    // Rendering reads every collection's state: keep it off the async workers.
    let metrics = Arc::clone(&s.metrics);
    match tokio::task::spawn_blocking(move || metrics.render()).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering the metrics failed: {e}\n"),
        )
            .into_response(),
    }
}
