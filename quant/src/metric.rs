//! Similarity metrics. Every score in Octet is "higher is better".

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::QuantError;

/// How two vectors are compared.
///
/// Scores are always "higher is better": `Dot` and `Cosine` return the inner
/// product, `L2` returns the *negated* squared Euclidean distance. For `Cosine`
/// the caller stores unit-length vectors (the store normalises at ingest) and
/// scorers normalise the query, so cosine is an inner product of unit vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Metric {
    /// Inner product.
    Dot = 0,
    /// Cosine similarity (inner product of unit vectors).
    Cosine = 1,
    /// Negated squared Euclidean distance.
    L2 = 2,
}

impl Metric {
    /// Exact score of `q` against `x` in f32, the reference every codec is measured against.
    pub fn exact(self, q: &[f32], x: &[f32]) -> f32 {
        match self {
            Metric::Dot | Metric::Cosine => crate::kernels::dot_f32(q, x),
            Metric::L2 => -crate::kernels::l2sq_f32(q, x),
        }
    }

    /// Prepares a query for this metric: a unit-length copy for cosine, unchanged otherwise.
    pub fn prepare_query(self, q: &[f32]) -> Vec<f32> {
        match self {
            Metric::Cosine => normalized(q),
            Metric::Dot | Metric::L2 => q.to_vec(),
        }
    }
}

/// A unit-length copy of `v` (a zero vector stays zero).
pub fn normalized(v: &[f32]) -> Vec<f32> {
    // The dispatched kernel: every query of a cosine collection pays this once per
    // scorer, and the sequential sum was a chain of dependent adds.
    let norm = crate::kernels::dot_f32(v, v).sqrt();
    if norm > 0.0 {
        v.iter().map(|x| x / norm).collect()
    } else {
        v.to_vec()
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Metric::Dot => "dot",
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
        })
    }
}

impl FromStr for Metric {
    type Err = QuantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "dot" | "ip" => Ok(Metric::Dot),
            "cosine" | "cos" => Ok(Metric::Cosine),
            "l2" | "euclid" | "euclidean" => Ok(Metric::L2),
            other => Err(QuantError::InvalidConfig {
                field: "metric",
                reason: format!("`{other}` is not one of cosine, dot, l2"),
            }),
        }
    }
}
