//! The HTTP side of a real server: the REST probes a Qdrant client makes
//! (`--http-addr`) and the Prometheus endpoint (`--metrics-addr`), scraped and
//! parsed as Prometheus would after real gRPC traffic.

mod common;

use common::SERVER;

use std::collections::{BTreeMap, BTreeSet};

use common::{Key, ServerProc, clients, config, create, http_get, point};
use octet_server::pb;

const DIM: usize = 8;
const KEY: &str = "m-key";

/// One sample line: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format strictly enough to catch a malformed
/// line: `# HELP`/`# TYPE` comments, then `name{k="v",...} value` samples whose
/// metric family was declared with a TYPE first.
fn parse(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "unknown type in {line:?}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE of {name} given twice"
            );
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value of {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").expect("k=\"v\"");
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (name.to_string(), labels)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(&name);
        assert!(types.contains_key(family), "{name} has no TYPE before it");
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    (types, samples)
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

/// Every histogram series: buckets never decrease and `+Inf` equals `_count`.
fn check_histograms(types: &BTreeMap<String, String>, samples: &[Sample]) {
    let mut series = BTreeSet::new();
    for (family, _) in types.iter().filter(|(_, t)| *t == "histogram") {
        let name = format!("{family}_bucket");
        for s in samples.iter().filter(|s| s.name == name) {
            let mut key = s.labels.clone();
            key.remove("le");
            series.insert((family.clone(), key));
        }
    }
    for (family, key) in series {
        let same = |s: &&Sample| {
            let mut k = s.labels.clone();
            k.remove("le");
            k == key
        };
        let buckets: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
            .filter(same)
            .collect();
        assert!(
            buckets.windows(2).all(|w| w[0].value <= w[1].value),
            "{family} {key:?}"
        );
        let inf = buckets.last().expect("buckets");
        assert_eq!(inf.labels.get("le").map(String::as_str), Some("+Inf"));
        let count = samples
            .iter()
            .filter(|s| s.name == format!("{family}_count"))
            .find(same)
            .expect("a _count");
        assert_eq!(inf.value, count.value, "{family} {key:?}");
    }
}

#[tokio::test]
async fn rest_probes_and_metrics_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, lines) = ServerProc::start_reading(
        SERVER,
        dir.path(),
        &[
            "--api-key",
            KEY,
            "--http-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        2,
    );
    let http = lines[0]
        .strip_prefix("http on ")
        .expect("http line")
        .to_string();
    let metrics = lines[1]
        .strip_prefix("metrics on ")
        .expect("metrics line")
        .to_string();

    // The REST probes: open, like grpc.health.v1.
    let (status, _, body) = http_get(&http, "/", &[]);
    assert_eq!(status, 200, "{body}");
    let root: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(root["version"], octet_server::QDRANT_API_VERSION);
    for probe in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(http_get(&http, probe, &[]).0, 200, "{probe}");
    }
    let (status, _, body) = http_get(&http, "/collections", &[("api-key", KEY)]);
    assert_eq!(status, 404);
    assert!(body.contains("over gRPC"), "{body}");

    // Traffic: successes, a NOT_FOUND, an UNAUTHENTICATED.
    let mut c = clients(&server.url(), Key(Some(("api-key", KEY.into())))).await;
    create(&mut c, "m", config(DIM as u32)).await;
    c.points
        .upsert(pb::UpsertRequest {
            collection: "m".into(),
            points: (0..100).map(|i| point(i, DIM, "acme")).collect(),
            no_wait: false,
        })
        .await
        .expect("upsert");
    let missing = c
        .points
        .count(pb::CountRequest {
            collection: "absent".into(),
            filter: None,
        })
        .await
        .expect_err("no such collection");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let mut anonymous = clients(&server.url(), Key(None)).await;
    let refused = anonymous
        .collections
        .list(pb::ListCollectionsRequest {})
        .await
        .expect_err("no key");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    // The endpoint wants the key; Prometheus sends it as a bearer token.
    let (status, _, _) = http_get(&metrics, "/metrics", &[]);
    assert_eq!(status, 401);
    let (status, head, text) = http_get(
        &metrics,
        "/metrics",
        &[("authorization", &format!("Bearer {KEY}"))],
    );
    assert_eq!(status, 200, "{text}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let (types, samples) = parse(&text);
    check_histograms(&types, &samples);

    let calls = |rpc: &str, code: &str| {
        find(
            &samples,
            "octet_rpc_requests_total",
            &[("rpc", rpc), ("code", code)],
        )
        .map_or(0.0, |s| s.value)
    };
    assert_eq!(calls("/octet.v1.Collections/Create", "OK"), 1.0, "{text}");
    assert_eq!(calls("/octet.v1.Points/Upsert", "OK"), 1.0, "{text}");
    assert_eq!(calls("/octet.v1.Points/Count", "NOT_FOUND"), 1.0, "{text}");
    assert_eq!(
        calls("/octet.v1.Collections/List", "UNAUTHENTICATED"),
        1.0,
        "{text}"
    );
    let upsert_latency = find(
        &samples,
        "octet_rpc_duration_seconds_count",
        &[("rpc", "/octet.v1.Points/Upsert"), ("code", "OK")],
    )
    .expect("upsert latency");
    assert_eq!(upsert_latency.value, 1.0);

    let points = find(&samples, "octet_collection_points", &[("collection", "m")]).expect("points");
    assert_eq!(points.value, 100.0);
    assert!(
        find(
            &samples,
            "octet_collection_segments",
            &[("collection", "m")]
        )
        .is_some()
    );
    assert!(find(&samples, "octet_seal_queue_depth", &[("collection", "m")]).is_some());
    for tier in ["codes", "rescore", "graph"] {
        assert!(
            find(
                &samples,
                "octet_collection_bytes",
                &[("collection", "m"), ("tier", tier)]
            )
            .is_some(),
            "{tier}"
        );
    }
    let fsyncs = find(
        &samples,
        "octet_wal_fsync_duration_seconds_count",
        &[("collection", "m")],
    )
    .expect("fsync histogram");
    assert!(fsyncs.value >= 1.0, "a durable upsert fsyncs: {text}");
    for family in [
        "octet_seal_duration_seconds",
        "octet_compaction_duration_seconds",
    ] {
        assert_eq!(types.get(family).map(String::as_str), Some("histogram"));
    }

    // 100 points over a seal threshold of 64: the worker seals a chunk; its
    // duration shows up once it is done.
    let mut sealed = 0.0;
    for _ in 0..100 {
        let (_, _, text) = http_get(&metrics, "/metrics", &[("api-key", KEY)]);
        let (_, samples) = parse(&text);
        sealed = find(
            &samples,
            "octet_seal_duration_seconds_count",
            &[("collection", "m")],
        )
        .map_or(0.0, |s| s.value);
        if sealed >= 1.0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(sealed >= 1.0, "no seal recorded");
}

#[test]
fn metrics_and_http_share_one_address_when_given_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = probe.local_addr().expect("address").to_string();
    drop(probe);
    let (_server, lines) = ServerProc::start_reading(
        SERVER,
        dir.path(),
        &["--http-addr", &addr, "--metrics-addr", &addr],
        2,
    );
    assert_eq!(
        lines,
        [format!("http on {addr}"), format!("metrics on {addr}")]
    );
    assert_eq!(http_get(&addr, "/", &[]).0, 200);
    let (status, _, text) = http_get(&addr, "/metrics", &[]);
    assert_eq!(status, 200, "no key configured: open");
    assert!(text.contains("octet_build_info"), "{text}");
}
