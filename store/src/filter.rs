//! Payload filters: keyword / integer / bool equality, any-of, numeric ranges,
//! combined with `must` / `should` / `must_not` (the boolean clauses Qdrant and
//! Elasticsearch use).
//!
//! A key is a dotted path into nested objects (`meta.source`). Where the value at
//! the path is an array, a condition holds when it holds for any element.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, StoreError};
use crate::point::{Payload, PointId};

/// The longest string that counts as a keyword, in bytes. Longer strings (text
/// chunks) are neither indexed nor matched, which keeps the filter index small and
/// keeps the exact evaluator and the index in agreement.
pub const MAX_KEYWORD_LEN: usize = 256;

/// A scalar value a condition compares against.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MatchValue {
    /// A string (keyword).
    Keyword(String),
    /// An integer; matches JSON numbers that are whole and in i64 range.
    Integer(i64),
    /// A boolean.
    Bool(bool),
}

impl MatchValue {
    /// The match key of a JSON scalar, if it has one (floats with a fraction do not).
    pub(crate) fn of(value: &Value) -> Option<MatchValue> {
        match value {
            Value::String(s) if s.len() <= MAX_KEYWORD_LEN => Some(MatchValue::Keyword(s.clone())),
            Value::String(_) => None,
            Value::Bool(b) => Some(MatchValue::Bool(*b)),
            Value::Number(n) => n.as_i64().map(MatchValue::Integer),
            _ => None,
        }
    }

    fn matches(&self, value: &Value) -> bool {
        match (self, value) {
            (MatchValue::Keyword(k), Value::String(s)) => s.len() <= MAX_KEYWORD_LEN && k == s,
            (MatchValue::Bool(b), Value::Bool(v)) => b == v,
            (MatchValue::Integer(i), Value::Number(n)) => n.as_i64() == Some(*i),
            _ => false,
        }
    }
}

/// Bounds on a numeric value; absent bounds are open.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Range {
    /// Strictly greater than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    /// Greater than or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    /// Strictly less than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    /// Less than or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
}

impl Range {
    /// Whether `x` satisfies every bound.
    pub fn contains(&self, x: f64) -> bool {
        self.gt.is_none_or(|b| x > b)
            && self.gte.is_none_or(|b| x >= b)
            && self.lt.is_none_or(|b| x < b)
            && self.lte.is_none_or(|b| x <= b)
    }
}

/// One condition on the payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The value at `key` equals `value`.
    Match {
        /// Dotted path.
        key: String,
        /// The value to equal.
        value: MatchValue,
    },
    /// The value at `key` equals one of `any`.
    MatchAny {
        /// Dotted path.
        key: String,
        /// Accepted values (at least one).
        any: Vec<MatchValue>,
    },
    /// The number at `key` lies in `range`.
    Range {
        /// Dotted path.
        key: String,
        /// The bounds.
        range: Range,
    },
    /// A nested boolean filter.
    Filter(Filter),
    /// Qdrant's `match: except`: the field has no value, or at least one value at
    /// `key` (a scalar, or an element of an array there) equals none of `except`.
    MatchExcept {
        /// Dotted path.
        key: String,
        /// Rejected values.
        except: Vec<MatchValue>,
    },
    /// The field is missing, `null` or an empty array.
    IsEmpty {
        /// Dotted path.
        key: String,
    },
    /// The point's id is one of `ids` (Qdrant's `has_id`): a condition on the
    /// id, not the payload.
    HasId {
        /// Accepted ids.
        ids: Vec<PointId>,
    },
    /// The field is present and `null`.
    IsNull {
        /// Dotted path.
        key: String,
    },
}

/// A boolean combination of conditions. The empty filter matches every point.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Filter {
    /// Every one of these must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub must: Vec<Condition>,
    /// At least one of these must hold (when there are any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub should: Vec<Condition>,
    /// None of these may hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub must_not: Vec<Condition>,
}

/// Most ids one `has_id` condition may list (growing segments test each point
/// against the list).
pub const MAX_HAS_ID: usize = 4096;

/// Deepest nesting of filters accepted; bounds recursion on user input.
pub const MAX_FILTER_DEPTH: usize = 16;

impl Filter {
    /// A filter whose conditions must all hold.
    pub fn must(conditions: Vec<Condition>) -> Self {
        Filter {
            must: conditions,
            ..Filter::default()
        }
    }

