//! An in-memory inverted index over the payloads of a sealed segment, so a filter
//! becomes a bitset of matching points without parsing JSON at search time.
//!
//! Every scalar reachable through nested objects (and array elements) is indexed
//! under its dotted path: strings, booleans and whole numbers in a value -> points
//! map, every number in a sorted (value, point) list for ranges. The semantics equal
//! [`Filter::matches`] exactly; a property test holds them together.

use std::collections::HashMap;

use serde_json::Value;

use crate::bitset::Bitset;
use crate::filter::{Condition, Filter, MatchValue, Range};
use crate::point::{Payload, PointId};

#[derive(Debug, Default)]
struct FieldIndex {
    values: HashMap<MatchValue, Vec<u32>>,
    /// Sorted by value; a point appears once per number it holds.
    numbers: Vec<(f64, u32)>,
    /// Points with at least one scalar at this path (itself or an array element),
    /// `null` included: what [`Condition::MatchExcept`] looks at.
    scalars: Vec<u32>,
    /// Points holding a scalar here that has no match key (null, a long string, a
    /// fractional number): such a value equals no listed value.
    unkeyed: Vec<u32>,
    /// Points whose value here is neither `null` nor an empty array.
    filled: Vec<u32>,
    /// Points whose value here is `null`.
    nulls: Vec<u32>,
}

/// Appends `offset` unless it is already the last entry (points arrive in order).
fn push_once(list: &mut Vec<u32>, offset: u32) {
    if list.last() != Some(&offset) {
        list.push(offset);
    }
}

/// The index of one segment's payloads.
#[derive(Debug, Default)]
pub(crate) struct PayloadIndex {
    len: usize,
    fields: HashMap<String, FieldIndex>,
}

impl PayloadIndex {
    /// An index over `len` points, filled by [`PayloadIndex::add`].
    pub(crate) fn new(len: usize) -> Self {
        PayloadIndex {
            len,
            fields: HashMap::new(),
        }
    }

    /// Indexes the payload of point `offset`.
    pub(crate) fn add(&mut self, offset: u32, payload: &Payload) {
        for (key, value) in payload {
            self.add_value(key.clone(), value, offset, true);
        }
    }

    fn add_value(&mut self, path: String, value: &Value, offset: u32, arrays: bool) {
        // `arrays` is true exactly at addressable paths (not inside an array).
        if arrays {
            let field = self.fields.entry(path.clone()).or_default();
            match value {
                Value::Null => push_once(&mut field.nulls, offset),
                Value::Array(items) if items.is_empty() => {}
                _ => push_once(&mut field.filled, offset),
            }
        }
        match value {
            Value::Object(map) => {
                // Objects inside arrays are not addressable by a dotted path.
                if arrays {
                    for (k, v) in map {
                        self.add_value(format!("{path}.{k}"), v, offset, true);
                    }
                }
            }
            Value::Array(items) if arrays => {
                for item in items {
                    self.add_value(path.clone(), item, offset, false);
                }
            }
            Value::Array(_) => {}
            scalar => {
                let field = self.fields.entry(path).or_default();
                push_once(&mut field.scalars, offset);
                if let Some(key) = MatchValue::of(scalar) {
                    push_once(field.values.entry(key).or_default(), offset);
                } else {
                    push_once(&mut field.unkeyed, offset);
                }
                if let Some(x) = scalar.as_f64() {
                    field.numbers.push((x, offset));
                }
            }
        }
    }

    /// Sorts the numeric lists; call once after the last [`PayloadIndex::add`].
    pub(crate) fn finish(&mut self) {
        for field in self.fields.values_mut() {
            field
                .numbers
                .sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        }
    }

    /// The points that pass `filter`; `offset_of` finds a point id's offset in
    /// the segment (for `has_id`).
    pub(crate) fn evaluate(
        &self,
        filter: &Filter,
        offset_of: &dyn Fn(PointId) -> Option<u32>,
    ) -> Bitset {
        let mut out = Bitset::full(self.len);
        for c in &filter.must {
            out.and(&self.condition(c, offset_of));
        }
        if !filter.should.is_empty() {
            let mut any = Bitset::new(self.len);
            for c in &filter.should {
                any.or(&self.condition(c, offset_of));
            }
            out.and(&any);
        }
        for c in &filter.must_not {
            out.and_not(&self.condition(c, offset_of));
        }
        out
    }

    fn condition(&self, c: &Condition, offset_of: &dyn Fn(PointId) -> Option<u32>) -> Bitset {
        let mut out = Bitset::new(self.len);
        match c {
            Condition::HasId { ids } => {
                for o in ids.iter().filter_map(|&id| offset_of(id)) {
                    out.set(o as usize);
                }
            }
            Condition::Match { key, value } => self.mark_value(key, value, &mut out),
            Condition::MatchAny { key, any } => {
                for value in any {
                    self.mark_value(key, value, &mut out);
                }
            }
            Condition::Range { key, range } => self.mark_range(key, range, &mut out),
            Condition::Filter(f) => return self.evaluate(f, offset_of),
            Condition::MatchExcept { key, except } => return self.match_except(key, except),
            Condition::IsEmpty { key } => {
                let mut all = Bitset::full(self.len);
                if let Some(field) = self.fields.get(key.as_str()) {
                    all.and_not(&self.bits(&field.filled));
                }
                return all;
            }
            Condition::IsNull { key } => {
                if let Some(field) = self.fields.get(key.as_str()) {
                    return self.bits(&field.nulls);
                }
            }
        }
        out
    }

