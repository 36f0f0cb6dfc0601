//! Disk full: the server's data directory on a small tmpfs, filled up by another
//! file. Writes that cannot be logged are refused with RESOURCE_EXHAUSTED naming
//! the cause and change nothing, acknowledged points stay readable, and writes go
//! through again once space is freed (and after a restart).
//!
//! Needs permission to mount a tmpfs (root, or CAP_SYS_ADMIN); skipped with a
//! message otherwise.

mod common;

use common::SERVER;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Clients, Key, ServerProc, clients, point};
use octet_server::pb;
use tonic::Code;

const DIM: usize = 64;

/// A size-limited tmpfs mounted on a temporary directory, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().ok()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "skipping the disk-full test: cannot mount a tmpfs here ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(SmallFs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system with `path` until a write fails for lack of space.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("create filler");
    let chunk = vec![0x5au8; 64 << 10];
    let mut written = 0;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "filler: {e}");
                break;
            }
        }
    }
    written
}

fn batch(from: u64, n: u64) -> pb::UpsertRequest {
    pb::UpsertRequest {
        collection: "docs".into(),
        points: (from..from + n).map(|i| point(i, DIM, "t")).collect(),
        no_wait: false,
    }
}

/// Every id in `0..n` is readable with its payload.
async fn all_readable(c: &mut Clients, n: u64) {
    let got = c
        .points
        .get(pb::GetPointsRequest {
            collection: "docs".into(),
            ids: (0..n).collect(),
            with_payload: true,
            with_vector: false,
        })
        .await
        .expect("get")
        .into_inner()
        .points;
    assert_eq!(got.len() as u64, n);
    for r in got {
        assert!(
            r.payload_json
                .as_deref()
                .is_some_and(|p| p.contains(&format!("chunk {}", r.id))),
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn a_full_disk_refuses_writes_and_recovers_when_space_is_freed() {
    let Some(fs) = SmallFs::mount("16m") else {
        return;
    };
    let data: PathBuf = fs.path().join("data");
    let filler = fs.path().join("filler");
    let mut server = ServerProc::start(SERVER, &data, &[]);
    let mut c = clients(&server.url(), Key(None)).await;
    let mut config = common::config(DIM as u32);
    // Seals write files too; keep them out of the way of the WAL check.
    config.seal_threshold = 1 << 20;
    common::create(&mut c, "docs", config).await;
    let mut acked = 0u64;
    for _ in 0..4 {
        c.points.upsert(batch(acked, 50)).await.expect("upsert");
        acked += 50;
    }
    assert!(fill(&filler) > 0);

    // The disk is full: a write is refused, naming the cause, and changes nothing.
    let mut refused = None;
    for _ in 0..20 {
        match c.points.upsert(batch(acked, 50)).await {
            Ok(_) => acked += 50,
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let status = refused.expect("a write on a full disk was acknowledged 20 times");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("disk full") && status.message().contains("No space left"),
        "{}",
        status.message()
    );
    assert_eq!(
        common::count(&mut c, "docs").await,
        acked,
        "a refused write changed the count"
    );
    all_readable(&mut c, acked).await;
    // Creating a collection is refused the same way and leaves none behind.
    let created = c
        .collections
        .create(pb::CreateCollectionRequest {
            name: "more".into(),
            config: Some(common::config(DIM as u32)),
        })
        .await;
    if let Err(s) = &created {
        assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
        let names = c
            .collections
            .list(pb::ListCollectionsRequest {})
            .await
            .expect("list")
            .into_inner()
            .names;
        assert_eq!(names, vec!["docs".to_string()]);
    }

    // Space freed: writes go through again, without a restart.
    std::fs::remove_file(&filler).expect("free space");
    c.points
        .upsert(batch(acked, 50))
        .await
        .expect("upsert after freeing space");
    acked += 50;
    assert_eq!(common::count(&mut c, "docs").await, acked);
    all_readable(&mut c, acked).await;

    // And everything acknowledged survives a restart.
    assert!(server.terminate().success());
    server = ServerProc::start(SERVER, &data, &[]);
    let mut c = clients(&server.url(), Key(None)).await;
    assert_eq!(common::count(&mut c, "docs").await, acked);
    all_readable(&mut c, acked).await;
    drop(server);
}
