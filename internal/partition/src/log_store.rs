//! openraft's log storage over our WAL.
//!
//! Entries are appended to the partition's [`Wal`]; openraft is told an append is
//! flushed only from the WAL's durable callback, i.e. after fsync in the `always`
//! and `batch` modes. The vote and the logical purge point live in small files
//! beside the segments, replaced atomically. A bounded cache of the newest entries
//! serves the reads openraft makes right after appending (apply, replication), so
//! the hot path never reads the disk back.
//!
//! Purge is logical: it records the purge point; segments are deleted only by
//! WAL retention, and only at or below that point. The exception is a purge
//! past the end of the log (a snapshot from the leader was installed beyond
//! it: a wiped node or a lagging follower): the WAL's indices are dense, so it
//! is restarted, empty, at the purge point + 1 ([`Wal::restart_at`]), where
//! openraft appends next. The purge point is written first and `open` redoes
//! the restart if it finds the log still ending before it, so a crash between
//! the two is harmless. Entries without events appended after a restart, and
//! before the first publish, carry `seq` 0 — a lower bound, which is all the
//! WAL's seq index needs (replay filters by offset); the log store cannot
//! know the snapshot's next offset.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io::{self, Write};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chronos_wal::{RecordHeader, Wal, WalError};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, StorageIOError};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::codec;
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const VOTE_FILE: &str = "vote.json";
const PURGED_FILE: &str = "purged.json";
/// Newest entries kept decoded in memory for openraft's read-back (apply runs
/// right behind the append, so a few proposals' worth is plenty).
const CACHE_MAX_ENTRIES: usize = 1_024;
const CACHE_MAX_BYTES: usize = 16 << 20;

