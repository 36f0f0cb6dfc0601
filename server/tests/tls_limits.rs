//! TLS from PEM files, the TOML config file, and oversized messages, against the
//! real `octet-server` process.

mod common;

use common::SERVER;

use common::{Key, ServerProc, clients, config, point};
use octet_server::pb;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const DIM: usize = 16;

/// A self-signed certificate for `localhost`, written as PEM files.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let cert_pem = cert.cert.pem();
    let cert_path = dir.join("server.pem");
    let key_path = dir.join("server.key");
    std::fs::write(&cert_path, &cert_pem).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    (cert_path, key_path, cert_pem)
}

#[tokio::test]
async fn tls_from_pem_files_serves_and_plaintext_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, cert_pem) = self_signed(dir.path());
    let data = dir.path().join("data");
    let server = ServerProc::start(
        SERVER,
        &data,
        &[
            "--tls-cert",
            cert.to_str().expect("utf-8"),
            "--tls-key",
            key.to_str().expect("utf-8"),
        ],
    );
    let port = server.addr.rsplit(':').next().expect("port");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .expect("url")
        .tls_config(tls)
        .expect("client tls")
        .connect()
        .await
        .expect("TLS connect");
    let mut collections = pb::collections_client::CollectionsClient::new(channel);
    collections
        .create(pb::CreateCollectionRequest {
            name: "docs".into(),
            config: Some(config(DIM as u32)),
        })
        .await
        .expect("create over TLS");
    let listed = collections
        .list(pb::ListCollectionsRequest {})
        .await
        .expect("list over TLS")
        .into_inner();
    assert_eq!(listed.names, vec!["docs".to_string()]);

    // A plaintext HTTP/2 client cannot talk to the TLS port.
    let url = server.url();
    let plain = async move {
        let mut c = clients(&url, Key(None)).await;
        c.collections.list(pb::ListCollectionsRequest {}).await
    };
    let refused = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        // `clients` panics on connect failure; run it where a panic is an answer.
        tokio::spawn(plain).await
    })
    .await
    .expect("the plaintext attempt ends");
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a plaintext call succeeded against a TLS server"
    );
}

#[test]
fn bad_tls_files_stop_the_server_with_the_file_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, _key, _) = self_signed(dir.path());
    let not_pem = dir.path().join("junk.key");
    std::fs::write(&not_pem, b"not a key").expect("write");
    let cases: [(&[&str], &str); 3] = [
        (&["--tls-cert", cert.to_str().expect("utf-8")], "tls_key"),
        (
            &[
                "--tls-cert",
                cert.to_str().expect("utf-8"),
                "--tls-key",
                not_pem.to_str().expect("utf-8"),
            ],
            "junk.key",
        ),
        (
            &[
                "--tls-cert",
                cert.to_str().expect("utf-8"),
                "--tls-key",
                cert.to_str().expect("utf-8"),
            ],
            "server.pem",
        ),
    ];
    for (args, needle) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_octet-server"))
            .args(["--addr", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("data"))
            .args(args)
            .output()
            .expect("run octet-server");
        assert!(!out.status.success(), "{args:?} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn config_file_sets_limits_and_oversized_requests_are_resource_exhausted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = dir.path().join("octet.toml");
    std::fs::write(&toml, "max_message_mib = 1\nmax_concurrent = 64\n").expect("write");
    let server = ServerProc::start(
        SERVER,
        &dir.path().join("data"),
        &["--config", toml.to_str().expect("utf-8")],
    );
    let mut c = clients(&server.url(), Key(None)).await;
    c.collections
        .create(pb::CreateCollectionRequest {
            name: "docs".into(),
            config: Some(config(DIM as u32)),
        })
        .await
        .expect("create");
    // 1 MiB from the file: 20,000 points of 16 floats is well over it.
    let big = pb::UpsertRequest {
        collection: "docs".into(),
        points: (0..20_000).map(|i| point(i, DIM, "a")).collect(),
        no_wait: false,
    };
    let err = c.points.upsert(big.clone()).await.expect_err("too large");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("--max-message-mib"), "{err:?}");

    // In a stream: the first batch lands, the oversized second is refused.
    let small = pb::UpsertRequest {
        collection: "docs".into(),
        points: (100_000..100_010).map(|i| point(i, DIM, "a")).collect(),
        no_wait: false,
    };
    let err = c
        .points
        .upsert_stream(tokio_stream::iter(vec![small, big]))
        .await
        .expect_err("too large in a stream");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("batch 1"), "{err:?}");

    let count = c
        .points
        .count(pb::CountRequest {
            collection: "docs".into(),
            filter: None,
        })
        .await
        .expect("count")
        .into_inner();
    assert_eq!(
        count.count, 10,
        "only the stream's first, small batch is written"
    );

    // A small request still works on the same connection.
    c.points
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            points: vec![point(7, DIM, "a")],
            no_wait: false,
        })
        .await
        .expect("a small upsert");
}
