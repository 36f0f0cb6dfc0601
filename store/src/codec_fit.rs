//! The one place where the store turns a [`CodecSpec`] into a fitted codec and
//! persists it: `octet_quant::codec::Codec`, the serde enum over every codec
//! family, serialized as JSON into a checksummed codec file.

use std::sync::Arc;

use octet_quant::codec::Codec;
use octet_quant::{CodecSpec, QuantError, VectorCodec};

use crate::config::CollectionConfig;

/// A fitted codec as the store holds it.
pub(crate) type SharedCodec = Arc<Codec>;

/// Fits `spec` on `sample` (row-major, `config.dim` each) for a collection of
/// `config`: `transform-auto` checks its sizes under the collection's metric and
/// the candidates per result its rescore tier re-ranks (1 without one).
pub(crate) fn fit(
    spec: &CodecSpec,
    sample: &[f32],
    config: &CollectionConfig,
) -> Result<SharedCodec, QuantError> {
    let oversampling = match config.rescore.element {
        Some(_) => config.rescore.oversampling,
        None => 1.0,
    };
    Ok(Arc::new(spec.fit_for(
        sample,
        config.dim,
        config.metric,
        oversampling,
    )?))
}

/// Serializes a fitted codec for the codec file.
pub(crate) fn to_json(codec: &SharedCodec) -> Result<Vec<u8>, String> {
    serde_json::to_vec(codec.as_ref())
        .map_err(|e| format!("cannot serialize the {} codec: {e}", codec.spec()))
}

/// Reads a fitted codec back.
pub(crate) fn from_json(bytes: &[u8]) -> Result<SharedCodec, String> {
    serde_json::from_slice::<Codec>(bytes)
        .map(Arc::new)
        .map_err(|e| format!("codec does not parse: {e}"))
}
