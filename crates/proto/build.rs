//! Generates the Rust code of the `mosaic.v1` protobuf package (messages, gRPC clients and
//! servers) from `proto/mosaic/v1` at the workspace root into `OUT_DIR`. Nothing generated is
//! committed.

use std::error::Error;
use std::path::PathBuf;

/// The proto files, relative to the proto root. Each is compiled and watched.
const PROTO_FILES: [&str; 5] = [
    "mosaic/v1/admin.proto",
    "mosaic/v1/controller.proto",
    "mosaic/v1/kv.proto",
    "mosaic/v1/migration.proto",
    "mosaic/v1/raft.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let proto_files = PROTO_FILES.map(|file| proto_root.join(file));
    for file in &proto_files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // For gRPC server reflection (`FILE_DESCRIPTOR_SET`).
        .file_descriptor_set_path(out_dir.join("mosaic_descriptor.bin"))
        .build_client(true)
        .build_server(true)
        // No `connect` helpers: callers build their own channels (TLS, timeouts, keepalive),
        // and without them this crate needs no transport (the fuzz workspace builds none).
        .build_transport(false)
        // Every `bytes` field becomes `bytes::Bytes`: payloads decoded from a `Bytes` buffer
        // share it, and move into `mosaic_raft` types without a copy.
        .bytes(".")
        .compile_protos(&proto_files, &[proto_root])?;
    Ok(())
}
