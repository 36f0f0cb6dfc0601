//! API keys on every `octet.v1` call, and durability across kill -9 and SIGTERM.

mod common;

use common::SERVER;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Clients, Key, ServerProc, clients, config, point};
use octet_server::pb;
use tonic::{Code, Status};

const DIM: usize = 16;

/// Calls every `octet.v1` RPC once; returns each one's result code.
async fn call_every_rpc(c: &mut Clients) -> Vec<(&'static str, Result<(), Status>)> {
    fn ok<T>(r: Result<T, Status>) -> Result<(), Status> {
        r.map(|_| ())
    }
    let up = || pb::UpsertRequest {
        collection: "docs".into(),
        points: vec![point(1, DIM, "a")],
        no_wait: false,
    };
    vec![
        (
            "Collections.Create",
            ok(c.collections
                .create(pb::CreateCollectionRequest {
                    name: "other".into(),
                    config: Some(config(DIM as u32)),
                })
                .await),
        ),
        (
            "Collections.Get",
            ok(c.collections
                .get(pb::GetCollectionRequest {
                    name: "docs".into(),
                })
                .await),
        ),
        (
            "Collections.List",
            ok(c.collections.list(pb::ListCollectionsRequest {}).await),
        ),
        ("Points.Upsert", ok(c.points.upsert(up()).await)),
        (
            "Points.UpsertStream",
            ok(c.points.upsert_stream(tokio_stream::iter(vec![up()])).await),
        ),
        (
            "Points.Get",
            ok(c.points
                .get(pb::GetPointsRequest {
                    collection: "docs".into(),
                    ids: vec![1],
                    ..Default::default()
                })
                .await),
        ),
        (
            "Points.Count",
            ok(c.points
                .count(pb::CountRequest {
                    collection: "docs".into(),
                    filter: None,
                })
                .await),
        ),
        (
            "Points.Scroll",
            ok(c.points
                .scroll(pb::ScrollRequest {
                    collection: "docs".into(),
                    ..Default::default()
                })
                .await),
        ),
        (
            "Search.Search",
            ok(c.search
                .search(pb::SearchRequest {
                    collection: "docs".into(),
                    vector: common::vector(1, DIM),
                    k: 1,
                    ..Default::default()
                })
                .await),
        ),
        (
            "Search.SearchBatch",
            ok(c.search
                .search_batch(pb::SearchBatchRequest {
                    collection: "docs".into(),
                    searches: vec![pb::SearchRequest {
                        vector: common::vector(1, DIM),
                        k: 1,
                        ..Default::default()
                    }],
                })
                .await),
        ),
        (
            "Admin.CreateSnapshot",
            ok(c.admin
                .create_snapshot(pb::CreateSnapshotRequest {
                    collection: "docs".into(),
                })
                .await),
        ),
        (
            "Admin.ListSnapshots",
            ok(c.admin
                .list_snapshots(pb::ListSnapshotsRequest::default())
                .await),
        ),
        ("Admin.Stats", ok(c.admin.stats(pb::StatsRequest {}).await)),
        (
            "Points.Delete",
            ok(c.points
                .delete(pb::DeletePointsRequest {
                    collection: "docs".into(),
                    ids: vec![1],
                    no_wait: false,
                })
                .await),
        ),
        (
            "Collections.Delete",
            ok(c.collections
                .delete(pb::DeleteCollectionRequest {
                    name: "other".into(),
                })
                .await),
        ),
    ]
}

#[tokio::test]
async fn api_key_is_required_on_every_rpc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start(SERVER, dir.path(), &["--api-key", "s3cret"]);
    let mut good = clients(
        &server.url(),
        Key(Some(("authorization", "Bearer s3cret".into()))),
    )
    .await;
    good.collections
        .create(pb::CreateCollectionRequest {
            name: "docs".into(),
            config: Some(config(DIM as u32)),
        })
        .await
        .expect("create with the key");

    for key in [
        Key(None),
        Key(Some(("api-key", "wrong".into()))),
        Key(Some(("authorization", "Bearer s3cre".into()))),
        Key(Some(("authorization", "s3cret".into()))),
    ] {
        let mut c = clients(&server.url(), key).await;
        let results = call_every_rpc(&mut c).await;
        assert_eq!(results.len(), 15);
        for (rpc, r) in results {
            let s = r.expect_err(rpc);
            assert_eq!(s.code(), Code::Unauthenticated, "{rpc}: {s:?}");
        }
    }
    // Nothing the refused calls asked for happened.
    let names = good
        .collections
        .list(pb::ListCollectionsRequest {})
        .await
        .expect("list")
        .into_inner()
        .names;
    assert_eq!(names, vec!["docs".to_string()]);

    // Both header forms pass on every RPC.
    for key in [
        Key(Some(("authorization", "Bearer s3cret".into()))),
        Key(Some(("api-key", "s3cret".into()))),
    ] {
        let mut c = clients(&server.url(), key).await;
        for (rpc, r) in call_every_rpc(&mut c).await {
            r.unwrap_or_else(|s| panic!("{rpc}: {s:?}"));
        }
    }
}

