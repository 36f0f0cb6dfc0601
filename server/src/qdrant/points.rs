//! `qdrant.Points`: upsert, delete (ids or filter), get, set / overwrite / delete
//! payload, field indexes, search, search batch, query (nearest), scroll, count.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use octet_quant::Metric;
use octet_store::{
    Collection, Filter, Payload, PayloadJson, Point, PointId, ScoredPoint, SearchRequest,
    StoreError,
};
use tonic::{Request, Response, Status};

use super::convert::{
    PayloadSel, bad, filter_from_pb, passes, payload_from_pb, payload_sel, payload_to_pb, refuse,
    score_out, unsupported, vector_in, vector_out, vectors_sel,
};
use super::ids::{self, ID_KEY};
use crate::convert::MAX_K;
use crate::error::status_of;
use crate::qdrant_pb as q;
use crate::service::{AppState, blocking, need_name};

/// `qdrant.Points`.
#[derive(Debug, Clone)]
pub(crate) struct PointsService(pub Arc<AppState>);

impl PointsService {
    fn collection(&self, name: &str) -> Result<Collection, Status> {
        need_name(name, "collection_name")?;
        self.0.store.collection(name).map_err(status_of)
    }
}

fn op_response(t: Instant, seq: Option<u64>, wait: bool) -> q::PointsOperationResponse {
    let status = if wait {
        q::UpdateStatus::Completed
    } else {
        q::UpdateStatus::Acknowledged
    };
    q::PointsOperationResponse {
        result: Some(q::UpdateResult {
            operation_id: seq,
            status: status as i32,
        }),
        time: t.elapsed().as_secs_f64(),
    }
}

/// Points named by a selector.
enum Selection {
    Ids(Vec<PointId>),
    Filter(Filter),
}

fn selection(s: Option<q::PointsSelector>, field: &str) -> Result<Selection, Status> {
    use q::points_selector::PointsSelectorOneOf as S;
    match s.and_then(|s| s.points_selector_one_of) {
        Some(S::Points(list)) => Ok(Selection::Ids(
            list.ids
                .into_iter()
                .enumerate()
                .map(|(i, p)| {
                    ids::from_pb(Some(p), &format!("{field}.points.ids[{i}]")).map(|q| q.id)
                })
                .collect::<Result<_, _>>()?,
        )),
        Some(S::Filter(f)) => Ok(Selection::Filter(
            filter_from_pb(Some(f), &format!("{field}.filter"))?.unwrap_or_default(),
        )),
        None => Err(bad(field, "missing (point ids or a filter)")),
    }
}

fn selected_ids(c: &Collection, s: Selection) -> Result<Vec<PointId>, Status> {
    match s {
        Selection::Ids(ids) => Ok(ids),
        Selection::Filter(f) => c.ids_where(&f).map_err(status_of),
    }
}

/// The stored Qdrant ids of the UUID-range points among `ids` whose payload a
/// reply does not otherwise read.
fn id_payloads(
    c: &Collection,
    ids: impl Iterator<Item = PointId>,
) -> Result<HashMap<PointId, Payload>, Status> {
    let want: Vec<PointId> = ids.filter(|&id| ids::maybe_uuid(id)).collect();
    if want.is_empty() {
        return Ok(HashMap::new());
    }
    let mut out = HashMap::new();
    for r in c.get(&want, true, false).map_err(status_of)? {
        if let Some(v) = parsed(r.id, r.payload.as_ref())?.and_then(|mut p| p.remove(ID_KEY)) {
            let mut p = Payload::new();
            p.insert(ID_KEY.into(), v);
            out.insert(r.id, p);
        }
    }
    Ok(out)
}

/// A stored payload as a map (the Qdrant API converts every value). The store
/// checked it is a JSON object when it was written, so a failure is corruption.
fn parsed(id: PointId, p: Option<&PayloadJson>) -> Result<Option<Payload>, Status> {
    p.map(|p| p.parse())
        .transpose()
        .map_err(|e| Status::data_loss(format!("stored payload of point {id}: {e}")))
}

