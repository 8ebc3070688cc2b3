//! The payload format of the Raft service: openraft's serde types in bincode
//! with varint integers (compact: log ids and terms are small numbers, and a
//! command's protobuf bytes go through as one length-prefixed slice).

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest gRPC message either side sends or accepts. One log entry holds at
/// most the partition actor's 16 MiB proposal; an append-entries request is
/// split at [`APPEND_BUDGET_BYTES`]; a snapshot chunk is openraft's
/// `snapshot_max_chunk_size` (3 MiB by default).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// An append-entries request larger than this carries only a prefix of its
/// entries (at least one); the rest go in the next request. openraft bounds
/// the call by the heartbeat interval, so it must not carry too many bytes.
pub const APPEND_BUDGET_BYTES: usize = 4 << 20;

fn options() -> impl Options {
    bincode::DefaultOptions::new()
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::Error> {
    // `serialize_into` walks the value once; `serialize` sizes it first.
    let mut out = Vec::new();
    options().serialize_into(&mut out, value)?;
    Ok(out)
}

/// Encoded size of `value`, for splitting a request that is over budget.
pub fn encoded_len<T: Serialize>(value: &T) -> Result<u64, bincode::Error> {
    options().serialized_size(value)
}

/// Decodes input from another node: bounded (a corrupt length prefix cannot
/// make it allocate more than a message's size) and whole (no trailing bytes).
pub fn decode<T: DeserializeOwned>(raw: &[u8]) -> Result<T, bincode::Error> {
    options()
        .with_limit(MAX_MESSAGE_BYTES as u64)
        .deserialize(raw)
}
