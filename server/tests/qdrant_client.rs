//! The Qdrant-compatible API against the real `qdrant-client` and
//! `langchain-qdrant` (PyPI, pinned in `.ci/run`) and a real server: the wire
//! contract compared descriptor by descriptor, a RAG service's calls end to end
//! on ../shared/data, and LangChain's `QdrantVectorStore`. Skipped with a message
//! when python3 cannot import the packages or the data is absent.

mod common;

use std::process::Command;

use common::{SERVER, ServerProc};
use octet_tests::data::{repo, shared_data};
use octet_tests::python::{require, run};

/// Starts a server with `key` and the REST probes, runs
/// `clients/python/SCRIPT --addr --http --api-key --data DATA ARGS` against it and
/// asserts it passed; returns the server, still running, and the output.
fn run_client(
    dir: &std::path::Path,
    script: &str,
    key: &str,
    data: &std::path::Path,
    args: &[&str],
) -> (ServerProc, String) {
    let (server, lines) = ServerProc::start_reading(
        SERVER,
        dir,
        &["--api-key", key, "--http-addr", "127.0.0.1:0"],
        1,
    );
    let http = lines[0].strip_prefix("http on ").expect("http line");
    let (ok, text) = run(Command::new("python3")
        .arg(repo().join("clients/python").join(script))
        .args(["--addr", &server.addr, "--http", http, "--api-key", key])
        .args(args)
        .arg("--data")
        .arg(data)
        .env("TMPDIR", dir));
    println!("{text}");
    assert!(ok, "{text}");
    (server, text)
}

#[test]
fn qdrant_descriptors_match_qdrant_client() {
    if !require("qdrant_descriptors_match_qdrant_client", "qdrant_client") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let fds = dir.path().join("octet_descriptor.bin");
    std::fs::write(&fds, octet_server::pb::FILE_DESCRIPTOR_SET).expect("write descriptors");
    let (ok, text) = run(Command::new("python3")
        .arg(repo().join("server/tests/qdrant_descriptors.py"))
        .arg(&fds));
    println!("{text}");
    assert!(ok, "{text}");
    assert!(text.contains("descriptors match"), "{text}");
}

#[test]
fn qdrant_client_flow_against_the_server() {
    let test = "qdrant_client_flow_against_the_server";
    if !require(test, "qdrant_client, grpc_tools, numpy") {
        return;
    }
    let Some(data) = shared_data(test, &["base.fvecs", "passages.jsonl"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, _) = run_client(
        dir.path(),
        "qdrant_flow.py",
        "q-key",
        &data,
        &["--queries", "100"],
    );

    // qdrant-client sends the key as `api-key` metadata; a wrong one is refused.
    let (host, port) = server.addr.rsplit_once(':').expect("host:port");
    let script = format!(
        "from qdrant_client import QdrantClient\n\
         c = QdrantClient(host='{host}', grpc_port={port}, prefer_grpc=True, api_key='wrong', \
         https=False, check_compatibility=False)\n\
         c.get_collections()\n"
    );
    let (ok, text) = run(Command::new("python3").args(["-c", &script]));
    assert!(!ok && text.contains("UNAUTHENTICATED"), "{text}");
}

#[test]
fn langchain_vector_store_against_the_server() {
    let test = "langchain_vector_store_against_the_server";
    if !require(test, "langchain_qdrant, langchain_core") {
        return;
    }
    let Some(data) = shared_data(test, &["passages.jsonl"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, text) = run_client(dir.path(), "langchain_flow.py", "lc-key", &data, &[]);
    assert!(text.contains("langchain flow passed"), "{text}");
}
