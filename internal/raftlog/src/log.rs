//! `RaftLog`: the shared state (one writer mutex around the files and the
//! index), open, the read side, stats and shutdown. Writes are in
//! `write.rs`, gc in `gc.rs`, fsync in `flusher.rs`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use crate::codec::Format;
use crate::error::{Poison, RaftLogError};
use crate::files;
use crate::flusher::{self, FlushQueue};
use crate::memtable::PartitionState;
use crate::options::{DurablePosition, RaftLogOptions, RaftLogStats};
use crate::prealloc;
use crate::recovery;
use crate::spare::{self, Spare};

/// One node-wide log shared by many Raft partitions. `Send + Sync`; share it
/// as `Arc<RaftLog>`.
///
/// Dropping it stops the flusher WITHOUT a final fsync: pending `on_durable`
/// callbacks get [`RaftLogError::Closed`]. Call [`RaftLog::sync`] first for
/// a clean shutdown.
pub struct RaftLog {
    pub(crate) shared: Arc<Shared>,
    /// The flusher and the preparer (zero-filling, reclaiming dead files).
    threads: Vec<JoinHandle<()>>,
}

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) opts: RaftLogOptions,
    /// The single writer lock: files, active file, index. Lock order:
    /// `reclaiming` before `inner` before `queue`.
    pub(crate) inner: Mutex<Inner>,
    pub(crate) queue: Mutex<FlushQueue>,
    pub(crate) queue_cv: Condvar,
    pub(crate) counters: Counters,
    /// Held by one reclaim at a time (gc's and the preparer's), so the
    /// spares never outnumber `spare_files`.
    pub(crate) reclaiming: Mutex<()>,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) fsyncs: AtomicU64,
    pub(crate) appends: AtomicU64,
    pub(crate) entries_appended: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) entries_rewritten: AtomicU64,
    pub(crate) files_removed: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// One log file: an open handle (shared so reads and fsyncs can run outside
/// the writer lock) and how many bytes of it are written.
pub(crate) struct LogFile {
    pub(crate) file: Arc<File>,
    pub(crate) len: u64,
    /// Bytes from `len` up to here are allocated on disk: zeros
    /// (`prealloc.rs`) or records of a reused file's earlier use.
    pub(crate) allocated: u64,
    pub(crate) format: Format,
}

pub(crate) struct Inner {
    pub(crate) files: BTreeMap<u64, LogFile>,
    /// Sequence number of the file being written; always a key of `files`
    /// once open returns.
    pub(crate) active: u64,
    /// Size of the active file's header and checkpoint: a file is never
    /// rolled before anything follows them.
    pub(crate) active_start: u64,
    /// Files rolled since the last fsync; the flusher syncs them.
    pub(crate) unsynced: Vec<Arc<File>>,
    /// A file was created since the last directory fsync.
    pub(crate) dir_dirty: bool,
    pub(crate) parts: HashMap<u32, PartitionState>,
    /// Sticky failure: set once a write or fsync failed.
    pub(crate) poisoned: Option<Poison>,
    pub(crate) synced: DurablePosition,
    /// Tells the zero-filling thread to return.
    pub(crate) stopping: bool,
    /// Zero-filling gave up (e.g. a full disk); appends extend files.
    pub(crate) prealloc_failed: bool,
    /// A file was rolled since the preparer last looked for dead files.
    pub(crate) rolled_since_reclaim: bool,
    /// Wakes the preparer thread, which waits on this lock.
    pub(crate) prealloc_wake: Arc<Condvar>,
    /// The zeros being written outside this lock.
    pub(crate) zeroing: Arc<prealloc::Zeroing>,
    /// Dead files kept for reuse (at most `spare_files`).
    pub(crate) spares: Vec<Spare>,
    /// Rolls that reused a spare.
    pub(crate) files_reused: u64,
}

impl LogFile {
    /// The stamp of this file's records. Only the active file is written,
    /// and it is always one this build started.
    pub(crate) fn stamp(&self) -> u64 {
        match self.format {
            Format::V2 { stamp } => stamp,
            Format::V1 => panic!("a version 1 log file is never written to"),
        }
    }
}

