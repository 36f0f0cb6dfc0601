//! Crash recovery: a child process ingests with durable writes (and deletes) while
//! the parent kills it with SIGKILL at random moments, then reopens the store and
//! checks that every acknowledged write is there and searchable, and that the write
//! in flight was applied entirely or not at all.
//!
//! The child is this test binary again, running the ignored test `crash_child`
//! with `OCTET_CRASH_DIR` set.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{point, small_config};
use octet_quant::{ElementSpec, Metric};
use octet_store::{Condition, Filter, MatchValue, Point, SearchRequest, Store};
use rand::Rng;

const DIM: usize = 12;
const BATCH: u64 = 16;
const SALT: u64 = 42;
const ROUNDS: usize = 24;

fn batch_points(b: u64) -> Vec<Point> {
    (b * BATCH..(b + 1) * BATCH)
        .map(|id| {
            let mut p = point(id, DIM, SALT);
            p.payload
                .insert("batch".into(), serde_json::json!(b as i64));
            p
        })
        .collect()
}

/// Batch `b` deletes the first half of batch `b - 3` when `b % 4 == 3`.
fn deletes_of(b: u64) -> Option<Vec<u64>> {
    (b % 4 == 3).then(|| ((b - 3) * BATCH..(b - 3) * BATCH + BATCH / 2).collect())
}

fn open_collection(dir: &Path) -> (Store, octet_store::Collection) {
    let store = Store::open(dir).expect("open store");
    let c = match store.collection("crash") {
        Ok(c) => c,
        Err(_) => {
            let mut config = small_config(DIM, Metric::Cosine, Some(ElementSpec::F32));
            config.segments.seal_threshold = 64;
            config.segments.merge_below = 40;
            store.create_collection("crash", config).expect("create")
        }
    };
    (store, c)
}

#[test]
#[ignore = "run as a child process by `kill_nine_at_random_moments_loses_no_acknowledged_write`"]
fn crash_child() {
    let Ok(dir) = std::env::var("OCTET_CRASH_DIR") else {
        return;
    };
    let start: u64 = std::env::var("OCTET_CRASH_START")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (_store, c) = open_collection(Path::new(&dir));
    println!("READY");
    for b in start.. {
        c.upsert(&batch_points(b), true).expect("upsert");
        println!("ACK UPSERT {b}");
        if let Some(ids) = deletes_of(b) {
            c.delete(&ids, true).expect("delete");
            println!("ACK DELETE {b}");
        }
    }
}

#[derive(Debug, Default)]
struct Acked {
    upserts: BTreeSet<u64>,
    deletes: BTreeSet<u64>,
}

