//! What an outside client found, as tests over a real server: collection and
//! snapshot names that try to leave the data directory, requests that do not
//! decode, repeated ids in one batch.

mod common;

use common::SERVER;

use common::{Clients, Key, ServerProc, clients, config, point};
use octet_server::pb;
use tonic::Code;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

const DIM: usize = 8;

/// Names a client sent to reach outside `<data>/snapshots/`; `dir` is an
/// absolute directory holding an `a.snapshot` file.
fn traversals(dir: &str) -> Vec<String> {
    vec![
        "bad/../bad".into(),
        "../snapshots/bad".into(),
        "../collections/docs".into(),
        "/etc/passwd".into(),
        dir.to_string(),
        "..".into(),
        ".hidden".into(),
    ]
}

/// Asserts INVALID_ARGUMENT naming `field`, for `what`.
fn assert_invalid<T: std::fmt::Debug>(r: Result<T, tonic::Status>, field: &str, what: &str) {
    let status = r.expect_err(what);
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    assert!(
        status.message().starts_with(&format!("{field}: ")),
        "{what}: message does not name `{field}`: {}",
        status.message()
    );
}

/// Every RPC that takes a collection name, with `name`.
async fn every_rpc_rejects(c: &mut Clients, name: &str) {
    let what = |rpc: &str| format!("{rpc}({name:?})");
    assert_invalid(
        c.collections
            .create(pb::CreateCollectionRequest {
                name: name.into(),
                config: Some(config(DIM as u32)),
            })
            .await,
        "name",
        &what("Create"),
    );
    assert_invalid(
        c.collections
            .get(pb::GetCollectionRequest { name: name.into() })
            .await,
        "name",
        &what("Get"),
    );
    assert_invalid(
        c.collections
            .delete(pb::DeleteCollectionRequest { name: name.into() })
            .await,
        "name",
        &what("Delete"),
    );
    let upsert = pb::UpsertRequest {
        collection: name.into(),
        points: vec![point(1, DIM, "t")],
        no_wait: false,
    };
    assert_invalid(
        c.points.upsert(upsert.clone()).await,
        "collection",
        &what("Upsert"),
    );
    let stream_err = c
        .points
        .upsert_stream(tokio_stream::iter(vec![upsert]))
        .await
        .expect_err("UpsertStream");
    assert_eq!(stream_err.code(), Code::InvalidArgument, "{stream_err:?}");
    assert_invalid(
        c.points
            .get(pb::GetPointsRequest {
                collection: name.into(),
                ids: vec![1],
                ..Default::default()
            })
            .await,
        "collection",
        &what("Points.Get"),
    );
    assert_invalid(
        c.points
            .delete(pb::DeletePointsRequest {
                collection: name.into(),
                ids: vec![1],
                no_wait: false,
            })
            .await,
        "collection",
        &what("Points.Delete"),
    );
    assert_invalid(
        c.points
            .count(pb::CountRequest {
                collection: name.into(),
                filter: None,
            })
            .await,
        "collection",
        &what("Count"),
    );
    assert_invalid(
        c.points
            .scroll(pb::ScrollRequest {
                collection: name.into(),
                ..Default::default()
            })
            .await,
        "collection",
        &what("Scroll"),
    );
    let search = pb::SearchRequest {
        collection: name.into(),
        vector: vec![0.5; DIM],
        k: 3,
        ..Default::default()
    };
    assert_invalid(
        c.search.search(search.clone()).await,
        "collection",
        &what("Search"),
    );
    assert_invalid(
        c.search
            .search_batch(pb::SearchBatchRequest {
                collection: name.into(),
                searches: vec![search],
            })
            .await,
        "collection",
        &what("SearchBatch"),
    );
    assert_invalid(
        c.admin
            .create_snapshot(pb::CreateSnapshotRequest {
                collection: name.into(),
            })
            .await,
        "collection",
        &what("CreateSnapshot"),
    );
    assert_invalid(
        c.admin
            .list_snapshots(pb::ListSnapshotsRequest {
                collection: name.into(),
            })
            .await,
        "collection",
        &what("ListSnapshots"),
    );
    assert_invalid(
        c.admin
            .restore_snapshot(pb::RestoreSnapshotRequest {
                collection: name.into(),
                name: "a.snapshot".into(),
                target: "fresh".into(),
            })
            .await,
        "collection",
        &what("RestoreSnapshot.collection"),
    );
    assert_invalid(
        c.admin
            .restore_snapshot(pb::RestoreSnapshotRequest {
                collection: "docs".into(),
                name: "a.snapshot".into(),
                target: name.into(),
            })
            .await,
        "target",
        &what("RestoreSnapshot.target"),
    );
}