    fn bits(&self, offsets: &[u32]) -> Bitset {
        let mut out = Bitset::new(self.len);
        for &o in offsets {
            out.set(o as usize);
        }
        out
    }

    /// No scalar at `key`, or one that equals none of `except`.
    fn match_except(&self, key: &str, except: &[MatchValue]) -> Bitset {
        let mut out = Bitset::full(self.len);
        let Some(field) = self.fields.get(key) else {
            return out;
        };
        out.and_not(&self.bits(&field.scalars));
        out.or(&self.bits(&field.unkeyed));
        for (value, list) in &field.values {
            if !except.contains(value) {
                out.or(&self.bits(list));
            }
        }
        out
    }

    fn mark_value(&self, key: &str, value: &MatchValue, out: &mut Bitset) {
        let Some(list) = self.fields.get(key).and_then(|f| f.values.get(value)) else {
            return;
        };
        for &o in list {
            out.set(o as usize);
        }
    }

    fn mark_range(&self, key: &str, range: &Range, out: &mut Bitset) {
        let Some(field) = self.fields.get(key) else {
            return;
        };
        let nums = &field.numbers;
        // The lower bound narrows the scan with a binary search; the rest is checked.
        let lo = match (range.gt, range.gte) {
            (Some(g), _) | (None, Some(g)) => nums.partition_point(|(x, _)| *x < g),
            (None, None) => 0,
        };
        for &(x, o) in &nums[lo..] {
            if range.lt.is_some_and(|b| x >= b) || range.lte.is_some_and(|b| x > b) {
                break;
            }
            if range.contains(x) {
                out.set(o as usize);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn arb_scalar() -> impl Strategy<Value = Value> + Clone {
        prop_oneof![
            (0..4u8).prop_map(|k| json!(format!("k{k}"))),
            // Strings past the keyword limit are neither indexed nor matched.
            (0..2u8).prop_map(|k| json!(format!("k{k}").repeat(200))),
            (-3..4i64).prop_map(|i| json!(i)),
            (-30..40i32).prop_map(|i| json!(f64::from(i) / 10.0)),
            any::<bool>().prop_map(|b| json!(b)),
        ]
    }

    fn arb_payload() -> impl Strategy<Value = Payload> {
        let value = prop_oneof![
            arb_scalar(),
            Just(Value::Null),
            Just(json!([])),
            Just(json!([null, "k1"])),
            proptest::collection::vec(arb_scalar(), 0..3).prop_map(Value::Array),
            arb_scalar().prop_map(|v| json!({"b": v})),
        ];
        proptest::collection::btree_map(
            prop_oneof![Just("a".to_string()), Just("n".to_string())],
            value,
            0..3,
        )
        .prop_map(|m| m.into_iter().collect())
    }

    fn arb_condition() -> impl Strategy<Value = Condition> + Clone {
        let key = prop_oneof![
            Just("a".to_string()),
            Just("n".to_string()),
            Just("a.b".to_string())
        ];
        let mv = arb_scalar().prop_filter_map("scalar", |v| MatchValue::of(&v));
        let bound = proptest::option::of((-30..40i32).prop_map(|i| f64::from(i) / 10.0));
        prop_oneof![
            (key.clone(), mv.clone()).prop_map(|(key, value)| Condition::Match { key, value }),
            (key.clone(), proptest::collection::vec(mv.clone(), 1..3))
                .prop_map(|(key, any)| Condition::MatchAny { key, any }),
            (key.clone(), proptest::collection::vec(mv, 1..3))
                .prop_map(|(key, except)| Condition::MatchExcept { key, except }),
            key.clone().prop_map(|key| Condition::IsEmpty { key }),
            key.clone().prop_map(|key| Condition::IsNull { key }),
            proptest::collection::vec(0..50u64, 0..4).prop_map(|ids| Condition::HasId { ids }),
            (key, bound.clone(), bound.clone(), bound.clone(), bound).prop_map(
                |(key, gt, gte, lt, lte)| {
                    Condition::Range {
                        key,
                        range: Range { gt, gte, lt, lte },
                    }
                }
            ),
        ]
    }

    fn arb_filter() -> impl Strategy<Value = Filter> {
        let leaf = || {
            (
                proptest::collection::vec(arb_condition(), 0..3),
                proptest::collection::vec(arb_condition(), 0..3),
                proptest::collection::vec(arb_condition(), 0..2),
            )
                .prop_map(|(must, should, must_not)| Filter {
                    must,
                    should,
                    must_not,
                })
        };
        (leaf(), leaf()).prop_map(|(mut outer, inner)| {
            outer.must.push(Condition::Filter(inner));
            outer
        })
    }

    proptest! {
        #[test]
        fn index_agrees_with_direct_evaluation(
            payloads in proptest::collection::vec(arb_payload(), 1..40),
            filter in arb_filter(),
        ) {
            let mut index = PayloadIndex::new(payloads.len());
            for (i, p) in payloads.iter().enumerate() {
                index.add(i as u32, p);
            }
            index.finish();
            // Point ids are the offsets plus 10: ids below 10 are in no segment.
            let n = payloads.len() as u64;
            let got = index.evaluate(&filter, &|id| (10..10 + n).contains(&id).then(|| (id - 10) as u32));
            for (i, p) in payloads.iter().enumerate() {
                let id = i as u64 + 10;
                prop_assert_eq!(got.get(i), filter.matches(id, p), "point {} payload {:?}", id, p);
            }
        }
    }
}
