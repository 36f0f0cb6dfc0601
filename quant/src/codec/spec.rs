//! What a user asks for: a codec by name, before it is fitted.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::QuantError;

/// The element types a vector can be stored as, one value per dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ElementSpec {
    /// 32-bit float.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
    /// float8 E4M3 (FN), plain cast.
    E4m3,
    /// float8 E5M2, plain cast.
    E5m2,
    /// float8 E4M3 after centring and scaling each dimension to the format's range.
    E4m3Scaled,
    /// float8 E5M2 after centring and scaling each dimension to the format's range.
    E5m2Scaled,
    /// int8 with a per-dimension affine map fitted to each dimension's min and max.
    I8,
    /// One sign bit per dimension, scored with popcount.
    B1,
}

impl ElementSpec {
    /// Every element type.
    pub const ALL: [ElementSpec; 9] = [
        ElementSpec::F32,
        ElementSpec::F16,
        ElementSpec::Bf16,
        ElementSpec::E4m3,
        ElementSpec::E5m2,
        ElementSpec::E4m3Scaled,
        ElementSpec::E5m2Scaled,
        ElementSpec::I8,
        ElementSpec::B1,
    ];

    /// The user-facing name.
    pub fn name(self) -> &'static str {
        match self {
            ElementSpec::F32 => "f32",
            ElementSpec::F16 => "f16",
            ElementSpec::Bf16 => "bf16",
            ElementSpec::E4m3 => "e4m3",
            ElementSpec::E5m2 => "e5m2",
            ElementSpec::E4m3Scaled => "e4m3-scaled",
            ElementSpec::E5m2Scaled => "e5m2-scaled",
            ElementSpec::I8 => "i8",
            ElementSpec::B1 => "b1",
        }
    }

    /// Bytes needed to store `dim` values.
    pub fn code_len(self, dim: usize) -> usize {
        match self {
            ElementSpec::F32 => dim * 4,
            ElementSpec::F16 | ElementSpec::Bf16 => dim * 2,
            ElementSpec::B1 => dim.div_ceil(8),
            _ => dim,
        }
    }
}

impl FromStr for ElementSpec {
    type Err = QuantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        ElementSpec::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| QuantError::UnknownCodec {
                spec: s.clone(),
                reason: "element types are f32, f16, bf16, e4m3, e5m2, e4m3-scaled, \
                         e5m2-scaled, i8, b1"
                    .into(),
            })
    }
}

/// The quantizer each transform-codec component uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ScalarQuantizer {
    /// Evenly spaced levels over a clipped range.
    #[default]
    Uniform,
    /// Levels from optimal 1-D k-means on the component's sample.
    Kmeans,
}

/// A codec as a user names it, before fitting.
///
/// Text forms (case-insensitive): `f16`, `i8`, `e4m3-scaled`, ... for element codecs;
/// `pca192+e4m3` (also `pca(192)+e4m3`) for PCA to 192 dimensions then an element
/// codec, the seed paper's recipe; `transform192` (also `transform(192)`) for the
/// transform codec at 192 bytes per vector, `transform192-kmeans` with k-means levels;
/// `transform-auto` (`transform-auto-kmeans`) for the transform codec at a quarter or
/// a half of a byte per dimension, whichever is the smaller that keeps a search's
/// candidates on the fitting sample ([`crate::codec::transform::auto`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum CodecSpec {
    /// One element type per dimension, no transform.
    Element {
        /// The element type.
        element: ElementSpec,
    },
    /// PCA to `dims` components, then an element codec.
    Pca {
        /// Components kept (d').
        dims: usize,
        /// The element type of the kept components.
        element: ElementSpec,
    },
    /// PCA rotation keeping every component, then `bytes` per vector spread over
    /// components by variance.
    Transform {
        /// The budget in bytes per vector.
        bytes: usize,
        /// The per-component quantizer.
        quantizer: ScalarQuantizer,
    },
    /// The transform codec at a size chosen when it is fitted:
    /// [`crate::codec::transform::auto`].
    TransformAuto {
        /// The per-component quantizer.
        quantizer: ScalarQuantizer,
    },
}

impl CodecSpec {
    /// Shorthand for an element codec.
    pub const fn element(element: ElementSpec) -> CodecSpec {
        CodecSpec::Element { element }
    }

    /// Bytes per encoded vector for input of dimension `dim`; for `transform-auto`,
    /// which decides when it is fitted, the most it may use (the fitted codec's
    /// [`crate::VectorCodec::code_len`] is exact).
    pub fn code_len(&self, dim: usize) -> usize {
        match *self {
            CodecSpec::Element { element } => element.code_len(dim),
            CodecSpec::Pca { dims, element } => element.code_len(dims),
            CodecSpec::Transform { bytes, .. } => bytes,
            CodecSpec::TransformAuto { .. } => crate::codec::transform::auto::auto_sizes(dim)
                .last()
                .copied()
                .unwrap_or(1),
        }
    }