/// One nearest-neighbour search as Qdrant asks it.
struct Knn {
    request: SearchRequest,
    offset: usize,
    threshold: Option<f32>,
    sel: PayloadSel,
}

struct KnnParts {
    vector: Vec<f32>,
    filter: Option<q::Filter>,
    limit: u64,
    offset: Option<u64>,
    params: Option<q::SearchParams>,
    score_threshold: Option<f32>,
    with_payload: Option<q::WithPayloadSelector>,
    with_vectors: Option<q::WithVectorsSelector>,
}

fn knn(p: KnnParts) -> Result<Knn, Status> {
    if p.limit == 0 {
        return Err(bad("limit", "must be at least 1"));
    }
    let offset = p.offset.unwrap_or(0);
    let k = p.limit.saturating_add(offset);
    let mut request = SearchRequest::new(p.vector, usize::try_from(k).unwrap_or(usize::MAX));
    request.filter = filter_from_pb(p.filter, "filter")?;
    if let Some(params) = p.params {
        refuse(&params.acorn, "params.acorn", "ACORN search")?;
        refuse(&params.idf, "params.idf", "IDF (sparse vectors)")?;
        if params.exact == Some(true) {
            return Err(unsupported(
                "params.exact",
                "exact search (raise params.hnsw_ef instead)",
            ));
        }
        if let Some(ef) = params.hnsw_ef {
            request.ef = Some(usize::try_from(ef).unwrap_or(usize::MAX).max(1));
        }
        if let Some(qp) = params.quantization {
            if let Some(r) = qp.rescore {
                request.rescore = r;
            }
            if let Some(o) = qp.oversampling {
                request.oversampling = Some(o as f32);
            }
        }
    }
    // The store's check is the one definition of the limits; the message names the
    // field as this API spells it.
    request.validate().map_err(|e| match e {
        StoreError::InvalidQuery { field, reason } => {
            let field = match field {
                "k" => "limit + offset",
                "ef" => "params.hnsw_ef",
                "oversampling" => "params.quantization.oversampling",
                other => other,
            };
            bad(field, reason)
        }
        other => status_of(other),
    })?;
    let sel = payload_sel(p.with_payload, false)?;
    request.with_payload = sel.wanted();
    request.with_vector = vectors_sel(p.with_vectors)?;
    Ok(Knn {
        request,
        offset: offset as usize,
        threshold: p.score_threshold,
        sel,
    })
}

fn scored_out(
    metric: Metric,
    found: Vec<ScoredPoint>,
    knn: &Knn,
    id_payloads: &HashMap<PointId, Payload>,
) -> Result<Vec<q::ScoredPoint>, Status> {
    found
        .into_iter()
        .skip(knn.offset)
        .map(|s| (score_out(metric, s.score), s))
        .filter(|(score, _)| passes(metric, *score, knn.threshold))
        .map(|(score, s)| {
            let payload = parsed(s.id, s.payload.as_ref())?;
            Ok(q::ScoredPoint {
                id: Some(ids::to_pb(
                    s.id,
                    payload.as_ref().or_else(|| id_payloads.get(&s.id)),
                )),
                payload: payload_to_pb(payload, &knn.sel),
                score,
                version: 0,
                vectors: vector_out(s.vector),
            })
        })
        .collect()
}

/// Runs searches against one collection and converts their results.
async fn run_knn(c: Collection, knns: Vec<Knn>) -> Result<Vec<Vec<q::ScoredPoint>>, Status> {
    blocking(move || {
        let metric = c.config().metric;
        let requests: Vec<SearchRequest> = knns.iter().map(|k| k.request.clone()).collect();
        let found = if requests.len() == 1 {
            vec![c.search(&requests[0]).map_err(status_of)?]
        } else {
            c.search_batch(&requests).map_err(status_of)?
        };
        found
            .into_iter()
            .zip(&knns)
            .map(|(f, k)| {
                let extra = if k.request.with_payload {
                    HashMap::new()
                } else {
                    id_payloads(&c, f.iter().map(|s| s.id))?
                };
                scored_out(metric, f, k, &extra)
            })
            .collect()
    })
    .await
}

