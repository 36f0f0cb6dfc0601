//! The one place where `octet.v1` messages become engine types and back.
//!
//! Conversions that can fail return an INVALID_ARGUMENT [`Status`] whose message
//! names the field (`config.codec`, `points[3].payload_json`, `filter.must[0]`).

use octet_quant::{CodecSpec, ElementSpec, Metric};
use octet_store::{
    CollectionConfig, CollectionInfo, Condition, Filter, MatchValue, Payload, PayloadJson, Point,
    Range, Record, ScoredPoint,
};
use tonic::Status;

use crate::pb;

/// The largest `k`, `ef` and scroll `limit` a request may ask for: the store's.
pub use octet_store::MAX_K;

fn bad(field: impl std::fmt::Display, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {reason}"))
}

impl From<Metric> for pb::Metric {
    fn from(m: Metric) -> Self {
        match m {
            Metric::Cosine => pb::Metric::Cosine,
            Metric::Dot => pb::Metric::Dot,
            Metric::L2 => pb::Metric::L2,
        }
    }
}

/// `metric` as sent (an enum number); unspecified is cosine.
fn metric_from(raw: i32) -> Result<Metric, Status> {
    match pb::Metric::try_from(raw) {
        Ok(pb::Metric::Unspecified | pb::Metric::Cosine) => Ok(Metric::Cosine),
        Ok(pb::Metric::Dot) => Ok(Metric::Dot),
        Ok(pb::Metric::L2) => Ok(Metric::L2),
        Err(_) => Err(bad("config.metric", format!("unknown metric {raw}"))),
    }
}

impl TryFrom<pb::CollectionConfig> for CollectionConfig {
    type Error = Status;

    /// Zero or empty fields take the store's defaults; the result is validated.
    fn try_from(c: pb::CollectionConfig) -> Result<Self, Status> {
        if c.dim == 0 {
            return Err(bad("config.dim", "must be at least 1"));
        }
        let mut out = CollectionConfig::new(c.dim as usize, metric_from(c.metric)?);
        if !c.codec.is_empty() {
            out.codec = c
                .codec
                .parse::<CodecSpec>()
                .map_err(|e| bad("config.codec", e))?;
        }
        match c.rescore.trim() {
            "" => {}
            "none" => out.rescore.element = None,
            s => {
                out.rescore.element = Some(
                    s.parse::<ElementSpec>()
                        .map_err(|e| bad("config.rescore", e))?,
                )
            }
        }
        if c.oversampling != 0.0 {
            out.rescore.oversampling = c.oversampling;
        }
        if c.hnsw_m != 0 {
            out.hnsw.m = c.hnsw_m as usize;
        }
        if c.ef_construction != 0 {
            out.hnsw.ef_construction = c.ef_construction as usize;
        }
        if c.ef_search != 0 {
            out.hnsw.ef_search = c.ef_search as usize;
        }
        if c.seal_threshold != 0 {
            out.segments.seal_threshold = c.seal_threshold as usize;
        }
        out.validate().map_err(crate::error::status_of)?;
        Ok(out)
    }
}

fn to_u32(x: usize) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

impl From<&CollectionConfig> for pb::CollectionConfig {
    fn from(c: &CollectionConfig) -> Self {
        pb::CollectionConfig {
            dim: to_u32(c.dim),
            metric: pb::Metric::from(c.metric) as i32,
            codec: c.codec.to_string(),
            rescore: c.rescore.element.map_or("none", |e| e.name()).to_string(),
            oversampling: c.rescore.oversampling,
            hnsw_m: to_u32(c.hnsw.m),
            ef_construction: to_u32(c.hnsw.ef_construction),
            ef_search: to_u32(c.hnsw.ef_search),
            seal_threshold: to_u32(c.segments.seal_threshold),
        }
    }
}