/// The newest entries, contiguous by index.
#[derive(Default)]
struct TailCache {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl TailCache {
    fn push(&mut self, entry: Entry, size: usize) {
        if let Some((last, _)) = self.entries.back() {
            if last.log_id.index + 1 != entry.log_id.index {
                self.clear();
            }
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.entries.len() > CACHE_MAX_ENTRIES || self.bytes > CACHE_MAX_BYTES {
            match self.entries.pop_front() {
                Some((_, size)) => self.bytes -= size,
                None => break,
            }
        }
    }

    fn truncate_from(&mut self, index: u64) {
        while let Some((last, size)) = self.entries.back() {
            if last.log_id.index < index {
                break;
            }
            self.bytes -= size;
            self.entries.pop_back();
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    /// Entries in [start, end) if the cache holds all of them.
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        let last = self.entries.back()?.0.log_id.index;
        if start < first || end > last + 1 {
            return None;
        }
        let skip = (start - first) as usize;
        Some(
            self.entries
                .iter()
                .skip(skip)
                .take((end - start) as usize)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

/// Reads the log; shared by the storage and the readers openraft asks for.
#[derive(Clone)]
pub struct LogReader {
    wal: Arc<Wal>,
    cache: Arc<Mutex<TailCache>>,
}

/// The partition's Raft log storage.
pub struct LogStore {
    reader: LogReader,
    dir: PathBuf,
    /// Offset the next published event gets, as of the last appended entry.
    next_offset: u64,
    /// Log id of the last entry in the WAL.
    last_log_id: Option<LogId>,
    /// Index + 1 of the last entry known to be on disk (0: none yet).
    flushed: watch::Sender<u64>,
    last_purged: Option<LogId>,
}

fn io_err(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageError::IO {
        source: StorageIOError::new(subject, verb, openraft::AnyError::new(&e)),
    }
}

fn read_logs_err(e: impl std::error::Error + 'static) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e + 1,
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new content.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads a JSON file; None if it does not exist.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(raw) => serde_json::from_slice(&raw)
            .map(Some)
            .map_err(io::Error::other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl LogStore {
    /// Opens the log over `wal`, whose directory also holds the vote and purge files.
    pub fn open(
        wal: Arc<Wal>,
        dir: &Path,
        flushed: watch::Sender<u64>,
    ) -> Result<LogStore, StorageError> {
        let last_purged = read_json(&dir.join(PURGED_FILE)).map_err(read_logs_err)?;
        let reader = LogReader {
            wal,
            cache: Arc::new(Mutex::new(TailCache::default())),
        };
        let mut store = LogStore {
            reader,
            dir: dir.to_path_buf(),
            next_offset: 0,
            last_log_id: None,
            flushed,
            last_purged,
        };
        store.load_last()?;
        if let Some(purged) = store.last_purged {
            // A crash between recording a purge past the end and restarting the WAL.
            if store.last_log_id.is_some_and(|l| l.index < purged.index) {
                store.restart_after(purged)?;
            }
        }
        Ok(store)
    }

    /// Drops the whole WAL so that it continues at `purged.index + 1`: the
    /// log ended before `purged`, which a snapshot now covers.
    fn restart_after(&mut self, purged: LogId) -> Result<(), StorageError> {
        tracing::info!(
            last_log_id = ?self.last_log_id,
            %purged,
            "log ends before the purge point (a snapshot was installed past it): restarting it"
        );
        self.reader.cache.lock().clear();
        self.reader
            .wal
            .restart_at(purged.index + 1)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.last_log_id = None;
        // Unknown here (the state machine has it); 0 is a valid lower bound.
        self.next_offset = 0;
        self.flushed
            .send_modify(|f| *f = (*f).max(purged.index + 1));
        Ok(())
    }

    /// Reads the last entry of the WAL: its log id and the offset after it.
    fn load_last(&mut self) -> Result<(), StorageError> {
        let (last_log_id, next_offset) = self.read_last()?;
        self.last_log_id = last_log_id;
        self.next_offset = next_offset;
        Ok(())
    }

    fn read_last(&self) -> Result<(Option<LogId>, u64), StorageError> {
        let Some(last) = self.reader.wal.last_header() else {
            return Ok((None, 0));
        };
        let mut it = self
            .reader
            .wal
            .iter_from_index(last.index)
            .map_err(read_logs_err)?;
        match it.next() {
            Some(Ok((header, payload))) => {
                let entry = codec::decode(&header, &payload).map_err(read_logs_err)?;
                let next = codec::entry_offsets(&entry).map_or(header.seq, |(first, n)| first + n);
                Ok((Some(entry.log_id), next))
            }
            Some(Err(e)) => Err(read_logs_err(e)),
            None => Err(read_logs_err(std::io::Error::other(format!(
                "last WAL record {} vanished while reading it",
                last.index
            )))),
        }
    }
}

impl LogStore {
    /// `RaftLogStorage::append` with a plain callback (openraft's cannot be
    /// built outside openraft, and the tests need one): `on_durable` runs once
    /// the entries are durable, or with the error that kept them from being.
    fn append_then(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
        on_durable: impl FnOnce(io::Result<()>) + Send + 'static,
    ) -> Result<(), StorageError> {
        let mut entries = entries.into_iter().peekable();
        if let (Some(first), Some(last), Some(purged)) =
            (entries.peek(), self.last_log_id, self.last_purged)
        {
            // Continuing after a purge past the end whose restart did not happen.
            if last.index < purged.index && first.log_id.index == purged.index + 1 {
                self.restart_after(purged)?;
            }
        }
        let ts_ms = crate::wall_ms().max(0) as u64;
        let mut encoded: Vec<(RecordHeader, Vec<u8>)> = Vec::new();
        let mut decoded = Vec::new();
        let mut next_offset = self.next_offset;
        let mut last_log_id = self.last_log_id;
        for entry in entries {
            let header = codec::header(&entry, next_offset, ts_ms);
            if let Some((first, n)) = codec::entry_offsets(&entry) {
                debug_assert!(
                    first >= next_offset,
                    "offsets go backwards: {first} < {next_offset}"
                );
                next_offset = first + n;
            }
            encoded.push((header, codec::encode_payload(&entry)));
            last_log_id = Some(entry.log_id);
            decoded.push(entry);
        }
        let records: Vec<(RecordHeader, &[u8])> =
            encoded.iter().map(|(h, p)| (*h, p.as_slice())).collect();
        let flushed = self.flushed.clone();
        let flushed_to = last_log_id.map_or(0, |l| l.index + 1);
        let on_durable = Box::new(move |res: Result<(), WalError>| {
            if res.is_ok() {
                flushed.send_modify(|f| *f = (*f).max(flushed_to));
            }
            on_durable(res.map_err(io::Error::other));
        });
        self.reader
            .wal
            .append(&records, on_durable)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        // Only once the WAL took the records (a failed append keeps nothing).
        self.next_offset = next_offset;
        self.last_log_id = last_log_id;
        let mut cache = self.reader.cache.lock();
        for (entry, (_, payload)) in decoded.into_iter().zip(&encoded) {
            cache.push(entry, payload.len());
        }
        Ok(())
    }
}

impl LogReader {
    fn read_range(&self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        if start >= end {
            return Ok(Vec::new());
        }
        if let Some(hit) = self.cache.lock().get(start, end) {
            return Ok(hit);
        }
        let Some(first) = self.wal.first_index() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in self
            .wal
            .iter_from_index(start.max(first))
            .map_err(read_logs_err)?
        {
            let (header, payload) = item.map_err(read_logs_err)?;
            if header.index >= end {
                break;
            }
            out.push(codec::decode(&header, &payload).map_err(read_logs_err)?);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = bounds(&range);
        let end = match self.wal.last_header() {
            Some(last) => end.min(last.index + 1),
            None => return Ok(Vec::new()),
        };
        self.read_range(start, end)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.reader.try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        Ok(LogState {
            last_purged_log_id: self.last_purged,
            last_log_id: self.last_log_id.max(self.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let raw = serde_json::to_vec(vote)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        write_atomic(&self.dir.join(VOTE_FILE), &raw)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        read_json(&self.dir.join(VOTE_FILE))
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.append_then(entries, move |res| callback.log_io_completed(res))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.reader.cache.lock().truncate_from(log_id.index);
        self.reader
            .wal
            .truncate_from(log_id.index)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.load_last()?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let raw = serde_json::to_vec(&log_id)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        write_atomic(&self.dir.join(PURGED_FILE), &raw)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.last_purged = Some(log_id);
        if self.last_log_id.is_none_or(|l| l.index < log_id.index) {
            self.restart_after(log_id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use chronos_proto::internal::PublishCommand;
    use chronos_wal::WalOptions;
    use openraft::EntryPayload;

    use super::*;
    use crate::codec::log_id;
    use crate::types::Command;

    fn open(dir: &Path) -> LogStore {
        let wal = Arc::new(Wal::open(dir, WalOptions::default()).unwrap());
        LogStore::open(wal, dir, watch::channel(0).0).unwrap()
    }

    fn blank(term: u64, index: u64) -> Entry {
        Entry {
            log_id: log_id(term, 1, index),
            payload: EntryPayload::Blank,
        }
    }

    fn publish(term: u64, index: u64, first_offset: u64) -> Entry {
        Entry {
            log_id: log_id(term, 1, index),
            payload: EntryPayload::Normal(Command::publish(PublishCommand {
                first_offset,
                events: vec![
                    bytes::Bytes::from_static(b"e1"),
                    bytes::Bytes::from_static(b"e2"),
                ],
                ..Default::default()
            })),
        }
    }

    /// Appends and waits until the entries are durable.
    fn append(store: &mut LogStore, entries: Vec<Entry>) {
        let (tx, rx) = mpsc::channel();
        store
            .append_then(entries, move |r| {
                let _ = tx.send(r);
            })
            .unwrap();
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .unwrap()
            .unwrap();
    }

    async fn indexes(store: &mut LogStore, range: std::ops::Range<u64>) -> Vec<u64> {
        store
            .try_get_log_entries(range)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect()
    }

    #[tokio::test]
    async fn purge_past_the_end_restarts_the_log_there_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let vote = Vote::new(2, 1);
        {
            let mut store = open(dir.path());
            append(
                &mut store,
                (1..=100).map(|i| publish(1, i, 2 * (i - 1))).collect(),
            );
            store.save_vote(&vote).await.unwrap();
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_log_id, Some(log_id(1, 1, 100)));

            // A snapshot at 4999 was installed: openraft purges up to it.
            let snapshot = log_id(2, 1, 4_999);
            store.purge(snapshot).await.unwrap();
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(snapshot));
            assert_eq!(state.last_log_id, Some(snapshot));
            assert!(
                indexes(&mut store, 1..101).await.is_empty(),
                "purged: absent"
            );

            // ... and appends from 4999 + 1. Entries without events before the
            // first publish carry seq 0 (the log store cannot know the offset).
            let mut next = vec![blank(2, 5_000), blank(2, 5_001)];
            next.extend((5_002..=5_100).map(|i| publish(2, i, 9_000 + 2 * (i - 5_002))));
            append(&mut store, next);
            assert_eq!(indexes(&mut store, 5_000..5_101).await.len(), 101);
        }
        let mut store = open(dir.path());
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(2, 1, 4_999)));
        assert_eq!(state.last_log_id, Some(log_id(2, 1, 5_100)));
        assert_eq!(store.next_offset, 9_000 + 2 * 99);
        assert_eq!(
            indexes(&mut store, 4_990..6_000).await,
            (5_000..=5_100).collect::<Vec<_>>()
        );
        assert!(indexes(&mut store, 50..60).await.is_empty());
        // The WAL itself says why: the documented error, not a panic.
        match store.reader.wal.iter_from_index(50) {
            Err(WalError::BelowFirstIndex {
                requested: 50,
                first: 5_000,
            }) => {}
            other => panic!("expected BelowFirstIndex, got {other:?}"),
        }
        append(&mut store, vec![blank(2, 5_101)]);
        // An append that does not continue the log is refused.
        assert!(store.append_then(vec![blank(2, 7_000)], |_| {}).is_err());
    }

    #[tokio::test]
    async fn a_crash_between_the_purge_point_and_the_restart_is_finished_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = open(dir.path());
            append(&mut store, (1..=10).map(|i| blank(1, i)).collect());
            // The purge point is on disk but the WAL was not restarted.
            let raw = serde_json::to_vec(&log_id(3, 1, 500)).unwrap();
            write_atomic(&dir.path().join(PURGED_FILE), &raw).unwrap();
        }
        let mut store = open(dir.path());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(3, 1, 500)));
        assert_eq!(store.reader.wal.first_index(), None);
        append(&mut store, vec![blank(3, 501), blank(3, 502)]);
        assert_eq!(indexes(&mut store, 0..1_000).await, vec![501, 502]);

        // A wiped node: empty log, purge to the snapshot, continue after it.
        let wiped = tempfile::tempdir().unwrap();
        let mut store = open(wiped.path());
        store.purge(log_id(3, 1, 41)).await.unwrap();
        append(&mut store, vec![publish(3, 42, 77)]);
        drop(store);
        let mut store = open(wiped.path());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(3, 1, 42)));
        assert_eq!(store.next_offset, 79);
    }
}