    /// Whether the filter has no conditions at all.
    pub fn is_empty(&self) -> bool {
        self.must.is_empty() && self.should.is_empty() && self.must_not.is_empty()
    }

    /// Checks keys, lists and ranges, and the nesting depth.
    pub fn validate(&self) -> Result<()> {
        self.validate_at(0)
    }

    fn validate_at(&self, depth: usize) -> Result<()> {
        if depth > MAX_FILTER_DEPTH {
            return Err(StoreError::InvalidFilter {
                reason: format!("nested deeper than {MAX_FILTER_DEPTH} levels"),
            });
        }
        for c in self.must.iter().chain(&self.should).chain(&self.must_not) {
            c.validate_at(depth)?;
        }
        Ok(())
    }

    /// Whether the point `id` with `payload` passes the filter.
    pub fn matches(&self, id: PointId, payload: &Payload) -> bool {
        self.must.iter().all(|c| c.matches(id, payload))
            && (self.should.is_empty() || self.should.iter().any(|c| c.matches(id, payload)))
            && !self.must_not.iter().any(|c| c.matches(id, payload))
    }
}

impl Condition {
    /// Shorthand for a keyword equality.
    pub fn keyword(key: &str, value: &str) -> Self {
        Condition::Match {
            key: key.into(),
            value: MatchValue::Keyword(value.into()),
        }
    }

    /// Shorthand for a range condition.
    pub fn range(key: &str, range: Range) -> Self {
        Condition::Range {
            key: key.into(),
            range,
        }
    }

    fn validate_at(&self, depth: usize) -> Result<()> {
        let bad = |reason: String| Err(StoreError::InvalidFilter { reason });
        match self {
            Condition::Match { key, .. }
            | Condition::Range { key, .. }
            | Condition::MatchExcept { key, .. }
            | Condition::IsEmpty { key }
            | Condition::IsNull { key }
                if key.is_empty() =>
            {
                bad("empty key".into())
            }
            Condition::MatchAny { key, any } if key.is_empty() || any.is_empty() => bad(format!(
                "match_any on `{key}` needs a key and at least one value"
            )),
            Condition::Match {
                value: MatchValue::Keyword(k),
                ..
            } if k.len() > MAX_KEYWORD_LEN => {
                bad(format!("keyword longer than {MAX_KEYWORD_LEN} bytes"))
            }
            Condition::MatchAny { any, .. } | Condition::MatchExcept { except: any, .. }
                if any
                    .iter()
                    .any(|v| matches!(v, MatchValue::Keyword(k) if k.len() > MAX_KEYWORD_LEN)) =>
            {
                bad(format!("keyword longer than {MAX_KEYWORD_LEN} bytes"))
            }
            Condition::Range { key, range } => {
                let bounds = [range.gt, range.gte, range.lt, range.lte];
                if bounds.iter().flatten().any(|b| b.is_nan()) {
                    return bad(format!("range on `{key}` has a NaN bound"));
                }
                if bounds.iter().all(Option::is_none) {
                    return bad(format!("range on `{key}` has no bound"));
                }
                Ok(())
            }
            Condition::Filter(f) => f.validate_at(depth + 1),
            Condition::HasId { ids } if ids.len() > MAX_HAS_ID => bad(format!(
                "has_id lists {} ids; at most {MAX_HAS_ID}",
                ids.len()
            )),
            _ => Ok(()),
        }
    }

    /// Whether the point `id` with `payload` satisfies this condition.
    pub fn matches(&self, id: PointId, payload: &Payload) -> bool {
        match self {
            Condition::HasId { ids } => ids.contains(&id),
            Condition::Match { key, value } => {
                any_value_at(payload, key, &mut |v| value.matches(v))
            }
            Condition::MatchAny { key, any } => {
                any_value_at(payload, key, &mut |v| any.iter().any(|m| m.matches(v)))
            }
            Condition::Range { key, range } => any_value_at(payload, key, &mut |v| {
                v.as_f64().is_some_and(|x| range.contains(x))
            }),
            Condition::Filter(f) => f.matches(id, payload),
            Condition::MatchExcept { key, except } => {
                let mut any = false;
                let outside = any_value_at(payload, key, &mut |v| {
                    any = true;
                    !except.iter().any(|m| m.matches(v))
                });
                outside || !any
            }
            Condition::IsEmpty { key } => match value_at(payload, key) {
                None | Some(Value::Null) => true,
                Some(Value::Array(items)) => items.is_empty(),
                Some(_) => false,
            },
            Condition::IsNull { key } => matches!(value_at(payload, key), Some(Value::Null)),
        }
    }
}

