//! Prometheus metrics: a tower layer that counts and times every gRPC call by
//! method and status, and the text exposition of those and of each
//! collection's sizes and background work, served on `--metrics-addr` (see
//! [`crate::http`]).
//!
//! A call is timed from the request's arrival to the end of its response body,
//! and its status read where gRPC puts it: the headers of a trailers-only error
//! response, else the trailers. A body dropped before its end (the client went
//! away) counts as CANCELLED.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body as _, Frame};
use octet_store::{HistogramSnapshot, Store, telemetry::BUCKETS_SECS};
use tonic::codegen::Bytes;

/// Distinct `rpc` label values kept; calls to further paths count as `other`,
/// so a client inventing method names cannot grow the registry without bound.
const MAX_RPC_LABELS: usize = 256;
/// Longest method path kept as a label.
const MAX_RPC_LABEL_LEN: usize = 128;
/// Services whose methods are labelled by name.
const KNOWN_SERVICES: [&str; 4] = [
    "/octet.v1.",
    "/qdrant.",
    "/grpc.health.v1.",
    "/grpc.reflection.",
];

/// The registry: per (method, status) latency histograms, and the store whose
/// collections are described at each scrape.
#[derive(Debug)]
pub struct Metrics {
    store: Arc<Store>,
    rpcs: Mutex<Rpcs>,
}

#[derive(Debug, Default)]
struct Rpcs {
    names: BTreeSet<String>,
    by_call: BTreeMap<(String, &'static str), Arc<octet_store::Histogram>>,
}

impl Metrics {
    /// An empty registry over `store`.
    pub fn new(store: Arc<Store>) -> Metrics {
        Metrics {
            store,
            rpcs: Mutex::new(Rpcs::default()),
        }
    }

    /// The label a request path is counted under.
    fn rpc_label(&self, path: &str) -> String {
        let plausible = path.len() <= MAX_RPC_LABEL_LEN
            && KNOWN_SERVICES.iter().any(|s| path.starts_with(s))
            && path.matches('/').count() == 2
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._/".contains(&b));
        if !plausible {
            return "other".to_string();
        }
        let mut rpcs = self.rpcs.lock().unwrap_or_else(PoisonError::into_inner);
        if rpcs.names.contains(path) {
            return path.to_string();
        }
        if rpcs.names.len() >= MAX_RPC_LABELS {
            return "other".to_string();
        }
        rpcs.names.insert(path.to_string());
        path.to_string()
    }

    /// Records one finished call.
    fn record(&self, rpc: String, code: &'static str, started: Instant) {
        let h = {
            let mut rpcs = self.rpcs.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(rpcs.by_call.entry((rpc, code)).or_default())
        };
        h.observe(started.elapsed());
    }

    /// The Prometheus text exposition (format 0.0.4) of everything measured.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let calls: Vec<((String, &'static str), HistogramSnapshot)> = {
            let rpcs = self.rpcs.lock().unwrap_or_else(PoisonError::into_inner);
            rpcs.by_call
                .iter()
                .map(|(k, h)| (k.clone(), h.snapshot()))
                .collect()
        };
        header(
            &mut out,
            "octet_build_info",
            "gauge",
            "Constant 1, labelled with the server's version.",
        );
        let _ = writeln!(
            out,
            "octet_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        header(
            &mut out,
            "octet_rpc_requests_total",
            "counter",
            "gRPC calls finished, by method path and status code.",
        );
        for ((rpc, code), h) in &calls {
            let _ = writeln!(
                out,
                "octet_rpc_requests_total{{rpc=\"{}\",code=\"{code}\"}} {}",
                escape(rpc),
                h.count
            );
        }
        header(
            &mut out,
            "octet_rpc_duration_seconds",
            "histogram",
            "gRPC call latency, request arrival to the end of the response, by method and status.",
        );
        for ((rpc, code), h) in &calls {
            let labels = format!("rpc=\"{}\",code=\"{code}\"", escape(rpc));
            histogram(&mut out, "octet_rpc_duration_seconds", &labels, h);
        }

