//! Replay by offset: stream a partition's stored events straight from the WAL.
//!
//! A blocking reader walks the WAL from the record holding the first wanted
//! offset (the WAL's `seq` index finds it) and sends events through a bounded
//! channel, so a replay of any length holds only the channel's worth in memory
//! and stops as soon as the receiver goes away. Only applied entries are read:
//! nothing uncommitted is ever replayed.

use std::sync::Arc;

use bytes::Bytes;
use chronos_proto::internal::{command, EventRecord};
use chronos_wal::Wal;
use openraft::EntryPayload;
use prost::Message;
use tokio::sync::mpsc;

use crate::codec;
use crate::error::PartitionError;

/// Events buffered between the WAL reader and the gRPC stream.
const REPLAY_CHANNEL: usize = 256;

/// One stored event as replay yields it.
#[derive(Debug, Clone)]
pub struct ReplayedEvent {
    pub offset: u64,
    pub publish_ts: i64,
    pub record: EventRecord,
}

/// Which events to replay: offsets in [from, to) (`to` = None: up to the end).
#[derive(Debug, Clone, Default)]
pub struct OffsetQuery {
    pub from: u64,
    pub to: Option<u64>,
    /// Only this topic, when set.
    pub topic: Option<String>,
    /// Only this routing key, when set.
    pub key: Option<String>,
}

pub type ReplayStream = mpsc::Receiver<Result<ReplayedEvent, PartitionError>>;

/// Starts a replay of `query` over entries up to `applied_index`.
pub fn replay_offsets(
    partition: u32,
    wal: Arc<Wal>,
    applied_index: u64,
    query: OffsetQuery,
) -> ReplayStream {
    let (tx, rx) = mpsc::channel(REPLAY_CHANNEL);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = scan(partition, &wal, applied_index, &query, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

fn scan(
    partition: u32,
    wal: &Wal,
    applied_index: u64,
    q: &OffsetQuery,
    tx: &mpsc::Sender<Result<ReplayedEvent, PartitionError>>,
) -> Result<(), PartitionError> {
    let read_err = |e: &dyn std::error::Error| PartitionError::storage(partition, e);
    if wal.first_index().is_none() || q.to.is_some_and(|to| to <= q.from) {
        return Ok(());
    }
    for item in wal.iter_from_seq(q.from).map_err(|e| read_err(&e))? {
        let (header, payload) = item.map_err(|e| read_err(&e))?;
        if header.index > applied_index || q.to.is_some_and(|to| header.seq >= to) {
            return Ok(());
        }
        let entry = codec::decode(&header, &payload).map_err(|e| read_err(&e))?;
        let EntryPayload::Normal(cmd) = entry.payload else {
            continue;
        };
        let Some(command::Kind::Publish(p)) = cmd.0.kind else {
            continue;
        };
        for (i, raw) in p.events.into_iter().enumerate() {
            let offset = p.first_offset + i as u64;
            if offset < q.from {
                continue;
            }
            if q.to.is_some_and(|to| offset >= to) {
                return Ok(());
            }
            let record = EventRecord::decode(Bytes::clone(&raw)).map_err(|e| read_err(&e))?;
            if q.topic.as_deref().is_some_and(|t| t != record.topic)
                || q.key.as_deref().is_some_and(|k| k != record.key)
            {
                continue;
            }
            let event = ReplayedEvent {
                offset,
                publish_ts: p.publish_ts,
                record,
            };
            if tx.blocking_send(Ok(event)).is_err() {
                return Ok(()); // the client went away
            }
        }
    }
    Ok(())
}
