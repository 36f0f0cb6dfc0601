//! # octet-quant
//!
//! Octet's quantization core, shared by the vector database and the weight tools:
//! vector codecs (f32, f16, bf16, float8, int8, sign bits), PCA, the transform codec,
//! distance kernels with scalar twins, and (later) weight compression and the
//! checkpoint format. No I/O servers, no async runtime.
#![warn(missing_docs)]

pub mod bitstack;
mod buffer;
#[cfg(feature = "candle")]
pub mod candle_load;
pub mod checkpoint;
pub mod codec;
pub mod dest;
pub mod error;
pub mod eval;
pub mod gpu;
pub mod kernels;
pub mod kmeans1d;
pub mod metric;
pub mod palette;
pub mod pca;
pub mod scan;
pub mod vecio;

pub use codec::Codec;
pub use codec::pca::PcaCodec;
pub use codec::transform::TransformCodec;
pub use codec::{CodecSpec, ElementSpec, ScalarQuantizer, Scorer, VectorCodec};
pub use codec::{
    bfloat16::Bf16Codec, element::ElementCodec, float8::Float8Codec, float8::Float8Format,
    float16::F16Codec, float32::F32Codec, int8::I8Codec, scaled_float8::ScaledFloat8Codec,
    sign_bits::B1Codec,
};
pub use error::{QuantError, Result};
pub use metric::Metric;
pub use pca::Pca;
