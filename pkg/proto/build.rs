//! Generates the chronos.v1 types and gRPC stubs from `proto/` and a descriptor
//! set for server reflection (of the public protos only: the internal storage
//! records and the node-to-node Raft service stay out of it). protoc comes from
//! the vendored crate unless $PROTOC is set.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest.join("../../proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let public = ["chronos/v1/events.proto", "chronos/v1/admin.proto"].map(|f| proto_root.join(f));
    let internal = ["internal/storage.proto"].map(|f| proto_root.join(f));
    let raft = ["internal/raft.proto", "internal/clock.proto"].map(|f| proto_root.join(f));

    // tonic-prost-build does not emit rerun-if-changed for the inputs itself.
    println!("cargo:rerun-if-changed={}", proto_root.display());
    for file in public.iter().chain(&internal).chain(&raft) {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("chronos_descriptor.bin"))
        .codec_path("crate::codec::ChronosCodec")
        .bytes(".")
        .compile_protos(&public, std::slice::from_ref(&proto_root))?;
    // The protobuf JSON mapping of the public messages, for the HTTP API:
    // field names as in the .proto, every field present in answers.
    let descriptors = std::fs::read(out_dir.join("chronos_descriptor.bin"))?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .emit_fields()
        .build(&[".chronos.v1"])?;
    // Internal records get no descriptor set: reflection must not expose them.
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        .bytes(".")
        .compile_protos(&internal, std::slice::from_ref(&proto_root))?;
    // The node-to-node Raft and clock services: stubs, but no descriptor set either.
    tonic_prost_build::configure()
        .codec_path("crate::codec::ChronosCodec")
        .bytes(".")
        .compile_protos(&raft, &[proto_root])?;
    Ok(())
}
