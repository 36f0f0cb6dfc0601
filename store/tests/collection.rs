//! Collections against a brute-force reference: CRUD, whole-batch validation,
//! search across growing and sealed segments, filters, deletes, upsert-replace,
//! compaction, snapshots, reopening and concurrent use.

mod common;

use std::sync::Arc;

use common::{Model, point, recall, small_config, vector_for};
use octet_quant::{ElementSpec, Metric};
use octet_store::{Condition, Filter, MatchValue, Point, Range, SearchRequest, Store, StoreError};

fn filters() -> Vec<Filter> {
    vec![
        Filter::must(vec![Condition::keyword("tenant", "t1")]),
        // An id condition, across growing and sealed segments, alone and mixed.
        Filter::must(vec![Condition::HasId {
            ids: (0..400).step_by(7).collect(),
        }]),
        Filter {
            should: vec![
                Condition::HasId {
                    ids: vec![3, 5, 8, 13, 21, 34, 55, 89, 144, 233],
                },
                Condition::keyword("tenant", "t3"),
            ],
            ..Filter::default()
        },
        Filter::must(vec![Condition::range(
            "n",
            Range {
                gte: Some(10.0),
                lt: Some(14.0),
                ..Range::default()
            },
        )]),
        Filter {
            should: vec![
                Condition::keyword("tags", "g0"),
                Condition::keyword("tags", "h3"),
            ],
            must_not: vec![Condition::Match {
                key: "meta.even".into(),
                value: MatchValue::Bool(true),
            }],
            ..Filter::default()
        },
        Filter::must(vec![Condition::MatchAny {
            key: "tenant".into(),
            any: vec![
                MatchValue::Keyword("t2".into()),
                MatchValue::Keyword("t4".into()),
            ],
        }]),
    ]
}

/// Checks searches, filtered searches, counts and a full scroll against the model.
fn check_against_model(
    c: &octet_store::Collection,
    model: &Model,
    metric: Metric,
    dim: usize,
    seed: u64,
) {
    let (all, next) = c
        .scroll(None, usize::MAX / 2, None, true, false)
        .expect("scroll");
    assert_eq!(next, None);
    let ids: Vec<u64> = all.iter().map(|r| r.id).collect();
    assert_eq!(ids, model.points.keys().copied().collect::<Vec<_>>());
    assert_eq!(c.count(None).expect("count"), model.points.len());
    for r in &all {
        assert_eq!(
            r.payload.as_ref().map(|p| p.parse().expect("payload JSON")),
            Some(model.points[&r.id].1.clone()),
            "payload of {}",
            r.id
        );
    }
    let mut total = 0.0;
    let mut runs = 0;
    let mut filters: Vec<Option<Filter>> = filters().into_iter().map(Some).collect();
    filters.push(None);
    for qi in 0..12 {
        let q = vector_for(1_000_000 + qi, dim, seed);
        for f in &filters {
            let mut req = SearchRequest::new(q.clone(), 10).ef(128);
            req.filter = f.clone();
            let got = c.search(&req).expect("search");
            let exact = model.search(&q, metric, 10, f.as_ref());
            assert!(got.len() <= 10);
            assert_eq!(got.len(), exact.len(), "result count with filter {f:?}");
            for w in got.windows(2) {
                assert!(w[0].score >= w[1].score, "results not sorted");
            }
            for g in &got {
                let (v, p) = model
                    .points
                    .get(&g.id)
                    .unwrap_or_else(|| panic!("returned a deleted or unknown id {}", g.id));
                assert!(
                    f.as_ref().is_none_or(|f| f.matches(g.id, p)),
                    "id {} fails the filter",
                    g.id
                );
                let truth = metric.exact(&metric.prepare_query(&q), v);
                assert!(
                    (truth - g.score).abs() < 1e-3 * (1.0 + truth.abs()),
                    "score {} vs exact {truth}",
                    g.score
                );
            }
            let got_ids: Vec<u64> = got.iter().map(|g| g.id).collect();
            total += recall(&got_ids, &exact);
            runs += 1;
        }
        for f in filters.iter().flatten() {
            let expect = model
                .points
                .iter()
                .filter(|(id, (_, p))| f.matches(**id, p))
                .count();
            assert_eq!(c.count(Some(f)).expect("count"), expect);
        }
    }
    let mean = total / runs as f64;
    assert!(mean >= 0.95, "mean recall {mean}");
}

