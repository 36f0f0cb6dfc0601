//! gRPC clients and request builders for `octet.v1`.

use octet_server::pb;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Adds an API key header (or nothing) to every call.
#[derive(Debug, Clone)]
pub struct Key(pub Option<(&'static str, String)>);

impl tonic::service::Interceptor for Key {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some((h, v)) = &self.0 {
            req.metadata_mut().insert(*h, v.parse().expect("ascii key"));
        }
        Ok(req)
    }
}

/// A channel with the key interceptor.
pub type Ch = InterceptedService<Channel, Key>;

/// One client per service over one channel.
#[derive(Debug)]
pub struct Clients {
    pub collections: pb::collections_client::CollectionsClient<Ch>,
    pub points: pb::points_client::PointsClient<Ch>,
    pub search: pb::search_client::SearchClient<Ch>,
    pub admin: pb::admin_client::AdminClient<Ch>,
}

pub async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

pub async fn clients(url: &str, key: Key) -> Clients {
    let ch = channel(url).await;
    Clients {
        collections: pb::collections_client::CollectionsClient::with_interceptor(
            ch.clone(),
            key.clone(),
        ),
        points: pb::points_client::PointsClient::with_interceptor(ch.clone(), key.clone()),
        search: pb::search_client::SearchClient::with_interceptor(ch.clone(), key.clone()),
        admin: pb::admin_client::AdminClient::with_interceptor(ch, key),
    }
}

/// A deterministic vector (splitmix-style), no two ids alike.
pub fn vector(id: u64, dim: usize) -> Vec<f32> {
    (0..dim as u64)
        .map(|j| {
            let mut z = id
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(j.wrapping_mul(0xBF58_476D_1CE4_E5B9));
            z ^= z >> 31;
            z = z.wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 29;
            (z % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

pub fn point(id: u64, dim: usize, tenant: &str) -> pb::Point {
    pb::Point {
        id,
        vector: vector(id, dim),
        payload_json: format!(r#"{{"text":"chunk {id}","tenant":"{tenant}","n":{id}}}"#),
    }
}

pub fn tenant_filter(tenant: &str) -> pb::Filter {
    pb::Filter {
        must: vec![pb::Condition {
            condition: Some(pb::condition::Condition::Match(pb::MatchCondition {
                key: "tenant".into(),
                value: Some(pb::MatchValue {
                    value: Some(pb::match_value::Value::Keyword(tenant.into())),
                }),
            })),
        }],
        ..Default::default()
    }
}

pub fn config(dim: u32) -> pb::CollectionConfig {
    pb::CollectionConfig {
        dim,
        metric: pb::Metric::Cosine as i32,
        // Small seal threshold so tests reach sealed segments quickly.
        seal_threshold: 64,
        ..Default::default()
    }
}

/// Creates collection `name` with `config`.
pub async fn create(c: &mut Clients, name: &str, config: pb::CollectionConfig) {
    c.collections
        .create(pb::CreateCollectionRequest {
            name: name.into(),
            config: Some(config),
        })
        .await
        .unwrap_or_else(|s| panic!("create `{name}`: {s:?}"));
}

/// Live points in collection `name`.
pub async fn count(c: &mut Clients, name: &str) -> u64 {
    c.points
        .count(pb::CountRequest {
            collection: name.into(),
            filter: None,
        })
        .await
        .unwrap_or_else(|s| panic!("count `{name}`: {s:?}"))
        .into_inner()
        .count
}