        let mut collections = Vec::new();
        for name in self.store.list() {
            // A collection dropped between list and lookup is simply not described.
            if let Ok(c) = self.store.collection(&name) {
                collections.push((escape(&name), c.info(), c.telemetry()));
            }
        }
        let gauges: [(&str, &str, Gauge); 3] = [
            ("octet_collection_points", "Live points.", |i| i.points),
            (
                "octet_collection_unsealed_points",
                "Points in the growing segment and frozen chunks, not yet sealed.",
                |i| i.growing_points,
            ),
            ("octet_collection_segments", "Sealed segments.", |i| {
                i.segments
            }),
        ];
        for (metric, help, value) in gauges {
            header(&mut out, metric, "gauge", help);
            for (name, info, _) in &collections {
                let _ = writeln!(out, "{metric}{{collection=\"{name}\"}} {}", value(info));
            }
        }
        header(
            &mut out,
            "octet_collection_bytes",
            "gauge",
            "Bytes of sealed segments by tier: compact codes (searched in RAM), rescore tier, graph.",
        );
        for (name, info, _) in &collections {
            for (tier, bytes) in [
                ("codes", info.code_bytes),
                ("rescore", info.rescore_bytes),
                ("graph", info.graph_bytes),
            ] {
                let _ = writeln!(
                    out,
                    "octet_collection_bytes{{collection=\"{name}\",tier=\"{tier}\"}} {bytes}"
                );
            }
        }
        header(
            &mut out,
            "octet_seal_queue_depth",
            "gauge",
            "Frozen chunks waiting to be sealed.",
        );
        for (name, _, t) in &collections {
            let _ = writeln!(
                out,
                "octet_seal_queue_depth{{collection=\"{name}\"}} {}",
                t.seal_queue
            );
        }
        let timings: [(&str, &str, Timing); 3] = [
            (
                "octet_wal_fsync_duration_seconds",
                "Each fdatasync of a collection's write-ahead log.",
                |t| &t.wal_fsync,
            ),
            (
                "octet_seal_duration_seconds",
                "Each sealed chunk: encode, graph build, write and install.",
                |t| &t.seal,
            ),
            (
                "octet_compaction_duration_seconds",
                "Each compaction or codec refit that rewrote segments.",
                |t| &t.compaction,
            ),
        ];
        for (metric, help, pick) in timings {
            header(&mut out, metric, "histogram", help);
            for (name, _, t) in &collections {
                histogram(&mut out, metric, &format!("collection=\"{name}\""), pick(t));
            }
        }
        out
    }
}

/// A per-collection gauge read from its info.
type Gauge = fn(&octet_store::CollectionInfo) -> usize;
/// A per-collection histogram read from its telemetry.
type Timing = fn(&octet_store::Telemetry) -> &HistogramSnapshot;

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    for (le, n) in BUCKETS_SECS.iter().zip(&h.cumulative) {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_secs);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The canonical name of a gRPC status code number.
fn code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// The `grpc-status` in a header map, if any.
fn grpc_status(headers: &http::HeaderMap) -> Option<&'static str> {
    let v = headers.get("grpc-status")?.to_str().ok()?;
    Some(code_name(v.trim().parse().ok()?))
}

/// Wraps the gRPC router so every call is recorded in a [`Metrics`]; a no-op
/// layer when metrics are off.
#[derive(Debug, Clone)]
pub struct MetricsLayer(pub Option<Arc<Metrics>>);

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metered<S>;
    fn layer(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service [`MetricsLayer`] makes.
#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

impl<S, B> tower::Service<http::Request<B>> for Metered<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some(metrics) = self.metrics.clone() else {
            return Box::pin(self.inner.call(req));
        };
        let started = Instant::now();
        let rpc = metrics.rpc_label(req.uri().path());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = match fut.await {
                Ok(resp) => resp,
                Err(e) => {
                    metrics.record(rpc, "UNKNOWN", started);
                    return Err(e);
                }
            };
            let in_headers = grpc_status(resp.headers());
            Ok(resp.map(|body| {
                tonic::body::Body::new(MeteredBody {
                    inner: body,
                    pending: Some(Pending {
                        metrics,
                        rpc,
                        started,
                        in_headers,
                    }),
                })
            }))
        })
    }
}

