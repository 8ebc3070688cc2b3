//! Key and value encodings of the column families. Big-endian integers so that
//! RocksDB's byte order is numeric order.

use crate::{Result, StoreError};

/// Where a published event stands, as recorded in the dedup index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum IdState {
    Pending = 1,
    /// Came due and moved to its topic's fire log.
    Fired = 2,
    /// Cancelled before it came due; it will not fire.
    Cancelled = 3,
}

/// Dedup index value for (topic, message_id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdEntry {
    pub offset: u64,
    pub due_ts: i64,
    /// Past this wall-clock time (ms) the entry no longer deduplicates.
    pub expiry_ms: i64,
    pub state: IdState,
}

const ID_ENTRY_LEN: usize = 8 + 8 + 8 + 1;

impl IdEntry {
    pub fn encode(&self) -> [u8; ID_ENTRY_LEN] {
        let mut out = [0u8; ID_ENTRY_LEN];
        out[0..8].copy_from_slice(&self.offset.to_be_bytes());
        out[8..16].copy_from_slice(&self.due_ts.to_be_bytes());
        out[16..24].copy_from_slice(&self.expiry_ms.to_be_bytes());
        out[24] = self.state as u8;
        out
    }

    pub fn decode(raw: &[u8]) -> Result<IdEntry> {
        let corrupt = |detail: String| StoreError::Corrupt {
            what: "ids",
            detail,
        };
        if raw.len() != ID_ENTRY_LEN {
            return Err(corrupt(format!("length {} != {ID_ENTRY_LEN}", raw.len())));
        }
        let int = |r: std::ops::Range<usize>| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw[r]);
            b
        };
        let state = match raw[24] {
            1 => IdState::Pending,
            2 => IdState::Fired,
            3 => IdState::Cancelled,
            s => return Err(corrupt(format!("unknown state {s}"))),
        };
        Ok(IdEntry {
            offset: u64::from_be_bytes(int(0..8)),
            due_ts: i64::from_be_bytes(int(8..16)),
            expiry_ms: i64::from_be_bytes(int(16..24)),
            state,
        })
    }
}

/// `topic 0x00 message_id`: topics cannot contain 0x00, so the split is unambiguous.
pub fn id_key(topic: &str, message_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(topic.len() + 1 + message_id.len());
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key.extend_from_slice(message_id.as_bytes());
    key
}

/// `due_ts BE ‖ offset BE`. Due times are never negative (validated at the edge).
pub fn pending_key(due_ts: i64, offset: u64) -> [u8; 16] {
    debug_assert!(due_ts >= 0, "due_ts {due_ts} is negative");
    let mut key = [0u8; 16];
    key[0..8].copy_from_slice(&(due_ts as u64).to_be_bytes());
    key[8..16].copy_from_slice(&offset.to_be_bytes());
    key
}

/// `topic 0x00 fire_seq BE`: a topic's fire log, in fire order.
pub fn fired_key(topic: &str, fire_seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(topic.len() + 9);
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key.extend_from_slice(&fire_seq.to_be_bytes());
    key
}

/// `topic 0x00 group`: names cannot contain 0x00.
pub fn group_key(topic: &str, group: &str) -> Vec<u8> {
    id_key(topic, group)
}

/// `topic 0x00 group 0x00 fire_seq BE`: one event of a group (in flight or dead).
pub fn item_key(topic: &str, group: &str, fire_seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(topic.len() + group.len() + 10);
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key.extend_from_slice(group.as_bytes());
    key.push(0);
    key.extend_from_slice(&fire_seq.to_be_bytes());
    key
}

pub(crate) fn decode_pending_key(key: &[u8]) -> Result<(i64, u64)> {
    if key.len() != 16 {
        return Err(StoreError::Corrupt {
            what: "pending key",
            detail: format!("length {}", key.len()),
        });
    }
    let mut due = [0u8; 8];
    let mut off = [0u8; 8];
    due.copy_from_slice(&key[0..8]);
    off.copy_from_slice(&key[8..16]);
    Ok((u64::from_be_bytes(due) as i64, u64::from_be_bytes(off)))
}