#[test]
fn bad_batches_change_nothing_and_crud_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let dim = 13;
    let c = store
        .create_collection("docs", small_config(dim, Metric::Cosine, None))
        .expect("create");
    let good: Vec<Point> = (0..50).map(|i| point(i, dim, 1)).collect();
    c.upsert(&good, true).expect("upsert");
    let mut bad = vec![point(100, dim, 1), point(101, dim, 1)];
    bad[1].vector[5] = f32::NAN;
    assert!(matches!(
        c.upsert(&bad, true),
        Err(StoreError::NonFinite {
            index: 1,
            id: 101,
            ..
        })
    ));
    bad[1].vector = vec![1.0; dim + 1];
    assert!(matches!(
        c.upsert(&bad, true),
        Err(StoreError::DimMismatch { index: 1, .. })
    ));
    bad[1].vector = vec![f32::INFINITY; dim];
    assert!(c.upsert(&bad, false).is_err());
    assert_eq!(c.count(None).expect("count"), 50);
    assert!(c.get(&[100], true, true).expect("get").is_empty());

    let rec = c.get(&[7, 999, 3], true, true).expect("get");
    assert_eq!(rec.iter().map(|r| r.id).collect::<Vec<_>>(), vec![7, 3]);
    let v = rec[0].vector.as_ref().expect("vector");
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(
        (norm - 1.0).abs() < 1e-5,
        "cosine vectors are stored unit length"
    );

    // Upsert replaces payload and vector.
    let mut replaced = point(7, dim, 99);
    replaced
        .payload
        .insert("new".into(), serde_json::json!(true));
    c.upsert(std::slice::from_ref(&replaced), true)
        .expect("replace");
    let rec = c.get(&[7], true, false).expect("get");
    assert_eq!(
        rec[0]
            .payload
            .as_ref()
            .map(|p| p.parse().expect("payload JSON")),
        Some(replaced.payload.clone())
    );
    assert_eq!(c.count(None).expect("count"), 50);
    let hit = c
        .search(&SearchRequest::new(replaced.vector.clone(), 1))
        .expect("search");
    assert_eq!(hit[0].id, 7);

    c.delete(&[7, 8, 12345], true).expect("delete");
    assert_eq!(c.count(None).expect("count"), 48);
    let (page, next) = c.scroll(Some(5), 4, None, false, false).expect("scroll");
    assert_eq!(
        page.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![5, 6, 9, 10]
    );
    assert_eq!(next, Some(11));
    let q = SearchRequest::new(vec![0.0; dim - 1], 3);
    assert!(matches!(c.search(&q), Err(StoreError::InvalidQuery { .. })));
}

#[test]
fn collections_are_validated_listed_and_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let mut config = small_config(8, Metric::L2, None);
    config.hnsw.m = 300;
    let err = store
        .create_collection("a", config)
        .expect_err("m too large");
    assert!(err.to_string().contains("hnsw m"), "{err}");
    assert!(matches!(
        store.create_collection("../x", small_config(8, Metric::L2, None)),
        Err(StoreError::InvalidName { .. })
    ));
    store
        .create_collection("a", small_config(8, Metric::L2, None))
        .expect("a");
    store
        .create_collection("b", small_config(4, Metric::Dot, None))
        .expect("b");
    assert!(matches!(
        store.create_collection("a", small_config(8, Metric::L2, None)),
        Err(StoreError::CollectionExists { .. })
    ));
    assert_eq!(store.list(), vec!["a".to_string(), "b".to_string()]);
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::Locked { .. })
    ));
    let b = store.collection("b").expect("b");
    store.drop_collection("b").expect("drop");
    assert!(
        b.upsert(&[Point::new(1, vec![0.0; 4])], false).is_err(),
        "a dropped collection refuses writes"
    );
    assert!(matches!(
        store.collection("b"),
        Err(StoreError::CollectionNotFound { .. })
    ));
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(store.list(), vec!["a".to_string()]);
}

fn build(c: &octet_store::Collection, model: &mut Model, metric: Metric, dim: usize, seed: u64) {
    let mut id = 0u64;
    for round in 0..4 {
        let batch: Vec<Point> = (0..180)
            .map(|_| {
                id += 1;
                point(id, dim, seed)
            })
            .collect();
        c.upsert(&batch, round % 2 == 0).expect("upsert");
        model.upsert(&batch, metric);
        if round == 1 {
            c.seal().expect("seal");
        }
    }
    // Replace some points that are sealed by now, with new vectors and payloads.
    let replace: Vec<Point> = (1..=100)
        .step_by(3)
        .map(|i| point(i, dim, seed + 7))
        .collect();
    c.upsert(&replace, false).expect("replace");
    model.upsert(&replace, metric);
    let doomed: Vec<u64> = (50..400).step_by(5).collect();
    c.delete(&doomed, false).expect("delete");
    model.delete(&doomed);
}