impl RaftLog {
    /// Opens (or creates) the log in `dir`, replaying every file. A torn or
    /// corrupt record cuts the log there. Writing continues in a fresh file
    /// whose checkpoint holds the recovered votes and purge points.
    pub fn open(dir: &Path, opts: RaftLogOptions) -> Result<RaftLog, RaftLogError> {
        opts.validate()?;
        std::fs::create_dir_all(dir).map_err(RaftLogError::io("create dir"))?;
        let recovered = recovery::recover(dir)?;
        let spares = spare::adopt(dir, opts.spare_files)?;
        let mut inner = Inner {
            files: recovered.files,
            active: recovered.max_seq,
            active_start: 0,
            unsynced: Vec::new(),
            dir_dirty: true,
            parts: recovered.parts,
            poisoned: None,
            synced: DurablePosition::default(),
            stopping: false,
            prealloc_failed: false,
            rolled_since_reclaim: false,
            prealloc_wake: Arc::new(Condvar::new()),
            zeroing: Arc::default(),
            spares,
            files_reused: 0,
        };
        // A fresh file: the recovered last file may end in a partial
        // checkpoint, and gc relies on every later file having a whole one.
        inner.roll(dir)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            opts,
            inner: Mutex::new(inner),
            queue: Mutex::new(FlushQueue::new()),
            queue_cv: Condvar::new(),
            counters: Counters::default(),
            reclaiming: Mutex::new(()),
        });
        flusher::sync_now(&shared).map_err(RaftLogError::Poisoned)?;
        let for_thread = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("raftlog-flusher".into())
            .spawn(move || flusher::run(for_thread))
            .map_err(RaftLogError::io("spawn flusher"))?;
        let mut log = RaftLog {
            shared,
            threads: vec![handle],
        };
        let for_thread = Arc::clone(&log.shared);
        let handle = std::thread::Builder::new()
            .name("raftlog-prealloc".into())
            .spawn(move || prealloc::run(for_thread))
            .map_err(RaftLogError::io("spawn zero-filler"))?;
        log.threads.push(handle);
        Ok(log)
    }

    pub fn vote(&self, partition: u32) -> Option<Vec<u8>> {
        self.shared.inner.lock().parts.get(&partition)?.vote.clone()
    }

    pub fn purged(&self, partition: u32) -> Option<(u64, Vec<u8>)> {
        self.shared
            .inner
            .lock()
            .parts
            .get(&partition)?
            .purged
            .clone()
    }

    /// (first, last) index held for the partition, `None` when it holds no entries.
    pub fn range(&self, partition: u32) -> Option<(u64, u64)> {
        self.shared.inner.lock().parts.get(&partition)?.range()
    }

    /// Entries with index in `[start, end)` that are held, in order. The
    /// locations are taken under the lock; the preads run outside it (a file
    /// gc deletes meanwhile stays readable through its open handle).
    pub fn read(
        &self,
        partition: u32,
        start: u64,
        end: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, RaftLogError> {
        let mut wanted = Vec::new();
        {
            let inner = self.shared.inner.lock();
            let Some(state) = inner.parts.get(&partition) else {
                return Ok(Vec::new());
            };
            let Some((first, last)) = state.range() else {
                return Ok(Vec::new());
            };
            let (lo, hi) = (start.max(first), end.min(last.saturating_add(1)));
            for index in lo..hi {
                let Some(loc) = state.loc(index) else { break };
                // Every location points into a file the log still holds. The
                // handle taken here keeps the file from being reused while
                // it is read (`Inner::take_spare`).
                let f = &inner.files[&loc.file_seq];
                wanted.push((index, loc, Arc::clone(&f.file), f.format));
            }
        }
        wanted
            .into_iter()
            .map(|(index, loc, file, format)| {
                files::read_entry(&file, format, loc, partition, index).map(|p| (index, p))
            })
            .collect()
    }

    /// Partitions this log holds anything for (entries, vote or purge point), ascending.
    pub fn partitions(&self) -> Vec<u32> {
        let inner = self.shared.inner.lock();
        let mut out: Vec<u32> = inner
            .parts
            .iter()
            .filter(|(_, s)| !s.is_blank())
            .map(|(p, _)| *p)
            .collect();
        out.sort_unstable();
        out
    }

    pub fn stats(&self) -> RaftLogStats {
        let inner = self.shared.inner.lock();
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RaftLogStats {
            files: inner.files.len() as u64,
            bytes: inner.files.values().map(|f| f.len).sum(),
            partitions: inner.parts.values().filter(|s| !s.is_blank()).count() as u64,
            entries: inner.parts.values().map(|s| s.locs.len() as u64).sum(),
            fsyncs: get(&c.fsyncs),
            appends: get(&c.appends),
            entries_appended: get(&c.entries_appended),
            bytes_written: get(&c.bytes_written),
            entries_rewritten: get(&c.entries_rewritten),
            files_removed: get(&c.files_removed),
            files_reused: inner.files_reused,
            spare_files: inner.spares.len() as u64,
        }
    }

    /// How far the files are known fsynced.
    pub fn durable_position(&self) -> DurablePosition {
        self.shared.inner.lock().synced
    }

    /// Stops the flusher without a final fsync — what a crash leaves behind —
    /// and returns how far the files were fsynced. Pending callbacks get
    /// [`RaftLogError::Closed`]. For crash tests; `drop` does the same.
    pub fn close_without_sync(mut self) -> DurablePosition {
        self.stop_threads();
        self.shared.inner.lock().synced
    }

    fn stop_threads(&mut self) {
        self.shared.queue.lock().shutdown = true;
        self.shared.queue_cv.notify_all();
        let mut inner = self.shared.inner.lock();
        inner.stopping = true;
        inner.prealloc_wake.notify_all();
        drop(inner);
        for handle in self.threads.drain(..) {
            if handle.join().is_err() {
                tracing::error!("a raft log thread panicked");
            }
        }
    }
}

impl Drop for RaftLog {
    fn drop(&mut self) {
        self.stop_threads();
    }
}
