//! `octet.v1.Search`: one query or a batch against one collection.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{AppState, blocking, need_name};
use crate::error::status_of;
use crate::pb;

/// The search service.
#[derive(Debug, Clone)]
pub(crate) struct SearchService(pub Arc<AppState>);

fn response(points: Vec<octet_store::ScoredPoint>) -> pb::SearchResponse {
    pb::SearchResponse {
        points: points.into_iter().map(Into::into).collect(),
    }
}

#[tonic::async_trait]
impl pb::search_server::Search for SearchService {
    async fn search(
        &self,
        req: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let _permit = self.0.admit()?;
        let r = req.into_inner();
        need_name(&r.collection, "collection")?;
        let c = self.0.store.collection(&r.collection).map_err(status_of)?;
        let request = octet_store::SearchRequest::try_from(r)?;
        let found = blocking(move || c.search(&request).map_err(status_of)).await?;
        Ok(Response::new(response(found)))
    }

    async fn search_batch(
        &self,
        req: Request<pb::SearchBatchRequest>,
    ) -> Result<Response<pb::SearchBatchResponse>, Status> {
        let _permit = self.0.admit()?;
        let r = req.into_inner();
        need_name(&r.collection, "collection")?;
        if r.searches.is_empty() {
            return Err(Status::invalid_argument("searches: empty batch"));
        }
        let c = self.0.store.collection(&r.collection).map_err(status_of)?;
        let requests = r
            .searches
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                if !s.collection.is_empty() && s.collection != r.collection {
                    return Err(Status::invalid_argument(format!(
                        "searches[{i}].collection: `{}` differs from the batch's `{}`",
                        s.collection, r.collection
                    )));
                }
                let at =
                    |e: Status| Status::invalid_argument(format!("searches[{i}].{}", e.message()));
                let request = octet_store::SearchRequest::try_from(s).map_err(at)?;
                // The dimension is checked here too so the error can say which search
                // is wrong.
                c.validate_search(&request).map_err(|e| at(status_of(e)))?;
                Ok(request)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let found = blocking(move || {
            c.search_batch(&requests).map_err(|e| {
                let s = status_of(e);
                Status::new(s.code(), format!("searches: {}", s.message()))
            })
        })
        .await?;
        Ok(Response::new(pb::SearchBatchResponse {
            results: found.into_iter().map(response).collect(),
        }))
    }
}
