//! The `octet` client verbs driven as a user would: a real `octet serve` process on
//! a free loopback port, the real `octet` binary as the client, the committed
//! fixture of real MiniLM embeddings.

use std::path::Path;

use octet_quant::vecio::{read_fvecs, write_fvecs};
use octet_tests::data::fixture;
use octet_tests::{Cli, ServerProc, path_str, text};
use serde_json::Value;

const OCTET: &str = env!("CARGO_BIN_EXE_octet");

/// `octet serve` on 127.0.0.1:0 and an `octet` client pointed at it (through
/// OCTET_URL); the server is killed when dropped.
struct Server {
    _proc: ServerProc,
    cli: Cli,
}

impl Server {
    fn start(data: &Path, extra: &[&str]) -> Server {
        let proc = ServerProc::start(&[OCTET, "serve"], data, extra);
        Server {
            cli: Cli::new(OCTET).env("OCTET_URL", &proc.url()),
            _proc: proc,
        }
    }

    /// Runs `octet ARGS` and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.cli.ok(args)
    }

    /// Runs `octet ARGS`, expects a failure, returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        self.cli.fails(args)
    }

    fn points(&self, collection: &str) -> u64 {
        let info: Value =
            serde_json::from_str(&self.ok(&["collection", "info", collection, "--json"]))
                .expect("info json");
        info["stats"]["points"].as_u64().expect("points")
    }
}

/// Ids of the `k` best rows by dot product (the fixture's rows are unit vectors,
/// so this is cosine) among rows passing `keep`.
fn brute_force(
    base: &[f32],
    dim: usize,
    q: &[f32],
    k: usize,
    keep: impl Fn(usize) -> bool,
) -> Vec<u64> {
    let mut scored: Vec<(f32, u64)> = base
        .chunks_exact(dim)
        .enumerate()
        .filter(|(r, _)| keep(*r))
        .map(|(r, v)| (v.iter().zip(q).map(|(a, b)| a * b).sum::<f32>(), r as u64))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(k).map(|(_, id)| id).collect()
}

