//! The [`Wal`] handle: shared state, open, close, sync and the small getters.
//! Appending lives in `append.rs`, reads in `read.rs`, truncation and
//! retention in `maintenance.rs`, background fsync in `flusher.rs`.
//!
//! Locking: `Shared::inner` (the writer state) is taken first; the flush
//! queue's lock and the durable mark's lock are only ever taken inside it or
//! alone. The flusher thread never takes `inner`, so nothing waits on the
//! flusher while holding `inner`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Instant;

use parking_lot::Mutex;

use crate::codec::RecordHeader;
use crate::error::WalError;
use crate::flusher::{self, FlushQueue, Pending};
use crate::options::{RecoveryReport, WalOptions};
use crate::recovery::recover;
use crate::segment::{open_for_write, Segment};
use crate::stats::{StatsCounters, WalStats};

/// An open segment file with its path (for error messages).
#[derive(Debug)]
pub(crate) struct SegmentFile {
    pub file: File,
    pub path: PathBuf,
}

/// Writer state, guarded by `Shared::inner`.
pub(crate) struct Inner {
    /// Oldest first; all but the last are sealed and hold records.
    pub segments: Vec<Segment>,
    /// Write handle of the last segment; `Some` iff `segments` is non-empty.
    pub active: Option<Arc<SegmentFile>>,
    /// Upper bound on the `ts_ms` of every record in the log.
    pub max_ts_ms: u64,
    /// Bumped by every truncation, so fsyncs of data written before it do
    /// not advance the durable index.
    pub epoch: u64,
    pub closed: bool,
    /// Reused encode buffer.
    pub scratch: Vec<u8>,
}

impl Inner {
    pub fn last_header(&self) -> Option<RecordHeader> {
        self.segments.iter().rev().find_map(|s| s.last)
    }

    pub fn first_index(&self) -> Option<u64> {
        self.segments
            .first()
            .filter(|s| s.has_records())
            .map(|s| s.first_index)
    }

    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size_bytes).sum()
    }

    pub fn debug_check(&self) {
        if cfg!(debug_assertions) {
            let n = self.segments.len();
            for (i, seg) in self.segments.iter().enumerate() {
                debug_assert!(
                    i + 1 == n || seg.has_records(),
                    "sealed segments hold records"
                );
                if i > 0 {
                    debug_assert_eq!(
                        seg.first_index,
                        self.segments[i - 1].next_index(),
                        "contiguous segments"
                    );
                }
            }
            debug_assert_eq!(self.active.is_some(), n > 0, "active file iff segments");
        }
    }
}

/// Where the durable index stands, and for which truncation epoch.
#[derive(Debug, Default)]
pub(crate) struct DurableMark {
    pub epoch: u64,
    /// Durable index + 1; 0 means "none".
    pub index: u64,
}

/// State shared by the handle and the flusher thread.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub opts: WalOptions,
    pub inner: Mutex<Inner>,
    pub queue: FlushQueue,
    pub failed: AtomicBool,
    pub durable: Mutex<DurableMark>,
    pub durable_index: AtomicU64,
    pub stats: StatsCounters,
    #[cfg(test)]
    pub faults: crate::faults::Faults,
}

impl Shared {
    /// `sync_data` with timing and counting; all segment fsyncs go through here.
    pub fn sync_file(&self, file: &SegmentFile) -> Result<(), WalError> {
        #[cfg(test)]
        if self.faults.take_fsync_failure() {
            return Err(WalError::io(
                "fsync segment",
                &file.path,
                std::io::Error::other("injected fsync failure"),
            ));
        }
        let started = Instant::now();
        let result = file.file.sync_data();
        let elapsed_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.stats.fsyncs_total.fetch_add(1, Ordering::Relaxed);
        self.stats
            .fsync_time_ns_total
            .fetch_add(elapsed_ns, Ordering::Relaxed);
        result.map_err(|e| WalError::io("fsync segment", &file.path, e))
    }

    /// Positioned write of `buf` at `pos_bytes`; the only path that writes records.
    pub fn write_at(&self, file: &SegmentFile, buf: &[u8], pos_bytes: u64) -> Result<(), WalError> {
        #[cfg(test)]
        if let Some((prefix_bytes, kind)) = self.faults.take_write_failure() {
            let prefix = &buf[..prefix_bytes.min(buf.len())];
            let _ = file.file.write_all_at(prefix, pos_bytes);
            return Err(WalError::io(
                "write records",
                &file.path,
                std::io::Error::from(kind),
            ));
        }
        file.file
            .write_all_at(buf, pos_bytes)
            .map_err(|e| WalError::io("write records", &file.path, e))
    }

    pub fn mark_failed(&self, cause: &WalError) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            tracing::error!(dir = %self.dir.display(), error = %cause, "WAL entering failed state");
        }
    }

    pub fn check_writable(&self, inner: &Inner) -> Result<(), WalError> {
        if inner.closed {
            return Err(WalError::Closed);
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(WalError::Failed);
        }
        Ok(())
    }

    /// Resets the durable mark after a truncation made `last_index` durable.
    pub fn reset_durable(&self, epoch: u64, last_index: Option<u64>) {
        let mut mark = self.durable.lock();
        mark.epoch = epoch;
        mark.index = last_index.map_or(0, |i| i + 1);
        self.durable_index.store(mark.index, Ordering::Release);
    }

    pub fn refresh_layout_stats(&self, inner: &Inner) {
        self.stats
            .segment_count
            .store(inner.segments.len() as u64, Ordering::Relaxed);
        self.stats
            .disk_bytes
            .store(inner.disk_bytes(), Ordering::Relaxed);
    }
}

