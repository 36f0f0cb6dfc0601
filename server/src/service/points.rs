//! `octet.v1.Points`: upsert (unary and client-streaming), get, delete, count,
//! scroll. Writes are fsynced before the reply unless the request sets `no_wait`.

use std::sync::Arc;

use octet_store::Collection;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::{AppState, blocking, need_name};
use crate::convert::{MAX_K, filter_from_pb, points_from_pb};
use crate::error::status_of;
use crate::pb;

/// The points service.
#[derive(Debug, Clone)]
pub(crate) struct PointsService(pub Arc<AppState>);

impl PointsService {
    fn collection(&self, name: &str) -> Result<Collection, Status> {
        need_name(name, "collection")?;
        self.0.store.collection(name).map_err(status_of)
    }

    async fn upsert_one(&self, r: pb::UpsertRequest) -> Result<pb::WriteResponse, Status> {
        let c = self.collection(&r.collection)?;
        let points = points_from_pb(r.points)?;
        let durable = !r.no_wait;
        let receipt = blocking(move || c.upsert(&points, durable).map_err(status_of)).await?;
        Ok(pb::WriteResponse {
            seq: receipt.seq,
            durable: receipt.durable,
            points: receipt.points as u64,
        })
    }
}

#[tonic::async_trait]
impl pb::points_server::Points for PointsService {
    async fn upsert(
        &self,
        req: Request<pb::UpsertRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let _permit = self.0.admit()?;
        Ok(Response::new(self.upsert_one(req.into_inner()).await?))
    }

    async fn upsert_stream(
        &self,
        req: Request<Streaming<pb::UpsertRequest>>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let _permit = self.0.admit()?;
        let mut stream = req.into_inner();
        let mut total = pb::WriteResponse::default();
        let mut batches = 0usize;
        while let Some(msg) = stream.next().await {
            let in_batch = |s: Status| {
                Status::new(
                    s.code(),
                    format!(
                        "batch {batches} (earlier batches are written): {}",
                        s.message()
                    ),
                )
            };
            let msg = msg.map_err(|s| in_batch(crate::oversize::oversize_status(s)))?;
            let w = self.upsert_one(msg).await.map_err(in_batch)?;
            batches += 1;
            total.points += w.points;
            total.seq = w.seq;
            total.durable = w.durable;
        }
        if batches == 0 {
            return Err(Status::invalid_argument("points: the stream held no batch"));
        }
        Ok(Response::new(total))
    }

    async fn get(
        &self,
        req: Request<pb::GetPointsRequest>,
    ) -> Result<Response<pb::GetPointsResponse>, Status> {
        let _permit = self.0.admit()?;
        let r = req.into_inner();
        let c = self.collection(&r.collection)?;
        let records = blocking(move || {
            c.get(&r.ids, r.with_payload, r.with_vector)
                .map_err(status_of)
        })
        .await?;
        Ok(Response::new(pb::GetPointsResponse {
            points: records.into_iter().map(Into::into).collect(),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeletePointsRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let _permit = self.0.admit()?;
        let r = req.into_inner();
        let c = self.collection(&r.collection)?;
        if r.ids.is_empty() {
            return Err(Status::invalid_argument("ids: empty batch"));
        }
        let durable = !r.no_wait;
        let receipt = blocking(move || c.delete(&r.ids, durable).map_err(status_of)).await?;
        Ok(Response::new(pb::WriteResponse {
            seq: receipt.seq,
            durable: receipt.durable,
            points: receipt.points as u64,
        }))
    }

    async fn count(
        &self,
        req: Request<pb::CountRequest>,
    ) -> Result<Response<pb::CountResponse>, Status> {
        let _permit = self.0.admit()?;
        let r = req.into_inner();
        let c = self.collection(&r.collection)?;
        let filter = filter_from_pb(r.filter)?;
        let n = blocking(move || c.count(filter.as_ref()).map_err(status_of)).await?;
        Ok(Response::new(pb::CountResponse { count: n as u64 }))
    }

    async fn scroll(
        &self,
        req: Request<pb::ScrollRequest>,
    ) -> Result<Response<pb::ScrollResponse>, Status> {
        let _permit = self.0.admit()?;
        let r = req.into_inner();
        let c = self.collection(&r.collection)?;
        let limit = match r.limit as usize {
            0 => 100,
            l if l > MAX_K => {
                return Err(Status::invalid_argument(format!(
                    "limit: must be at most {MAX_K}, got {l}"
                )));
            }
            l => l,
        };
        let filter = filter_from_pb(r.filter)?;
        let (records, next) = blocking(move || {
            c.scroll(
                r.offset,
                limit,
                filter.as_ref(),
                r.with_payload,
                r.with_vector,
            )
            .map_err(status_of)
        })
        .await?;
        Ok(Response::new(pb::ScrollResponse {
            points: records.into_iter().map(Into::into).collect(),
            next_offset: next,
        }))
    }
}