#[test]
fn collection_upsert_search_snapshot_drop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &[]);
    let base_path = fixture("minilm-base-1k.fvecs");
    let queries_path = fixture("minilm-queries-100.fvecs");

    let out = server.ok(&["collection", "create", "docs", "--dim", "384", "--m", "12"]);
    assert!(out.contains("created collection `docs`"), "{out}");
    let err = server.fails(&["collection", "create", "docs", "--dim", "384"]);
    assert!(err.starts_with("error: ALREADY_EXISTS: "), "{err}");
    let err = server.fails(&[
        "collection",
        "create",
        "bad",
        "--dim",
        "384",
        "--codec",
        "zz9",
    ]);
    assert!(
        err.starts_with("error: INVALID_ARGUMENT: config.codec"),
        "{err}"
    );
    assert_eq!(server.ok(&["collection", "list"]), "docs\n");

    // Payloads aligned by line: tenant t0/t1/t2 and the row number.
    let payloads = dir.path().join("payloads.jsonl");
    let lines: Vec<String> = (0..1000)
        .map(|r| format!(r#"{{"tenant":"t{}","n":{r}}}"#, r % 3))
        .collect();
    std::fs::write(&payloads, lines.join("\n") + "\n").expect("write payloads");
    let out = server.ok(&[
        "upsert",
        "docs",
        "--fvecs",
        path_str(&base_path),
        "--payloads",
        path_str(&payloads),
        "--batch",
        "128",
        "--quiet",
    ]);
    assert!(out.contains("upserted 1000 points into `docs`"), "{out}");
    assert!(out.contains("durable"), "{out}");

    let info: Value =
        serde_json::from_str(&server.ok(&["collection", "info", "docs", "--json"])).expect("json");
    assert_eq!(info["stats"]["points"], 1000);
    assert_eq!(info["config"]["dim"], 384);
    assert_eq!(info["config"]["hnsw_m"], 12);
    assert_eq!(info["config"]["metric"], "cosine");
    let table = server.ok(&["collection", "info", "docs"]);
    assert!(table.contains("bytes/vector"), "{table}");

    // A filtered search against brute force over the same rows (1000 points stay
    // in the growing segment, which is searched exactly).
    let base = read_fvecs(&base_path, None).expect("base");
    let queries = read_fvecs(&queries_path, None).expect("queries");
    let filter = r#"{"must": [{"key": "tenant", "match": "t1"}],
                     "must_not": [{"key": "n", "range": {"lt": 100}}]}"#;
    let out = server.ok(&[
        "search",
        "docs",
        "--query-fvecs",
        path_str(&queries_path),
        "--row",
        "3",
        "--k",
        "5",
        "--filter",
        filter,
        "--with-payload",
        "--json",
    ]);
    let hits: Value = serde_json::from_str(&out).expect("search json");
    let got: Vec<u64> = hits
        .as_array()
        .expect("array")
        .iter()
        .map(|h| h["id"].as_u64().expect("id"))
        .collect();
    let want = brute_force(&base.data, 384, queries.row(3), 5, |r| {
        r % 3 == 1 && r >= 100
    });
    assert_eq!(got, want);
    for h in hits.as_array().expect("array") {
        assert_eq!(h["payload"]["tenant"], "t1");
        assert!(h["payload"]["n"].as_u64().expect("n") >= 100);
        assert!(h["score"].as_f64().expect("score") > 0.0);
    }
    let table = server.ok(&[
        "search",
        "docs",
        "--query-fvecs",
        path_str(&queries_path),
        "--row",
        "3",
        "--k",
        "5",
        "--filter",
        filter,
        "--with-payload",
    ]);
    assert!(table.starts_with("rank"), "{table}");
    assert!(
        table.contains(&format!(" {} ", want[0])) && table.contains("\"t1\""),
        "{table}"
    );

    // Snapshots.
    let out = server.ok(&["snapshot", "create", "docs"]);
    let name = out
        .strip_prefix("snapshot ")
        .and_then(|s| s.split(' ').next())
        .expect("snapshot name")
        .to_string();
    let list = server.ok(&["snapshot", "list", "docs"]);
    assert!(list.contains(&name), "{list}");
    let out = server.ok(&["snapshot", "restore", "docs", &name, "--target", "docs2"]);
    assert!(out.contains("restored as `docs2`"), "{out}");
    assert_eq!(server.points("docs2"), 1000);
    let err = server.fails(&[
        "snapshot",
        "restore",
        "docs",
        "nope.snapshot",
        "--target",
        "d3",
    ]);
    assert!(err.starts_with("error: NOT_FOUND: "), "{err}");

    // Drop, then the collection is gone.
    assert!(
        server
            .ok(&["collection", "drop", "docs"])
            .contains("dropped")
    );
    assert_eq!(server.ok(&["collection", "list"]), "docs2\n");
    let err = server.fails(&["collection", "info", "docs"]);
    assert!(err.starts_with("error: NOT_FOUND: "), "{err}");
    assert!(err.contains("docs"), "{err}");
    let err = server.fails(&["search", "docs", "--vector", "[1, 2]"]);
    assert!(err.starts_with("error: NOT_FOUND: "), "{err}");
}

