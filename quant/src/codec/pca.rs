//! The PCA codec: project onto the `d'` highest-variance principal components, then
//! store the projection with an element codec. `pca192+e4m3` is the seed paper's
//! recipe (half the dimensions, one float8 byte each).
//!
//! Scores are true scores against the decoded vector `xhat = mu + P^T yhat`:
//!
//! - dot / cosine: `q . xhat = (P q) . yhat + q . mu`. The query is rotated but not
//!   centred (centring it changes the ranking, see DESIGN.md), and `q . mu` is added
//!   back so scores are comparable with other codecs.
//! - L2: `|q - xhat|^2 = |P (q - mu) - yhat|^2 + |(q - mu) - P^T P (q - mu)|^2`: the
//!   part of `q - mu` outside the kept subspace is orthogonal to every decoded vector's
//!   offset from `mu`, so it adds the same constant to every distance.
//!
//! Either way the element codec scores a query of `d'` values against its codes with
//! its own kernels, and this codec adds one constant per query.

use serde::{Deserialize, Serialize};

use crate::codec::element::ElementCodec;
use crate::codec::{CodecSpec, ElementSpec, Scorer, VectorCodec};
use crate::error::{QuantError, Result};
use crate::kernels::dot_f32;
use crate::metric::Metric;
use crate::pca::Pca;

/// PCA to `d'` dimensions followed by an element codec.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "PcaCodecParams", into = "PcaCodecParams")]
pub struct PcaCodec {
    pca: Pca,
    element: ElementCodec,
}

/// The serialized form of [`PcaCodec`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PcaCodecParams {
    pca: Pca,
    element: ElementCodec,
}

impl From<PcaCodec> for PcaCodecParams {
    fn from(c: PcaCodec) -> Self {
        PcaCodecParams {
            pca: c.pca,
            element: c.element,
        }
    }
}

impl TryFrom<PcaCodecParams> for PcaCodec {
    type Error = QuantError;

    fn try_from(p: PcaCodecParams) -> Result<Self> {
        if p.element.dim() != p.pca.keep() {
            return Err(QuantError::InvalidConfig {
                field: "pca codec parameters",
                reason: format!(
                    "the element codec takes {} values, the PCA keeps {}",
                    p.element.dim(),
                    p.pca.keep()
                ),
            });
        }
        Ok(PcaCodec {
            pca: p.pca,
            element: p.element,
        })
    }
}

impl PcaCodec {
    /// Fits the PCA keeping `dims` components on `sample` (row-major, `dim` values per
    /// row, at least two rows), then the element codec on the projected sample.
    pub fn fit(sample: &[f32], dim: usize, dims: usize, element: ElementSpec) -> Result<PcaCodec> {
        CodecSpec::Pca { dims, element }.validate(dim)?;
        let pca = Pca::fit(sample, dim, dims)?;
        let projected = pca.transform(sample)?;
        let element = ElementCodec::fit(element, &projected, dims)?;
        Ok(PcaCodec { pca, element })
    }

    /// The fitted PCA.
    pub fn pca(&self) -> &Pca {
        &self.pca
    }

    /// The element codec of the projected vectors.
    pub fn element_codec(&self) -> &ElementCodec {
        &self.element
    }

    /// The query in the element codec's space, with the score's per-query constant.
    fn prepare(&self, query: &[f32], metric: Metric) -> (Vec<f32>, f32) {
        let q = metric.prepare_query(query);
        let mut projected = vec![0f32; self.pca.keep()];
        match metric {
            Metric::Dot | Metric::Cosine => {
                self.pca.rotate_into(&q, &mut projected);
                (projected, dot_f32(&q, self.pca.mean()))
            }
            Metric::L2 => {
                self.pca.transform_into(&q, &mut projected);
                let centred: f64 = q
                    .iter()
                    .zip(self.pca.mean())
                    .map(|(a, m)| f64::from(a - m).powi(2))
                    .sum();
                let kept: f64 = projected.iter().map(|&v| f64::from(v).powi(2)).sum();
                (projected, -((centred - kept).max(0.0) as f32))
            }
        }
    }

    fn inner_metric(metric: Metric) -> Metric {
        match metric {
            Metric::Dot | Metric::Cosine => Metric::Dot,
            Metric::L2 => Metric::L2,
        }
    }
}

/// An element codec's scorer in PCA space plus the per-query constant.
struct OffsetScorer<'a> {
    inner: Box<dyn Scorer + 'a>,
    offset: f32,
}

impl Scorer for OffsetScorer<'_> {
    fn code_len(&self) -> usize {
        self.inner.code_len()
    }

    fn score(&self, code: &[u8]) -> f32 {
        self.inner.score(code) + self.offset
    }

    fn score_batch(&self, codes: &[u8], out: &mut [f32]) {
        self.inner.score_batch(codes, out);
        out.iter_mut().for_each(|o| *o += self.offset);
    }
}

impl VectorCodec for PcaCodec {
    fn spec(&self) -> CodecSpec {
        CodecSpec::Pca {
            dims: self.pca.keep(),
            element: self.element.element(),
        }
    }

    fn dim(&self) -> usize {
        self.pca.dim()
    }

    fn code_len(&self) -> usize {
        self.element.code_len()
    }