fn search_parts(s: q::SearchPoints, field: &str) -> Result<KnnParts, Status> {
    if s.vector_name.as_deref().is_some_and(|n| !n.is_empty()) {
        return Err(unsupported(format!("{field}.vector_name"), "named vectors"));
    }
    refuse(
        &s.shard_key_selector,
        &format!("{field}.shard_key_selector"),
        "shard keys",
    )?;
    refuse(
        &s.sparse_indices,
        &format!("{field}.sparse_indices"),
        "sparse vectors",
    )?;
    Ok(KnnParts {
        vector: s.vector,
        filter: s.filter,
        limit: s.limit,
        offset: s.offset,
        params: s.params,
        score_threshold: s.score_threshold,
        with_payload: s.with_payload,
        with_vectors: s.with_vectors,
    })
}

fn prefixed(field: &str) -> impl Fn(Status) -> Status + '_ {
    move |s| Status::new(s.code(), format!("{field}.{}", s.message()))
}

fn query_parts(r: q::QueryPoints) -> Result<KnnParts, Status> {
    use q::query::Variant as QV;
    use q::vector_input::Variant as VI;
    if !r.prefetch.is_empty() {
        return Err(unsupported("prefetch", "prefetch (hybrid queries)"));
    }
    if r.using.as_deref().is_some_and(|n| !n.is_empty()) {
        return Err(unsupported("using", "named vectors"));
    }
    refuse(&r.lookup_from, "lookup_from", "lookup_from")?;
    refuse(&r.shard_key_selector, "shard_key_selector", "shard keys")?;
    let vector = match r.query.and_then(|q| q.variant) {
        Some(QV::Nearest(v)) => match v.variant {
            Some(VI::Dense(d)) => d.data,
            Some(VI::Id(_)) => {
                return Err(unsupported("query.nearest.id", "a query by point id"));
            }
            Some(VI::Sparse(_)) => {
                return Err(unsupported("query.nearest.sparse", "sparse vectors"));
            }
            Some(VI::MultiDense(_)) => {
                return Err(unsupported("query.nearest.multi_dense", "multi-vectors"));
            }
            Some(VI::Document(_) | VI::Image(_) | VI::Object(_)) => {
                return Err(unsupported("query.nearest", "server-side inference"));
            }
            None => return Err(bad("query.nearest", "empty vector input")),
        },
        None => {
            return Err(unsupported(
                "query",
                "a query without a vector (use scroll)",
            ));
        }
        Some(v) => {
            let name = match v {
                QV::Recommend(_) => "recommend",
                QV::Discover(_) => "discover",
                QV::Context(_) => "context",
                QV::OrderBy(_) => "order_by",
                QV::Fusion(_) => "fusion",
                QV::Sample(_) => "sample",
                QV::Formula(_) => "formula",
                QV::NearestWithMmr(_) => "nearest_with_mmr",
                QV::Rrf(_) => "rrf",
                QV::RelevanceFeedback(_) => "relevance_feedback",
                QV::Text(_) => "text",
                QV::Nearest(_) => "nearest",
            };
            return Err(unsupported(
                format!("query.{name}"),
                "this query kind (only `nearest` with a dense vector is)",
            ));
        }
    };
    Ok(KnnParts {
        vector,
        filter: r.filter,
        limit: r.limit.unwrap_or(10),
        offset: r.offset,
        params: r.params,
        score_threshold: r.score_threshold,
        with_payload: r.with_payload,
        with_vectors: r.with_vectors,
    })
}

fn retrieved(r: octet_store::Record, sel: &PayloadSel) -> Result<q::RetrievedPoint, Status> {
    let payload = parsed(r.id, r.payload.as_ref())?;
    Ok(q::RetrievedPoint {
        id: Some(ids::to_pb(r.id, payload.as_ref())),
        payload: payload_to_pb(payload, sel),
        vectors: vector_out(r.vector),
    })
}