#[test]
fn search_filters_deletes_and_replacements_match_brute_force() {
    for (i, (metric, rescore)) in [
        (Metric::Cosine, None),
        (Metric::L2, Some(ElementSpec::F32)),
        (Metric::Dot, Some(ElementSpec::F32)),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let dim = 11;
        let c = store
            .create_collection("c", small_config(dim, metric, rescore))
            .expect("create");
        let mut model = Model::default();
        build(&c, &mut model, metric, dim, i as u64);
        check_against_model(&c, &model, metric, dim, i as u64);
        c.seal().expect("seal");
        assert!(c.info().segments >= 2);
        check_against_model(&c, &model, metric, dim, i as u64);
        drop(c);
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        let c = store.collection("c").expect("c");
        check_against_model(&c, &model, metric, dim, i as u64);
    }
}

#[test]
fn compaction_drops_deleted_points_while_writes_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (dim, metric) = (9, Metric::L2);
    let c = store
        .create_collection("c", small_config(dim, metric, Some(ElementSpec::F32)))
        .expect("create");
    let mut model = Model::default();
    build(&c, &mut model, metric, dim, 5);
    c.seal().expect("seal");
    while c.maintain_once().expect("maintain") {}
    let before = c.info();
    let writer = {
        let c = c.clone();
        std::thread::spawn(move || {
            let batch: Vec<Point> = (5000..5100).map(|i| point(i, dim, 5)).collect();
            for chunk in batch.chunks(10) {
                c.upsert(chunk, false).expect("upsert during compaction");
            }
            c.delete(&[5000, 5001, 3, 4], false)
                .expect("delete during compaction");
            batch
        })
    };
    c.compact_all().expect("compact");
    let batch = writer.join().expect("writer");
    model.upsert(&batch, metric);
    model.delete(&[5000, 5001, 3, 4]);
    let after = c.info();
    assert_eq!(after.points, model.points.len());
    assert!(after.segments <= 1 + usize::from(before.segments > 1 && after.growing_points == 0));
    // Tombstones that existed before compaction (the build deletes 70 points;
    // the background worker may already have compacted some) are gone; only the
    // writer's four deletes, racing with compaction, may still be tombstones.
    // (Sealed point counts alone can grow: the worker may seal the writer's
    // points meanwhile.)
    let deleted = |i: &octet_store::CollectionInfo| -> usize {
        i.segment_points.iter().map(|&(_, _, d)| d).sum()
    };
    assert!(
        deleted(&after) <= 4,
        "compaction removed deleted points: {:?}",
        after.segment_points
    );
    check_against_model(&c, &model, metric, dim, 5);
    drop(c);
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    check_against_model(&store.collection("c").expect("c"), &model, metric, dim, 5);
}

#[test]
fn snapshots_restore_elsewhere_and_detect_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (dim, metric) = (7, Metric::Cosine);
    let c = store
        .create_collection("src", small_config(dim, metric, Some(ElementSpec::F32)))
        .expect("create");
    let mut model = Model::default();
    build(&c, &mut model, metric, dim, 3);
    let snap = dir.path().join("src.snapshot");
    let info = store.snapshot("src", &snap).expect("snapshot");
    assert!(info.files >= 3 && info.bytes > 0);
    // Writes after the snapshot are not in it.
    c.upsert(&[point(77_777, dim, 3)], true)
        .expect("later write");
    c.delete(&[1, 2], true).expect("later delete");

    let other = tempfile::tempdir().expect("tempdir");
    let store2 = Store::open(other.path()).expect("open other");
    let restored = store2.restore_snapshot(&snap, "copy").expect("restore");
    check_against_model(&restored, &model, metric, dim, 3);
    assert!(matches!(
        store2.restore_snapshot(&snap, "copy"),
        Err(StoreError::CollectionExists { .. })
    ));

    let mut bytes = std::fs::read(&snap).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let bad = dir.path().join("bad.snapshot");
    std::fs::write(&bad, &bytes).expect("write");
    assert!(matches!(
        store2.restore_snapshot(&bad, "broken"),
        Err(StoreError::Corrupt { .. })
    ));
    std::fs::write(&bad, &bytes[..bytes.len() - 3]).expect("write");
    assert!(store2.restore_snapshot(&bad, "broken").is_err());
    assert_eq!(store2.list(), vec!["copy".to_string()]);
}