impl From<&CollectionInfo> for pb::CollectionInfo {
    fn from(i: &CollectionInfo) -> Self {
        let fitted = i.fitted_codec.as_ref();
        let bytes_per_vector = fitted.unwrap_or(&i.config.codec).code_len(i.config.dim);
        let ratio = if bytes_per_vector == 0 {
            0.0
        } else {
            (4 * i.config.dim) as f64 / bytes_per_vector as f64
        };
        pb::CollectionInfo {
            name: i.name.clone(),
            config: Some((&i.config).into()),
            stats: Some(pb::CollectionStats {
                points: i.points as u64,
                growing_points: i.growing_points as u64,
                segments: i.segments as u64,
                sealed_points: i.sealed_points as u64,
                code_bytes: i.code_bytes as u64,
                rescore_bytes: i.rescore_bytes as u64,
                graph_bytes: i.graph_bytes as u64,
                bytes_per_vector: bytes_per_vector as u64,
                compression_ratio: ratio,
                fitted_codec: fitted.map(ToString::to_string).unwrap_or_default(),
            }),
        }
    }
}

/// Parses a payload: empty text is no payload, anything else must be a JSON object.
pub fn payload_from_json(text: &str, field: &str) -> Result<Payload, Status> {
    if text.trim().is_empty() {
        return Ok(Payload::new());
    }
    serde_json::from_str::<Payload>(text).map_err(|e| bad(field, format!("not a JSON object: {e}")))
}

/// A batch of points; an empty batch is an error (it would be a no-op a client
/// most likely did not mean).
pub fn points_from_pb(points: Vec<pb::Point>) -> Result<Vec<Point>, Status> {
    if points.is_empty() {
        return Err(bad("points", "empty batch"));
    }
    points
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let payload = payload_from_json(&p.payload_json, &format!("points[{i}].payload_json"))?;
            Ok(Point::with_payload(p.id, p.vector, payload))
        })
        .collect()
}

impl From<Record> for pb::Record {
    fn from(r: Record) -> Self {
        pb::Record {
            id: r.id,
            payload_json: r.payload.map(PayloadJson::into_string),
            vector: r.vector.unwrap_or_default(),
        }
    }
}

impl From<ScoredPoint> for pb::ScoredPoint {
    fn from(s: ScoredPoint) -> Self {
        pb::ScoredPoint {
            id: s.id,
            score: s.score,
            payload_json: s.payload.map(PayloadJson::into_string),
            vector: s.vector.unwrap_or_default(),
        }
    }
}

fn match_value(v: Option<pb::MatchValue>, field: &str) -> Result<MatchValue, Status> {
    match v.and_then(|v| v.value) {
        Some(pb::match_value::Value::Keyword(s)) => Ok(MatchValue::Keyword(s)),
        Some(pb::match_value::Value::Integer(i)) => Ok(MatchValue::Integer(i)),
        Some(pb::match_value::Value::Boolean(b)) => Ok(MatchValue::Bool(b)),
        None => Err(bad(field, "no value set (keyword, integer or boolean)")),
    }
}

fn condition(c: pb::Condition, field: &str) -> Result<Condition, Status> {
    use pb::condition::Condition as C;
    match c.condition {
        Some(C::Match(m)) => Ok(Condition::Match {
            value: match_value(m.value, &format!("{field}.match.value"))?,
            key: m.key,
        }),
        Some(C::MatchAny(m)) => Ok(Condition::MatchAny {
            any: m
                .any
                .into_iter()
                .enumerate()
                .map(|(i, v)| match_value(Some(v), &format!("{field}.match_any.any[{i}]")))
                .collect::<Result<_, _>>()?,
            key: m.key,
        }),
        Some(C::Range(r)) => {
            let range = r.range.unwrap_or_default();
            Ok(Condition::Range {
                key: r.key,
                range: Range {
                    gt: range.gt,
                    gte: range.gte,
                    lt: range.lt,
                    lte: range.lte,
                },
            })
        }
        Some(C::Filter(f)) => Ok(Condition::Filter(filter_at(f, &format!("{field}.filter"))?)),
        None => Err(bad(
            field,
            "empty condition (set match, match_any, range or filter)",
        )),
    }
}

fn clauses(cs: Vec<pb::Condition>, field: &str) -> Result<Vec<Condition>, Status> {
    cs.into_iter()
        .enumerate()
        .map(|(i, c)| condition(c, &format!("{field}[{i}]")))
        .collect()
}