/// Removes the value at a dotted path (through objects).
fn remove_path(p: &mut Payload, key: &str) {
    match key.split_once('.') {
        None => {
            p.remove(key);
        }
        Some((head, rest)) => {
            if let Some(serde_json::Value::Object(inner)) = p.get_mut(head) {
                remove_path(inner, rest);
            }
        }
    }
}

/// How a payload update changes a payload.
enum PayloadEdit {
    Merge(Payload),
    Replace(Payload),
    Remove(Vec<String>),
}

impl PointsService {
    /// SetPayload (`Merge`) and OverwritePayload (`Replace`).
    async fn set_or_overwrite(
        &self,
        r: q::SetPayloadPoints,
        edit: fn(Payload) -> PayloadEdit,
    ) -> Result<q::PointsOperationResponse, Status> {
        refuse(&r.shard_key_selector, "shard_key_selector", "shard keys")?;
        refuse(&r.key, "key", "setting a payload under a nested key")?;
        let payload = payload_from_pb(r.payload, "payload")?;
        let wait = r.wait.unwrap_or(false);
        self.edit_payload(&r.collection_name, r.points_selector, edit(payload), wait)
            .await
    }

    async fn edit_payload(
        &self,
        collection: &str,
        selector: Option<q::PointsSelector>,
        edit: PayloadEdit,
        wait: bool,
    ) -> Result<q::PointsOperationResponse, Status> {
        let t = Instant::now();
        let _permit = self.0.admit()?;
        let c = self.collection(collection)?;
        let sel = selection(selector, "points_selector")?;
        blocking(move || {
            let ids = selected_ids(&c, sel)?;
            c.update_payloads(
                &ids,
                |p| match &edit {
                    PayloadEdit::Merge(m) => {
                        p.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                    PayloadEdit::Replace(m) => {
                        let id = p.remove(ID_KEY);
                        *p = m.clone();
                        if let Some(id) = id {
                            p.insert(ID_KEY.into(), id);
                        }
                    }
                    PayloadEdit::Remove(keys) => {
                        for k in keys {
                            remove_path(p, k);
                        }
                    }
                },
                wait,
            )
            .map_err(status_of)
        })
        .await?;
        Ok(op_response(t, None, wait))
    }
}

#[tonic::async_trait]
impl q::points_server::Points for PointsService {
    async fn upsert(
        &self,
        req: Request<q::UpsertPoints>,
    ) -> Result<Response<q::PointsOperationResponse>, Status> {
        let t = Instant::now();
        let _permit = self.0.admit()?;
        let r = req.into_inner();
        refuse(&r.shard_key_selector, "shard_key_selector", "shard keys")?;
        refuse(&r.update_filter, "update_filter", "conditional updates")?;
        if r.update_mode
            .is_some_and(|m| m != q::UpdateMode::Upsert as i32)
        {
            return Err(unsupported(
                "update_mode",
                "insert-only or update-only writes",
            ));
        }
        let c = self.collection(&r.collection_name)?;
        let points = r
            .points
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let id = ids::from_pb(p.id, &format!("points[{i}].id"))?;
                let vector = vector_in(p.vectors, &format!("points[{i}].vectors"))?;
                let mut payload = payload_from_pb(p.payload, &format!("points[{i}].payload"))?;
                payload.insert(ID_KEY.into(), id.text.into());
                Ok(Point::with_payload(id.id, vector, payload))
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let wait = r.wait.unwrap_or(false);
        let receipt = blocking(move || c.upsert(&points, wait).map_err(status_of)).await?;
        Ok(Response::new(op_response(t, Some(receipt.seq), wait)))
    }