#[tokio::test]
async fn names_that_leave_the_data_directory_are_invalid_on_every_rpc() {
    let data = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("a.snapshot"), b"not yours").expect("write");
    let server = ServerProc::start(SERVER, data.path(), &[]);
    let mut c = clients(&server.url(), Key(None)).await;
    common::create(&mut c, "docs", config(DIM as u32)).await;
    let snap = c
        .admin
        .create_snapshot(pb::CreateSnapshotRequest {
            collection: "docs".into(),
        })
        .await
        .expect("snapshot")
        .into_inner();

    let outside_dir = outside.path().to_string_lossy().into_owned();
    for name in traversals(&outside_dir) {
        every_rpc_rejects(&mut c, &name).await;
    }
    // Snapshot names are plain file names the server handed out.
    for bad in [
        "../docs/x.snapshot",
        "/tmp/a.snapshot",
        "a/b.snapshot",
        "..",
        "x.tar",
    ] {
        assert_invalid(
            c.admin
                .restore_snapshot(pb::RestoreSnapshotRequest {
                    collection: "docs".into(),
                    name: bad.into(),
                    target: "fresh".into(),
                })
                .await,
            "name",
            &format!("RestoreSnapshot.name {bad:?}"),
        );
    }

    // Unknown names are NOT_FOUND; a valid but unknown snapshot too.
    let nf = c
        .admin
        .list_snapshots(pb::ListSnapshotsRequest {
            collection: "nope".into(),
        })
        .await
        .expect_err("unknown collection");
    assert_eq!(nf.code(), Code::NotFound, "{nf:?}");
    let nf = c
        .admin
        .restore_snapshot(pb::RestoreSnapshotRequest {
            collection: "docs".into(),
            name: "docs-1.snapshot".into(),
            target: "fresh".into(),
        })
        .await
        .expect_err("unknown snapshot");
    assert_eq!(nf.code(), Code::NotFound, "{nf:?}");

    // The listing holds the one real snapshot, before and after a drop (a kept
    // snapshot is what restores a dropped collection).
    for dropped in [false, true] {
        let listed = c
            .admin
            .list_snapshots(pb::ListSnapshotsRequest {
                collection: "docs".into(),
            })
            .await
            .expect("list")
            .into_inner()
            .snapshots;
        let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec![snap.name.as_str()], "dropped: {dropped}");
        if !dropped {
            c.collections
                .delete(pb::DeleteCollectionRequest {
                    name: "docs".into(),
                })
                .await
                .expect("drop");
        }
    }
    let all = c
        .admin
        .list_snapshots(pb::ListSnapshotsRequest::default())
        .await
        .expect("list all")
        .into_inner()
        .snapshots;
    assert_eq!(all.len(), 1);
    c.admin
        .restore_snapshot(pb::RestoreSnapshotRequest {
            collection: "docs".into(),
            name: snap.name.clone(),
            target: "docs".into(),
        })
        .await
        .expect("restore the dropped collection");
    // Nothing outside the data directory was touched.
    let left: Vec<_> = std::fs::read_dir(outside.path())
        .expect("read")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("a.snapshot")]);
}

/// Sends request bodies as given, to hit the server's decoder.
#[derive(Debug, Clone, Default)]
struct RawCodec;

#[derive(Debug, Clone, Default)]
struct RawEncoder;

#[derive(Debug, Clone, Default)]
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

