//! The Python client and RAG example against a real server (needs grpcio and
//! grpcio-tools, which `.ci/run` installs; skipped with a message without them).

mod common;

use std::process::Command;

use common::{SERVER, ServerProc};
use octet_tests::{data, python};

#[test]
fn rag_example_runs_against_the_server() {
    if !python::require("rag_example_runs_against_the_server", "grpc, grpc_tools") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start(SERVER, dir.path(), &["--api-key", "py-key"]);
    let example = data::repo().join("clients/python/rag_example.py");
    let out = Command::new("python3")
        .arg(&example)
        .args(["--addr", &server.addr, "--api-key", "py-key"])
        .env("TMPDIR", dir.path())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let hits: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(hits.len(), 2, "{stdout}");
    assert!(hits.iter().all(|h| h.contains("[acme]")), "{stdout}");
    assert!(hits[0].contains("HNSW"), "{stdout}");

    // Without the key the example fails with UNAUTHENTICATED.
    let out = Command::new("python3")
        .arg(&example)
        .args(["--addr", &server.addr])
        .env_remove("OCTET_API_KEY")
        .env("TMPDIR", dir.path())
        .output()
        .expect("run python");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("UNAUTHENTICATED"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
