//! Points: an id, a vector and a JSON-object payload; and the checks a batch passes
//! before anything of it is written.

use octet_quant::Metric;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};

/// A point id.
pub type PointId = u64;

/// A point's payload: a JSON object (text chunk, doc id, source, tenant...).
pub type Payload = serde_json::Map<String, serde_json::Value>;

/// A payload as the JSON text of one object: what a sealed segment keeps on disk,
/// handed back as it is so a reply with payloads does not parse and re-serialise
/// every hit's payload (a server copies the text straight into its reply).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PayloadJson(String);

impl PayloadJson {
    /// The JSON text of `payload`.
    pub fn from_payload(payload: &Payload) -> Self {
        // A map with string keys and JSON values always serialises; "{}" is
        // unreachable and still a JSON object.
        PayloadJson(serde_json::to_string(payload).unwrap_or_else(|_| "{}".into()))
    }

    /// Text the caller has checked to be one JSON object.
    pub(crate) fn from_checked(text: String) -> Self {
        PayloadJson(text)
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The JSON text, owned.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The payload as a JSON object (parses the text).
    pub fn parse(&self) -> serde_json::Result<Payload> {
        serde_json::from_str(&self.0)
    }
}

impl From<&Payload> for PayloadJson {
    fn from(p: &Payload) -> Self {
        PayloadJson::from_payload(p)
    }
}

impl Serialize for PayloadJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.parse()
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for PayloadJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(PayloadJson::from_payload(&Payload::deserialize(d)?))
    }
}

/// A point as written by a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// The id; upserting an existing id replaces that point.
    pub id: PointId,
    /// The vector, of the collection's dimension.
    pub vector: Vec<f32>,
    /// The payload (an empty object when there is none).
    #[serde(default)]
    pub payload: Payload,
}

impl Point {
    /// A point without payload.
    pub fn new(id: PointId, vector: Vec<f32>) -> Self {
        Point {
            id,
            vector,
            payload: Payload::new(),
        }
    }

    /// A point with a payload.
    pub fn with_payload(id: PointId, vector: Vec<f32>, payload: Payload) -> Self {
        Point {
            id,
            vector,
            payload,
        }
    }
}

/// A point as read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The id.
    pub id: PointId,
    /// The payload as JSON text, when asked for.
    pub payload: Option<PayloadJson>,
    /// The stored vector, when asked for: exact while the point is in the growing
    /// segment or the rescore tier is f32, otherwise decoded from the best stored tier.
    pub vector: Option<Vec<f32>>,
}

/// Checks one vector: dimension and finiteness. `index`/`id` name it in the error.
pub(crate) fn check_vector(vector: &[f32], dim: usize, index: usize, id: PointId) -> Result<()> {
    if vector.len() != dim {
        return Err(StoreError::DimMismatch {
            index,
            id,
            expected: dim,
            actual: vector.len(),
        });
    }
    if let Some(component) = vector.iter().position(|v| !v.is_finite()) {
        return Err(StoreError::NonFinite {
            index,
            id,
            component,
            value: vector[component],
        });
    }
    Ok(())
}

/// Checks a whole batch before any of it is applied, and returns the vectors as
/// they will be stored (unit length for cosine).
pub(crate) fn prepare_batch(points: &[Point], dim: usize, metric: Metric) -> Result<Vec<Point>> {
    for (index, p) in points.iter().enumerate() {
        check_vector(&p.vector, dim, index, p.id)?;
    }
    // An id given twice is stored once, from its last occurrence (as applying the
    // batch in order would leave it), so the batch counts what is stored.
    let mut last = std::collections::HashMap::with_capacity(points.len());
    for (index, p) in points.iter().enumerate() {
        last.insert(p.id, index);
    }
    Ok(points
        .iter()
        .enumerate()
        .filter(|(index, p)| last.get(&p.id) == Some(index))
        .map(|(_, p)| Point {
            id: p.id,
            vector: normalize_for(metric, &p.vector),
            payload: p.payload.clone(),
        })
        .collect())
}

/// The vector as stored under `metric`: unit length for cosine (a zero vector stays
/// zero), unchanged otherwise.
pub(crate) fn normalize_for(metric: Metric, v: &[f32]) -> Vec<f32> {
    metric.prepare_query(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_id_is_stored_once_from_its_last_occurrence() {
        let batch = [
            Point::new(1, vec![1.0, 0.0]),
            Point::new(2, vec![0.0, 1.0]),
            Point::new(1, vec![2.0, 0.0]),
        ];
        let prepared = prepare_batch(&batch, 2, Metric::Dot).expect("batch");
        let got: Vec<(PointId, Vec<f32>)> =
            prepared.into_iter().map(|p| (p.id, p.vector)).collect();
        assert_eq!(got, vec![(2, vec![0.0, 1.0]), (1, vec![2.0, 0.0])]);
    }

    #[test]
    fn one_bad_vector_rejects_the_batch() {
        let good = Point::new(1, vec![1.0, 2.0, 3.0]);
        let nan = Point::new(2, vec![1.0, f32::NAN, 3.0]);
        let short = Point::new(3, vec![1.0]);
        assert!(prepare_batch(std::slice::from_ref(&good), 3, Metric::Dot).is_ok());
        let err = prepare_batch(&[good.clone(), nan], 3, Metric::Dot).expect_err("nan");
        assert!(matches!(
            err,
            StoreError::NonFinite {
                index: 1,
                id: 2,
                component: 1,
                ..
            }
        ));
        let err = prepare_batch(&[good, short], 3, Metric::Dot).expect_err("dim");
        assert!(matches!(
            err,
            StoreError::DimMismatch {
                index: 1,
                expected: 3,
                actual: 1,
                ..
            }
        ));
        let inf = Point::new(4, vec![f32::INFINITY, 0.0, 0.0]);
        assert!(prepare_batch(&[inf], 3, Metric::L2).is_err());
    }

    #[test]
    fn cosine_vectors_are_stored_unit_length() {
        let p = prepare_batch(&[Point::new(1, vec![3.0, 4.0])], 2, Metric::Cosine).expect("ok");
        assert!((p[0].vector[0] - 0.6).abs() < 1e-6 && (p[0].vector[1] - 0.8).abs() < 1e-6);
    }
}