    async fn delete(
        &self,
        req: Request<q::DeletePoints>,
    ) -> Result<Response<q::PointsOperationResponse>, Status> {
        let t = Instant::now();
        let _permit = self.0.admit()?;
        let r = req.into_inner();
        refuse(&r.shard_key_selector, "shard_key_selector", "shard keys")?;
        let c = self.collection(&r.collection_name)?;
        let sel = selection(r.points, "points")?;
        let wait = r.wait.unwrap_or(false);
        let seq = blocking(move || match sel {
            Selection::Ids(ids) => c.delete(&ids, wait).map(|w| Some(w.seq)).map_err(status_of),
            Selection::Filter(f) => c.delete_where(&f, wait).map(|_| None).map_err(status_of),
        })
        .await?;
        Ok(Response::new(op_response(t, seq, wait)))
    }

    async fn get(&self, req: Request<q::GetPoints>) -> Result<Response<q::GetResponse>, Status> {
        let t = Instant::now();
        let _permit = self.0.admit()?;
        let r = req.into_inner();
        refuse(&r.shard_key_selector, "shard_key_selector", "shard keys")?;
        let c = self.collection(&r.collection_name)?;
        let ids = r
            .ids
            .into_iter()
            .enumerate()
            .map(|(i, p)| ids::from_pb(Some(p), &format!("ids[{i}]")).map(|q| q.id))
            .collect::<Result<Vec<_>, _>>()?;
        let sel = payload_sel(r.with_payload, true)?;
        let with_vec = vectors_sel(r.with_vectors)?;
        let records = blocking(move || c.get(&ids, true, with_vec).map_err(status_of)).await?;
        Ok(Response::new(q::GetResponse {
            result: records
                .into_iter()
                .map(|r| retrieved(r, &sel))
                .collect::<Result<_, _>>()?,
            time: t.elapsed().as_secs_f64(),
        }))
    }

    async fn set_payload(
        &self,
        req: Request<q::SetPayloadPoints>,
    ) -> Result<Response<q::PointsOperationResponse>, Status> {
        let out = self
            .set_or_overwrite(req.into_inner(), PayloadEdit::Merge)
            .await?;
        Ok(Response::new(out))
    }

    async fn overwrite_payload(
        &self,
        req: Request<q::SetPayloadPoints>,
    ) -> Result<Response<q::PointsOperationResponse>, Status> {
        let out = self
            .set_or_overwrite(req.into_inner(), PayloadEdit::Replace)
            .await?;
        Ok(Response::new(out))
    }

    async fn delete_payload(
        &self,
        req: Request<q::DeletePayloadPoints>,
    ) -> Result<Response<q::PointsOperationResponse>, Status> {
        let r = req.into_inner();
        refuse(&r.shard_key_selector, "shard_key_selector", "shard keys")?;
        if r.keys.iter().any(|k| k == ID_KEY) {
            return Err(bad("keys", format!("`{ID_KEY}` is reserved by Octet")));
        }
        let wait = r.wait.unwrap_or(false);
        let out = self
            .edit_payload(
                &r.collection_name,
                r.points_selector,
                PayloadEdit::Remove(r.keys),
                wait,
            )
            .await?;
        Ok(Response::new(out))
    }

    async fn create_field_index(
        &self,
        req: Request<q::CreateFieldIndexCollection>,
    ) -> Result<Response<q::PointsOperationResponse>, Status> {
        // Octet indexes every payload field of every sealed segment already, so
        // declaring one only checks the request.
        let t = Instant::now();
        let _permit = self.0.admit()?;
        let r = req.into_inner();
        self.collection(&r.collection_name)?;
        if r.field_name.is_empty() {
            return Err(bad("field_name", "empty"));
        }
        Ok(Response::new(op_response(t, None, true)))
    }

    async fn search(
        &self,
        req: Request<q::SearchPoints>,
    ) -> Result<Response<q::SearchResponse>, Status> {
        let t = Instant::now();
        let _permit = self.0.admit()?;
        let r = req.into_inner();
        let c = self.collection(&r.collection_name)?;
        let k = knn(search_parts(r, "search")?)?;
        let result = run_knn(c, vec![k]).await?.pop().unwrap_or_default();
        Ok(Response::new(q::SearchResponse {
            result,
            time: t.elapsed().as_secs_f64(),
        }))
    }