#[test]
fn jsonl_upsert_and_input_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &[]);
    server.ok(&[
        "collection",
        "create",
        "notes",
        "--dim",
        "4",
        "--metric",
        "dot",
    ]);

    let good = dir.path().join("good.jsonl");
    std::fs::write(
        &good,
        concat!(
            r#"{"id": 1, "vector": [1, 0, 0, 0], "payload": {"text": "apples", "tenant": "a"}}"#,
            "\n",
            r#"{"id": 2, "vector": [0.9, 0.1, 0, 0], "payload": {"text": "pears", "tenant": "b"}}"#,
            "\n",
            "\n",
            r#"{"id": 3, "vector": [0.5, 0.5, 0, 0]}"#,
            "\n",
        ),
    )
    .expect("write jsonl");
    let out = server.ok(&["upsert", "notes", "--jsonl", path_str(&good)]);
    assert!(out.contains("upserted 3 points"), "{out}");
    let table = server.ok(&[
        "search",
        "notes",
        "--vector",
        "[1, 0, 0, 0]",
        "--k",
        "2",
        "--with-payload",
        "--filter",
        r#"{"must": [{"key": "tenant", "match_any": ["a", "c"]}]}"#,
    ]);
    assert!(
        table.contains("apples") && !table.contains("pears"),
        "{table}"
    );
    let json: Value = serde_json::from_str(&server.ok(&[
        "search",
        "notes",
        "--vector",
        "[1, 0, 0, 0]",
        "--k",
        "3",
        "--json",
    ]))
    .expect("json");
    let ids: Vec<u64> = json
        .as_array()
        .expect("array")
        .iter()
        .map(|h| h["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);

    // A malformed line 3: named, and nothing written.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        concat!(
            r#"{"id": 10, "vector": [1, 0, 0, 0]}"#,
            "\n",
            r#"{"id": 11, "vector": [1, 0, 0, 0]}"#,
            "\n",
            r#"{"id": 12, "vector": [1, 0, 0"#,
            "\n",
        ),
    )
    .expect("write");
    let err = server.fails(&["upsert", "notes", "--jsonl", path_str(&bad)]);
    assert!(err.contains("bad.jsonl line 3:"), "{err}");
    let typo = dir.path().join("typo.jsonl");
    std::fs::write(&typo, r#"{"id": 10, "vectors": [1, 0, 0, 0]}"#).expect("write");
    let err = server.fails(&["upsert", "notes", "--jsonl", path_str(&typo)]);
    assert!(
        err.contains("typo.jsonl line 1:") && err.contains("vectors"),
        "{err}"
    );
    let short = dir.path().join("short.jsonl");
    std::fs::write(
        &short,
        concat!(
            r#"{"id": 10, "vector": [1, 0, 0, 0]}"#,
            "\n",
            r#"{"id": 11, "vector": [1, 0, 0]}"#
        ),
    )
    .expect("write");
    let err = server.fails(&["upsert", "notes", "--jsonl", path_str(&short)]);
    assert!(
        err.contains("short.jsonl line 2: vector has dimension 3, collection `notes` has 4"),
        "{err}"
    );
    assert_eq!(server.points("notes"), 3);

    // Wrong dimension from a file and from a query.
    let err = server.fails(&[
        "upsert",
        "notes",
        "--fvecs",
        path_str(&fixture("minilm-base-1k.fvecs")),
    ]);
    assert!(
        err.contains("dimension 384, collection `notes` has 4"),
        "{err}"
    );
    let err = server.fails(&["search", "notes", "--vector", "[1, 0, 0]"]);
    assert!(err.starts_with("error: INVALID_ARGUMENT: vector"), "{err}");
    let err = server.fails(&["search", "notes", "--vector", "[1, 0, 0, 0]", "--k", "0"]);
    assert!(err.starts_with("error: INVALID_ARGUMENT: k"), "{err}");
    let err = server.fails(&[
        "search",
        "notes",
        "--vector",
        "[1, 0, 0, 0]",
        "--filter",
        r#"{"must": [{"key": "tenant", "mach": "a"}]}"#,
    ]);
    assert!(
        err.contains("filter.must[0]: unknown field \"mach\""),
        "{err}"
    );

    // fvecs with payloads that do not line up with the rows.
    let fv = dir.path().join("four.fvecs");
    write_fvecs(&fv, 4, &[0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]).expect("write fvecs");
    let pl = dir.path().join("one.jsonl");
    std::fs::write(&pl, "{\"x\": 1}\n").expect("write");
    let err = server.fails(&[
        "upsert",
        "notes",
        "--fvecs",
        path_str(&fv),
        "--payloads",
        path_str(&pl),
    ]);
    assert!(err.contains("1 payload lines for 2 vector rows"), "{err}");
    std::fs::write(&pl, "{\"x\": 1}\n[2]\n").expect("write");
    let err = server.fails(&[
        "upsert",
        "notes",
        "--fvecs",
        path_str(&fv),
        "--payloads",
        path_str(&pl),
    ]);
    assert!(
        err.contains("one.jsonl line 2: payload is not a JSON object"),
        "{err}"
    );
    // Raw f32 input with ids from --start-id.
    let raw = dir.path().join("two.f32");
    let bytes: Vec<u8> = [0.0f32, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(&raw, bytes).expect("write raw");
    server.ok(&[
        "upsert",
        "notes",
        "--raw",
        path_str(&raw),
        "--dim",
        "4",
        "--start-id",
        "100",
    ]);
    let json: Value = serde_json::from_str(&server.ok(&[
        "search",
        "notes",
        "--vector",
        "[0, 0, 0, 1]",
        "--k",
        "1",
        "--json",
    ]))
    .expect("json");
    assert_eq!(json[0]["id"], 100);
    assert_eq!(server.points("notes"), 5);
}

#[test]
fn api_key_is_sent_as_bearer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &["--api-key", "s3cret"]);
    let err = server.fails(&["collection", "list"]);
    assert!(err.starts_with("error: UNAUTHENTICATED: "), "{err}");
    let err = server.fails(&["collection", "list", "--api-key", "wrong"]);
    assert!(err.starts_with("error: UNAUTHENTICATED: "), "{err}");
    assert_eq!(
        server.ok(&["collection", "list", "--api-key", "s3cret"]),
        ""
    );
}

