//! `octet.v1.Collections`: create, get (config and stats), list, delete.

use std::sync::Arc;

use octet_store::CollectionConfig;
use tonic::{Request, Response, Status};

use super::{AppState, blocking, need_name};
use crate::error::status_of;
use crate::pb;

/// The collections service.
#[derive(Debug, Clone)]
pub(crate) struct CollectionsService(pub Arc<AppState>);

#[tonic::async_trait]
impl pb::collections_server::Collections for CollectionsService {
    async fn create(
        &self,
        req: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        let _permit = self.0.admit()?;
        let r = req.into_inner();
        need_name(&r.name, "name")?;
        let config = CollectionConfig::try_from(
            r.config
                .ok_or_else(|| Status::invalid_argument("config: missing"))?,
        )?;
        let store = Arc::clone(&self.0.store);
        let info = blocking(move || {
            let c = store
                .create_collection(&r.name, config)
                .map_err(status_of)?;
            Ok(c.info())
        })
        .await?;
        tracing::info!(collection = %info.name, dim = info.config.dim, "created collection");
        Ok(Response::new((&info).into()))
    }

    async fn get(
        &self,
        req: Request<pb::GetCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        let _permit = self.0.admit()?;
        let name = req.into_inner().name;
        need_name(&name, "name")?;
        let c = self.0.store.collection(&name).map_err(status_of)?;
        let info = blocking(move || Ok(c.info())).await?;
        Ok(Response::new((&info).into()))
    }

    async fn list(
        &self,
        _req: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        let _permit = self.0.admit()?;
        Ok(Response::new(pb::ListCollectionsResponse {
            names: self.0.store.list(),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteCollectionRequest>,
    ) -> Result<Response<pb::DeleteCollectionResponse>, Status> {
        let _permit = self.0.admit()?;
        let name = req.into_inner().name;
        need_name(&name, "name")?;
        let store = Arc::clone(&self.0.store);
        let n = name.clone();
        blocking(move || store.drop_collection(&n).map_err(status_of)).await?;
        tracing::info!(collection = %name, "dropped collection");
        Ok(Response::new(pb::DeleteCollectionResponse {}))
    }
}
