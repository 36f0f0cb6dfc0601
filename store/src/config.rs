//! Collection configuration: what a user chooses at creation, validated once.
//!
//! Defaults (see [`CollectionConfig::new`]): cosine metric; the transform codec at
//! `dim / 4` or `dim / 2` bytes per vector (`transform-auto`: the first seal checks
//! the smaller size on held-out rows of its sample and keeps it when nearly every
//! query's exact top-10 is among its top candidates; 96 bytes for 384-d MiniLM, a
//! 16x compression over f32, and 192 for data whose neighbourhoods PCA cannot
//! compress, such as clusters of white noise); an `i8` rescore tier with 4x
//! oversampling, because on real embeddings the true top-10 sits inside the top-40
//! candidates of the compact codes almost always and i8 rescoring is near-exact
//! (0.994 flat); HNSW m = 16, ef_construction = 128, ef_search = 64.

use octet_quant::{CodecSpec, ElementSpec, Metric, ScalarQuantizer};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};

/// The most dimensions a collection may have; caps allocations driven by files.
pub const MAX_DIM: usize = 65_536;

/// The most HNSW links per node a collection may ask for (layer 0 keeps `2m`).
pub const MAX_HNSW_M: usize = 256;

/// The second tier: the full vector kept on disk for rescoring the candidates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RescoreConfig {
    /// How the full vector is stored (`None`: no rescore tier).
    pub element: Option<ElementSpec>,
    /// Candidates fetched per result before rescoring (>= 1).
    pub oversampling: f32,
}

impl Default for RescoreConfig {
    fn default() -> Self {
        RescoreConfig {
            element: Some(ElementSpec::I8),
            oversampling: 4.0,
        }
    }
}

/// HNSW graph parameters and the filtered-search policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HnswConfig {
    /// Links per node on the upper layers (layer 0 keeps up to 2m). 2..=256.
    pub m: usize,
    /// Candidate list size while building.
    pub ef_construction: usize,
    /// Default candidate list size while searching (a request may override it).
    pub ef_search: usize,
    /// When a filter lets through less than this fraction of a segment's points,
    /// search those points exactly instead of walking the graph: a graph walk with a
    /// selective filter may not reach enough matching points.
    pub exact_filter_fraction: f32,
}

impl Default for HnswConfig {
    fn default() -> Self {
        HnswConfig {
            m: 16,
            ef_construction: 128,
            ef_search: 64,
            exact_filter_fraction: 0.1,
        }
    }
}

/// When the growing segment is sealed and when segments are compacted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SegmentConfig {
    /// Points in the growing segment that trigger a seal, and the most points one
    /// seal writes: writes past it freeze a chunk, sealed on its own (a single
    /// batch larger than this is one chunk).
    pub seal_threshold: usize,
    /// A sealed segment whose deleted fraction exceeds this is rewritten.
    pub compact_deleted_fraction: f32,
    /// Sealed segments smaller than this many live points are merged together.
    pub merge_below: usize,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        SegmentConfig {
            seal_threshold: 32_768,
            compact_deleted_fraction: 0.2,
            merge_below: 8_192,
        }
    }
}

/// Everything that defines a collection. Immutable once the collection exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionConfig {
    /// Vector dimension.
    pub dim: usize,
    /// Similarity metric.
    pub metric: Metric,
    /// The compact codec that the graph search scores.
    pub codec: CodecSpec,
    /// The rescore tier.
    pub rescore: RescoreConfig,
    /// Graph parameters.
    pub hnsw: HnswConfig,
    /// Sealing and compaction.
    pub segments: SegmentConfig,
}

impl CollectionConfig {
    /// The default configuration for `dim`-dimensional vectors under `metric`.
    pub fn new(dim: usize, metric: Metric) -> Self {
        CollectionConfig {
            dim,
            metric,
            codec: CodecSpec::TransformAuto {
                quantizer: ScalarQuantizer::Uniform,
            },
            rescore: RescoreConfig::default(),
            hnsw: HnswConfig::default(),
            segments: SegmentConfig::default(),
        }
    }

    /// Checks every field; the error names the field and the allowed range.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, reason: String| Err(StoreError::InvalidConfig { field, reason });
        if self.dim == 0 || self.dim > MAX_DIM {
            return invalid("dim", format!("must be in 1..={MAX_DIM}, got {}", self.dim));
        }
        self.codec.validate(self.dim)?;
        if self.rescore.element == Some(ElementSpec::B1) {
            return invalid(
                "rescore tier",
                "b1 keeps one bit per dimension: too coarse to rescore with".into(),
            );
        }
        let os = self.rescore.oversampling;
        if !(os.is_finite() && (1.0..=100.0).contains(&os)) {
            return invalid("oversampling", format!("must be in 1..=100, got {os}"));
        }
        let h = &self.hnsw;
        if !(2..=MAX_HNSW_M).contains(&h.m) {
            return invalid(
                "hnsw m",
                format!("must be in 2..={MAX_HNSW_M}, got {}", h.m),
            );
        }
        if !(1..=10_000).contains(&h.ef_construction) {
            return invalid(
                "hnsw ef_construction",
                format!("must be in 1..=10000, got {}", h.ef_construction),
            );
        }
        if !(1..=10_000).contains(&h.ef_search) {
            return invalid(
                "hnsw ef_search",
                format!("must be in 1..=10000, got {}", h.ef_search),
            );
        }
        let f = h.exact_filter_fraction;
        if !(f.is_finite() && (0.0..=1.0).contains(&f)) {
            return invalid(
                "exact_filter_fraction",
                format!("must be in 0..=1, got {f}"),
            );
        }
        let s = &self.segments;
        if !(16..=(1 << 26)).contains(&s.seal_threshold) {
            return invalid(
                "seal_threshold",
                format!("must be in 16..=67108864 points, got {}", s.seal_threshold),
            );
        }
        let c = s.compact_deleted_fraction;
        if !(c.is_finite() && c > 0.0 && c <= 1.0) {
            return invalid(
                "compact_deleted_fraction",
                format!("must be in (0, 1], got {c}"),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_field() {
        let config = CollectionConfig::new(384, Metric::Cosine);
        config.validate().expect("default config");
        assert_eq!(config.codec.to_string(), "transform-auto");
        assert_eq!(config.codec.code_len(384), 192, "at most dim/2 bytes");

        let mut c = config.clone();
        c.hnsw.m = 257;
        let err = c.validate().expect_err("m too large");
        assert!(err.to_string().contains("hnsw m"), "{err}");

        let mut c = config.clone();
        c.codec = CodecSpec::Pca {
            dims: 400,
            element: ElementSpec::E4m3,
        };
        assert!(c.validate().is_err());

        let mut c = config.clone();
        c.rescore.oversampling = f32::NAN;
        assert!(c.validate().is_err());

        let mut c = config;
        c.dim = 0;
        assert!(c.validate().is_err());
    }
}