#[test]
fn unreachable_server_is_an_error() {
    // A port nothing listens on: bind one, read it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let out = Cli::new(OCTET).run(&["collection", "list", "--addr", &format!("127.0.0.1:{port}")]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot connect to http://127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn bench_grpc_short_mixed_run_and_compare() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &[]);
    let base = fixture("minilm-base-1k.fvecs");
    let queries = fixture("minilm-queries-100.fvecs");
    server.ok(&["collection", "create", "b", "--dim", "384"]);
    server.ok(&["upsert", "b", "--fvecs", path_str(&base), "--quiet"]);

    let json = dir.path().join("load.json");
    let out = server.ok(&[
        "bench-grpc",
        "--collection",
        "b",
        "--clients",
        "2",
        "--duration",
        "2",
        "--search-fraction",
        "0.5",
        "--queries",
        path_str(&queries),
        "--json",
        path_str(&json),
    ]);
    assert!(out.contains("p99 ms"), "{out}");
    let r: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("json");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["clients"], 2);
    assert_eq!(r["connections"], "per-client");
    let searches = r["search"]["calls"].as_u64().expect("search calls");
    let upserts = r["upsert"]["calls"].as_u64().expect("upsert calls");
    assert!(searches > 0 && upserts > 0, "{r}");
    assert_eq!(r["calls"].as_u64(), Some(searches + upserts));
    assert_eq!(r["points_before"], 1000);
    assert_eq!(r["points_after"].as_u64(), Some(1000 + upserts));
    for kind in ["search", "upsert"] {
        let l = &r[kind]["latency_ms"];
        let (p50, p95, p99) = (
            l["p50"].as_f64().expect("p50"),
            l["p95"].as_f64().expect("p95"),
            l["p99"].as_f64().expect("p99"),
        );
        assert!(p50 > 0.0 && p50 <= p95 && p95 <= p99, "{kind}: {l}");
        assert!(r[kind]["calls_per_s"].as_f64().expect("rate") > 0.0);
    }

    // Batch search over one shared connection, queries sampled from the collection.
    let json = dir.path().join("batch.json");
    server.ok(&[
        "bench-grpc",
        "--collection",
        "b",
        "--clients",
        "2",
        "--duration",
        "1",
        "--search-fraction",
        "1",
        "--batch-size",
        "8",
        "--connections",
        "shared",
        "--json",
        path_str(&json),
    ]);
    let r: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("json");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["connections"], "shared");
    assert_eq!(r["upsert"]["calls"], 0);
    let calls = r["search"]["calls_per_s"].as_f64().expect("calls/s");
    let items = r["search"]["items_per_s"].as_f64().expect("queries/s");
    assert!(
        calls > 0.0 && (items - 8.0 * calls).abs() < 1e-6 * items,
        "{r}"
    );

    let err = server.fails(&["bench-grpc", "--collection", "nope", "--duration", "1"]);
    assert!(err.starts_with("error: NOT_FOUND: "), "{err}");

    // Compare mode: its own embedded server over its own data directory.
    let json = dir.path().join("compare.json");
    let out = server.ok(&[
        "bench-grpc",
        "--compare-in-process",
        "--base",
        path_str(&base),
        "--queries",
        path_str(&queries),
        "--rounds",
        "1",
        "--passes",
        "1",
        "--batch-size",
        "50",
        "--data",
        path_str(&dir.path().join("cmp")),
        "--json",
        path_str(&json),
    ]);
    assert!(
        out.contains("identical results on both sides: yes"),
        "{out}"
    );
    let r: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("json");
    assert_eq!(r["points"], 1000);
    assert_eq!(r["queries"], 100);
    assert_eq!(r["identical_results"], true);
    assert_eq!(r["collection"]["stats"]["segments"], 1, "{r}");
    assert!(r["ratio"].as_f64().expect("ratio") > 0.0);
    assert!(r["grpc_qps_median"].as_f64().expect("qps") > 0.0);
}
