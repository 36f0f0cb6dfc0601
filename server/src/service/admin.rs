//! `octet.v1.Admin`: snapshots kept under `<data>/snapshots/<collection>/` (the
//! store owns that directory; names reach it only as checked
//! `CollectionName`s and [`SnapshotName`]s) and server-wide statistics.

use std::sync::Arc;

use octet_store::SnapshotName;
use tonic::{Request, Response, Status};

use super::{AppState, blocking, collection_name};
use crate::error::{field_status, status_of};
use crate::pb;

/// The admin service.
#[derive(Debug, Clone)]
pub(crate) struct AdminService(pub Arc<AppState>);

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn create_snapshot(
        &self,
        req: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::SnapshotInfo>, Status> {
        let _permit = self.0.admit()?;
        let name = collection_name(&req.into_inner().collection, "collection")?;
        let store = Arc::clone(&self.0.store);
        let info = blocking(move || {
            let (file, info) = store.create_snapshot(&name).map_err(status_of)?;
            Ok(pb::SnapshotInfo {
                collection: name.to_string(),
                name: file.to_string(),
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
        let want = match want.as_str() {
            "" => None,
            n => Some(collection_name(n, "collection")?),
        };
        let store = Arc::clone(&self.0.store);
        let files =
            blocking(move || store.list_snapshots(want.as_ref()).map_err(status_of)).await?;
        let snapshots = files
            .into_iter()
            .map(|f| pb::SnapshotInfo {
                collection: f.collection.to_string(),
                name: f.name.to_string(),
                bytes: f.bytes,
                files: 0,
            })
            .collect();
        Ok(Response::new(pb::ListSnapshotsResponse { snapshots }))
    }

    async fn restore_snapshot(
        &self,
        req: Request<pb::RestoreSnapshotRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        let _permit = self.0.admit()?;
        let r = req.into_inner();
        let collection = collection_name(&r.collection, "collection")?;
        let target = collection_name(&r.target, "target")?;
        let name = SnapshotName::parse(&r.name).map_err(|e| field_status("name", e))?;
        let store = Arc::clone(&self.0.store);
        let info = blocking(move || {
            let c = store
                .restore_kept_snapshot(&collection, &name, &target)
                .map_err(status_of)?;
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
