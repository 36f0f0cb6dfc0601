//! `qdrant.Qdrant` (health) and `qdrant.Collections`: create, get, list, delete,
//! exists.

use std::sync::Arc;
use std::time::Instant;

use octet_store::{CollectionConfig, CollectionInfo};
use tonic::{Request, Response, Status};

use super::convert::{bad, distance_of, metric_from, refuse, unsupported};
use crate::error::status_of;
use crate::qdrant_pb as q;
use crate::service::{AppState, blocking, need_name};

/// `qdrant.Qdrant`.
#[derive(Debug, Clone)]
pub(crate) struct RootService;

#[tonic::async_trait]
impl q::qdrant_server::Qdrant for RootService {
    async fn health_check(
        &self,
        _req: Request<q::HealthCheckRequest>,
    ) -> Result<Response<q::HealthCheckReply>, Status> {
        Ok(Response::new(q::HealthCheckReply {
            title: "octet (Qdrant-compatible gRPC API)".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            commit: None,
        }))
    }
}

/// `qdrant.Collections`.
#[derive(Debug, Clone)]
pub(crate) struct CollectionsService(pub Arc<AppState>);

/// Maps Qdrant's HNSW settings onto Octet's where they mean the same (`m`,
/// `ef_construct`); the rest tune Qdrant's storage and threads and are ignored.
fn apply_hnsw(out: &mut CollectionConfig, h: Option<q::HnswConfigDiff>) {
    let Some(h) = h else { return };
    if let Some(m) = h.m {
        out.hnsw.m = usize::try_from(m).unwrap_or(usize::MAX);
    }
    if let Some(ef) = h.ef_construct {
        out.hnsw.ef_construction = usize::try_from(ef).unwrap_or(usize::MAX);
    }
}

/// Octet's configuration for a `CreateCollection`. Quantization settings are
/// accepted and ignored: Octet stores its own compact codes plus a rescore tier.
/// WAL, shard, replication and on-disk settings are single-node storage tuning
/// and are ignored too.
pub(crate) fn config_from(r: &mut q::CreateCollection) -> Result<CollectionConfig, Status> {
    // An empty SparseVectorConfig (no sparse vectors; what LangChain sends for
    // a dense-only store) encodes as zero bytes.
    if r.sparse_vectors_config
        .as_ref()
        .is_some_and(|b| !b.is_empty())
    {
        return Err(unsupported("sparse_vectors_config", "sparse vectors"));
    }
    refuse(&r.strict_mode_config, "strict_mode_config", "strict mode")?;
    if !r.metadata.is_empty() {
        return Err(unsupported("metadata", "collection metadata"));
    }
    if r.sharding_method == Some(q::ShardingMethod::Custom as i32) {
        return Err(unsupported("sharding_method", "custom sharding"));
    }
    use q::vectors_config::Config as VC;
    let params = match r.vectors_config.take().and_then(|v| v.config) {
        Some(VC::Params(p)) => p,
        // One vector named "" is the unnamed vector (LangChain's default).
        Some(VC::ParamsMap(mut m)) => match m.map.remove("") {
            Some(p) if m.map.is_empty() => p,
            _ => {
                let mut names: Vec<String> = m.map.into_keys().collect();
                names.sort();
                return Err(unsupported(
                    "vectors_config.params_map",
                    &format!("named vectors ({names:?}; only one vector, named \"\", is served)"),
                ));
            }
        },
        None => return Err(bad("vectors_config", "missing (size and distance)")),
    };
    refuse(
        &params.multivector_config,
        "vectors_config.params.multivector_config",
        "multi-vectors",
    )?;
    if params.size == 0 {
        return Err(bad("vectors_config.params.size", "must be at least 1"));
    }
    let dim =
        usize::try_from(params.size).map_err(|_| bad("vectors_config.params.size", "too large"))?;
    let metric = metric_from(params.distance, "vectors_config.params.distance")?;
    let mut out = CollectionConfig::new(dim, metric);
    apply_hnsw(&mut out, r.hnsw_config.take());
    apply_hnsw(&mut out, params.hnsw_config);
    // Qdrant builds its HNSW index once a segment holds `indexing_threshold` KB of
    // vectors; Octet seals (and builds the graph) at a point count: the same knob.
    if let Some(kb) = r
        .optimizers_config
        .as_ref()
        .and_then(|o| o.indexing_threshold)
        && kb > 0
    {
        let points = kb.saturating_mul(1024) / (4 * params.size);
        out.segments.seal_threshold = usize::try_from(points.max(1)).unwrap_or(usize::MAX);
    }
    Ok(out)
}

