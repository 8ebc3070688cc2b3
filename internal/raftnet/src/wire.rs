//! The payload format of the Raft service: openraft's serde types in bincode
//! with varint integers (compact: log ids and terms are small numbers, and a
//! command's protobuf bytes go through as one length-prefixed slice).

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest gRPC message either side sends or accepts. One log entry holds at
/// most the publisher's 16 MiB proposal; an append-entries request is
/// otherwise cut at `network::APPEND_BUDGET_BYTES`; a snapshot chunk is
/// openraft's `snapshot_max_chunk_size` (3 MiB by default).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

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

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeSet;

    use bytes::Bytes;
    use chronos_partition::{Entry, LeaderId, LogId};
    use chronos_partition::{NodeId, TypeConfig};
    use chronos_proto::internal::{command, Command as CommandPb, EventRecord, PublishCommand};
    use openraft::error::{Fatal, RaftError};
    use openraft::impls::Vote;
    use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
    use openraft::{EntryPayload, Membership, RaftTypeConfig, StorageError};
    use openraft_legacy::network_v1::{
        InstallSnapshotError, InstallSnapshotRequest, InstallSnapshotResponse, SnapshotMismatch,
        SnapshotSegmentId,
    };
    use prost::Message;
    use serde::Deserialize;

    use super::*;

    pub type Command = <TypeConfig as RaftTypeConfig>::D;

    pub fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(LeaderId { term, node_id: 1 }, index)
    }

    /// A publish of `events` events of `payload_bytes` each, as the publisher builds it.
    pub fn publish(events: usize, payload_bytes: usize) -> Command {
        let record = |i: usize| EventRecord {
            topic: "orders".into(),
            message_id: format!("order-{i:08}"),
            payload: Bytes::from(vec![b'x'; payload_bytes]),
            schedule_ts: 1_800_000_000_000,
            due_ts: 1_800_000_000_000,
            ..Default::default()
        };
        let pb = CommandPb {
            kind: Some(command::Kind::Publish(PublishCommand {
                first_offset: 1000,
                events: (0..events)
                    .map(|i| Bytes::from(record(i).encode_to_vec()))
                    .collect(),
                ..Default::default()
            })),
        };
        let raw = pb.encode_to_vec();
        // Command's only constructor outside chronos-partition is serde's.
        let de = serde::de::value::BytesDeserializer::<serde::de::value::Error>::new(&raw);
        Command::deserialize(de).expect("a valid command")
    }

    pub fn entry(index: u64, payload: EntryPayload<Command, NodeId, openraft::BasicNode>) -> Entry {
        Entry {
            log_id: log_id(2, index),
            payload,
        }
    }

    fn same<T: std::fmt::Debug + Serialize + DeserializeOwned>(value: &T) -> usize {
        let raw = encode(value).expect("encodes");
        let back: T = decode(&raw).expect("decodes");
        assert_eq!(format!("{back:?}"), format!("{value:?}"));
        raw.len()
    }

    #[test]
    fn append_entries_round_trip_compactly() {
        let batch = publish(1000, 200);
        let command_bytes = encode(&batch).expect("encodes").len();
        let members = Membership::new_with_defaults(vec![BTreeSet::from([1, 2, 3])], []);
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(log_id(1, 9)),
            leader_commit: Some(log_id(1, 9)),
            entries: vec![
                entry(10, EntryPayload::Blank),
                entry(11, EntryPayload::Membership(members)),
                entry(12, EntryPayload::Normal(batch)),
            ],
        };
        let len = same(&rpc);
        eprintln!("1000-event entry: {command_bytes} B command, {len} B request");
        // Everything but the command's own bytes is a few dozen bytes.
        assert!(len < command_bytes + 128, "{len} vs {command_bytes}");
        let heartbeat = AppendEntriesRequest::<TypeConfig> {
            entries: vec![],
            ..rpc
        };
        assert!(same(&heartbeat) < 32);
    }

    #[test]
    fn answers_and_remote_errors_round_trip() {
        type Append = Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>>;
        type Install = Result<
            InstallSnapshotResponse<TypeConfig>,
            RaftError<TypeConfig, InstallSnapshotError>,
        >;
        same::<Append>(&Ok(AppendEntriesResponse::HigherVote(Vote::new(7, 3))));
        same::<Append>(&Ok(AppendEntriesResponse::Conflict));
        same::<Append>(&Err(RaftError::Fatal(Fatal::Stopped)));
        let io = std::io::Error::other("No space left on device");
        let storage = StorageError::<TypeConfig>::from_io_error(
            openraft::ErrorSubject::Logs,
            openraft::ErrorVerb::Write,
            io,
        );
        same::<Append>(&Err(RaftError::Fatal(Fatal::StorageError(storage))));
        let mismatch = SnapshotMismatch {
            expect: SnapshotSegmentId {
                id: "snap-1".into(),
                offset: 0,
            },
            got: SnapshotSegmentId {
                id: "snap-1".into(),
                offset: 3 << 20,
            },
        };
        same::<Install>(&Err(RaftError::APIError(mismatch.into())));
        same::<Install>(&Ok(InstallSnapshotResponse {
            vote: Vote::new_committed(4, 2),
        }));
        let chunk = InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(4, 2),
            meta: openraft_legacy::network_v1::SnapshotMeta {
                last_log_id: None,
                last_membership: Default::default(),
                snapshot_id: "snap-1".into(),
            },
            offset: 3 << 20,
            data: vec![7; 1 << 20],
            done: false,
        };
        let len = same(&chunk);
        assert!(len < (1 << 20) + 64, "{len}");
    }

    #[test]
    fn malformed_input_is_an_error() {
        type V = chronos_partition::Vote;
        let raw = encode(&V::new(3, 1)).expect("encodes");
        assert!(decode::<V>(&raw[..raw.len() - 1]).is_err());
        let mut long = raw.clone();
        long.push(0);
        assert!(decode::<V>(&long).is_err(), "trailing bytes");
        // A length prefix claiming more than a message may hold.
        let huge = encode(&u64::MAX).expect("encodes");
        assert!(decode::<Vec<u8>>(&huge).is_err());
    }
}
