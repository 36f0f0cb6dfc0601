//! The JSON form of a payload filter (`--filter`), mapped one to one onto the
//! proto's `Filter` / `Condition` messages:
//!
//! ```text
//! FILTER    = {"must": [COND, ...], "should": [COND, ...], "must_not": [COND, ...]}
//! COND      = {"key": "tenant", "match": "acme"}          keyword, integer or boolean
//!           | {"key": "lang", "match_any": ["en", "de"]}  any of these values
//!           | {"key": "year", "range": {"gte": 2020, "lt": 2025}}  gt, gte, lt, lte
//!           | {"filter": FILTER}                          a nested filter
//! ```
//!
//! `must`: every condition holds; `should`: at least one holds (when any are given);
//! `must_not`: none holds. Keys are dotted paths into the payload (`meta.source`).
//! Every clause is optional; an unknown field is an error that names its place
//! (`filter.must[0]: unknown field "mach"`).

use octet_server::pb;
use serde_json::{Map, Value};

/// The help text shown under `--filter`.
pub const FILTER_HELP: &str = "Payload filter as JSON: {\"must\": [COND..], \"should\": [..], \
\"must_not\": [..]} where COND is {\"key\": K, \"match\": \"text\"|123|true}, {\"key\": K, \
\"match_any\": [V..]}, {\"key\": K, \"range\": {\"gt\"|\"gte\"|\"lt\"|\"lte\": NUM}} or \
{\"filter\": FILTER}. Example: '{\"must\": [{\"key\": \"tenant\", \"match\": \"acme\"}]}'";

/// Parses the JSON text of a filter.
pub fn parse_filter(text: &str) -> Result<pb::Filter, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("filter: not valid JSON: {e}"))?;
    filter(&value, "filter")
}

fn object<'a>(v: &'a Value, at: &str, what: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("{at}: expected {what} (a JSON object), got {v}"))
}

fn filter(v: &Value, at: &str) -> Result<pb::Filter, String> {
    let obj = object(v, at, "a filter")?;
    let mut out = pb::Filter::default();
    for (k, clause) in obj {
        let field = format!("{at}.{k}");
        let target = match k.as_str() {
            "must" => &mut out.must,
            "should" => &mut out.should,
            "must_not" => &mut out.must_not,
            _ => {
                return Err(format!(
                    "{at}: unknown field \"{k}\" (expected must, should or must_not)"
                ));
            }
        };
        let items = clause
            .as_array()
            .ok_or_else(|| format!("{field}: expected an array of conditions, got {clause}"))?;
        for (i, c) in items.iter().enumerate() {
            target.push(condition(c, &format!("{field}[{i}]"))?);
        }
    }
    Ok(out)
}

fn key(obj: &Map<String, Value>, at: &str) -> Result<String, String> {
    match obj.get("key") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(other) => Err(format!(
            "{at}.key: expected a non-empty string, got {other}"
        )),
        None => Err(format!("{at}: missing \"key\"")),
    }
}

fn match_value(v: &Value, at: &str) -> Result<pb::MatchValue, String> {
    use pb::match_value::Value as V;
    let value = match v {
        Value::String(s) => V::Keyword(s.clone()),
        Value::Bool(b) => V::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => V::Integer(i),
            None => {
                return Err(format!(
                    "{at}: {n} is not an integer (match takes a keyword, an integer or a \
                     boolean; use range for other numbers)"
                ));
            }
        },
        other => {
            return Err(format!(
                "{at}: expected a keyword, an integer or a boolean, got {other}"
            ));
        }
    };
    Ok(pb::MatchValue { value: Some(value) })
}

fn bound(obj: &Map<String, Value>, name: &str, at: &str) -> Result<Option<f64>, String> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .map(Some)
            .ok_or_else(|| format!("{at}.{name}: expected a number, got {v}")),
    }
}

fn range(v: &Value, at: &str) -> Result<pb::Range, String> {
    let obj = object(v, at, "a range")?;
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "gt" | "gte" | "lt" | "lte"))
    {
        return Err(format!(
            "{at}: unknown field \"{k}\" (expected gt, gte, lt or lte)"
        ));
    }
    let r = pb::Range {
        gt: bound(obj, "gt", at)?,
        gte: bound(obj, "gte", at)?,
        lt: bound(obj, "lt", at)?,
        lte: bound(obj, "lte", at)?,
    };
    if r == pb::Range::default() {
        return Err(format!(
            "{at}: a range needs at least one of gt, gte, lt, lte"
        ));
    }
    Ok(r)
}