#[test]
fn non_loopback_without_key_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_octet-server"))
        .args(["--addr", "0.0.0.0:0", "--data"])
        .arg(dir.path())
        .env_remove("OCTET_API_KEY")
        .env_remove("OCTET_NO_AUTH")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--api-key"), "{err}");
}

#[tokio::test]
async fn kill_9_keeps_every_acknowledged_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start(SERVER, dir.path(), &[]);
    let mut c = clients(&server.url(), Key(None)).await;
    c.collections
        .create(pb::CreateCollectionRequest {
            name: "docs".into(),
            config: Some(config(DIM as u32)),
        })
        .await
        .expect("create");

    // Writers keep upserting small durable batches; the server is killed mid-stream.
    let acked = Arc::new(acks::AckLog::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let mut points = c.points.clone();
        let acked = Arc::clone(&acked);
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut b = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let ids: Vec<u64> = (0..8).map(|i| w * 1_000_000 + b * 8 + i).collect();
                let req = pb::UpsertRequest {
                    collection: "docs".into(),
                    points: ids.iter().map(|&id| point(id, DIM, "a")).collect(),
                    no_wait: false,
                };
                match points.upsert(req).await {
                    Ok(_) => acked.push(&ids),
                    Err(_) => break,
                }
                b += 1;
            }
        }));
    }
    while acked.len() < 400 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("writer");
    }
    let acked = acked.ids();
    assert!(acked.len() >= 400);

    let server = ServerProc::start(SERVER, dir.path(), &[]);
    let mut c = clients(&server.url(), Key(None)).await;
    let mut missing = 0;
    for chunk in acked.chunks(500) {
        let got = c
            .points
            .get(pb::GetPointsRequest {
                collection: "docs".into(),
                ids: chunk.to_vec(),
                with_payload: true,
                with_vector: false,
            })
            .await
            .expect("get")
            .into_inner()
            .points;
        missing += chunk.len() - got.len();
    }
    assert_eq!(missing, 0, "acknowledged points lost after kill -9");
}

#[tokio::test]
async fn sigterm_drains_and_syncs_unwaited_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start(SERVER, dir.path(), &[]);
    let mut c = clients(&server.url(), Key(None)).await;
    c.collections
        .create(pb::CreateCollectionRequest {
            name: "docs".into(),
            config: Some(config(DIM as u32)),
        })
        .await
        .expect("create");
    let w = c
        .points
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            points: (0..50).map(|i| point(i, DIM, "a")).collect(),
            no_wait: true,
        })
        .await
        .expect("upsert")
        .into_inner();
    assert!(!w.durable);
    drop(c);
    let status = server.terminate();
    assert!(status.success(), "{status:?}");

    let server = ServerProc::start(SERVER, dir.path(), &[]);
    let mut c = clients(&server.url(), Key(None)).await;
    let n = c
        .points
        .count(pb::CountRequest {
            collection: "docs".into(),
            filter: None,
        })
        .await
        .expect("count")
        .into_inner()
        .count;
    assert_eq!(n, 50);
}

/// The ids acknowledged so far, shared by the writer tasks.
mod acks {
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct AckLog(Mutex<Vec<u64>>);

    impl AckLog {
        pub fn push(&self, ids: &[u64]) {
            self.0.lock().expect("lock").extend_from_slice(ids);
        }
        pub fn len(&self) -> usize {
            self.0.lock().expect("lock").len()
        }
        pub fn ids(&self) -> Vec<u64> {
            self.0.lock().expect("lock").clone()
        }
    }
}