/// The value at the dotted `key`, through nested objects (not into arrays).
pub(crate) fn value_at<'a>(payload: &'a Payload, key: &str) -> Option<&'a Value> {
    let mut parts = key.split('.');
    let mut value = payload.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// Calls `pred` on the scalar values at the dotted `key` (each element of an array)
/// until one returns true.
fn any_value_at(payload: &Payload, key: &str, pred: &mut dyn FnMut(&Value) -> bool) -> bool {
    let mut parts = key.split('.');
    let Some(first) = parts.next() else {
        return false;
    };
    let mut value = match payload.get(first) {
        Some(v) => v,
        None => return false,
    };
    for part in parts {
        match value.get(part) {
            Some(v) if value.is_object() => value = v,
            _ => return false,
        }
    }
    match value {
        Value::Array(items) => items
            .iter()
            .any(|v| !v.is_array() && !v.is_object() && pred(v)),
        Value::Object(_) => false,
        v => pred(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload(v: Value) -> Payload {
        match v {
            Value::Object(m) => m,
            _ => Payload::new(),
        }
    }

    #[test]
    fn clauses_combine_as_documented() {
        let p = payload(
            json!({"tenant": "a", "year": 2021, "tags": ["x", "y"], "meta": {"src": "web"}}),
        );
        assert!(Filter::default().matches(0, &p));
        assert!(Filter::must(vec![Condition::keyword("tenant", "a")]).matches(0, &p));
        assert!(!Filter::must(vec![Condition::keyword("tenant", "b")]).matches(0, &p));
        assert!(Filter::must(vec![Condition::keyword("tags", "y")]).matches(0, &p));
        assert!(Filter::must(vec![Condition::keyword("meta.src", "web")]).matches(0, &p));
        let year = |gte, lt| {
            Condition::range(
                "year",
                Range {
                    gte: Some(gte),
                    lt: Some(lt),
                    ..Range::default()
                },
            )
        };
        assert!(Filter::must(vec![year(2020.0, 2022.0)]).matches(0, &p));
        assert!(!Filter::must(vec![year(2022.0, 2030.0)]).matches(0, &p));
        let f = Filter {
            should: vec![
                Condition::keyword("tenant", "zzz"),
                Condition::Match {
                    key: "year".into(),
                    value: MatchValue::Integer(2021),
                },
            ],
            must_not: vec![Condition::keyword("tags", "q")],
            ..Filter::default()
        };
        assert!(f.matches(0, &p));
        let f = Filter {
            must_not: vec![Condition::keyword("tags", "x")],
            ..Filter::default()
        };
        assert!(!f.matches(0, &p));
    }

    #[test]
    fn json_form_and_validation() {
        let f: Filter = serde_json::from_value(json!({
            "must": [{"match": {"key": "tenant", "value": "a"}}],
            "should": [{"match_any": {"key": "n", "any": [1, 2]}}],
            "must_not": [{"range": {"key": "year", "range": {"gte": 2020}}}]
        }))
        .expect("parse");
        f.validate().expect("valid");
        let empty_any = Filter::must(vec![Condition::MatchAny {
            key: "k".into(),
            any: vec![],
        }]);
        assert!(empty_any.validate().is_err());
        let long = "x".repeat(MAX_KEYWORD_LEN + 1);
        assert!(
            Filter::must(vec![Condition::keyword("k", &long)])
                .validate()
                .is_err()
        );
        let p = payload(json!({"text": long}));
        let shorter = &long[..MAX_KEYWORD_LEN];
        assert!(!Filter::must(vec![Condition::keyword("text", shorter)]).matches(0, &p));
        let no_bound = Filter::must(vec![Condition::range("k", Range::default())]);
        assert!(no_bound.validate().is_err());
        let mut deep = Filter::default();
        for _ in 0..20 {
            deep = Filter::must(vec![Condition::Filter(deep)]);
        }
        assert!(deep.validate().is_err());
    }
}
