//! A collection counts its fsyncs, seals and compactions as it does them.

mod common;

use common::{point, small_config};
use octet_quant::{ElementSpec, Metric};
use octet_store::Store;

const DIM: usize = 8;

#[test]
fn fsyncs_seals_and_compactions_are_timed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let mut config = small_config(DIM, Metric::Cosine, Some(ElementSpec::F32));
    config.segments.seal_threshold = 100_000;
    let c = store.create_collection("t", config).expect("create");
    let before = c.telemetry();
    assert_eq!(before.seal.count, 0);
    assert_eq!(before.compaction.count, 0);
    assert_eq!(before.seal_queue, 0);

    let batch: Vec<_> = (0..40).map(|i| point(i, DIM, 3)).collect();
    c.upsert(&batch, true).expect("durable upsert");
    let fsyncs = c.telemetry().wal_fsync.count;
    assert!(fsyncs >= 1, "a durable write fsyncs the log");

    c.seal().expect("seal");
    let batch: Vec<_> = (40..80).map(|i| point(i, DIM, 3)).collect();
    c.upsert(&batch, false).expect("upsert");
    c.seal().expect("seal");
    c.delete(&[1, 2, 3], true).expect("delete");
    assert!(
        c.compact_all().expect("compact"),
        "two segments merge into one"
    );

    let t = c.telemetry();
    assert_eq!(t.seal.count, 2, "{t:?}");
    assert_eq!(t.compaction.count, 1, "{t:?}");
    assert!(t.wal_fsync.count > fsyncs, "seals fsync the log too: {t:?}");
    assert!(t.seal.sum_secs > 0.0);
    assert_eq!(t.seal.cumulative.last().copied(), Some(t.seal.count));
    assert_eq!(t.seal_queue, 0);
}