    fn encode_into(&self, vector: &[f32], code: &mut [u8]) {
        let mut y = vec![0f32; self.pca.keep()];
        self.pca.transform_into(vector, &mut y);
        self.element.encode_into(&y, code);
    }

    fn decode_into(&self, code: &[u8], out: &mut [f32]) {
        let mut y = vec![0f32; self.pca.keep()];
        self.element.decode_into(code, &mut y);
        self.pca.inverse_transform_into(&y, out);
    }

    fn scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_> {
        let (projected, offset) = self.prepare(query, metric);
        let inner = self.element.scorer(&projected, Self::inner_metric(metric));
        Box::new(OffsetScorer { inner, offset })
    }

    fn reference_scorer(&self, query: &[f32], metric: Metric) -> Box<dyn Scorer + '_> {
        let (projected, offset) = self.prepare(query, metric);
        let inner = self
            .element
            .reference_scorer(&projected, Self::inner_metric(metric));
        Box::new(OffsetScorer { inner, offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pca::testdata::correlated;

    const METRICS: [Metric; 3] = [Metric::Dot, Metric::Cosine, Metric::L2];

    #[test]
    fn scores_are_true_scores_against_the_decoded_vector() {
        for (dim, dims, element) in [
            (7, 3, ElementSpec::F32),
            (65, 20, ElementSpec::E4m3),
            (129, 64, ElementSpec::I8),
            (65, 65, ElementSpec::F16),
        ] {
            let data = correlated(300, dim, dim as u64);
            let codec = PcaCodec::fit(&data, dim, dims, element).expect("fit");
            assert_eq!(codec.code_len(), element.code_len(dims));
            assert_eq!(codec.spec(), CodecSpec::Pca { dims, element });
            let codes = codec.encode(&data[..30 * dim]).expect("encode");
            let decoded = codec.decode(&codes).expect("decode");
            for metric in METRICS {
                for query in data.chunks_exact(dim).skip(200).take(3) {
                    let fast = codec.checked_scorer(query, metric).expect("scorer");
                    let slow = codec.reference_scorer(query, metric);
                    let pq = metric.prepare_query(query);
                    let mut batch = vec![0f32; 30];
                    fast.score_batch(&codes, &mut batch);
                    for ((code, x), b) in codes
                        .chunks_exact(codec.code_len())
                        .zip(decoded.chunks_exact(dim))
                        .zip(&batch)
                    {
                        let exact = metric.exact(&pq, x);
                        let tol = 2e-4 * (exact.abs() + 1.0);
                        assert!(
                            (fast.score(code) - exact).abs() <= tol,
                            "{element:?} {metric}: {} vs {exact}",
                            fast.score(code)
                        );
                        assert!((slow.score(code) - exact).abs() <= tol);
                        assert!((b - exact).abs() <= tol);
                    }
                }
            }
        }
    }

    #[test]
    fn passes_the_generic_codec_harness() {
        for (dim, dims, element, max_rel_err) in [
            (7, 7, ElementSpec::F32, 1e-5),
            (65, 65, ElementSpec::E4m3, 0.1),
            (129, 129, ElementSpec::I8, 0.05),
            (65, 65, ElementSpec::B1, 1.0),
        ] {
            let data = correlated(200, dim, 40 + dim as u64);
            let codec = PcaCodec::fit(&data, dim, dims, element).expect("fit");
            crate::codec::testing::check_codec(&codec, &data, max_rel_err);
        }
    }

    #[test]
    fn all_components_with_f32_is_lossless() {
        let dim = 7;
        let data = correlated(100, dim, 2);
        let codec = PcaCodec::fit(&data, dim, dim, ElementSpec::F32).expect("fit");
        let decoded = codec
            .decode(&codec.encode(&data).expect("encode"))
            .expect("decode");
        assert!(data.iter().zip(&decoded).all(|(a, b)| (a - b).abs() < 1e-4));
    }

    #[test]
    fn serde_round_trip_gives_identical_codes() {
        let dim = 65;
        let data = correlated(200, dim, 8);
        let codec = PcaCodec::fit(&data, dim, 30, ElementSpec::E4m3Scaled).expect("fit");
        let json = serde_json::to_string(&codec).expect("serialize");
        let back: PcaCodec = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(
            codec.encode(&data).expect("encode"),
            back.encode(&data).expect("encode")
        );
        assert_eq!(back.spec(), codec.spec());
    }

    #[test]
    fn bad_configs_are_named_errors() {
        let dim = 7;
        let data = correlated(20, dim, 1);
        assert!(matches!(
            PcaCodec::fit(&data, dim, 8, ElementSpec::E4m3),
            Err(QuantError::InvalidConfig {
                field: "pca dims",
                ..
            })
        ));
        assert!(matches!(
            PcaCodec::fit(&data[..dim], dim, 3, ElementSpec::E4m3),
            Err(QuantError::NotEnoughSamples { .. })
        ));
        let mut nan = data.clone();
        nan[5] = f32::INFINITY;
        assert!(matches!(
            PcaCodec::fit(&nan, dim, 3, ElementSpec::I8),
            Err(QuantError::NonFinite { row: 0, col: 5, .. })
        ));
    }
}
