//! The configurations `octet bench` measures: a compact codec for the graph search
//! and an optional rescore tier, written `CODEC[/RESCORE]` (`transform192/i8`,
//! `pca192+e4m3`, `f32`). No `/RESCORE` means no rescore tier.

use std::fmt;
use std::str::FromStr;

use octet_quant::{CodecSpec, ElementSpec, ScalarQuantizer};

/// One measured configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchConfig {
    /// The compact codec the graph search scores.
    pub codec: CodecSpec,
    /// The rescore tier's element type (`None`: search on the compact codes only).
    pub rescore: Option<ElementSpec>,
}

impl fmt::Display for BenchConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rescore {
            Some(r) => write!(f, "{}/{}", self.codec, r.name()),
            None => write!(f, "{}", self.codec),
        }
    }
}

impl FromStr for BenchConfig {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (codec, rescore) = match s.split_once('/') {
            Some((c, r)) => (c, Some(r)),
            None => (s, None),
        };
        let codec: CodecSpec = codec
            .parse()
            .map_err(|e: octet_quant::QuantError| format!("config `{s}`: {e}"))?;
        let rescore = match rescore.map(str::trim) {
            None | Some("none") => None,
            Some(r) => Some(
                r.parse::<ElementSpec>()
                    .map_err(|e| format!("config `{s}`: rescore tier: {e}"))?,
            ),
        };
        Ok(BenchConfig { codec, rescore })
    }
}

/// The default set for `dim`-dimensional vectors (for 384-d: f32, i8, e4m3-scaled,
/// pca192+e4m3, and transform192 / transform96 each without a rescore tier, with an
/// e4m3-scaled one and with an i8 one).
pub fn default_configs(dim: usize) -> Vec<BenchConfig> {
    let element = |e| BenchConfig {
        codec: CodecSpec::element(e),
        rescore: None,
    };
    let mut out = vec![
        element(ElementSpec::F32),
        element(ElementSpec::I8),
        element(ElementSpec::E4m3Scaled),
    ];
    if dim >= 2 {
        out.push(BenchConfig {
            codec: CodecSpec::Pca {
                dims: dim / 2,
                element: ElementSpec::E4m3,
            },
            rescore: None,
        });
    }
    for bytes in [dim / 2, dim / 4] {
        if bytes == 0 {
            continue;
        }
        for rescore in [None, Some(ElementSpec::E4m3Scaled), Some(ElementSpec::I8)] {
            out.push(BenchConfig {
                codec: CodecSpec::Transform {
                    bytes,
                    quantizer: ScalarQuantizer::Uniform,
                },
                rescore,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_round_trip_through_text() {
        for c in default_configs(384) {
            let text = c.to_string();
            assert_eq!(text.parse::<BenchConfig>(), Ok(c), "{text}");
        }
        let c: BenchConfig = "transform192/none".parse().expect("parses");
        assert_eq!(c.rescore, None);
        assert_eq!(default_configs(384).len(), 10);
        assert!("transform192/b9".parse::<BenchConfig>().is_err());
        assert!("nope".parse::<BenchConfig>().is_err());
    }
}
