//! openraft's log storage: this partition's view of the node's shared Raft log.
//!
//! Entries go to the node-wide [`RaftLog`] (one append queue and one fsync
//! for every partition); openraft is told an append is flushed only from its
//! durable callback. The vote and the purge point are records of that log
//! too. A bounded cache of the newest entries serves the reads openraft makes
//! right after appending (apply, replication), so the hot path never reads
//! the disk back.
//!
//! Two purge points. openraft's (logical: below it openraft no longer asks
//! for entries; set by history retention and by snapshot installs, as with
//! any Raft log) is stored as the node log's purge meta. The node log's own
//! (physical) point is where it dropped entries because the partition's
//! history (`history.rs`) holds them durably: `RaftLog::compact` moves it, right
//! behind apply. Entries between the two are read from the history, so
//! openraft sees one contiguous log while the node's log stays short.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io::{self, Write};
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use chronos_raftlog::RaftLog;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use parking_lot::Mutex;

use crate::codec;
use crate::history::History;
use crate::types::{Entry, LogId, TypeConfig, Vote};

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
    partition: u32,
    log: Arc<RaftLog>,
    /// Applied entries the node log has dropped.
    history: History,
    cache: Arc<Mutex<TailCache>>,
}

/// The partition's Raft log storage.
pub struct LogStore {
    reader: LogReader,
    /// Log id of the last entry held.
    last_log_id: Option<LogId>,
    /// openraft's (logical) purge point.
    last_purged: Option<LogId>,
}

fn io_err(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(e)
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
    /// Opens `partition`'s view of the node's log.
    pub fn open(
        log: Arc<RaftLog>,
        partition: u32,
        history: History,
    ) -> Result<LogStore, io::Error> {
        // Empty meta: the node log compacted, openraft never purged.
        let last_purged = match log.purged(partition) {
            Some((_, raw)) if !raw.is_empty() => serde_json::from_slice(&raw).map_err(io_err)?,
            _ => None,
        };
        let reader = LogReader {
            partition,
            log,
            history,
            cache: Arc::new(Mutex::new(TailCache::default())),
        };
        let mut store = LogStore {
            reader,
            last_log_id: None,
            last_purged,
        };
        store.load_last()?;
        Ok(store)
    }

    /// Reads the log id of the last entry held (in the node log, or, when
    /// it holds none, the history's last if openraft has not purged it).
    fn load_last(&mut self) -> Result<(), io::Error> {
        self.last_log_id = match self.reader.log.range(self.reader.partition) {
            Some((_, last)) => self
                .reader
                .read_range(last, last + 1)?
                .pop()
                .map(|e| e.log_id),
            None => self
                .reader
                .history
                .last_log_id()
                .map_err(io_err)?
                .filter(|l| self.last_purged.is_none_or(|p| l.index > p.index)),
        };
        Ok(())
    }

    /// `RaftLogStorage::append` with a plain callback (openraft's cannot be
    /// built outside openraft, and the tests need one): `on_durable` runs once
    /// the entries are durable, or with the error that kept them from being.
    fn append_then(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
        on_durable: impl FnOnce(io::Result<()>) + Send + 'static,
    ) -> Result<(), io::Error> {
        let decoded: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = decoded.last().map(|e| e.log_id) else {
            on_durable(Ok(()));
            return Ok(());
        };
        let encoded: Vec<Vec<u8>> = decoded.iter().map(codec::encode_entry).collect();
        let records: Vec<(u64, &[u8])> = decoded
            .iter()
            .zip(&encoded)
            .map(|(e, raw)| (e.log_id.index, raw.as_slice()))
            .collect();
        let on_durable = Box::new(move |res: Result<(), chronos_raftlog::RaftLogError>| {
            on_durable(res.map_err(io::Error::other));
        });
        self.reader
            .log
            .append(self.reader.partition, &records, on_durable)
            .map_err(io_err)?;
        // Only once the log took the records (a failed append keeps nothing).
        self.last_log_id = Some(last);
        let mut cache = self.reader.cache.lock();
        for (entry, raw) in decoded.into_iter().zip(&encoded) {
            let released = match &entry.payload {
                openraft::EntryPayload::Normal(cmd) => cmd.released_bytes(),
                _ => 0,
            };
            cache.push(entry, raw.len() + released);
        }
        Ok(())
    }
}

