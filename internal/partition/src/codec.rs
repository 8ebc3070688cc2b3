//! How a Raft log entry is laid out in a WAL record.
//!
//! The WAL header carries the entry's term and index, plus `seq` — the offset of
//! the entry's first event, or for an entry without events the offset the next
//! event will get — and the append time. The payload is one kind byte, the id of
//! the node that led the term (part of openraft's log id: entries of equal term
//! and index from different leaders must compare as different), and a body:
//! `0` blank, `1` a protobuf [`Command`], `2` a JSON membership (rare).

use chronos_wal::RecordHeader;
use openraft::EntryPayload;

use crate::types::{Command, Entry, LeaderId, LogId, NodeId};

const KIND_BLANK: u8 = 0;
const KIND_NORMAL: u8 = 1;
const KIND_MEMBERSHIP: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("log record at index {0} is shorter than its prefix")]
    Short(u64),
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

/// Kind byte + leader node id.
const PREFIX_BYTES: usize = 1 + 8;

/// Encodes `entry` as a WAL payload.
pub fn encode_payload(entry: &Entry) -> Vec<u8> {
    let prefix = |kind: u8, body_len: usize| {
        let mut out = Vec::with_capacity(PREFIX_BYTES + body_len);
        out.push(kind);
        out.extend_from_slice(&entry.log_id.leader_id.node_id.to_le_bytes());
        out
    };
    match &entry.payload {
        EntryPayload::Blank => prefix(KIND_BLANK, 0),
        EntryPayload::Normal(cmd) => {
            let mut out = prefix(KIND_NORMAL, prost::Message::encoded_len(&cmd.pb));
            prost::Message::encode(&cmd.pb, &mut out).expect("Vec has unbounded capacity");
            out
        }
        EntryPayload::Membership(m) => {
            let mut out = prefix(KIND_MEMBERSHIP, 256);
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

/// The leader's publish time of a publish entry.
pub fn publish_ts(entry: &Entry) -> Option<i64> {
    match &entry.payload {
        EntryPayload::Normal(cmd) => match &cmd.pb.kind {
            Some(chronos_proto::internal::command::Kind::Publish(p)) => Some(p.publish_ts),
            _ => None,
        },
        _ => None,
    }
}

/// An entry as the node's Raft log stores it: the term, then the WAL payload.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let payload = encode_payload(entry);
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&entry.log_id.leader_id.term.to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes what [`encode_entry`] wrote for the entry at `index`.
pub fn decode_entry(index: u64, raw: &[u8]) -> Result<Entry, CodecError> {
    let Some((term, payload)) = raw.split_first_chunk::<8>() else {
        return Err(CodecError::Short(index));
    };
    let header = RecordHeader {
        term: u64::from_le_bytes(*term),
        index,
        seq: 0,
        ts_ms: 0,
    };
    decode(&header, payload)
}

pub fn log_id(term: u64, leader: NodeId, index: u64) -> LogId {
    LogId::new(
        LeaderId {
            term,
            node_id: leader,
        },
        index,
    )
}

/// Decodes a WAL record back into the entry it was written from.
pub fn decode(header: &RecordHeader, payload: &[u8]) -> Result<Entry, CodecError> {
    let index = header.index;
    if payload.len() < PREFIX_BYTES {
        return Err(CodecError::Short(index));
    }
    let (prefix, body) = payload.split_at(PREFIX_BYTES);
    let kind = prefix[0];
    let mut leader = [0u8; 8];
    leader.copy_from_slice(&prefix[1..]);
    let leader = NodeId::from_le_bytes(leader);
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
        log_id: log_id(header.term, leader, index),
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
            log_id: log_id(3, 2, 10),
            payload: EntryPayload::Blank,
        });
        let cmd = Command::publish(PublishCommand {
            dedup_expiry_ts: 99,
            has_reschedule: false,
            fire_seqs: Vec::new(),
            advances: Vec::new(),
            publish_ts: 5,
            first_offset: 100,
            events: vec![b"a".to_vec().into(), b"bc".to_vec().into()],
        });
        let e = Entry {
            log_id: log_id(3, 1, 11),
            payload: EntryPayload::Normal(cmd),
        };
        assert_eq!(
            header(&e, 42, 0).seq,
            100,
            "seq is the first event's offset"
        );
        round_trip(e);
        let nodes = BTreeMap::from([(1u64, BasicNode::new("127.0.0.1:1"))]);
        let m = Membership::new(vec![BTreeSet::from([1u64])], nodes).unwrap();
        let e = Entry {
            log_id: log_id(1, 7, 1),
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
        let with = |kind: u8, body: &[u8]| [&[kind][..], &[0u8; 8], body].concat();
        assert!(decode(&h, &[]).is_err());
        assert!(decode(&h, &[KIND_BLANK, 1, 2]).is_err(), "short prefix");
        assert!(decode(&h, &with(9, b"")).is_err());
        assert!(decode(&h, &with(KIND_NORMAL, &[0xff, 0xff])).is_err());
        assert!(decode(&h, &with(KIND_MEMBERSHIP, b"{")).is_err());
    }
}