    /// Checks the spec against an input dimension: PCA dims and byte budgets in range.
    pub fn validate(&self, dim: usize) -> Result<(), QuantError> {
        if dim == 0 {
            return Err(QuantError::InvalidConfig {
                field: "dim",
                reason: "must be >= 1".into(),
            });
        }
        match *self {
            CodecSpec::Element { .. } => Ok(()),
            CodecSpec::Pca { dims, .. } if dims == 0 || dims > dim => {
                Err(QuantError::InvalidConfig {
                    field: "pca dims",
                    reason: format!("must be in 1..={dim} (the vector dimension), got {dims}"),
                })
            }
            CodecSpec::Pca { .. } => Ok(()),
            CodecSpec::Transform { bytes, .. } if bytes == 0 || bytes > dim => {
                Err(QuantError::InvalidConfig {
                    field: "transform bytes",
                    reason: format!(
                        "must be in 1..={dim} (at most 8 bits per dimension), got {bytes}"
                    ),
                })
            }
            CodecSpec::Transform { .. } | CodecSpec::TransformAuto { .. } => Ok(()),
        }
    }
}

impl fmt::Display for CodecSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CodecSpec::Element { element } => f.write_str(element.name()),
            CodecSpec::Pca { dims, element } => write!(f, "pca{dims}+{}", element.name()),
            CodecSpec::Transform {
                bytes,
                quantizer: ScalarQuantizer::Uniform,
            } => {
                write!(f, "transform{bytes}")
            }
            CodecSpec::Transform {
                bytes,
                quantizer: ScalarQuantizer::Kmeans,
            } => {
                write!(f, "transform{bytes}-kmeans")
            }
            CodecSpec::TransformAuto {
                quantizer: ScalarQuantizer::Uniform,
            } => f.write_str("transform-auto"),
            CodecSpec::TransformAuto {
                quantizer: ScalarQuantizer::Kmeans,
            } => f.write_str("transform-auto-kmeans"),
        }
    }
}

/// Parses the number after a prefix: `192`, `(192)` or `:192`.
fn parse_count(rest: &str, spec: &str) -> Result<usize, QuantError> {
    let digits = rest.trim_start_matches([':', '(']).trim_end_matches(')');
    digits.parse().map_err(|_| QuantError::UnknownCodec {
        spec: spec.to_string(),
        reason: format!("expected a whole number after the prefix, got `{rest}`"),
    })
}

impl FromStr for CodecSpec {
    type Err = QuantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let spec = s.trim().to_ascii_lowercase();
        if let Some(rest) = spec.strip_prefix("pca") {
            let (dims, element) = rest
                .split_once('+')
                .ok_or_else(|| QuantError::UnknownCodec {
                    spec: spec.clone(),
                    reason: "a PCA codec is written pca<dims>+<element>, e.g. pca192+e4m3".into(),
                })?;
            return Ok(CodecSpec::Pca {
                dims: parse_count(dims, &spec)?,
                element: element.parse()?,
            });
        }
        if let Some(rest) = spec.strip_prefix("transform") {
            let (bytes, quantizer) = match rest.strip_suffix("-kmeans") {
                Some(bytes) => (bytes, ScalarQuantizer::Kmeans),
                None => (rest, ScalarQuantizer::Uniform),
            };
            if bytes == "-auto" {
                return Ok(CodecSpec::TransformAuto { quantizer });
            }
            return Ok(CodecSpec::Transform {
                bytes: parse_count(bytes, &spec)?,
                quantizer,
            });
        }
        Ok(CodecSpec::Element {
            element: spec.parse()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        for text in [
            "f16",
            "e4m3-scaled",
            "i8",
            "b1",
            "pca192+e4m3",
            "transform96",
            "transform48-kmeans",
            "transform-auto",
            "transform-auto-kmeans",
        ] {
            let spec: CodecSpec = text.parse().expect("valid spec");
            assert_eq!(spec.to_string(), text);
            let json = serde_json::to_string(&spec).expect("serialize");
            let back: CodecSpec = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, spec);
        }
        assert_eq!(
            "PCA(64)+F16".parse::<CodecSpec>().ok(),
            Some(CodecSpec::Pca {
                dims: 64,
                element: ElementSpec::F16
            })
        );
        assert_eq!(
            "transform:32"
                .parse::<CodecSpec>()
                .ok()
                .map(|s| s.code_len(384)),
            Some(32)
        );
    }

    #[test]
    fn bad_specs_name_the_problem() {
        assert!("e3m4".parse::<CodecSpec>().is_err());
        assert!("pca+e4m3".parse::<CodecSpec>().is_err());
        assert!("pca192".parse::<CodecSpec>().is_err());
        let err = CodecSpec::Pca {
            dims: 500,
            element: ElementSpec::E4m3,
        }
        .validate(384);
        assert!(err.is_err_and(|e| e.to_string().contains("pca dims")));
        assert!(
            CodecSpec::Transform {
                bytes: 385,
                quantizer: ScalarQuantizer::Uniform
            }
            .validate(384)
            .is_err()
        );
    }
}