#[test]
fn readers_and_a_writer_share_a_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(dir.path()).expect("open"));
    let dim = 10;
    store
        .create_collection("c", small_config(dim, Metric::Dot, Some(ElementSpec::F32)))
        .expect("create");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            std::thread::spawn(move || {
                let c = store.collection("c").expect("c");
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let q = vector_for(n + 10_000 * r, dim, 1);
                    let res = c
                        .search(&SearchRequest::new(q, 5).with_payload())
                        .expect("search");
                    assert!(res.windows(2).all(|w| w[0].score >= w[1].score));
                    assert!(res.iter().all(|p| p.payload.is_some()));
                    n += 1;
                }
                n
            })
        })
        .collect();
    let c = store.collection("c").expect("c");
    for b in 0..30u64 {
        let batch: Vec<Point> = (0..25).map(|i| point(b * 25 + i, dim, 1)).collect();
        c.upsert(&batch, b % 3 == 0).expect("upsert");
        if b % 10 == 9 {
            c.delete(&[b * 25], false).expect("delete");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().expect("reader") > 0);
    }
    assert_eq!(c.count(None).expect("count"), 750 - 3);
}

#[test]
fn the_default_codecs_fit_on_the_first_seal_and_are_reused() {
    // Transform codec at dim/2 bytes with an i8 rescore tier, on clustered data.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (dim, metric) = (24, Metric::Cosine);
    let mut config = octet_store::CollectionConfig::new(dim, metric);
    config.segments.seal_threshold = 10_000;
    // No background merging: the test counts segments.
    config.segments.merge_below = 0;
    let c = store.create_collection("c", config).expect("create");
    let mut model = Model::default();
    let mut r = common::rng(11);
    let centres: Vec<Vec<f32>> = (0..8).map(|i| vector_for(i, dim, 77)).collect();
    let make = |id: u64, r: &mut rand_chacha::ChaCha8Rng| {
        use rand::Rng;
        let c = &centres[(id % 8) as usize];
        let v: Vec<f32> = c.iter().map(|x| x + r.random_range(-0.3f32..0.3)).collect();
        Point::with_payload(id, v, common::payload_for(id))
    };
    for round in 0..3u64 {
        let batch: Vec<Point> = (round * 400..(round + 1) * 400)
            .map(|id| make(id, &mut r))
            .collect();
        c.upsert(&batch, false).expect("upsert");
        model.upsert(&batch, metric);
        let sealed = c.seal().expect("seal");
        assert!(sealed, "round {round}: {:?}", c.info());
    }
    let info = c.info();
    assert_eq!(info.segments, 3);
    assert_eq!(
        info.code_bytes,
        1200 * dim / 2,
        "transform codes at dim/2 bytes"
    );
    assert_eq!(info.rescore_bytes, 1200 * dim, "i8 rescore tier");
    let mut recall_sum = 0.0;
    for qi in 0..20u64 {
        let q = make(10_000 + qi, &mut r).vector;
        let exact = model.search(&q, metric, 10, None);
        let got = c
            .search(&SearchRequest::new(q.clone(), 10).ef(100))
            .expect("search");
        let ids: Vec<u64> = got.iter().map(|g| g.id).collect();
        recall_sum += recall(&ids, &exact);
        // Rescored scores are close to the true cosine.
        for g in &got {
            let truth = metric.exact(&metric.prepare_query(&q), &model.points[&g.id].0);
            assert!(
                (truth - g.score).abs() < 0.05,
                "score {} vs {truth}",
                g.score
            );
        }
    }
    assert!(recall_sum / 20.0 > 0.85, "recall {}", recall_sum / 20.0);
    // The codec files survive a reopen and are the same ones.
    drop(c);
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    let c = store.collection("c").expect("c");
    assert_eq!(c.count(None).expect("count"), 1200);
    let q = make(20_000, &mut r).vector;
    assert_eq!(
        c.search(&SearchRequest::new(q, 5)).expect("search").len(),
        5
    );
}

