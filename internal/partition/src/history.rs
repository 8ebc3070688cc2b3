//! The partition's history: every applied log entry, kept for replay and
//! retention, apart from the Raft log.
//!
//! The node's Raft log is short: a partition's entries are dropped from it
//! once applied and synced here. Replay by offset, publish time or due time
//! reads this, and so do openraft's reads of older entries (a lagging or
//! wiped follower is fed from it, through `log_store.rs`). It is a
//! `chronos-wal` in the format the Raft log used to have (so a data
//! directory of the old layout is already a valid history), written by the
//! state machine as it applies, with no fsync on the hot path: the WAL
//! fsyncs it every [`SYNC_INTERVAL`] in the background, and the node log
//! drops only what the history has made durable ([`History::sync`] first),
//! so after a crash its lost tail is refilled from the node log
//! ([`History::align`]).
//!
//! **Invariant.** The history holds entries of the partition's *applied*
//! log only, in index order, without gaps except where a snapshot moved the
//! partition past entries it never applied (a wiped or lagging replica).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chronos_wal::{FsyncMode, RecordHeader, Wal, WalError, WalOptions, WalStats};

use crate::codec;
use crate::types::Entry;

/// How often the history's written records are fsynced in the background.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Reading the history back failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryReadError {
    #[error("reading the history: {0}")]
    Wal(#[from] WalError),
    #[error("decoding the history: {0}")]
    Codec(#[from] codec::CodecError),
}

/// One partition's history. Cheap to share.
#[derive(Clone)]
pub struct History {
    partition: u32,
    wal: Arc<Wal>,
}

impl History {
    /// Opens (creating) the history in `dir`, rolling segments at `segment_bytes`.
    pub fn open(partition: u32, dir: &Path, segment_bytes: u64) -> Result<History, WalError> {
        let opts = WalOptions {
            segment_bytes,
            fsync: FsyncMode::Periodic {
                interval: SYNC_INTERVAL,
            },
            ..WalOptions::default()
        };
        Ok(History {
            partition,
            wal: Arc::new(Wal::open(dir, opts)?),
        })
    }

    /// The WAL the history is stored in (replay reads it).
    pub fn wal(&self) -> &Arc<Wal> {
        &self.wal
    }

    /// Index of the last entry held (None: empty).
    pub fn last_index(&self) -> Option<u64> {
        self.wal.last_header().map(|h| h.index)
    }

    /// Appends applied entries, each with the offset the next event had
    /// before it (`next_offset`, exact: the state machine's). Entries at or
    /// below the last one held are skipped: they are being applied again
    /// after a restart, and applied entries never change. A gap (the
    /// partition moved past entries by a snapshot) restarts the history at
    /// the first new entry: replay then starts there.
    pub fn append(&self, entries: &[(&Entry, u64)]) -> Result<(), WalError> {
        let last = self.last_index();
        let fresh: Vec<_> = entries
            .iter()
            .filter(|(e, _)| last.is_none_or(|l| e.log_id.index > l))
            .collect();
        let Some((first, _)) = fresh.first() else {
            return Ok(());
        };
        if let Some(last) = last {
            if first.log_id.index != last + 1 {
                self.restart_at(first.log_id.index)?;
            }
        }
        let now_ms = crate::wall_ms().max(0) as u64;
        let encoded: Vec<(RecordHeader, Vec<u8>)> = fresh
            .iter()
            .map(|(entry, next_offset)| {
                // A publish's record is stamped with its publish time, so the
                // time index never puts an event after its record's stamp.
                let ts_ms = codec::publish_ts(entry).map_or(now_ms, |ts| ts.max(0) as u64);
                (
                    codec::header(entry, *next_offset, ts_ms),
                    codec::encode_payload(entry),
                )
            })
            .collect();
        let records: Vec<(RecordHeader, &[u8])> =
            encoded.iter().map(|(h, p)| (*h, p.as_slice())).collect();
        // Periodic mode: the callback runs on this thread right after the write.
        self.wal.append(&records, Box::new(|_| {}))
    }

    /// Empties the history so that it continues at `next_index`.
    pub fn restart_at(&self, next_index: u64) -> Result<(), WalError> {
        tracing::info!(
            partition = self.partition,
            last = ?self.last_index(),
            next_index,
            "history continues after a gap (a snapshot moved the partition past entries it never applied)"
        );
        self.wal.restart_at(next_index)
    }

    /// Brings the history up to the applied index at open: entries a crash
    /// took from its unsynced tail are read from the node's Raft log through
    /// `read_log` (index range → entries). Entries past the applied index
    /// stay: they were applied (so committed) before the crash, and are
    /// applied again without being written twice. Entries the Raft log no
    /// longer has cannot be missing (it drops only what the history synced),
    /// but if they are, the history restarts after the applied index and
    /// says so: replay loses them, events do not.
    pub fn align(
        &self,
        applied: u64,
        applied_next_offset: u64,
        read_log: impl FnOnce(u64, u64) -> Result<Vec<Entry>, std::io::Error>,
    ) -> Result<(), WalError> {
        let Some(last) = self.last_index() else {
            return Ok(());
        };
        if last >= applied {
            return Ok(());
        }
        let from = last + 1;
        match read_log(from, applied + 1) {
            Ok(entries) if entries.len() as u64 == applied + 1 - from => {
                // The offsets before each entry are not stored in the log; the
                // entries themselves carry the first offset of their events,
                // and an entry without events gets the next publish's (a lower
                // bound for the seq index), or the applied next offset.
                let mut next = applied_next_offset;
                let mut offsets = vec![0; entries.len()];
                for (slot, entry) in offsets.iter_mut().zip(&entries).rev() {
                    if let Some((first, _)) = codec::entry_offsets(entry) {
                        next = first;
                    }
                    *slot = next;
                }
                let pairs: Vec<(&Entry, u64)> = entries.iter().zip(offsets).collect();
                tracing::info!(
                    partition = self.partition,
                    from,
                    to = applied,
                    "history refilled from the Raft log"
                );
                self.append(&pairs)
            }
            other => {
                tracing::warn!(
                    partition = self.partition,
                    from,
                    to = applied,
                    read = ?other.map(|e| e.len()),
                    "history lost entries the Raft log no longer holds; replay skips them"
                );
                self.wal.restart_at(applied + 1)
            }
        }
    }

    /// The entries held with index in [start, end), in order.
    pub fn read(&self, start: u64, end: u64) -> Result<Vec<Entry>, HistoryReadError> {
        let Some(first) = self.wal.first_index() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        if start >= end || self.last_index().is_none_or(|l| l < start.max(first)) {
            return Ok(out);
        }
        for item in self.wal.iter_from_index(start.max(first))? {
            let (header, payload) = item?;
            if header.index >= end {
                break;
            }
            out.push(codec::decode(&header, &payload)?);
        }
        Ok(out)
    }

    /// The log id of the last entry held.
    pub fn last_log_id(&self) -> Result<Option<crate::types::LogId>, HistoryReadError> {
        let Some(last) = self.last_index() else {
            return Ok(None);
        };
        Ok(self.read(last, last + 1)?.pop().map(|e| e.log_id))
    }

    /// Fsyncs what was written; returns the last index now durable.
    pub fn sync(&self) -> Result<Option<u64>, WalError> {
        self.wal.sync()?;
        Ok(self.last_index())
    }

    pub fn stats(&self) -> WalStats {
        self.wal.stats()
    }
}
