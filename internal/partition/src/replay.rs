//! Replay: stream a partition's stored events straight from the WAL, by offset,
//! publish-time or due-time range.
//!
//! A reader thread of its own, at the lowest CPU priority, walks the WAL from
//! the first record that can hold a wanted event (the WAL's `seq` and time
//! indexes find it) and sends events through a bounded channel, so a replay of
//! any length holds only the channel's worth in memory and stops as soon as
//! the receiver goes away. The node bounds how many replays read at once
//! ([`ReplayReaders`]): each holds its thread until it ends. Only applied
//! entries are read: nothing uncommitted is ever replayed. Offsets the WAL no longer holds — removed by retention,
//! or never received because this node caught up from a snapshot (its log
//! then starts after the snapshot) — are simply absent.

use std::sync::Arc;

use bytes::Bytes;
use chronos_proto::internal::{command, EventRecord};
use chronos_wal::{Wal, WalIter};
use openraft::EntryPayload;
use prost::Message;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::codec;
use crate::error::PartitionError;

/// Events buffered between the WAL reader and the gRPC stream.
const REPLAY_CHANNEL: usize = 256;

/// Records a reader reads between checks that its receiver is still there:
/// a replay whose filters match nothing sends nothing, and would otherwise
/// read to the end of the history for a client long gone.
const RECEIVER_CHECK_EVERY: usize = 1024;

/// The node's bound on replays reading at once, shared by its partitions.
#[derive(Debug, Clone)]
pub struct ReplayReaders {
    slots: Arc<Semaphore>,
    max: u32,
}

/// A slot of [`ReplayReaders`], held by one replay's reader until it ends.
#[derive(Debug)]
pub struct ReplayReader {
    _slot: OwnedSemaphorePermit,
}

impl ReplayReaders {
    pub fn new(max: u32) -> ReplayReaders {
        assert!(max > 0, "a node must allow at least one replay");
        ReplayReaders {
            slots: Arc::new(Semaphore::new(max as usize)),
            max,
        }
    }

    /// A slot for one more replay, or `Busy` when all are taken.
    pub fn try_reader(&self) -> Result<ReplayReader, PartitionError> {
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => Ok(ReplayReader { _slot: permit }),
            Err(_) => Err(PartitionError::Busy(format!(
                "this node already reads {} replays at once (limits.max_replays); \
                 retry once one ends",
                self.max
            ))),
        }
    }

    /// Replays reading now.
    #[cfg(test)]
    fn reading(&self) -> u32 {
        self.max - self.slots.available_permits() as u32
    }
}

/// One stored event as replay yields it.
#[derive(Debug, Clone)]
pub struct ReplayedEvent {
    pub offset: u64,
    pub publish_ts: i64,
    pub record: EventRecord,
}

/// Which stored events a replay yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayRange {
    /// Offsets in [from, to) (`to` = None: up to the end).
    Offsets { from: u64, to: Option<u64> },
    /// Events the leader accepted in [from_ms, to_ms).
    PublishTime { from_ms: i64, to_ms: Option<i64> },
    /// Events due in [from_ms, to_ms). Due times are not in offset order, so
    /// this reads every retained record: exact, streamed, and O(retained log).
    DueTime { from_ms: i64, to_ms: Option<i64> },
}