fn verify(dir: &Path, acked: &Acked, next_batch: u64) {
    let (store, c) = open_collection(dir);
    // Batches the child may have written: all acknowledged ones and at most one in flight.
    let max_batch = next_batch + 1;
    let mut expected_live: BTreeMap<u64, bool> = BTreeMap::new();
    let mut in_flight_seen = None;
    for b in 0..max_batch {
        let ids: Vec<u64> = (b * BATCH..(b + 1) * BATCH).collect();
        let got = c.get(&ids, true, true).expect("get");
        let present: BTreeSet<u64> = got.iter().map(|r| r.id).collect();
        // The delete that batch b + 3 issues for batch b, acknowledged or maybe in flight.
        let d = b + 3;
        let doomed: BTreeSet<u64> = deletes_of(d).unwrap_or_default().into_iter().collect();
        let (deleted, delete_unacked) = if acked.deletes.contains(&d) {
            (doomed, BTreeSet::new())
        } else if acked.upserts.contains(&d) {
            (BTreeSet::new(), doomed)
        } else {
            (BTreeSet::new(), BTreeSet::new())
        };
        if acked.upserts.contains(&b) {
            for &id in &ids {
                let must_be_gone = deleted.contains(&id);
                let may_be_gone = delete_unacked.contains(&id);
                if must_be_gone {
                    assert!(!present.contains(&id), "acknowledged delete of {id} lost");
                } else if !may_be_gone {
                    assert!(
                        present.contains(&id),
                        "acknowledged point {id} (batch {b}) lost"
                    );
                }
                expected_live.insert(id, present.contains(&id));
            }
            // A delete in flight is applied to its whole half-batch or not at all.
            if !delete_unacked.is_empty() {
                let gone = delete_unacked
                    .iter()
                    .filter(|id| !present.contains(id))
                    .count();
                assert!(
                    gone == 0 || gone == delete_unacked.len(),
                    "delete half-applied: {gone} of {}",
                    delete_unacked.len()
                );
            }
        } else {
            // Not acknowledged: all or nothing.
            assert!(
                present.is_empty() || present.len() == ids.len(),
                "batch {b} half-applied: {} of {}",
                present.len(),
                ids.len()
            );
            if !present.is_empty() {
                assert!(
                    in_flight_seen.is_none(),
                    "two unacknowledged batches applied"
                );
                in_flight_seen = Some(b);
            }
        }
        for r in &got {
            let want = point(r.id, DIM, SALT);
            let v = r.vector.as_ref().expect("vector");
            let want_v = Metric::Cosine.prepare_query(&want.vector);
            assert!(
                v.iter().zip(&want_v).all(|(a, b)| (a - b).abs() < 1e-5),
                "vector of {} changed",
                r.id
            );
            assert_eq!(
                r.payload
                    .as_ref()
                    .map(|p| p.parse().expect("payload JSON"))
                    .and_then(|p| p.get("batch").cloned()),
                Some(serde_json::json!(b as i64))
            );
        }
        // Searchable: a filter on the batch finds exactly its live points.
        if !present.is_empty() {
            let filter = Filter::must(vec![Condition::Match {
                key: "batch".into(),
                value: MatchValue::Integer(b as i64),
            }]);
            let q = point(b * BATCH + BATCH - 1, DIM, SALT).vector;
            let hits = c
                .search(&SearchRequest::new(q, BATCH as usize).filter(filter))
                .expect("search");
            let hit_ids: BTreeSet<u64> = hits.iter().map(|h| h.id).collect();
            assert_eq!(hit_ids, present, "filtered search of batch {b}");
        }
    }
    // Unfiltered search finds a sample of live points by their own vector.
    for (&id, _) in expected_live.iter().filter(|(_, live)| **live).step_by(29) {
        let q = point(id, DIM, SALT).vector;
        let hits = c.search(&SearchRequest::new(q, 3).ef(64)).expect("search");
        assert_eq!(
            hits.first().map(|h| h.id),
            Some(id),
            "point {id} is not its own nearest neighbour"
        );
    }
    drop(c);
    store.close().expect("close");
}

#[test]
fn kill_nine_at_random_moments_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = common::rng(7);
    let mut acked = Acked::default();
    let mut next_batch = 0u64;
    let mut total_acks = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("OCTET_CRASH_DIR", dir.path())
            .env("OCTET_CRASH_START", next_batch.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let lines = std::sync::mpsc::channel();
        let tx = lines.0;
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Kill at a random moment: sometimes during open and replay, mostly while writing.
        let delay = Duration::from_millis(rng.random_range(0..250));
        let t0 = Instant::now();
        while t0.elapsed() < delay {
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        reader.join().expect("reader");
        for line in lines.1.try_iter() {
            let mut parts = line.split_whitespace();
            match (
                parts.next(),
                parts.next(),
                parts.next().and_then(|n| n.parse::<u64>().ok()),
            ) {
                (Some("ACK"), Some("UPSERT"), Some(b)) => {
                    acked.upserts.insert(b);
                    next_batch = next_batch.max(b + 1);
                    total_acks += 1;
                }
                (Some("ACK"), Some("DELETE"), Some(b)) => {
                    acked.deletes.insert(b);
                }
                _ => {}
            }
        }
        // The next child starts at the first unacknowledged batch and re-sends it
        // (same ids, same content), whether or not it landed.
        verify(dir.path(), &acked, next_batch);
        eprintln!(
            "round {round}: {} batches acknowledged so far",
            acked.upserts.len()
        );
    }
    assert!(
        total_acks >= 20,
        "the children made too little progress ({total_acks} acknowledged batches)"
    );
}
