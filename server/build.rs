//! Compiles `proto/octet/v1/*.proto` and `proto/qdrant/*.proto` with protox (pure Rust: no system protoc) and
//! writes the encoded descriptor set next to the generated code for reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/octet/v1/common.proto",
    "proto/octet/v1/collections.proto",
    "proto/octet/v1/points.proto",
    "proto/octet/v1/search.proto",
    "proto/octet/v1/admin.proto",
    // Qdrant's API subset (package `qdrant`), served beside octet.v1.
    "proto/qdrant/json_with_int.proto",
    "proto/qdrant/qdrant_common.proto",
    "proto/qdrant/collections.proto",
    "proto/qdrant/points.proto",
    "proto/qdrant/qdrant.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("octet_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Undecodable requests are INVALID_ARGUMENT, not tonic's INTERNAL.
        .codec_path("crate::codec::StrictCodec")
        .compile_fds(fds)?;
    Ok(())
}
