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
    let (server, lines) = ServerProc::start_reading(
        SERVER,
        dir.path(),
        &["--api-key", "q-key", "--http-addr", "127.0.0.1:0"],
        1,
    );
    let http = lines[0].strip_prefix("http on ").expect("http line");
    let (ok, text) = run(Command::new("python3")
        .arg(repo().join("clients/python/qdrant_flow.py"))
        .args([
            "--addr",
            &server.addr,
            "--http",
            http,
            "--api-key",
            "q-key",
            "--queries",
            "100",
        ])
        .arg("--data")
        .arg(&data)
        .env("TMPDIR", dir.path()));
    println!("{text}");
    assert!(ok, "{text}");

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
    let (server, lines) = ServerProc::start_reading(
        SERVER,
        dir.path(),
        &["--api-key", "lc-key", "--http-addr", "127.0.0.1:0"],
        1,
    );
    let http = lines[0].strip_prefix("http on ").expect("http line");
    let (ok, text) = run(Command::new("python3")
        .arg(repo().join("clients/python/langchain_flow.py"))
        .args([
            "--addr",
            &server.addr,
            "--http",
            http,
            "--api-key",
            "lc-key",
        ])
        .arg("--data")
        .arg(&data));
    println!("{text}");
    assert!(ok, "{text}");
    assert!(text.contains("langchain flow passed"), "{text}");
}