fn info_to_pb(i: &CollectionInfo) -> q::CollectionInfo {
    let c = &i.config;
    // qdrant-client's models require some fields Octet has no counterpart for
    // (full_scan_threshold, default_segment_number, the WAL's sizes): they carry
    // Qdrant's defaults. indexing_threshold reports the seal threshold in KB.
    let hnsw = q::HnswConfigDiff {
        m: Some(c.hnsw.m as u64),
        ef_construct: Some(c.hnsw.ef_construction as u64),
        full_scan_threshold: Some(10_000),
        ..Default::default()
    };
    let optimizer = q::OptimizersConfigDiff {
        default_segment_number: Some(0),
        flush_interval_sec: Some(0),
        indexing_threshold: Some((c.segments.seal_threshold * c.dim * 4 / 1024) as u64),
        ..Default::default()
    };
    let wal = q::WalConfigDiff {
        wal_capacity_mb: Some(32),
        wal_segments_ahead: Some(0),
        ..Default::default()
    };
    q::CollectionInfo {
        status: q::CollectionStatus::Green as i32,
        optimizer_status: Some(q::OptimizerStatus {
            ok: true,
            error: String::new(),
        }),
        segments_count: (i.segments + usize::from(i.growing_points > 0)) as u64,
        config: Some(q::CollectionConfig {
            params: Some(q::CollectionParams {
                shard_number: 1,
                on_disk_payload: true,
                vectors_config: Some(q::VectorsConfig {
                    config: Some(q::vectors_config::Config::Params(q::VectorParams {
                        size: c.dim as u64,
                        distance: distance_of(c.metric) as i32,
                        ..Default::default()
                    })),
                }),
                replication_factor: Some(1),
                write_consistency_factor: Some(1),
            }),
            hnsw_config: Some(hnsw),
            optimizer_config: Some(optimizer),
            wal_config: Some(wal),
        }),
        payload_schema: Default::default(),
        points_count: Some(i.points as u64),
        indexed_vectors_count: Some(i.points.saturating_sub(i.growing_points) as u64),
    }
}

#[tonic::async_trait]
impl q::collections_server::Collections for CollectionsService {
    async fn get(
        &self,
        req: Request<q::GetCollectionInfoRequest>,
    ) -> Result<Response<q::GetCollectionInfoResponse>, Status> {
        let t = Instant::now();
        let _permit = self.0.admit()?;
        let r = req.into_inner();
        need_name(&r.collection_name, "collection_name")?;
        let c = self
            .0
            .store
            .collection(&r.collection_name)
            .map_err(status_of)?;
        let info = blocking(move || Ok(c.info())).await?;
        Ok(Response::new(q::GetCollectionInfoResponse {
            result: Some(info_to_pb(&info)),
            time: t.elapsed().as_secs_f64(),
        }))
    }

    async fn list(
        &self,
        _req: Request<q::ListCollectionsRequest>,
    ) -> Result<Response<q::ListCollectionsResponse>, Status> {
        let t = Instant::now();
        let _permit = self.0.admit()?;
        let collections = self
            .0
            .store
            .list()
            .into_iter()
            .map(|name| q::CollectionDescription { name })
            .collect();
        Ok(Response::new(q::ListCollectionsResponse {
            collections,
            time: t.elapsed().as_secs_f64(),
        }))
    }

    async fn create(
        &self,
        req: Request<q::CreateCollection>,
    ) -> Result<Response<q::CollectionOperationResponse>, Status> {
        let t = Instant::now();
        let _permit = self.0.admit()?;
        let mut r = req.into_inner();
        need_name(&r.collection_name, "collection_name")?;
        let config = config_from(&mut r)?;
        let state = Arc::clone(&self.0);
        let name = r.collection_name;
        blocking(move || {
            state
                .store
                .create_collection(&name, config)
                .map_err(status_of)
        })
        .await?;
        Ok(Response::new(q::CollectionOperationResponse {
            result: true,
            time: t.elapsed().as_secs_f64(),
        }))
    }

    async fn delete(
        &self,
        req: Request<q::DeleteCollection>,
    ) -> Result<Response<q::CollectionOperationResponse>, Status> {
        let t = Instant::now();
        let _permit = self.0.admit()?;
        let r = req.into_inner();
        need_name(&r.collection_name, "collection_name")?;
        let state = Arc::clone(&self.0);
        let name = r.collection_name;
        // As in Qdrant, deleting an absent collection is not an error: `false`.
        let existed = blocking(move || match state.store.drop_collection(&name) {
            Ok(()) => Ok(true),
            Err(octet_store::StoreError::CollectionNotFound { .. }) => Ok(false),
            Err(e) => Err(status_of(e)),
        })
        .await?;
        Ok(Response::new(q::CollectionOperationResponse {
            result: existed,
            time: t.elapsed().as_secs_f64(),
        }))
    }

    async fn collection_exists(
        &self,
        req: Request<q::CollectionExistsRequest>,
    ) -> Result<Response<q::CollectionExistsResponse>, Status> {
        let t = Instant::now();
        let _permit = self.0.admit()?;
        let r = req.into_inner();
        need_name(&r.collection_name, "collection_name")?;
        let exists = self.0.store.collection(&r.collection_name).is_ok();
        Ok(Response::new(q::CollectionExistsResponse {
            result: Some(q::CollectionExists { exists }),
            time: t.elapsed().as_secs_f64(),
        }))
    }
}
