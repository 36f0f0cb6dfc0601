//! End to end over loopback: a real `octet-server` process, real tonic clients.

mod common;

use common::SERVER;

use common::{Key, ServerProc, clients, config, point, tenant_filter, vector};
use octet_server::pb;
use tonic::Code;

const DIM: usize = 24;

fn no_key() -> Key {
    Key(None)
}

#[tokio::test]
async fn every_rpc_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start(SERVER, dir.path(), &[]);
    let mut c = clients(&server.url(), no_key()).await;

    let info = c
        .collections
        .create(pb::CreateCollectionRequest {
            name: "docs".into(),
            config: Some(config(DIM as u32)),
        })
        .await
        .expect("create")
        .into_inner();
    let cfg = info.config.expect("config");
    assert_eq!(cfg.dim, DIM as u32);
    assert_eq!(cfg.codec, "transform-auto");
    assert_eq!(cfg.rescore, "i8");
    let stats = info.stats.expect("stats");
    // Before the first seal: the most transform-auto may use, nothing fitted.
    assert_eq!(stats.bytes_per_vector, (DIM / 2) as u64);
    assert!((stats.compression_ratio - 8.0).abs() < 1e-9);
    assert_eq!(stats.fitted_codec, "");

    let names = c
        .collections
        .list(pb::ListCollectionsRequest {})
        .await
        .expect("list")
        .into_inner()
        .names;
    assert_eq!(names, vec!["docs".to_string()]);

    // Unary upsert of 100 points (two tenants), then a stream of 3 batches.
    let w = c
        .points
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            points: (0..100)
                .map(|i| point(i, DIM, if i % 2 == 0 { "acme" } else { "globex" }))
                .collect(),
            no_wait: false,
        })
        .await
        .expect("upsert")
        .into_inner();
    assert!(w.durable);
    assert_eq!(w.points, 100);
    let batches: Vec<pb::UpsertRequest> = (0..3)
        .map(|b| pb::UpsertRequest {
            collection: "docs".into(),
            points: (100 + b * 50..150 + b * 50)
                .map(|i| point(i, DIM, "acme"))
                .collect(),
            no_wait: b == 1,
        })
        .collect();
    let w = c
        .points
        .upsert_stream(tokio_stream::iter(batches))
        .await
        .expect("upsert stream")
        .into_inner();
    assert_eq!(w.points, 150);

    let got = c
        .points
        .get(pb::GetPointsRequest {
            collection: "docs".into(),
            ids: vec![3, 999_999, 120],
            with_payload: true,
            with_vector: true,
        })
        .await
        .expect("get")
        .into_inner()
        .points;
    assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), vec![3, 120]);
    let payload: serde_json::Value =
        serde_json::from_str(got[0].payload_json.as_deref().expect("payload")).expect("json");
    assert_eq!(payload["tenant"], "globex");
    assert_eq!(payload["n"], 3);
    assert_eq!(got[0].vector.len(), DIM);

    let count = |filter| pb::CountRequest {
        collection: "docs".into(),
        filter,
    };
    let all = c
        .points
        .count(count(None))
        .await
        .expect("count")
        .into_inner();
    assert_eq!(all.count, 250);
    let acme = c
        .points
        .count(count(Some(tenant_filter("acme"))))
        .await
        .expect("count acme")
        .into_inner();
    assert_eq!(acme.count, 200);

    // Scroll through every globex point in pages of 20.
    let mut offset = None;
    let mut seen = Vec::new();
    loop {
        let page = c
            .points
            .scroll(pb::ScrollRequest {
                collection: "docs".into(),
                offset,
                limit: 20,
                filter: Some(tenant_filter("globex")),
                with_payload: false,
                with_vector: false,
            })
            .await
            .expect("scroll")
            .into_inner();
        seen.extend(page.points.iter().map(|r| r.id));
        match page.next_offset {
            Some(n) => offset = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, (0..100).filter(|i| i % 2 == 1).collect::<Vec<u64>>());

    // The nearest point to a stored vector is itself, under either rescore setting.
    for no_rescore in [false, true] {
        let found = c
            .search
            .search(pb::SearchRequest {
                collection: "docs".into(),
                vector: vector(42, DIM),
                k: 5,
                filter: Some(tenant_filter("acme")),
                ef: 32,
                no_rescore,
                with_payload: true,
                with_vector: false,
            })
            .await
            .expect("search")
            .into_inner()
            .points;
        assert_eq!(found.len(), 5);
        assert_eq!(found[0].id, 42, "no_rescore={no_rescore}");
        for p in &found {
            let v: serde_json::Value =
                serde_json::from_str(p.payload_json.as_deref().expect("payload")).expect("json");
            assert_eq!(v["tenant"], "acme");
        }
    }
    let batch = c
        .search
        .search_batch(pb::SearchBatchRequest {
            collection: "docs".into(),
            searches: [7u64, 201]
                .iter()
                .map(|&id| pb::SearchRequest {
                    vector: vector(id, DIM),
                    k: 3,
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .expect("search batch")
        .into_inner()
        .results;
    assert_eq!(batch.len(), 2);
    assert_eq!(batch[0].points[0].id, 7);
    assert_eq!(batch[1].points[0].id, 201);

    let d = c
        .points
        .delete(pb::DeletePointsRequest {
            collection: "docs".into(),
            ids: vec![0, 1, 2],
            no_wait: false,
        })
        .await
        .expect("delete")
        .into_inner();
    assert!(d.durable);
    let all = c
        .points
        .count(count(None))
        .await
        .expect("count")
        .into_inner();
    assert_eq!(all.count, 247);

    let snap = c
        .admin
        .create_snapshot(pb::CreateSnapshotRequest {
            collection: "docs".into(),
        })
        .await
        .expect("snapshot")
        .into_inner();
    assert!(snap.bytes > 0);
    let listed = c
        .admin
        .list_snapshots(pb::ListSnapshotsRequest {
            collection: String::new(),
        })
        .await
        .expect("list snapshots")
        .into_inner()
        .snapshots;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, snap.name);
    let restored = c
        .admin
        .restore_snapshot(pb::RestoreSnapshotRequest {
            collection: "docs".into(),
            name: snap.name.clone(),
            target: "docs-copy".into(),
        })
        .await
        .expect("restore")
        .into_inner();
    assert_eq!(restored.stats.expect("stats").points, 247);

    let stats = c
        .admin
        .stats(pb::StatsRequest {})
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(stats.collections.len(), 2);
    assert_eq!(stats.total_points, 494);

    let got = c
        .collections
        .get(pb::GetCollectionRequest {
            name: "docs".into(),
        })
        .await
        .expect("get collection")
        .into_inner();
    let got = got.stats.expect("stats");
    assert_eq!(got.points, 247);
    if got.sealed_points > 0 {
        // 250 rows are too few to check the smaller size: the larger one is fitted.
        assert_eq!(got.fitted_codec, format!("transform{}", DIM / 2));
        assert_eq!(got.bytes_per_vector, (DIM / 2) as u64);
    }
    c.collections
        .delete(pb::DeleteCollectionRequest {
            name: "docs-copy".into(),
        })
        .await
        .expect("drop");
    let names = c
        .collections
        .list(pb::ListCollectionsRequest {})
        .await
        .expect("list")
        .into_inner()
        .names;
    assert_eq!(names, vec!["docs".to_string()]);
}

fn assert_status(r: Result<impl std::fmt::Debug, tonic::Status>, code: Code, needle: &str) {
    let s = r.expect_err("the call should fail");
    assert_eq!(s.code(), code, "{s:?}");
    assert!(
        s.message().contains(needle),
        "message {:?} lacks {needle:?}",
        s.message()
    );
}

#[tokio::test]
async fn bad_requests_get_precise_statuses_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start(SERVER, dir.path(), &[]);
    let mut c = clients(&server.url(), no_key()).await;
    let create = |name: &str, cfg| pb::CreateCollectionRequest {
        name: name.into(),
        config: Some(cfg),
    };
    c.collections
        .create(create("docs", config(DIM as u32)))
        .await
        .expect("create");
    let seed = pb::UpsertRequest {
        collection: "docs".into(),
        points: (0..10).map(|i| point(i, DIM, "acme")).collect(),
        no_wait: false,
    };
    c.points.upsert(seed).await.expect("seed");

    // Configuration and names.
    let mut bad = config(DIM as u32);
    bad.codec = "zz9".into();
    assert_status(
        c.collections.create(create("x", bad)).await,
        Code::InvalidArgument,
        "config.codec",
    );
    let mut bad = config(DIM as u32);
    bad.hnsw_m = 1000;
    assert_status(
        c.collections.create(create("x", bad)).await,
        Code::InvalidArgument,
        "hnsw m",
    );
    assert_status(
        c.collections.create(create("x", config(0))).await,
        Code::InvalidArgument,
        "config.dim",
    );
    assert_status(
        c.collections.create(create("a/b", config(4))).await,
        Code::InvalidArgument,
        "name",
    );
    assert_status(
        c.collections.create(create("docs", config(4))).await,
        Code::AlreadyExists,
        "docs",
    );
    assert_status(
        c.collections
            .get(pb::GetCollectionRequest {
                name: "nope".into(),
            })
            .await,
        Code::NotFound,
        "nope",
    );

    // Writes: each bad batch is rejected whole.
    let upsert = |points| pb::UpsertRequest {
        collection: "docs".into(),
        points,
        no_wait: false,
    };
    let mut short = point(100, DIM, "acme");
    short.vector.pop();
    assert_status(
        c.points
            .upsert(upsert(vec![point(101, DIM, "acme"), short]))
            .await,
        Code::InvalidArgument,
        "points[1].vector",
    );
    let mut nan = point(102, DIM, "acme");
    nan.vector[3] = f32::NAN;
    assert_status(
        c.points.upsert(upsert(vec![nan])).await,
        Code::InvalidArgument,
        "points[0].vector",
    );
    let mut inf = point(103, DIM, "acme");
    inf.vector[0] = f32::INFINITY;
    assert_status(
        c.points.upsert(upsert(vec![inf])).await,
        Code::InvalidArgument,
        "non-finite",
    );
    let mut not_object = point(104, DIM, "acme");
    not_object.payload_json = "[1, 2]".into();
    assert_status(
        c.points
            .upsert(upsert(vec![point(105, DIM, "acme"), not_object]))
            .await,
        Code::InvalidArgument,
        "points[1].payload_json",
    );
    assert_status(
        c.points.upsert(upsert(vec![])).await,
        Code::InvalidArgument,
        "empty batch",
    );
    assert_status(
        c.points
            .upsert(pb::UpsertRequest {
                collection: "nope".into(),
                points: vec![point(1, DIM, "a")],
                no_wait: false,
            })
            .await,
        Code::NotFound,
        "nope",
    );
    assert_status(
        c.points
            .delete(pb::DeletePointsRequest {
                collection: "docs".into(),
                ids: vec![],
                no_wait: false,
            })
            .await,
        Code::InvalidArgument,
        "ids",
    );

    // Searches and filters.
    let search = |vector, k, filter| pb::SearchRequest {
        collection: "docs".into(),
        vector,
        k,
        filter,
        ..Default::default()
    };
    assert_status(
        c.search.search(search(vector(1, DIM - 1), 3, None)).await,
        Code::InvalidArgument,
        "vector",
    );
    let mut v = vector(1, DIM);
    v[0] = f32::NAN;
    assert_status(
        c.search.search(search(v, 3, None)).await,
        Code::InvalidArgument,
        "vector",
    );
    assert_status(
        c.search.search(search(vector(1, DIM), 0, None)).await,
        Code::InvalidArgument,
        "k:",
    );
    let empty_condition = pb::Filter {
        must: vec![pb::Condition { condition: None }],
        ..Default::default()
    };
    assert_status(
        c.search
            .search(search(vector(1, DIM), 3, Some(empty_condition.clone())))
            .await,
        Code::InvalidArgument,
        "filter.must[0]",
    );
    let mut empty_key = tenant_filter("acme");
    if let Some(pb::condition::Condition::Match(m)) = &mut empty_key.must[0].condition {
        m.key.clear();
    }
    assert_status(
        c.points
            .count(pb::CountRequest {
                collection: "docs".into(),
                filter: Some(empty_key),
            })
            .await,
        Code::InvalidArgument,
        "filter",
    );
    assert_status(
        c.search
            .search_batch(pb::SearchBatchRequest {
                collection: "docs".into(),
                searches: vec![],
            })
            .await,
        Code::InvalidArgument,
        "searches: empty batch",
    );
    assert_status(
        c.search
            .search_batch(pb::SearchBatchRequest {
                collection: "docs".into(),
                searches: vec![
                    search(vector(1, DIM), 3, None),
                    search(vector(1, DIM + 1), 3, None),
                ],
            })
            .await,
        Code::InvalidArgument,
        "searches[1]",
    );
    assert_status(
        c.admin
            .restore_snapshot(pb::RestoreSnapshotRequest {
                collection: "docs".into(),
                name: "docs-1.snapshot".into(),
                target: "t".into(),
            })
            .await,
        Code::NotFound,
        "docs-1.snapshot",
    );
    assert_status(
        c.admin
            .restore_snapshot(pb::RestoreSnapshotRequest {
                collection: "docs".into(),
                name: "../../x".into(),
                target: "t".into(),
            })
            .await,
        Code::InvalidArgument,
        "name",
    );

    // Nothing above changed anything.
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
    assert_eq!(n, 10);
    let names = c
        .collections
        .list(pb::ListCollectionsRequest {})
        .await
        .expect("list")
        .into_inner()
        .names;
    assert_eq!(names, vec!["docs".to_string()]);
}

#[tokio::test]
async fn overload_is_resource_exhausted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start(SERVER, dir.path(), &["--max-concurrent", "1"]);
    let mut c = clients(&server.url(), no_key()).await;
    c.collections
        .create(pb::CreateCollectionRequest {
            name: "docs".into(),
            config: Some(config(DIM as u32)),
        })
        .await
        .expect("create");
    // An open upsert stream holds the only slot until it ends.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut streaming = c.points.clone();
    let held = tokio::spawn(async move {
        streaming
            .upsert_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tx.send(pb::UpsertRequest {
        collection: "docs".into(),
        points: vec![point(1, DIM, "a")],
        no_wait: false,
    })
    .await
    .expect("send");
    // Wait until the batch is applied, so the stream certainly holds the slot.
    let mut refused = None;
    for _ in 0..200 {
        match c.collections.list(pb::ListCollectionsRequest {}).await {
            Err(s) if s.code() == Code::ResourceExhausted => {
                refused = Some(s);
                break;
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
    let refused = refused.expect("a second request while the slot is held is refused");
    assert!(refused.message().contains("overloaded"), "{refused:?}");
    drop(tx);
    let done = held.await.expect("join").expect("stream ends well");
    assert_eq!(done.into_inner().points, 1);
    c.collections
        .list(pb::ListCollectionsRequest {})
        .await
        .expect("the slot is free again");
}

#[tokio::test]
async fn health_and_reflection_answer() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let dir = tempfile::tempdir().expect("tempdir");
    // Health and reflection stay open even when an API key is set.
    let server = ServerProc::start(SERVER, dir.path(), &["--api-key", "k1"]);
    let ch = common::channel(&server.url()).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    for service in ["", "octet.v1.Search", "octet.v1.Points"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service}");
    }
    let mut reflection = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("reflection")
        .into_inner();
    let first = responses
        .message()
        .await
        .expect("reflection reply")
        .expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
        panic!("unexpected reflection reply {first:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "octet.v1.Collections",
        "octet.v1.Points",
        "octet.v1.Search",
        "octet.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
}