async fn raw_call(url: &str, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let channel = common::channel(url).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    grpc.unary(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// A filter nested `depth` levels deep (`must: [{filter: ...}]`).
fn nested_filter(depth: usize) -> pb::Filter {
    let mut f = pb::Filter::default();
    for _ in 0..depth {
        f = pb::Filter {
            must: vec![pb::Condition {
                condition: Some(pb::condition::Condition::Filter(f)),
            }],
            ..Default::default()
        };
    }
    f
}

#[tokio::test]
async fn undecodable_requests_are_invalid_argument() {
    use prost::Message;

    let data = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start(SERVER, data.path(), &[]);
    let url = server.url();
    let mut c = clients(&url, Key(None)).await;
    common::create(&mut c, "docs", config(DIM as u32)).await;

    // A valid upsert, then the same with one byte of its packed vector dropped.
    let good = pb::UpsertRequest {
        collection: "docs".into(),
        points: vec![point(1, DIM, "t")],
        no_wait: false,
    }
    .encode_to_vec();
    raw_call(&url, "/octet.v1.Points/Upsert", good.clone())
        .await
        .expect("the raw path works with a valid message");

    let point_bytes = point(1, DIM, "t").encode_to_vec();
    // Point: field 2 (vector) is the packed floats; shorten its length by one.
    let mut short_vector = point_bytes.clone();
    let at = short_vector
        .iter()
        .position(|&b| b == 0x12)
        .expect("vector field");
    short_vector[at + 1] -= 1;
    short_vector.remove(at + 2);
    let mut truncated_float = vec![0x0a, 4, b'd', b'o', b'c', b's', 0x12];
    truncated_float.push(short_vector.len() as u8);
    truncated_float.extend(short_vector);

    let cases: Vec<(&str, &'static str, Vec<u8>)> = vec![
        (
            "invalid UTF-8 in collection",
            "/octet.v1.Points/Upsert",
            vec![0x0a, 0x02, 0xff, 0xfe],
        ),
        (
            "garbage bytes",
            "/octet.v1.Search/Search",
            vec![0xff, 0xff, 0xff, 0xff, 0x0f],
        ),
        (
            "length past the end",
            "/octet.v1.Collections/Get",
            vec![0x0a, 0x40, b'd'],
        ),
        (
            "truncated packed float",
            "/octet.v1.Points/Upsert",
            truncated_float,
        ),
        (
            "filter nested past the recursion limit",
            "/octet.v1.Points/Count",
            pb::CountRequest {
                collection: "docs".into(),
                filter: Some(nested_filter(200)),
            }
            .encode_to_vec(),
        ),
    ];
    for (what, path, body) in cases {
        let status = raw_call(&url, path, body).await.expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().contains("does not decode"),
            "{what}: {}",
            status.message()
        );
    }
    // Nothing was written by the bad upserts.
    let n = common::count(&mut c, "docs").await;
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_repeated_id_is_stored_once_and_counted_once() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start(SERVER, data.path(), &[]);
    let mut c = clients(&server.url(), Key(None)).await;
    common::create(&mut c, "docs", config(DIM as u32)).await;
    let mut last = point(7, DIM, "last");
    last.vector = vec![0.25; DIM];
    let w = c
        .points
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            points: vec![point(7, DIM, "first"), point(8, DIM, "t"), last],
            no_wait: false,
        })
        .await
        .expect("upsert")
        .into_inner();
    assert_eq!(w.points, 2, "distinct ids stored");
    let got = c
        .points
        .get(pb::GetPointsRequest {
            collection: "docs".into(),
            ids: vec![7],
            with_payload: true,
            with_vector: false,
        })
        .await
        .expect("get")
        .into_inner()
        .points;
    assert_eq!(got.len(), 1);
    assert!(
        got[0]
            .payload_json
            .as_deref()
            .is_some_and(|p| p.contains("\"last\"")),
        "{:?}",
        got[0]
    );
    let w = c
        .points
        .delete(pb::DeletePointsRequest {
            collection: "docs".into(),
            ids: vec![8, 8, 8],
            no_wait: false,
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(w.points, 1);
    let n = common::count(&mut c, "docs").await;
    assert_eq!(n, 1);
}