fn condition(v: &Value, at: &str) -> Result<pb::Condition, String> {
    use pb::condition::Condition as C;
    let obj = object(v, at, "a condition")?;
    let kinds: Vec<&str> = ["match", "match_any", "range", "filter"]
        .into_iter()
        .filter(|k| obj.contains_key(*k))
        .collect();
    if let Some(k) = obj.keys().find(|k| {
        !matches!(
            k.as_str(),
            "key" | "match" | "match_any" | "range" | "filter"
        )
    }) {
        return Err(format!(
            "{at}: unknown field \"{k}\" (expected key with match, match_any or range, \
             or filter)"
        ));
    }
    let kind = match kinds.as_slice() {
        [one] => *one,
        [] => {
            return Err(format!(
                "{at}: a condition needs one of match, match_any, range or filter"
            ));
        }
        many => {
            return Err(format!(
                "{at}: a condition takes one of match, match_any, range or filter, got {}",
                many.join(" and ")
            ));
        }
    };
    let condition = match kind {
        "match" => C::Match(pb::MatchCondition {
            key: key(obj, at)?,
            value: Some(match_value(&obj["match"], &format!("{at}.match"))?),
        }),
        "match_any" => {
            let field = format!("{at}.match_any");
            let items = obj["match_any"]
                .as_array()
                .ok_or_else(|| format!("{field}: expected an array of values"))?;
            if items.is_empty() {
                return Err(format!("{field}: empty (it would match nothing)"));
            }
            C::MatchAny(pb::MatchAnyCondition {
                key: key(obj, at)?,
                any: items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| match_value(v, &format!("{field}[{i}]")))
                    .collect::<Result<_, _>>()?,
            })
        }
        "range" => C::Range(pb::RangeCondition {
            key: key(obj, at)?,
            range: Some(range(&obj["range"], &format!("{at}.range"))?),
        }),
        _ => {
            if obj.contains_key("key") {
                return Err(format!("{at}: a nested filter takes no key"));
            }
            C::Filter(filter(&obj["filter"], &format!("{at}.filter"))?)
        }
    };
    Ok(pb::Condition {
        condition: Some(condition),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::condition::Condition as C;
    use pb::match_value::Value as V;

    #[test]
    fn every_condition_kind_maps_onto_the_proto() {
        let f = parse_filter(
            r#"{"must": [{"key": "tenant", "match": "acme"}, {"key": "n", "match": 7},
                          {"key": "ok", "match": true}],
                "should": [{"key": "lang", "match_any": ["en", 2]},
                           {"key": "year", "range": {"gte": 2020, "lt": 2025.5}}],
                "must_not": [{"filter": {"must": [{"key": "meta.src", "match": "x"}]}}]}"#,
        )
        .expect("valid filter");
        assert_eq!(f.must.len(), 3);
        match &f.must[1].condition {
            Some(C::Match(m)) => {
                assert_eq!(m.key, "n");
                assert_eq!(
                    m.value.as_ref().and_then(|v| v.value.clone()),
                    Some(V::Integer(7))
                );
            }
            other => panic!("{other:?}"),
        }
        match &f.should[0].condition {
            Some(C::MatchAny(m)) => assert_eq!(m.any.len(), 2),
            other => panic!("{other:?}"),
        }
        match &f.should[1].condition {
            Some(C::Range(r)) => {
                let r = r.range.as_ref().expect("range");
                assert_eq!(
                    (r.gte, r.lt, r.gt, r.lte),
                    (Some(2020.0), Some(2025.5), None, None)
                );
            }
            other => panic!("{other:?}"),
        }
        match &f.must_not[0].condition {
            Some(C::Filter(inner)) => assert_eq!(inner.must.len(), 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mistakes_name_their_place() {
        let cases = [
            ("[1]", "filter: expected a filter"),
            (r#"{"mustt": []}"#, "filter: unknown field \"mustt\""),
            (r#"{"must": {}}"#, "filter.must: expected an array"),
            (
                r#"{"must": [{"key": "a", "mach": 1}]}"#,
                "filter.must[0]: unknown field \"mach\"",
            ),
            (
                r#"{"must": [{"key": "a"}]}"#,
                "filter.must[0]: a condition needs one of",
            ),
            (
                r#"{"should": [{"match": 1}]}"#,
                "filter.should[0]: missing \"key\"",
            ),
            (
                r#"{"must": [{"key": "a", "match": 1.5}]}"#,
                "filter.must[0].match: 1.5 is not an integer",
            ),
            (
                r#"{"must": [{"key": "a", "match": 1, "range": {"gt": 1}}]}"#,
                "got match and range",
            ),
            (
                r#"{"must": [{"key": "a", "range": {}}]}"#,
                "filter.must[0].range: a range needs",
            ),
            (
                r#"{"must": [{"key": "a", "range": {"gt": "x"}}]}"#,
                "filter.must[0].range.gt: expected a number",
            ),
            (
                r#"{"must": [{"key": "a", "match_any": []}]}"#,
                "filter.must[0].match_any: empty",
            ),
            (
                r#"{"must": [{"filter": {"must": [{"key": ""}]}}]}"#,
                "filter.must[0].filter.must[0]",
            ),
            ("{", "filter: not valid JSON"),
        ];
        for (text, want) in cases {
            let err = parse_filter(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn empty_filter_is_allowed() {
        assert_eq!(parse_filter("{}").expect("empty"), pb::Filter::default());
    }
}