impl LogReader {
    fn read_range(&self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> {
        if start >= end {
            return Ok(Vec::new());
        }
        if let Some(hit) = self.cache.lock().get(start, end) {
            return Ok(hit);
        }
        // Below the node log's first entry: what the history holds.
        let first = self.log.range(self.partition).map(|(first, _)| first);
        let split = first.unwrap_or(end).clamp(start, end);
        let mut out = self.history.read(start, split).map_err(io_err)?;
        for (index, raw) in self.log.read(self.partition, split, end).map_err(io_err)? {
            out.push(codec::decode_entry(index, &raw).map_err(io_err)?);
        }
        Ok(out)
    }

    /// Entries in [start, end) held by the log (for the history's refill).
    pub fn entries(&self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> {
        self.read_range(start, end)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + openraft::OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = bounds(&range);
        let last = match self.log.range(self.partition) {
            Some((_, last)) => Some(last),
            None => self.history.last_index(),
        };
        let Some(last) = last else {
            return Ok(Vec::new());
        };
        self.read_range(start, end.min(last + 1))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        match self.log.vote(self.partition) {
            Some(raw) => serde_json::from_slice(&raw).map(Some).map_err(io_err),
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + openraft::OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        self.reader.try_get_log_entries(range).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.reader.read_vote().await
    }
}

impl LogStore {
    /// A reader of this partition's log (for work outside openraft).
    pub fn reader(&self) -> LogReader {
        self.reader.clone()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        Ok(LogState {
            last_purged_log_id: self.last_purged,
            last_log_id: self.last_log_id.max(self.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let raw = serde_json::to_vec(vote).map_err(io_err)?;
        self.reader
            .log
            .save_vote(self.reader.partition, &raw)
            .map_err(io_err)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.append_then(entries, move |res| callback.io_completed(res))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        self.reader.cache.lock().truncate_from(from);
        self.reader
            .log
            .truncate(self.reader.partition, from)
            .map_err(io_err)?;
        self.load_last()
    }

    /// Logical, except past the end of the log (a snapshot moved the
    /// partition beyond it): then the node log drops everything up to it.
    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let raw = serde_json::to_vec(&Some(log_id)).map_err(io_err)?;
        let past_end = self.last_log_id.is_none_or(|l| l.index <= log_id.index);
        let physical = if past_end { log_id.index } else { 0 };
        self.reader
            .log
            .purge(self.reader.partition, physical, &raw)
            .map_err(io_err)?;
        self.last_purged = Some(log_id);
        if past_end {
            self.reader.cache.lock().clear();
            self.last_log_id = None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use chronos_proto::internal::PublishCommand;
    use chronos_raftlog::RaftLogOptions;
    use openraft::EntryPayload;

    use std::path::PathBuf;

    use super::*;
    use crate::codec::log_id;
    use crate::types::Command;

    /// The node log of a node whose data directory is `dir`.
    fn open_log(dir: &Path) -> (Arc<RaftLog>, PathBuf) {
        let log = RaftLog::open(&dir.join("raftlog"), RaftLogOptions::default()).unwrap();
        (Arc::new(log), dir.to_path_buf())
    }

    fn open((log, dir): &(Arc<RaftLog>, PathBuf), partition: u32) -> LogStore {
        let history = History::open(
            partition,
            &dir.join(format!("history-{partition}")),
            1 << 20,
        )
        .unwrap();
        LogStore::open(log.clone(), partition, history).unwrap()
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
    async fn partitions_share_the_log_and_each_reopens_to_its_own_entries_vote_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let vote = Vote::new(2, 1);
        {
            let log = open_log(dir.path());
            let mut a = open(&log, 0);
            let mut b = open(&log, 7);
            append(
                &mut a,
                (1..=100).map(|i| publish(1, i, 2 * (i - 1))).collect(),
            );
            append(&mut b, (1..=10).map(|i| blank(1, i)).collect());
            a.save_vote(&vote).await.unwrap();
            // b conflicts from 6 on and continues in term 2.
            b.truncate_after(Some(log_id(1, 1, 5))).await.unwrap();
            append(&mut b, vec![blank(2, 6)]);
            // a's snapshot covers up to 50.
            a.purge(log_id(1, 1, 50)).await.unwrap();
            log.0.sync().unwrap();
        }
        let log = open_log(dir.path());
        let mut a = open(&log, 0);
        let mut b = open(&log, 7);
        assert_eq!(a.read_vote().await.unwrap(), Some(vote));
        assert_eq!(b.read_vote().await.unwrap(), None);
        let state = a.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 50)));
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 100)));
        assert_eq!(
            indexes(&mut a, 51..1_000).await,
            (51..=100).collect::<Vec<_>>()
        );
        let state = b.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(2, 1, 6)));
        assert_eq!(indexes(&mut b, 0..100).await, (1..=6).collect::<Vec<_>>());
        let back = a.try_get_log_entries(60..61).await.unwrap();
        assert_eq!(codec::entry_offsets(&back[0]), Some((118, 2)));
    }

    #[tokio::test]
    async fn purge_past_the_end_continues_after_it_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = open_log(dir.path());
            let mut store = open(&log, 3);
            append(&mut store, (1..=10).map(|i| blank(1, i)).collect());
            // A snapshot at 4999 was installed: openraft purges up to it.
            let snapshot = log_id(2, 1, 4_999);
            store.purge(snapshot).await.unwrap();
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(snapshot));
            assert_eq!(state.last_log_id, Some(snapshot));
            assert!(
                indexes(&mut store, 1..11).await.is_empty(),
                "purged: absent"
            );
            append(&mut store, vec![blank(2, 5_000), publish(2, 5_001, 77)]);
            // An append that does not continue the log is refused.
            assert!(store.append_then(vec![blank(2, 7_000)], |_| {}).is_err());
        }
        let log = open_log(dir.path());
        let mut store = open(&log, 3);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(2, 1, 4_999)));
        assert_eq!(state.last_log_id, Some(log_id(2, 1, 5_001)));
        assert_eq!(indexes(&mut store, 0..10_000).await, vec![5_000, 5_001]);

        // A wiped node: empty log, purge to the snapshot, continue after it.
        let wiped = tempfile::tempdir().unwrap();
        let log = open_log(wiped.path());
        let mut store = open(&log, 0);
        store.purge(log_id(3, 1, 41)).await.unwrap();
        append(&mut store, vec![publish(3, 42, 77)]);
        drop(store);
        drop(log);
        let log = open_log(wiped.path());
        let mut store = open(&log, 0);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(3, 1, 42)));
    }

    #[tokio::test]
    async fn entries_the_node_log_compacted_are_read_from_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<Entry> = (1..=40).map(|i| publish(1, i, 2 * (i - 1))).collect();
        {
            let node = open_log(dir.path());
            let mut store = open(&node, 5);
            append(&mut store, entries.clone());
            // Applied: the history holds 1..=30, synced; the node log drops them.
            let applied: Vec<(&Entry, u64)> = entries[..30]
                .iter()
                .map(|e| (e, codec::entry_offsets(e).unwrap().0))
                .collect();
            store.reader.history.append(&applied).unwrap();
            store.reader.history.sync().unwrap();
            node.0.compact(5, 30).unwrap();
            assert_eq!(node.0.range(5), Some((31, 40)));
            store.reader.cache.lock().clear();
            assert_eq!(
                indexes(&mut store, 0..100).await,
                (1..=40).collect::<Vec<_>>()
            );
            node.0.sync().unwrap();
        }
        let node = open_log(dir.path());
        let mut store = open(&node, 5);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, None, "compaction is not a purge");
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 40)));
        let back = store.try_get_log_entries(10..35).await.unwrap();
        assert_eq!(
            back.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            (10..35).collect::<Vec<_>>()
        );
        assert_eq!(codec::entry_offsets(&back[0]), Some((18, 2)));

        // Everything applied and compacted: the last entry comes from the history.
        let applied: Vec<(&Entry, u64)> = entries[30..]
            .iter()
            .map(|e| (e, codec::entry_offsets(e).unwrap().0))
            .collect();
        store.reader.history.append(&applied).unwrap();
        node.0.compact(5, 40).unwrap();
        drop(store);
        let mut store = open(&node, 5);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 40)));
        append(&mut store, vec![blank(2, 41)]);
        assert_eq!(indexes(&mut store, 39..100).await, vec![39, 40, 41]);
    }
}
