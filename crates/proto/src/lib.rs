//! Mosaic's wire format: the protobuf messages and gRPC services of `proto/mosaic/v1`, and the
//! conversions between the Raft core's and the controller's types and their wire form.
//!
//! - [`pb`] is the `mosaic.v1` package, generated from the .proto files and committed in
//!   `src/generated/` (so that no crate depending on this one needs `protoc` or a build script;
//!   `tests/generated.rs` fails when the copy is stale and says how to write it): the
//!   messages, with every `bytes` field a
//!   [`bytes::Bytes`] so that payloads decoded from a `Bytes` buffer share it; the gRPC clients
//!   ([`pb::kv_client::KvClient`], [`pb::raft_transport_client::RaftTransportClient`],
//!   [`pb::controller_client::ControllerClient`]) and servers ([`pb::kv_server::KvServer`],
//!   [`pb::raft_transport_server::RaftTransportServer`],
//!   [`pb::controller_server::ControllerServer`]). The `Controller` service is the controller
//!   group's API: commands through its Raft log (`Execute`) and linearizable reads of a
//!   configuration and the node registry (`Query`).
//! - [`convert`] maps [`mosaic_raft::Message`] to [`pb::RaftMessage`] and back, rejecting every
//!   wire message that does not map with a [`ConvertError`].
//! - [`controller`] maps the controller's requests, outcomes, refusals, configurations and query
//!   answers ([`mosaic_controller`]) to the `Controller` service's messages and back, rejecting
//!   malformed wire messages with a [`ConvertError`] in the same way.
//! - [`node`] checks the requests of a storage node's `Kv` and `NodeAdmin` services and turns
//!   them into what its store takes, refusing malformed ones with the store's
//!   `InvalidArgument`.
//!
//! Size limits on the wire are the transport's: tonic's `max_decoding_message_size` bounds
//! every message a server or client decodes.
#![deny(missing_docs)]

/// The `mosaic.v1` protobuf package, generated from `proto/mosaic/v1/*.proto`.
// Generated code: its docs are the comments of the .proto files, which prost copies onto every
// message, field, enum value and oneof variant that has one. A .proto item without a comment
// would come out undocumented, and the place to fix that is the .proto file, not this crate's
// build. (prost-build marks the generated types `allow(clippy::all)` itself.)
#[allow(missing_docs)]
pub mod pb {
    include!("generated/mosaic.v1.rs");
}

/// The encoded `FileDescriptorSet` of `proto/mosaic/v1`, which a node's gRPC server
/// reflection serves (so that generic tools can call Mosaic without its .proto files).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("generated/mosaic_descriptor.bin");

pub mod controller;
pub mod convert;
pub mod migration;
pub mod node;

pub use convert::{ConvertError, Result, message_from_pb, message_to_pb};
