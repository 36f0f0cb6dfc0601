//! Seals are bounded: a stream far past `seal_threshold` is sealed in chunks of at
//! most the threshold, oldest first, both live and after a crash and replay.

mod common;

use common::{point, small_config};
use octet_quant::{ElementSpec, Metric};
use octet_store::{SearchRequest, Store};

const DIM: usize = 8;
const THRESHOLD: usize = 64;

fn config() -> octet_store::CollectionConfig {
    let mut c = small_config(DIM, Metric::Cosine, Some(ElementSpec::F32));
    c.segments.seal_threshold = THRESHOLD;
    // Keep compaction from merging the chunks back while we look at them.
    c.segments.merge_below = 16;
    c
}

fn assert_bounded(c: &octet_store::Collection, total: usize) {
    let info = c.info();
    assert_eq!(info.points, total);
    assert!(info.segments >= total / THRESHOLD, "{info:?}");
    for (id, points, _) in &info.segment_points {
        assert!(*points <= THRESHOLD, "segment {id} holds {points} points");
    }
    // Every point is found by its own vector.
    for id in (0..total as u64).step_by(37) {
        let hits = c
            .search(&SearchRequest::new(point(id, DIM, 5).vector, 1).ef(64))
            .expect("search");
        assert_eq!(hits.first().map(|h| h.id), Some(id));
    }
}

#[test]
fn a_long_stream_seals_in_chunks_of_at_most_the_threshold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let total = 1000;
    {
        let store = Store::open(dir.path()).expect("open");
        let c = store.create_collection("s", config()).expect("create");
        for b in 0..(total / 50) as u64 {
            let batch: Vec<_> = (b * 50..(b + 1) * 50).map(|i| point(i, DIM, 5)).collect();
            c.upsert(&batch, false).expect("upsert");
        }
        c.seal().expect("seal");
        assert_eq!(c.info().growing_points, 0);
        assert_bounded(&c, total);
        drop(c);
        store.close().expect("close");
    }
    let store = Store::open(dir.path()).expect("reopen");
    let c = store.collection("s").expect("collection");
    assert_bounded(&c, total);
}

#[test]
fn a_replayed_stream_is_chunked_the_same_way() {
    let dir = tempfile::tempdir().expect("tempdir");
    let total = 700;
    {
        let store = Store::open(dir.path()).expect("open");
        let c = store.create_collection("s", config()).expect("create");
        for b in 0..(total / 35) as u64 {
            let batch: Vec<_> = (b * 35..(b + 1) * 35).map(|i| point(i, DIM, 5)).collect();
            c.upsert(&batch, true).expect("upsert");
        }
        // Dropped without a seal call: what the worker did not seal is replayed.
        drop(c);
        drop(store);
    }
    let store = Store::open(dir.path()).expect("reopen");
    let c = store.collection("s").expect("collection");
    c.seal().expect("seal");
    assert_bounded(&c, total);
}