fn filter_at(f: pb::Filter, field: &str) -> Result<Filter, Status> {
    let filter = Filter {
        must: clauses(f.must, &format!("{field}.must"))?,
        should: clauses(f.should, &format!("{field}.should"))?,
        must_not: clauses(f.must_not, &format!("{field}.must_not"))?,
    };
    // The store checks depth, empty keys and ranges; its message says which.
    filter.validate().map_err(|e| bad(field, e))?;
    Ok(filter)
}

impl TryFrom<pb::Filter> for Filter {
    type Error = Status;

    fn try_from(f: pb::Filter) -> Result<Self, Status> {
        filter_at(f, "filter")
    }
}

/// An optional filter message as an optional engine filter.
pub fn filter_from_pb(f: Option<pb::Filter>) -> Result<Option<Filter>, Status> {
    f.map(Filter::try_from).transpose()
}

impl TryFrom<pb::SearchRequest> for octet_store::SearchRequest {
    type Error = Status;

    fn try_from(r: pb::SearchRequest) -> Result<Self, Status> {
        let mut req =
            octet_store::SearchRequest::new(r.vector, r.k as usize).rescore(!r.no_rescore);
        // ef 0 is proto3's "unset": the collection's default.
        if r.ef != 0 {
            req = req.ef(r.ef as usize);
        }
        // The store's check is the one definition of the limits (k, ef, the vector's
        // values); its error names the field, and comes before the filter's as it
        // always has.
        req.validate().map_err(crate::error::status_of)?;
        if let Some(f) = filter_from_pb(r.filter)? {
            req = req.filter(f);
        }
        req.with_payload = r.with_payload;
        req.with_vector = r.with_vector;
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_overrides_round_trip() {
        let c = CollectionConfig::try_from(pb::CollectionConfig {
            dim: 8,
            metric: pb::Metric::Dot as i32,
            codec: "e4m3".into(),
            rescore: "none".into(),
            hnsw_m: 8,
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(c.metric, Metric::Dot);
        assert_eq!(c.rescore.element, None);
        let back = pb::CollectionConfig::from(&c);
        assert_eq!(back.codec, "e4m3");
        assert_eq!(back.rescore, "none");
        assert_eq!(CollectionConfig::try_from(back).expect("again"), c);
    }

    #[test]
    fn bad_config_names_the_field() {
        let err = CollectionConfig::try_from(pb::CollectionConfig {
            dim: 8,
            codec: "zz9".into(),
            ..Default::default()
        })
        .expect_err("bad codec");
        assert!(
            err.message().starts_with("config.codec"),
            "{}",
            err.message()
        );
        let err = CollectionConfig::try_from(pb::CollectionConfig {
            dim: 8,
            hnsw_m: 1000,
            ..Default::default()
        })
        .expect_err("bad m");
        assert!(err.message().contains("hnsw m"), "{}", err.message());
    }

    #[test]
    fn filters_convert_and_empty_conditions_are_rejected() {
        let f = pb::Filter {
            must: vec![pb::Condition {
                condition: Some(pb::condition::Condition::Match(pb::MatchCondition {
                    key: "tenant".into(),
                    value: Some(pb::MatchValue {
                        value: Some(pb::match_value::Value::Keyword("acme".into())),
                    }),
                })),
            }],
            ..Default::default()
        };
        let engine = Filter::try_from(f).expect("valid");
        assert_eq!(engine.must.len(), 1);
        let empty = pb::Filter {
            should: vec![pb::Condition { condition: None }],
            ..Default::default()
        };
        let err = Filter::try_from(empty).expect_err("empty condition");
        assert!(
            err.message().starts_with("filter.should[0]"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn payload_must_be_an_object() {
        assert!(payload_from_json("", "p").expect("empty").is_empty());
        assert!(payload_from_json("[1]", "p").is_err());
        let p = payload_from_json(r#"{"a": 1}"#, "p").expect("object");
        assert_eq!(p["a"], 1);
    }
}
