//! The Rust code generated from `proto/mosaic/v1` is committed in `src/generated/`, so that a
//! crate depending on `mosaic-proto` (the client library above all) builds without `protoc`
//! and without a build script. This test generates it again from the .proto files, with the
//! `protoc` on the `PATH` (or `PROTOC`) and the `tonic-prost-build` of `Cargo.lock`, and fails
//! if the committed copy differs. After changing a .proto file, write the new code with
//!
//! ```text
//! MOSAIC_REGENERATE_PROTO=1 cargo test -p mosaic-proto --test generated
//! ```

use std::error::Error;
use std::path::{Path, PathBuf};

/// The proto files, relative to the proto root.
const PROTO_FILES: [&str; 5] = [
    "mosaic/v1/admin.proto",
    "mosaic/v1/controller.proto",
    "mosaic/v1/kv.proto",
    "mosaic/v1/migration.proto",
    "mosaic/v1/raft.proto",
];

/// The files generated, relative to the output directory: the `mosaic.v1` package and its
/// encoded `FileDescriptorSet` (for gRPC server reflection).
const GENERATED_FILES: [&str; 2] = ["mosaic.v1.rs", "mosaic_descriptor.bin"];

/// Generates the code into `out_dir`.
fn generate(out_dir: &Path) -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let proto_root = manifest_dir.join("../../proto");
    let proto_files = PROTO_FILES.map(|file| proto_root.join(file));
    tonic_prost_build::configure()
        .out_dir(out_dir)
        .file_descriptor_set_path(out_dir.join(GENERATED_FILES[1]))
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

#[test]
fn the_committed_generated_code_is_what_the_proto_files_generate() {
    let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/generated");
    let fresh = std::env::temp_dir().join(format!("mosaic-proto-generated-{}", std::process::id()));
    std::fs::create_dir_all(&fresh).expect("a temporary directory");
    generate(&fresh).expect("protoc and tonic-prost-build generate the code");
    let regenerate = std::env::var_os("MOSAIC_REGENERATE_PROTO").is_some();
    let mut stale = Vec::new();
    for file in GENERATED_FILES {
        let generated = std::fs::read(fresh.join(file)).expect("a generated file");
        let path = committed.join(file);
        if regenerate {
            std::fs::write(&path, &generated).expect("the committed copy written");
        } else if std::fs::read(&path).ok().as_ref() != Some(&generated) {
            stale.push(path.display().to_string());
        }
    }
    std::fs::remove_dir_all(&fresh).expect("the temporary directory removed");
    assert!(
        stale.is_empty(),
        "{stale:?} differ from what proto/mosaic/v1 generates; write them with \
         MOSAIC_REGENERATE_PROTO=1 cargo test -p mosaic-proto --test generated"
    );
}