/// A segmented write-ahead log. `Send + Sync`; share it through an `Arc`.
pub struct Wal {
    pub(crate) shared: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    flusher_id: ThreadId,
    report: RecoveryReport,
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`, repairing a torn tail.
    /// See [`Wal::recovery_report`] for what was repaired.
    pub fn open(dir: impl AsRef<Path>, opts: WalOptions) -> Result<Wal, WalError> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let recovered = recover(&dir, &opts)?;
        let active = match recovered.segments.last() {
            Some(seg) => Some(Arc::new(SegmentFile {
                file: open_for_write(&seg.path)?,
                path: seg.path.clone(),
            })),
            None => None,
        };
        let inner = Inner {
            segments: recovered.segments,
            active,
            max_ts_ms: recovered.max_ts_ms,
            epoch: 0,
            closed: false,
            scratch: Vec::new(),
        };
        inner.debug_check();
        let shared = Arc::new(Shared {
            dir,
            opts,
            inner: Mutex::new(inner),
            queue: FlushQueue::new(),
            failed: AtomicBool::new(false),
            durable: Mutex::new(DurableMark::default()),
            durable_index: AtomicU64::new(0),
            stats: StatsCounters::default(),
            #[cfg(test)]
            faults: crate::faults::Faults::default(),
        });
        {
            // Whatever a crashed process left in the page cache becomes durable now.
            let inner = shared.inner.lock();
            if let Some(active) = &inner.active {
                shared.sync_file(active)?;
            }
            shared.reset_durable(0, inner.last_header().map(|h| h.index));
            shared.refresh_layout_stats(&inner);
        }
        let thread_shared = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name("chronos-wal-flusher".into())
            .spawn(move || flusher::run(&thread_shared))
            .map_err(|e| WalError::io("spawn flusher thread", &shared.dir, e))?;
        Ok(Wal {
            flusher_id: handle.thread().id(),
            flusher: Mutex::new(Some(handle)),
            shared,
            report: recovered.report,
        })
    }

    /// What `open` repaired (torn bytes cut, segments dropped, indexes rebuilt).
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Index of the oldest stored record.
    pub fn first_index(&self) -> Option<u64> {
        self.shared.inner.lock().first_index()
    }

    /// Header of the newest stored record.
    pub fn last_header(&self) -> Option<RecordHeader> {
        self.shared.inner.lock().last_header()
    }

    /// Highest index known to be fsynced.
    pub fn durable_index(&self) -> Option<u64> {
        // Stored as index + 1 so that 0 can mean "nothing durable" while
        // index 0 (openraft's first entry) stays a valid index.
        match self.shared.durable_index.load(Ordering::Acquire) {
            0 => None,
            n => Some(n - 1),
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> WalStats {
        self.shared.stats.snapshot()
    }

    /// Fsyncs everything appended so far and returns when it is durable;
    /// callbacks of earlier appends have run by then.
    pub fn sync(&self) -> Result<(), WalError> {
        if thread::current().id() == self.flusher_id {
            // Called from an on_durable callback: the flusher cannot wait on itself.
            let active = self.shared.inner.lock().active.clone();
            return match active {
                Some(file) => self.shared.sync_file(&file),
                None => Ok(()),
            };
        }
        let (tx, rx) = mpsc::sync_channel(1);
        {
            let inner = self.shared.inner.lock();
            self.shared.check_writable(&inner)?;
            let marker = Pending {
                file: inner.active.clone(),
                last_index: inner.last_header().map(|h| h.index),
                epoch: inner.epoch,
                bytes: 0,
                enqueued_at: Instant::now(),
                callback: Some(Box::new(move |result| {
                    let _ = tx.send(result);
                })),
                force: true,
            };
            self.shared.queue.push(marker, self.shared.opts.fsync);
        }
        rx.recv().unwrap_or(Err(WalError::Closed))
    }

    /// Final fsync, runs every outstanding callback, and stops the flusher.
    /// Later appends return [`WalError::Closed`]. Idempotent.
    pub fn close(&self) -> Result<(), WalError> {
        {
            let mut inner = self.shared.inner.lock();
            if inner.closed {
                return Ok(());
            }
            inner.closed = true;
            let marker = Pending {
                file: inner.active.clone(),
                last_index: inner.last_header().map(|h| h.index),
                epoch: inner.epoch,
                bytes: 0,
                enqueued_at: Instant::now(),
                callback: None,
                force: true,
            };
            self.shared.queue.push(marker, self.shared.opts.fsync);
        }
        self.shared.queue.shutdown();
        let handle = self.flusher.lock().take();
        if let Some(handle) = handle {
            // From inside a callback the flusher finishes on its own after we return.
            if thread::current().id() != self.flusher_id && handle.join().is_err() {
                tracing::error!(dir = %self.shared.dir.display(), "WAL flusher thread panicked");
            }
        }
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(WalError::Failed);
        }
        Ok(())
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(dir = %self.shared.dir.display(), error = %e, "WAL closed with an error");
        }
    }
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .field("opts", &self.shared.opts)
            .finish_non_exhaustive()
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Wal>();
}