impl Default for ReplayRange {
    /// Every retained event.
    fn default() -> ReplayRange {
        ReplayRange::Offsets { from: 0, to: None }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ReplayQuery {
    pub range: ReplayRange,
    /// Only this topic, when set.
    pub topic: Option<String>,
    /// Only this routing key, when set.
    pub key: Option<String>,
    /// Only events carrying each of these header values.
    pub headers: Vec<(String, String)>,
    /// Only message ids that start with this.
    pub message_id_prefix: Option<String>,
    /// Only offsets above this one (resuming a replay page by page).
    pub after_offset: Option<u64>,
}

impl ReplayQuery {
    fn wants_record(&self, record: &EventRecord) -> bool {
        self.topic.as_deref().is_none_or(|t| t == record.topic)
            && self.key.as_deref().is_none_or(|k| k == record.key)
            && self
                .message_id_prefix
                .as_deref()
                .is_none_or(|p| record.message_id.starts_with(p))
            && self
                .headers
                .iter()
                .all(|(k, v)| record.headers.get(k) == Some(v))
    }
}

impl ReplayRange {
    fn is_empty(&self) -> bool {
        match *self {
            ReplayRange::Offsets { from, to } => to.is_some_and(|to| to <= from),
            ReplayRange::PublishTime { from_ms, to_ms }
            | ReplayRange::DueTime { from_ms, to_ms } => to_ms.is_some_and(|to| to <= from_ms),
        }
    }

    /// Where reading the WAL can start without missing anything: the record
    /// holding the first offset, or the first record appended at or after
    /// `from_ms` (a record's append time is never before its events' publish time).
    fn start(&self, wal: &Wal) -> Result<WalIter, chronos_wal::WalError> {
        match *self {
            ReplayRange::Offsets { from, .. } => wal.iter_from_seq(from),
            ReplayRange::PublishTime { from_ms, .. } => wal.iter_from_ts(from_ms.max(0) as u64),
            ReplayRange::DueTime { .. } => Ok(wal.iter_all()),
        }
    }

    /// True once no later record can hold a wanted event.
    fn past_end(&self, record_seq: u64) -> bool {
        matches!(*self, ReplayRange::Offsets { to: Some(to), .. } if record_seq >= to)
    }

    fn wants(&self, offset: u64, publish_ts: i64, due_ts: i64) -> bool {
        let within = |v: i64, from: i64, to: Option<i64>| v >= from && to.is_none_or(|to| v < to);
        match *self {
            ReplayRange::Offsets { from, to } => offset >= from && to.is_none_or(|to| offset < to),
            ReplayRange::PublishTime { from_ms, to_ms } => within(publish_ts, from_ms, to_ms),
            ReplayRange::DueTime { from_ms, to_ms } => within(due_ts, from_ms, to_ms),
        }
    }
}

pub type ReplayStream = mpsc::Receiver<Result<ReplayedEvent, PartitionError>>;

/// Starts a replay of `query` over entries up to `applied_index`; `slot`
/// is held until the reader ends.
pub fn replay(
    partition: u32,
    wal: Arc<Wal>,
    applied_index: u64,
    query: ReplayQuery,
    slot: ReplayReader,
) -> ReplayStream {
    let (tx, rx) = mpsc::channel(REPLAY_CHANNEL);
    let reader = tx.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("replay-p{partition}"))
        .spawn(move || {
            let _slot = slot;
            lowest_priority();
            if let Err(e) = scan(partition, &wal, applied_index, &query, &reader) {
                let _ = reader.blocking_send(Err(e));
            }
        });
    if let Err(e) = spawned {
        let _ = tx.try_send(Err(PartitionError::Unavailable(format!(
            "partition {partition}: no thread for the replay: {e}"
        ))));
    }
    rx
}

/// Lowers the calling thread to the lowest CPU priority (nice 19). A replay
/// is bulk reading that nobody waits on by the millisecond, and one that
/// filters out most of what it reads keeps a core busy; on saturated cores
/// it should have the smallest share, not firing's (docs/benchmarks.md).
/// Nice 19 still gets a share of a busy core: a replay slows, never stops.
/// The thread is the replay's own because a process without `CAP_SYS_NICE`
/// cannot raise a thread's priority again: a pool thread would stay low.
fn lowest_priority() {
    let this_thread = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(this_thread), 19) {
        tracing::debug!("replay reader at normal priority: {e}");
    }
}

fn scan(
    partition: u32,
    wal: &Wal,
    applied_index: u64,
    q: &ReplayQuery,
    tx: &mpsc::Sender<Result<ReplayedEvent, PartitionError>>,
) -> Result<(), PartitionError> {
    let read_err = |e: &(dyn std::error::Error + 'static)| PartitionError::storage(partition, e);
    if wal.first_index().is_none() || q.range.is_empty() {
        return Ok(());
    }
    // Resuming: the record holding the first offset after the last one read.
    let start = match q.after_offset {
        Some(after) => wal.iter_from_seq(after.saturating_add(1)),
        None => q.range.start(wal),
    };
    for (read, item) in start.map_err(|e| read_err(&e))?.enumerate() {
        if read % RECEIVER_CHECK_EVERY == 0 && tx.is_closed() {
            return Ok(()); // the client went away
        }
        let (header, payload) = item.map_err(|e| read_err(&e))?;
        if header.index > applied_index || q.range.past_end(header.seq) {
            return Ok(());
        }
        let entry = codec::decode(&header, &payload).map_err(|e| read_err(&e))?;
        let EntryPayload::Normal(cmd) = entry.payload else {
            continue;
        };
        let Some(command::Kind::Publish(p)) = cmd.pb.kind else {
            continue;
        };
        for (i, raw) in p.events.into_iter().enumerate() {
            let offset = p.first_offset + i as u64;
            if q.after_offset.is_some_and(|after| offset <= after) {
                continue;
            }
            // Cheap checks first: offset and publish time need no decoding.
            if let ReplayRange::Offsets { .. } | ReplayRange::PublishTime { .. } = q.range {
                if !q.range.wants(offset, p.publish_ts, 0) {
                    continue;
                }
            }
            let record = EventRecord::decode(Bytes::clone(&raw)).map_err(|e| read_err(&e))?;
            if !q.range.wants(offset, p.publish_ts, record.due_ts) || !q.wants_record(&record) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_beyond_the_limit_are_busy_until_one_ends() {
        let readers = ReplayReaders::new(2);
        let first = readers.try_reader().unwrap();
        let _second = readers.try_reader().unwrap();
        assert_eq!(readers.reading(), 2);
        let err = readers.try_reader().unwrap_err();
        assert!(matches!(err, PartitionError::Busy(_)), "{err:?}");
        assert!(err.to_string().contains("limits.max_replays"), "{err}");
        drop(first);
        assert_eq!(readers.reading(), 1);
        readers.try_reader().expect("a slot once one ended");
    }
}