#[test]
fn the_default_codec_picks_its_size_from_the_first_seal() {
    // transform-auto: a quarter byte per dimension when the data's variance sits in a
    // few directions (real embeddings), half a byte for clusters of white noise.
    use rand::Rng;
    let dim = 32;
    let n = 1500u64;
    let mut r = common::rng(21);
    let basis: Vec<Vec<f32>> = (0..5).map(|i| vector_for(i, dim, 5)).collect();
    let low_rank = |r: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim).map(|_| r.random_range(-0.01f32..0.01)).collect();
        for (i, b) in basis.iter().enumerate() {
            let c = r.random_range(-1.0f32..1.0) / (1 + i) as f32;
            v.iter_mut().zip(b).for_each(|(x, y)| *x += c * y);
        }
        v
    };
    let centres: Vec<Vec<f32>> = (0..8).map(|i| vector_for(i, dim, 78)).collect();
    let noise = |id: u64, r: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
        let c = &centres[(id % 8) as usize];
        c.iter().map(|x| x + r.random_range(-0.3f32..0.3)).collect()
    };
    for (name, want) in [("low-rank", dim / 4), ("noise", dim / 2)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let config = octet_store::CollectionConfig::new(dim, Metric::Cosine);
        assert_eq!(config.codec.to_string(), "transform-auto");
        let c = store.create_collection("c", config).expect("create");
        assert_eq!(c.info().fitted_codec, None, "nothing fitted before a seal");
        let mut model = Model::default();
        let batch: Vec<Point> = (0..n)
            .map(|id| {
                let v = if name == "noise" {
                    noise(id, &mut r)
                } else {
                    low_rank(&mut r)
                };
                Point::new(id, v)
            })
            .collect();
        c.upsert(&batch, false).expect("upsert");
        model.upsert(&batch, Metric::Cosine);
        assert!(c.seal().expect("seal"), "{name}");
        let info = c.info();
        assert_eq!(
            info.fitted_codec.map(|f| f.to_string()),
            Some(format!("transform{want}")),
            "{name}"
        );
        assert_eq!(info.code_bytes, n as usize * want, "{name}");
        let mut recall_sum = 0.0;
        for qi in 0..20u64 {
            let q = if name == "noise" {
                noise(qi, &mut r)
            } else {
                low_rank(&mut r)
            };
            let exact = model.search(&q, Metric::Cosine, 10, None);
            let got = c
                .search(&SearchRequest::new(q, 10).ef(100))
                .expect("search");
            let ids: Vec<u64> = got.iter().map(|g| g.id).collect();
            recall_sum += recall(&ids, &exact);
        }
        assert!(
            recall_sum / 20.0 > 0.9,
            "{name}: recall {}",
            recall_sum / 20.0
        );
        // The choice is stored with the codec: a reopen reads the same size.
        drop(c);
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        let info = store.collection("c").expect("c").info();
        assert_eq!(info.code_bytes, n as usize * want, "{name} after reopen");
    }
}

#[test]
fn refitting_the_codec_on_more_data_rewrites_every_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (dim, metric) = (16, Metric::L2);
    let mut config = octet_store::CollectionConfig::new(dim, metric);
    config.codec = "i8".parse().expect("codec");
    config.rescore.element = Some(ElementSpec::F32);
    let c = store.create_collection("c", config).expect("create");
    let mut model = Model::default();
    // The first seal sees only small values, so its i8 ranges clip what comes later.
    let small: Vec<Point> = (0..50)
        .map(|i| Point::new(i, vector_for(i, dim, 5).iter().map(|x| x * 0.01).collect()))
        .collect();
    c.upsert(&small, false).expect("upsert");
    model.upsert(&small, metric);
    c.seal().expect("seal");
    let big: Vec<Point> = (50..700).map(|i| point(i, dim, 5)).collect();
    c.upsert(&big, false).expect("upsert");
    model.upsert(&big, metric);
    c.seal().expect("seal");
    c.delete(&[60, 61], false).expect("delete");
    model.delete(&[60, 61]);
    let codes_only_recall = |c: &octet_store::Collection| {
        let mut sum = 0.0;
        for qi in 0..20 {
            let q = vector_for(9_000 + qi, dim, 5);
            let got = c
                .search(&SearchRequest::new(q.clone(), 10).ef(200).rescore(false))
                .expect("search");
            let ids: Vec<u64> = got.iter().map(|g| g.id).collect();
            sum += recall(&ids, &model.search(&q, metric, 10, None));
        }
        sum / 20.0
    };
    let before = codes_only_recall(&c);
    assert!(c.refit_codec().expect("refit"));
    let after = codes_only_recall(&c);
    assert_eq!(c.info().segments, 1);
    assert!(
        after > before + 0.1,
        "codes-only recall {before} -> {after}"
    );
    check_against_model(&c, &model, metric, dim, 5);
    // The refitted codec is what a reopen loads, and new seals use it.
    drop(c);
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    let c = store.collection("c").expect("c");
    assert!((codes_only_recall(&c) - after).abs() < 0.05);
    let more: Vec<Point> = (700..760).map(|i| point(i, dim, 5)).collect();
    c.upsert(&more, false).expect("upsert");
    model.upsert(&more, metric);
    c.seal().expect("seal");
    check_against_model(&c, &model, metric, dim, 5);
}