    async fn search_batch(
        &self,
        req: Request<q::SearchBatchPoints>,
    ) -> Result<Response<q::SearchBatchResponse>, Status> {
        let t = Instant::now();
        let _permit = self.0.admit()?;
        let r = req.into_inner();
        let c = self.collection(&r.collection_name)?;
        if r.search_points.is_empty() {
            return Ok(Response::new(q::SearchBatchResponse {
                result: Vec::new(),
                time: t.elapsed().as_secs_f64(),
            }));
        }
        let knns = r
            .search_points
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let field = format!("search_points[{i}]");
                search_parts(s, &field)
                    .and_then(knn)
                    .map_err(prefixed(&field))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let result = run_knn(c, knns)
            .await?
            .into_iter()
            .map(|result| q::BatchResult { result })
            .collect();
        Ok(Response::new(q::SearchBatchResponse {
            result,
            time: t.elapsed().as_secs_f64(),
        }))
    }

    async fn query(
        &self,
        req: Request<q::QueryPoints>,
    ) -> Result<Response<q::QueryResponse>, Status> {
        let t = Instant::now();
        let _permit = self.0.admit()?;
        let r = req.into_inner();
        let c = self.collection(&r.collection_name)?;
        let k = knn(query_parts(r)?)?;
        let result = run_knn(c, vec![k]).await?.pop().unwrap_or_default();
        Ok(Response::new(q::QueryResponse {
            result,
            time: t.elapsed().as_secs_f64(),
        }))
    }

    async fn scroll(
        &self,
        req: Request<q::ScrollPoints>,
    ) -> Result<Response<q::ScrollResponse>, Status> {
        let t = Instant::now();
        let _permit = self.0.admit()?;
        let r = req.into_inner();
        refuse(&r.shard_key_selector, "shard_key_selector", "shard keys")?;
        refuse(&r.order_by, "order_by", "ordering by a payload field")?;
        let c = self.collection(&r.collection_name)?;
        let from = match r.offset {
            Some(p) => Some(ids::from_pb(Some(p), "offset")?.id),
            None => None,
        };
        let limit = r.limit.unwrap_or(10) as usize;
        if limit == 0 || limit > MAX_K {
            return Err(bad("limit", format!("must be 1..={MAX_K}")));
        }
        let filter = filter_from_pb(r.filter, "filter")?;
        let sel = payload_sel(r.with_payload, true)?;
        let with_vec = vectors_sel(r.with_vectors)?;
        let (mut records, _) = blocking(move || {
            c.scroll(from, limit + 1, filter.as_ref(), true, with_vec)
                .map_err(status_of)
        })
        .await?;
        let next = match records.get(limit) {
            Some(r) => Some(ids::to_pb(r.id, parsed(r.id, r.payload.as_ref())?.as_ref())),
            None => None,
        };
        records.truncate(limit);
        Ok(Response::new(q::ScrollResponse {
            next_page_offset: next,
            result: records
                .into_iter()
                .map(|r| retrieved(r, &sel))
                .collect::<Result<_, _>>()?,
            time: t.elapsed().as_secs_f64(),
        }))
    }

    async fn count(
        &self,
        req: Request<q::CountPoints>,
    ) -> Result<Response<q::CountResponse>, Status> {
        let t = Instant::now();
        let _permit = self.0.admit()?;
        let r = req.into_inner();
        refuse(&r.shard_key_selector, "shard_key_selector", "shard keys")?;
        let c = self.collection(&r.collection_name)?;
        let filter = filter_from_pb(r.filter, "filter")?;
        let n = blocking(move || c.count(filter.as_ref()).map_err(status_of)).await?;
        Ok(Response::new(q::CountResponse {
            result: Some(q::CountResult { count: n as u64 }),
            time: t.elapsed().as_secs_f64(),
        }))
    }
}
