//! The one place where `qdrant` messages become engine types and back: payload
//! values, filters, vectors, selectors, scores.
//!
//! A request field Octet cannot honour answers UNIMPLEMENTED naming the field (a
//! result computed without it would be wrong); a malformed one INVALID_ARGUMENT.
//! Fields that only tune performance or replication (timeouts, write ordering,
//! read consistency, on-disk and quantization settings) are accepted and ignored.

use octet_quant::Metric;
use octet_store::{Condition, Filter, MatchValue, Payload, Range};
use serde_json::Value as Json;
use tonic::Status;

use super::ids::{self, ID_KEY};
use crate::qdrant_pb as q;

pub(crate) fn bad(field: impl std::fmt::Display, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {reason}"))
}

pub(crate) fn unsupported(field: impl std::fmt::Display, what: &str) -> Status {
    Status::unimplemented(format!("{field}: {what} is not supported by Octet"))
}

/// Errors when an opaque (not interpreted) field is present.
pub(crate) fn refuse<T>(v: &Option<T>, field: &str, what: &str) -> Result<(), Status> {
    match v {
        Some(_) => Err(unsupported(field, what)),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------- payloads

fn value_to_json(v: q::Value, field: &str) -> Result<Json, Status> {
    use q::value::Kind as K;
    Ok(match v.kind {
        None | Some(K::NullValue(_)) => Json::Null,
        Some(K::DoubleValue(x)) => serde_json::Number::from_f64(x)
            .map(Json::Number)
            .ok_or_else(|| bad(field, format!("{x} is not a finite number")))?,
        Some(K::IntegerValue(i)) => Json::from(i),
        Some(K::StringValue(s)) => Json::String(s),
        Some(K::BoolValue(b)) => Json::Bool(b),
        Some(K::StructValue(s)) => Json::Object(map_to_json(s.fields, field)?),
        Some(K::ListValue(l)) => Json::Array(
            l.values
                .into_iter()
                .enumerate()
                .map(|(i, v)| value_to_json(v, &format!("{field}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn map_to_json(
    m: std::collections::HashMap<String, q::Value>,
    field: &str,
) -> Result<Payload, Status> {
    m.into_iter()
        .map(|(k, v)| {
            let f = format!("{field}.{k}");
            value_to_json(v, &f).map(|j| (k, j))
        })
        .collect()
}

/// A request payload; the reserved id field may not be written.
pub(crate) fn payload_from_pb(
    m: std::collections::HashMap<String, q::Value>,
    field: &str,
) -> Result<Payload, Status> {
    if m.contains_key(ID_KEY) {
        return Err(bad(
            format!("{field}.{ID_KEY}"),
            "this key is reserved by Octet for Qdrant point ids",
        ));
    }
    map_to_json(m, field)
}

fn json_to_value(j: Json) -> q::Value {
    use q::value::Kind as K;
    let kind = match j {
        Json::Null => K::NullValue(q::NullValue::NullValue as i32),
        Json::Bool(b) => K::BoolValue(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => K::IntegerValue(i),
            None => K::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => K::StringValue(s),
        Json::Array(a) => K::ListValue(q::ListValue {
            values: a.into_iter().map(json_to_value).collect(),
        }),
        Json::Object(o) => K::StructValue(q::Struct {
            fields: o.into_iter().map(|(k, v)| (k, json_to_value(v))).collect(),
        }),
    };
    q::Value { kind: Some(kind) }
}

/// Which payload fields a reply carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PayloadSel {
    None,
    All,
    Include(Vec<String>),
    Exclude(Vec<String>),
}

impl PayloadSel {
    pub fn wanted(&self) -> bool {
        *self != PayloadSel::None
    }
}

/// `with_payload`, or `default` when absent.
pub(crate) fn payload_sel(
    s: Option<q::WithPayloadSelector>,
    default: bool,
) -> Result<PayloadSel, Status> {
    use q::with_payload_selector::SelectorOptions as S;
    let keys = |fields: Vec<String>, which: &str| -> Result<Vec<String>, Status> {
        if let Some(k) = fields.iter().find(|k| k.contains('.') || k.contains('[')) {
            return Err(unsupported(
                format!("with_payload.{which}"),
                &format!("a nested path (`{k}`)"),
            ));
        }
        Ok(fields)
    };
    Ok(match s.and_then(|s| s.selector_options) {
        None if default => PayloadSel::All,
        None => PayloadSel::None,
        Some(S::Enable(true)) => PayloadSel::All,
        Some(S::Enable(false)) => PayloadSel::None,
        Some(S::Include(i)) => PayloadSel::Include(keys(i.fields, "include")?),
        Some(S::Exclude(e)) => PayloadSel::Exclude(keys(e.fields, "exclude")?),
    })
}

/// The payload as a reply shows it: the reserved id field removed, selected keys.
pub(crate) fn payload_to_pb(
    p: Option<Payload>,
    sel: &PayloadSel,
) -> std::collections::HashMap<String, q::Value> {
    let Some(p) = p else {
        return Default::default();
    };
    p.into_iter()
        .filter(|(k, _)| k != ID_KEY)
        .filter(|(k, _)| match sel {
            PayloadSel::None => false,
            PayloadSel::All => true,
            PayloadSel::Include(keys) => keys.contains(k),
            PayloadSel::Exclude(keys) => !keys.contains(k),
        })
        .map(|(k, v)| (k, json_to_value(v)))
        .collect()
}

/// `with_vectors`: whether vectors are returned (only the unnamed vector exists).
pub(crate) fn vectors_sel(s: Option<q::WithVectorsSelector>) -> Result<bool, Status> {
    use q::with_vectors_selector::SelectorOptions as S;
    match s.and_then(|s| s.selector_options) {
        None | Some(S::Enable(false)) => Ok(false),
        Some(S::Enable(true)) => Ok(true),
        Some(S::Include(v)) if v.names.iter().all(String::is_empty) => Ok(!v.names.is_empty()),
        Some(S::Include(_)) => Err(unsupported("with_vectors.include", "a named vector")),
    }
}

pub(crate) fn vector_out(v: Option<Vec<f32>>) -> Option<q::VectorsOutput> {
    v.map(|data| q::VectorsOutput {
        vectors_options: Some(q::vectors_output::VectorsOptions::Vector(q::VectorOutput {
            data: Vec::new(),
            vector: Some(q::vector_output::Vector::Dense(q::DenseVector { data })),
        })),
    })
}

// ---------------------------------------------------------------- vectors

/// The dense vector of an upserted point.
pub(crate) fn vector_in(v: Option<q::Vectors>, field: &str) -> Result<Vec<f32>, Status> {
    use q::vector::Vector as V;
    use q::vectors::VectorsOptions as O;
    let v = match v.and_then(|v| v.vectors_options) {
        Some(O::Vector(v)) => v,
        Some(O::Vectors(mut named)) => match named.vectors.remove("") {
            Some(v) if named.vectors.is_empty() => v,
            _ => {
                let mut names: Vec<String> = named.vectors.into_keys().collect();
                names.sort();
                return Err(unsupported(
                    format!("{field}.vectors"),
                    &format!("named vectors ({names:?}; only the unnamed vector \"\" exists)"),
                ));
            }
        },
        None => return Err(bad(field, "missing vector")),
    };
    refuse(&v.indices, &format!("{field}.indices"), "a sparse vector")?;
    if v.vectors_count.is_some_and(|n| n > 1) {
        return Err(unsupported(
            format!("{field}.vectors_count"),
            "a multi-vector",
        ));
    }
    match v.vector {
        None => Ok(v.data),
        Some(V::Dense(d)) => Ok(d.data),
        Some(V::Sparse(_)) => Err(unsupported(format!("{field}.sparse"), "a sparse vector")),
        Some(V::MultiDense(_)) => Err(unsupported(
            format!("{field}.multi_dense"),
            "a multi-vector",
        )),
        Some(V::Document(_) | V::Image(_) | V::Object(_)) => Err(unsupported(
            field,
            "server-side inference (document, image, object)",
        )),
    }
}

/// Octet's metric for a Qdrant distance.
pub(crate) fn metric_from(raw: i32, field: &str) -> Result<Metric, Status> {
    match q::Distance::try_from(raw) {
        Ok(q::Distance::Cosine) => Ok(Metric::Cosine),
        Ok(q::Distance::Dot) => Ok(Metric::Dot),
        Ok(q::Distance::Euclid) => Ok(Metric::L2),
        Ok(q::Distance::Manhattan) => Err(unsupported(field, "the Manhattan distance")),
        Ok(q::Distance::UnknownDistance) | Err(_) => {
            Err(bad(field, format!("unknown distance {raw}")))
        }
    }
}

pub(crate) fn distance_of(m: Metric) -> q::Distance {
    match m {
        Metric::Cosine => q::Distance::Cosine,
        Metric::Dot => q::Distance::Dot,
        Metric::L2 => q::Distance::Euclid,
    }
}

/// Qdrant's score from Octet's: Euclid is the distance itself (lower is better),
/// where Octet returns the negated squared distance.
pub(crate) fn score_out(m: Metric, s: f32) -> f32 {
    match m {
        Metric::L2 => (-s).max(0.0).sqrt(),
        Metric::Cosine | Metric::Dot => s,
    }
}

/// Whether a Qdrant score passes `score_threshold`.
pub(crate) fn passes(m: Metric, score: f32, threshold: Option<f32>) -> bool {
    match (m, threshold) {
        (_, None) => true,
        (Metric::L2, Some(t)) => score <= t,
        (_, Some(t)) => score >= t,
    }
}

// ---------------------------------------------------------------- filters

/// Qdrant's `has_id` as a condition on Octet ids, so it sees every point
/// whichever API wrote it. An id below 2^63 is an integer id and names its point
/// alone; one at or above (a UUID's fold, or such an integer) must also carry
/// that Qdrant id in [`ID_KEY`], or no Qdrant id at all (written through
/// octet.v1), as [`ids`] documents.
fn has_id(ids: Vec<ids::QId>) -> Condition {
    let (plain, folded): (Vec<_>, Vec<_>) = ids.into_iter().partition(|q| q.id < 1 << 63);
    let mut any: Vec<Condition> = Vec::new();
    if !plain.is_empty() {
        any.push(Condition::HasId {
            ids: plain.into_iter().map(|q| q.id).collect(),
        });
    }
    for q in folded {
        any.push(Condition::Filter(Filter {
            must: vec![
                Condition::HasId { ids: vec![q.id] },
                Condition::Filter(Filter {
                    should: vec![
                        Condition::keyword(ID_KEY, &q.text),
                        Condition::IsEmpty { key: ID_KEY.into() },
                    ],
                    ..Filter::default()
                }),
            ],
            ..Filter::default()
        }));
    }
    match any.len() {
        0 => nothing(),
        1 => any.pop().unwrap_or_else(nothing),
        _ => Condition::Filter(Filter {
            should: any,
            ..Filter::default()
        }),
    }
}

/// A condition no point passes (Qdrant's `any: []`, `has_id: []`).
fn nothing() -> Condition {
    Condition::Filter(Filter {
        must_not: vec![Condition::Filter(Filter::default())],
        ..Filter::default()
    })
}

fn not(c: Condition) -> Condition {
    Condition::Filter(Filter {
        must_not: vec![c],
        ..Filter::default()
    })
}

fn check_key(key: &str, field: &str) -> Result<(), Status> {
    if key.is_empty() {
        return Err(bad(format!("{field}.key"), "empty"));
    }
    if key.contains('[') {
        return Err(unsupported(
            format!("{field}.key"),
            &format!("an array path (`{key}`); dotted object paths are"),
        ));
    }
    Ok(())
}

fn match_cond(key: &str, m: q::Match, field: &str) -> Result<Condition, Status> {
    use q::r#match::MatchValue as M;
    let key = key.to_string();
    let kw = |v: Vec<String>| v.into_iter().map(MatchValue::Keyword).collect::<Vec<_>>();
    let int = |v: Vec<i64>| v.into_iter().map(MatchValue::Integer).collect::<Vec<_>>();
    let any = |key: String, any: Vec<MatchValue>| {
        if any.is_empty() {
            nothing()
        } else {
            Condition::MatchAny { key, any }
        }
    };
    Ok(match m.match_value {
        None => return Err(bad(field, "empty match")),
        Some(M::Keyword(s)) => Condition::Match {
            key,
            value: MatchValue::Keyword(s),
        },
        Some(M::Integer(i)) => Condition::Match {
            key,
            value: MatchValue::Integer(i),
        },
        Some(M::Boolean(b)) => Condition::Match {
            key,
            value: MatchValue::Bool(b),
        },
        Some(M::Keywords(k)) => any(key, kw(k.strings)),
        Some(M::Integers(i)) => any(key, int(i.integers)),
        Some(M::ExceptKeywords(k)) => Condition::MatchExcept {
            key,
            except: kw(k.strings),
        },
        Some(M::ExceptIntegers(i)) => Condition::MatchExcept {
            key,
            except: int(i.integers),
        },
        Some(M::Text(_)) => return Err(unsupported(format!("{field}.text"), "full-text match")),
        Some(M::Phrase(_)) => return Err(unsupported(format!("{field}.phrase"), "phrase match")),
        Some(M::TextAny(_)) => {
            return Err(unsupported(format!("{field}.text_any"), "full-text match"));
        }
        Some(M::Prefix(_)) => return Err(unsupported(format!("{field}.prefix"), "prefix match")),
        Some(M::Substring(_)) => {
            return Err(unsupported(format!("{field}.substring"), "substring match"));
        }
    })
}

fn field_cond(f: q::FieldCondition, field: &str) -> Result<Condition, Status> {
    check_key(&f.key, field)?;
    refuse(
        &f.geo_bounding_box,
        &format!("{field}.geo_bounding_box"),
        "a geo filter",
    )?;
    refuse(
        &f.geo_radius,
        &format!("{field}.geo_radius"),
        "a geo filter",
    )?;
    refuse(
        &f.geo_polygon,
        &format!("{field}.geo_polygon"),
        "a geo filter",
    )?;
    refuse(
        &f.values_count,
        &format!("{field}.values_count"),
        "a values-count filter",
    )?;
    refuse(
        &f.datetime_range,
        &format!("{field}.datetime_range"),
        "a datetime range",
    )?;
    let mut parts = Vec::new();
    if let Some(m) = f.r#match {
        parts.push(match_cond(&f.key, m, &format!("{field}.match"))?);
    }
    if let Some(r) = f.range {
        parts.push(Condition::Range {
            key: f.key.clone(),
            range: Range {
                gt: r.gt,
                gte: r.gte,
                lt: r.lt,
                lte: r.lte,
            },
        });
    }
    for (flag, c) in [
        (f.is_empty, Condition::IsEmpty { key: f.key.clone() }),
        (f.is_null, Condition::IsNull { key: f.key.clone() }),
    ] {
        match flag {
            Some(true) => parts.push(c),
            Some(false) => parts.push(not(c)),
            None => {}
        }
    }
    match parts.len() {
        0 => Err(bad(
            field,
            format!(
                "no condition on `{}` (match, range, is_empty or is_null)",
                f.key
            ),
        )),
        1 => Ok(parts.remove(0)),
        _ => Ok(Condition::Filter(Filter::must(parts))),
    }
}

fn condition(c: q::Condition, field: &str) -> Result<Condition, Status> {
    use q::condition::ConditionOneOf as C;
    match c.condition_one_of {
        None => Err(bad(field, "empty condition")),
        Some(C::Field(f)) => field_cond(f, &format!("{field}.field")),
        Some(C::IsEmpty(e)) => {
            check_key(&e.key, &format!("{field}.is_empty"))?;
            Ok(Condition::IsEmpty { key: e.key })
        }
        Some(C::IsNull(e)) => {
            check_key(&e.key, &format!("{field}.is_null"))?;
            Ok(Condition::IsNull { key: e.key })
        }
        Some(C::HasId(h)) => {
            let ids = h
                .has_id
                .into_iter()
                .enumerate()
                .map(|(i, p)| ids::from_pb(Some(p), &format!("{field}.has_id[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(has_id(ids))
        }
        Some(C::Filter(f)) => Ok(Condition::Filter(filter_at(f, &format!("{field}.filter"))?)),
        Some(C::Nested(_)) => Err(unsupported(
            format!("{field}.nested"),
            "a condition on elements of an array of objects (dotted keys into objects are supported)",
        )),
        Some(C::HasVector(_)) => Err(unsupported(format!("{field}.has_vector"), "has_vector")),
        Some(C::Slice(_)) => Err(unsupported(format!("{field}.slice"), "a slice condition")),
    }
}

fn clauses(cs: Vec<q::Condition>, field: &str) -> Result<Vec<Condition>, Status> {
    cs.into_iter()
        .enumerate()
        .map(|(i, c)| condition(c, &format!("{field}[{i}]")))
        .collect()
}

fn filter_at(f: q::Filter, field: &str) -> Result<Filter, Status> {
    refuse(&f.min_should, &format!("{field}.min_should"), "min_should")?;
    Ok(Filter {
        must: clauses(f.must, &format!("{field}.must"))?,
        should: clauses(f.should, &format!("{field}.should"))?,
        must_not: clauses(f.must_not, &format!("{field}.must_not"))?,
    })
}

/// A request's filter, checked; an empty filter is none.
pub(crate) fn filter_from_pb(f: Option<q::Filter>, field: &str) -> Result<Option<Filter>, Status> {
    let Some(f) = f else { return Ok(None) };
    let f = filter_at(f, field)?;
    f.validate().map_err(|e| bad(field, e))?;
    Ok((!f.is_empty()).then_some(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kw(key: &str, v: &str) -> q::Condition {
        q::Condition {
            condition_one_of: Some(q::condition::ConditionOneOf::Field(q::FieldCondition {
                key: key.into(),
                r#match: Some(q::Match {
                    match_value: Some(q::r#match::MatchValue::Keyword(v.into())),
                }),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn payload_values_round_trip_and_reserved_key_is_refused() {
        let j = json!({"a": 1, "b": 2.5, "c": "x", "d": [true, null], "e": {"f": -3}});
        let Json::Object(p) = j.clone() else {
            unreachable!()
        };
        let pb = payload_to_pb(Some(p.clone()), &PayloadSel::All);
        let back = payload_from_pb(pb, "payload").expect("back");
        assert_eq!(Json::Object(back), j);
        let mut m = std::collections::HashMap::new();
        m.insert(ID_KEY.to_string(), json_to_value(json!("x")));
        assert_eq!(
            payload_from_pb(m, "payload").expect_err("reserved").code(),
            tonic::Code::InvalidArgument
        );
        let mut with_id = p;
        with_id.insert(ID_KEY.into(), json!("7"));
        let shown = payload_to_pb(Some(with_id), &PayloadSel::Include(vec!["a".into()]));
        assert_eq!(shown.len(), 1);
    }

    #[test]
    fn filters_convert_and_unsupported_parts_are_named() {
        let f = q::Filter {
            must: vec![kw("source", "debian")],
            must_not: vec![kw("meta.lang", "de")],
            ..Default::default()
        };
        let got = filter_from_pb(Some(f), "filter")
            .expect("ok")
            .expect("some");
        assert_eq!(got.must, vec![Condition::keyword("source", "debian")]);
        assert_eq!(got.must_not, vec![Condition::keyword("meta.lang", "de")]);

        let geo = q::Filter {
            should: vec![q::Condition {
                condition_one_of: Some(q::condition::ConditionOneOf::Field(q::FieldCondition {
                    key: "loc".into(),
                    geo_radius: Some(vec![]),
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        let e = filter_from_pb(Some(geo), "filter").expect_err("geo");
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        assert!(
            e.message().contains("filter.should[0].field.geo_radius"),
            "{}",
            e.message()
        );

        let empty = q::Filter {
            must: vec![q::Condition {
                condition_one_of: Some(q::condition::ConditionOneOf::Field(q::FieldCondition {
                    key: "k".into(),
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        let e = filter_from_pb(Some(empty), "filter").expect_err("malformed");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            filter_from_pb(Some(q::Filter::default()), "f")
                .expect("ok")
                .is_none()
        );
    }

    #[test]
    fn euclid_scores_are_distances() {
        assert_eq!(score_out(Metric::L2, -4.0), 2.0);
        assert!(passes(Metric::L2, 2.0, Some(2.5)));
        assert!(!passes(Metric::Cosine, 0.2, Some(0.5)));
    }
}
