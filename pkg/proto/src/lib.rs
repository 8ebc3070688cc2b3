//! Generated types and gRPC stubs of the public `chronos.v1` API.
//!
//! Owns nothing but the generated code (build.rs drives `tonic-prost-build`; never
//! hand-edit what it produces) and the descriptor set that server reflection serves.
//! Validation, routing and behaviour live in `chronos-api`.

#![allow(clippy::all, missing_docs)]

pub mod codec;

/// The `chronos.v1` package: messages, `EventService`, `AdminService`.
pub mod v1 {
    tonic::include_proto!("chronos.v1");
    // serde in the protobuf JSON mapping (pbjson), for the HTTP API.
    include!(concat!(env!("OUT_DIR"), "/chronos.v1.serde.rs"));
}

/// Internal storage records (`proto/internal/`): log commands and stored events.
pub mod internal {
    tonic::include_proto!("chronos.internal.v1");
}

/// The node-to-node Raft service (`proto/internal/raft.proto`): openraft's
/// messages for many partitions' Raft groups, carried as opaque payloads.
pub mod raft {
    tonic::include_proto!("chronos.raft.v1");
}

/// The node-to-node clock probe (`proto/internal/clock.proto`).
pub mod clock {
    tonic::include_proto!("chronos.clock.v1");
}

/// Encoded `FileDescriptorSet` of the public protos, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("chronos_descriptor");
