//! How a Raft log entry is laid out in a WAL record.
//!
//! The WAL header carries the entry's term and index, plus `seq` — the offset of
//! the entry's first event, or for an entry without events the offset the next
//! event will get — and the append time. The payload is one kind byte and a body:
//! `0` blank, `1` a protobuf [`Command`], `2` a JSON membership (rare).

use chronos_wal::RecordHeader;
use openraft::{CommittedLeaderId, EntryPayload};

use crate::types::{Command, Entry, LogId};

const KIND_BLANK: u8 = 0;
const KIND_NORMAL: u8 = 1;
const KIND_MEMBERSHIP: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty log record at index {0}")]
    Empty(u64),
    #[error("unknown log record kind {kind} at index {index}")]
    UnknownKind { kind: u8, index: u64 },
    #[error("undecodable command at index {index}: {source}")]
    Command {
        index: u64,
        source: prost::DecodeError,
    },
    #[error("undecodable membership at index {index}: {source}")]
    Membership {
        index: u64,
        source: serde_json::Error,
    },
}

/// Encodes `entry` as a WAL payload.
pub fn encode_payload(entry: &Entry) -> Vec<u8> {
    match &entry.payload {
        EntryPayload::Blank => vec![KIND_BLANK],
        EntryPayload::Normal(cmd) => {
            let mut out = Vec::with_capacity(1 + prost::Message::encoded_len(&cmd.0));
            out.push(KIND_NORMAL);
            prost::Message::encode(&cmd.0, &mut out).expect("Vec has unbounded capacity");
            out
        }
        EntryPayload::Membership(m) => {
            let mut out = vec![KIND_MEMBERSHIP];
            // Serialising a plain struct of maps and sets into a Vec cannot fail.
            serde_json::to_writer(&mut out, m).expect("membership serialises");
            out
        }
    }
}

/// The WAL header for `entry`; `next_offset` is the offset after the previous entry.
pub fn header(entry: &Entry, next_offset: u64, ts_ms: u64) -> RecordHeader {
    let seq = entry_offsets(entry).map_or(next_offset, |(first, _)| first);
    RecordHeader {
        term: entry.log_id.leader_id.term,
        index: entry.log_id.index,
        seq,
        ts_ms,
    }
}

/// (first offset, event count) for entries that publish events.
pub fn entry_offsets(entry: &Entry) -> Option<(u64, u64)> {
    match &entry.payload {
        EntryPayload::Normal(cmd) => cmd.offsets(),
        _ => None,
    }
}

pub fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

/// Decodes a WAL record back into the entry it was written from.
pub fn decode(header: &RecordHeader, payload: &[u8]) -> Result<Entry, CodecError> {
    let index = header.index;
    let (&kind, body) = payload.split_first().ok_or(CodecError::Empty(index))?;
    let payload = match kind {
        KIND_BLANK => EntryPayload::Blank,
        KIND_NORMAL => EntryPayload::Normal(
            Command::decode(body).map_err(|source| CodecError::Command { index, source })?,
        ),
        KIND_MEMBERSHIP => EntryPayload::Membership(
            serde_json::from_slice(body)
                .map_err(|source| CodecError::Membership { index, source })?,
        ),
        kind => return Err(CodecError::UnknownKind { kind, index }),
    };
    Ok(Entry {
        log_id: log_id(header.term, index),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use chronos_proto::internal::PublishCommand;
    use openraft::{BasicNode, Membership};

    use super::*;

    fn round_trip(entry: Entry) {
        let payload = encode_payload(&entry);
        let h = header(&entry, 42, 7);
        let back = decode(&h, &payload).unwrap();
        assert_eq!(back.log_id, entry.log_id);
        assert_eq!(
            format!("{:?}", back.payload),
            format!("{:?}", entry.payload)
        );
    }

    #[test]
    fn entries_round_trip() {
        round_trip(Entry {
            log_id: log_id(3, 10),
            payload: EntryPayload::Blank,
        });
        let cmd = Command::publish(PublishCommand {
            publish_ts: 5,
            first_offset: 100,
            events: vec![b"a".to_vec().into(), b"bc".to_vec().into()],
        });
        let e = Entry {
            log_id: log_id(3, 11),
            payload: EntryPayload::Normal(cmd),
        };
        assert_eq!(
            header(&e, 42, 0).seq,
            100,
            "seq is the first event's offset"
        );
        round_trip(e);
        let nodes = BTreeMap::from([(1u64, BasicNode::new("127.0.0.1:1"))]);
        let m = Membership::new(vec![BTreeSet::from([1u64])], nodes);
        let e = Entry {
            log_id: log_id(1, 1),
            payload: EntryPayload::Membership(m),
        };
        assert_eq!(
            header(&e, 42, 0).seq,
            42,
            "entries without events carry the next offset"
        );
        round_trip(e);
    }

    #[test]
    fn garbage_is_an_error() {
        let h = RecordHeader {
            term: 1,
            index: 1,
            seq: 0,
            ts_ms: 0,
        };
        assert!(decode(&h, &[]).is_err());
        assert!(decode(&h, &[9]).is_err());
        assert!(decode(&h, &[KIND_NORMAL, 0xff, 0xff]).is_err());
        assert!(decode(&h, &[KIND_MEMBERSHIP, b'{']).is_err());
    }
}
