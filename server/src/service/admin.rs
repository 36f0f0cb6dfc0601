//! `octet.v1.Admin`: snapshots kept under `<data>/snapshots/<collection>/` and
//! server-wide statistics.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};

use super::{AppState, blocking, need_name};
use crate::error::status_of;
use crate::pb;

/// Snapshot files end with this.
const EXT: &str = "snapshot";

/// The admin service.
#[derive(Debug, Clone)]
pub(crate) struct AdminService(pub Arc<AppState>);

fn io_status(what: &str, path: &Path, e: std::io::Error) -> Status {
    Status::internal(format!("{what} {}: {e}", path.display()))
}

/// Snapshot names come from clients: only the plain file names we hand out.
fn check_snapshot_name(name: &str) -> Result<(), Status> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.ends_with(&format!(".{EXT}"))
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "name: `{name}` is not a snapshot name (as ListSnapshots gives)"
        )))
    }
}

fn list_dir(dir: &Path, collection: &str) -> Result<Vec<pb::SnapshotInfo>, Status> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_status("reading", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_status("reading", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if check_snapshot_name(&name).is_err() {
            continue;
        }
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        out.push(pb::SnapshotInfo {
            collection: collection.to_string(),
            name,
            bytes,
            files: 0,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn create_snapshot(
        &self,
        req: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::SnapshotInfo>, Status> {
        let _permit = self.0.admit()?;
        let name = req.into_inner().collection;
        need_name(&name, "collection")?;
        let c = self.0.store.collection(&name).map_err(status_of)?;
        let dir = self.0.snapshots.join(&name);
        let info = blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| io_status("creating", &dir, e))?;
            let millis = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let file = format!("{name}-{millis}.{EXT}");
            let info = c.snapshot(&dir.join(&file)).map_err(status_of)?;
            Ok(pb::SnapshotInfo {
                collection: name,
                name: file,
                bytes: info.bytes,
                files: info.files as u64,
            })
        })
        .await?;
        tracing::info!(collection = %info.collection, snapshot = %info.name, bytes = info.bytes, "snapshot written");
        Ok(Response::new(info))
    }

    async fn list_snapshots(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let _permit = self.0.admit()?;
        let want = req.into_inner().collection;
        let root = self.0.snapshots.clone();
        let snapshots = blocking(move || {
            let names: Vec<String> = if want.is_empty() {
                match std::fs::read_dir(&root) {
                    Ok(entries) => entries
                        .filter_map(Result::ok)
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(io_status("reading", &root, e)),
                }
            } else {
                vec![want]
            };
            let mut all = Vec::new();
            for n in names {
                all.extend(list_dir(&root.join(&n), &n)?);
            }
            Ok(all)
        })
        .await?;
        Ok(Response::new(pb::ListSnapshotsResponse { snapshots }))
    }

    async fn restore_snapshot(
        &self,
        req: Request<pb::RestoreSnapshotRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        let _permit = self.0.admit()?;
        let r = req.into_inner();
        need_name(&r.collection, "collection")?;
        need_name(&r.target, "target")?;
        check_snapshot_name(&r.name)?;
        if r.collection.contains(['/', '\\']) || r.collection.starts_with('.') {
            return Err(Status::invalid_argument(
                "collection: not a collection name",
            ));
        }
        let path: PathBuf = self.0.snapshots.join(&r.collection).join(&r.name);
        if !path.is_file() {
            return Err(Status::not_found(format!(
                "snapshot `{}` of collection `{}` not found",
                r.name, r.collection
            )));
        }
        let store = Arc::clone(&self.0.store);
        let target = r.target.clone();
        let info = blocking(move || {
            let c = store.restore_snapshot(&path, &target).map_err(status_of)?;
            Ok(c.info())
        })
        .await?;
        tracing::info!(snapshot = %r.name, collection = %r.target, "snapshot restored");
        Ok(Response::new((&info).into()))
    }

    async fn stats(
        &self,
        _req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let _permit = self.0.admit()?;
        let store = Arc::clone(&self.0.store);
        let infos = blocking(move || {
            Ok(store
                .list()
                .iter()
                .filter_map(|n| store.collection(n).ok())
                .map(|c| c.info())
                .collect::<Vec<_>>())
        })
        .await?;
        let total_points = infos.iter().map(|i| i.points as u64).sum();
        Ok(Response::new(pb::StatsResponse {
            collections: infos.iter().map(Into::into).collect(),
            total_points,
        }))
    }
}
