//! Damaged files: each is detected with a clear error or recovered from cleanly,
//! never a panic and never silently wrong results.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{point, small_config};
use octet_quant::{ElementSpec, Metric};
use octet_store::{Point, SearchRequest, Store, StoreError};

const DIM: usize = 10;

/// A store with two sealed segments (ids 0..305, two deleted) and a growing tail
/// written in two batches (305..308, 308..310).
fn populated(dir: &Path) {
    let store = Store::open(dir).expect("open");
    let c = store
        .create_collection("c", small_config(DIM, Metric::L2, Some(ElementSpec::F32)))
        .expect("create");
    let pts: Vec<Point> = (0..300).map(|i| point(i, DIM, 1)).collect();
    c.upsert(&pts, true).expect("upsert");
    c.seal().expect("seal");
    c.delete(&[3, 4], true).expect("delete");
    let more: Vec<Point> = (300..305).map(|i| point(i, DIM, 1)).collect();
    c.upsert(&more, true).expect("upsert");
    // This seal also writes the first segment's tombstone file.
    c.seal().expect("seal");
    let tail: Vec<Point> = (305..310).map(|i| point(i, DIM, 1)).collect();
    c.upsert(&tail[..3], true).expect("upsert");
    c.upsert(&tail[3..], true).expect("upsert");
    store.close().expect("close");
}

fn collection_dir(root: &Path) -> PathBuf {
    root.join("collections").join("c")
}

fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn flip(path: &Path, at: usize) {
    let mut bytes = fs::read(path).expect("read");
    let i = at.min(bytes.len() - 1);
    bytes[i] ^= 0x01;
    fs::write(path, bytes).expect("write");
}

#[test]
fn a_flipped_byte_in_any_segment_file_is_reported() {
    for ext in [
        "codes", "rescore", "graph", "ids", "payload", "tomb", "codec",
    ] {
        for at in [0usize, 17, usize::MAX] {
            let dir = tempfile::tempdir().expect("tempdir");
            populated(dir.path());
            let files = files_with(&collection_dir(dir.path()), ext);
            assert!(!files.is_empty(), "no .{ext} file");
            flip(&files[0], at);
            match Store::open(dir.path()) {
                Err(StoreError::Corrupt { path, reason }) => {
                    assert!(
                        path.to_string_lossy().contains(ext),
                        "{ext}: error names {path:?} ({reason})"
                    );
                }
                other => panic!(".{ext} byte {at}: expected a corruption error, got {other:?}"),
            }
        }
    }
}

#[test]
fn a_damaged_manifest_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    populated(dir.path());
    let manifest = collection_dir(dir.path()).join("MANIFEST");
    flip(&manifest, 40);
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn a_manifest_pointing_at_a_missing_file_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    populated(dir.path());
    let graph = &files_with(&collection_dir(dir.path()), "graph")[0];
    fs::remove_file(graph).expect("remove");
    match Store::open(dir.path()) {
        Err(StoreError::MissingFile { path, .. }) => assert_eq!(&path, graph),
        other => panic!("expected a missing-file error, got {other:?}"),
    }
}

#[test]
fn a_truncated_wal_drops_only_the_torn_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    populated(dir.path());
    let wal = files_with(&collection_dir(dir.path()).join("wal"), "wal");
    let last = wal.last().expect("wal file");
    let len = fs::metadata(last).expect("meta").len();
    let f = fs::OpenOptions::new().write(true).open(last).expect("open");
    f.set_len(len - 7).expect("truncate");
    drop(f);
    let store = Store::open(dir.path()).expect("recovers");
    let c = store.collection("c").expect("c");
    // The last batch (308..310) was torn and is gone entirely; 305..308 is whole.
    assert_eq!(c.count(None).expect("count"), 306);
    assert_eq!(c.get(&[307, 308, 309], false, false).expect("get").len(), 1);
    let hit = c
        .search(&SearchRequest::new(point(307, DIM, 1).vector, 1))
        .expect("search");
    assert_eq!(hit[0].id, 307);
    // Writing goes on after the cut.
    c.upsert(&[point(400, DIM, 1)], true)
        .expect("upsert after recovery");
    drop(c);
    store.close().expect("close");
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(
        store
            .collection("c")
            .expect("c")
            .count(None)
            .expect("count"),
        307
    );
}

#[test]
fn garbage_in_the_wal_is_never_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    populated(dir.path());
    let wal = files_with(&collection_dir(dir.path()).join("wal"), "wal");
    let last = wal.last().expect("wal file");
    let len = fs::metadata(last).expect("meta").len() as usize;
    // Damage the middle of the last record: its checksum fails, it and what follows are dropped.
    flip(last, len - 20);
    let store = Store::open(dir.path()).expect("recovers");
    let c = store.collection("c").expect("c");
    assert_eq!(c.count(None).expect("count"), 306);
    drop(c);
    drop(store);
    // Random bytes appended after the good records are dropped too.
    let mut bytes = fs::read(last).expect("read");
    bytes.extend_from_slice(&[0xAB; 100]);
    fs::write(last, bytes).expect("write");
    let store = Store::open(dir.path()).expect("recovers");
    assert_eq!(
        store
            .collection("c")
            .expect("c")
            .count(None)
            .expect("count"),
        306
    );
}
