//! One type for every fitted codec, so a collection manifest can hold whichever the
//! user chose, and one place that turns a [`CodecSpec`] into a fitted codec.

use serde::{Deserialize, Serialize};

use super::element::ElementCodec;
use super::pca::PcaCodec;
use super::transform::TransformCodec;
use super::transform::auto::fit_auto;
use super::{CodecSpec, Scorer, VectorCodec};
use crate::error::Result;
use crate::metric::Metric;

/// Any fitted codec. Serializes with its parameters (scales, PCA rotation, bit
/// allocation), tagged by family, so it round-trips through a manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "kebab-case")]
pub enum Codec {
    /// One element type per dimension.
    Element(ElementCodec),
    /// PCA to d' dimensions, then an element codec: the seed paper's recipe.
    Pca(PcaCodec),
    /// Octet's transform codec.
    Transform(TransformCodec),
}

impl CodecSpec {
    /// Fits the codec this spec names on `sample` (row-major rows of `dim` values).
    ///
    /// Plain casts ignore the sample; scaled, affine and PCA-based codecs learn their
    /// parameters from it. Errors name the field at fault (PCA dims above `dim`, a
    /// byte budget out of range, too few rows, a non-finite value).
    ///
    /// `transform-auto` checks its sizes with L2 neighbours and 4 candidates per
    /// result; [`CodecSpec::fit_for`] names the metric and the oversampling.
    pub fn fit(&self, sample: &[f32], dim: usize) -> Result<Codec> {
        self.fit_for(sample, dim, Metric::L2, 4.0)
    }

    /// [`CodecSpec::fit`] for a collection searched under `metric` that re-ranks
    /// `oversampling` candidates per result (1 without a rescore tier): what
    /// `transform-auto` checks its sizes against. Other specs ignore both.
    pub fn fit_for(
        &self,
        sample: &[f32],
        dim: usize,
        metric: Metric,
        oversampling: f32,
    ) -> Result<Codec> {
        self.validate(dim)?;
        Ok(match *self {
            CodecSpec::Element { element } => {
                Codec::Element(ElementCodec::fit(element, sample, dim)?)
            }
            CodecSpec::Pca { dims, element } => {
                Codec::Pca(PcaCodec::fit(sample, dim, dims, element)?)
            }
            CodecSpec::Transform { bytes, quantizer } => {
                Codec::Transform(TransformCodec::fit(sample, dim, bytes, quantizer)?)
            }
            CodecSpec::TransformAuto { quantizer } => {
                let (codec, _) = fit_auto(sample, dim, quantizer, metric, oversampling)?;
                Codec::Transform(codec)
            }
        })
    }
}

impl Codec {
    fn inner(&self) -> &dyn VectorCodec {
        match self {
            Codec::Element(c) => c,
            Codec::Pca(c) => c,
            Codec::Transform(c) => c,
        }
    }
}

impl VectorCodec for Codec {
    fn spec(&self) -> CodecSpec {
        self.inner().spec()
    }

    fn dim(&self) -> usize {
        self.inner().dim()
    }

    fn code_len(&self) -> usize {
        self.inner().code_len()
    }

    fn encode_into(&self, vector: &[f32], code: &mut [u8]) {
        self.inner().encode_into(vector, code)
    }

    fn decode_into(&self, code: &[u8], out: &mut [f32]) {
        self.inner().decode_into(code, out)
    }

    fn scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_> {
        self.inner().scorer(query, metric)
    }

    fn reference_scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_> {
        self.inner().reference_scorer(query, metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ScalarQuantizer;
    use rand::{Rng, SeedableRng};

    #[test]
    fn every_family_fits_and_round_trips_through_serde() {
        let dim = 33;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let sample: Vec<f32> = (0..200 * dim)
            .map(|i| rng.random::<f32>() - 0.5 + (i % dim) as f32 * 0.01)
            .collect();
        for text in [
            "f16",
            "i8",
            "e4m3-scaled",
            "b1",
            "pca16+e4m3",
            "transform16",
            "transform8-kmeans",
        ] {
            let spec: CodecSpec = text.parse().expect("spec");
            let codec = spec.fit(&sample, dim).expect("fit");
            assert_eq!(codec.spec(), spec, "{text}");
            assert_eq!(codec.code_len(), spec.code_len(dim), "{text}");
            let json = serde_json::to_string(&codec).expect("serialize");
            let back: Codec = serde_json::from_str(&json).expect("deserialize");
            let rows = &sample[..10 * dim];
            assert_eq!(
                codec.encode(rows).expect("encode"),
                back.encode(rows).expect("encode"),
                "{text}"
            );
        }
    }

    #[test]
    fn transform_auto_fits_as_a_transform_codec_of_one_of_its_sizes() {
        let dim = 32;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        let sample: Vec<f32> = (0..300 * dim)
            .map(|i| rng.random::<f32>() / (1 + i % dim) as f32)
            .collect();
        for (text, quantizer) in [
            ("transform-auto", ScalarQuantizer::Uniform),
            ("transform-auto-kmeans", ScalarQuantizer::Kmeans),
        ] {
            let spec: CodecSpec = text.parse().expect("spec");
            assert_eq!(spec, CodecSpec::TransformAuto { quantizer });
            assert_eq!(spec.code_len(dim), 16, "the most it may use");
            let codec = spec
                .fit_for(&sample, dim, Metric::Cosine, 4.0)
                .expect("fit");
            // 300 rows are too few to check the smaller size: the larger is used.
            assert_eq!(
                codec.spec(),
                CodecSpec::Transform {
                    bytes: 16,
                    quantizer
                }
            );
            let json = serde_json::to_string(&codec).expect("serialize");
            let back: Codec = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back.spec(), codec.spec());
        }
    }

    #[test]
    fn bad_specs_fail_before_fitting() {
        let sample = vec![0.5f32; 40];
        assert!(
            "pca9+e4m3"
                .parse::<CodecSpec>()
                .expect("spec")
                .fit(&sample, 4)
                .is_err()
        );
        assert!(
            "transform5"
                .parse::<CodecSpec>()
                .expect("spec")
                .fit(&sample, 4)
                .is_err()
        );
        assert!(
            "i8".parse::<CodecSpec>()
                .expect("spec")
                .fit(&[f32::NAN; 4], 4)
                .is_err()
        );
    }
}