#[derive(Debug)]
struct Pending {
    metrics: Arc<Metrics>,
    rpc: String,
    started: Instant,
    /// The status of a trailers-only response.
    in_headers: Option<&'static str>,
}

/// A response body that records its call when its trailers pass, or when it
/// ends or is dropped without any.
#[derive(Debug)]
struct MeteredBody {
    inner: tonic::body::Body,
    pending: Option<Pending>,
}

impl MeteredBody {
    fn finish(&mut self, trailer_code: Option<&'static str>, otherwise: &'static str) {
        if let Some(p) = self.pending.take() {
            let code = trailer_code.or(p.in_headers).unwrap_or(otherwise);
            p.metrics.record(p.rpc, code, p.started);
        }
    }
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.finish(grpc_status(trailers), "UNKNOWN");
                }
            }
            Poll::Ready(Some(Err(status))) => {
                this.finish(Some(code_name(status.code() as i32)), "UNKNOWN")
            }
            Poll::Ready(None) => this.finish(None, "UNKNOWN"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        // A trailers-only response's body is never polled; a response whose
        // client went away is dropped half-sent.
        let otherwise = if self.inner.is_end_stream() {
            "UNKNOWN"
        } else {
            "CANCELLED"
        };
        self.finish(None, otherwise);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> (tempfile::TempDir, Metrics) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        (dir, Metrics::new(Arc::new(store)))
    }

    #[test]
    fn method_paths_outside_the_served_services_are_other() {
        let (_d, m) = metrics();
        assert_eq!(
            m.rpc_label("/qdrant.Points/Search"),
            "/qdrant.Points/Search"
        );
        assert_eq!(
            m.rpc_label("/octet.v1.Search/Search"),
            "/octet.v1.Search/Search"
        );
        assert_eq!(m.rpc_label("/evil/../x"), "other");
        assert_eq!(m.rpc_label("/qdrant.Points/a\"b"), "other");
        assert_eq!(m.rpc_label("/qdrant.Points/Search/extra"), "other");
        for i in 0..MAX_RPC_LABELS {
            m.rpc_label(&format!("/qdrant.Points/M{i}"));
        }
        assert_eq!(m.rpc_label("/qdrant.Points/OneTooMany"), "other");
        assert_eq!(
            m.rpc_label("/qdrant.Points/Search"),
            "/qdrant.Points/Search"
        );
    }

    #[test]
    fn codes_are_named_as_grpc_names_them() {
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(3), "INVALID_ARGUMENT");
        assert_eq!(code_name(16), "UNAUTHENTICATED");
        assert_eq!(code_name(17), "UNKNOWN");
        assert_eq!(code_name(-1), "UNKNOWN");
    }

    #[test]
    fn a_recorded_call_renders_as_a_counter_and_a_cumulative_histogram() {
        let (_d, m) = metrics();
        m.record("/qdrant.Points/Search".into(), "OK", Instant::now());
        m.record("/qdrant.Points/Search".into(), "OK", Instant::now());
        m.record("/qdrant.Points/Search".into(), "NOT_FOUND", Instant::now());
        let text = m.render();
        assert!(
            text.contains("octet_rpc_requests_total{rpc=\"/qdrant.Points/Search\",code=\"OK\"} 2"),
            "{text}"
        );
        assert!(text.contains(
            "octet_rpc_duration_seconds_bucket{rpc=\"/qdrant.Points/Search\",code=\"NOT_FOUND\",le=\"+Inf\"} 1"
        ));
        assert!(text.contains("# TYPE octet_rpc_duration_seconds histogram"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
