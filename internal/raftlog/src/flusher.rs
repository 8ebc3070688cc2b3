//! Group commit. Writers hand callbacks to ONE flusher thread; it takes every
//! pending callback, fdatasyncs once (covering everything written before the
//! sync started, from any partition), then runs the callbacks in order.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chronos_wal::FsyncMode;

use crate::error::{Poison, RaftLogError};
use crate::files;
use crate::log::Shared;
use crate::options::{DurableCallback, DurablePosition, BATCH_FLUSH_BYTES};

pub(crate) struct FlushQueue {
    pending: Vec<DurableCallback>,
    /// Bytes written since the last sync started.
    dirty_bytes: u64,
    /// When the oldest pending callback was queued (Batch mode's clock).
    oldest: Option<Instant>,
    /// Someone waits on an fsync regardless of mode (vote, `sync`).
    urgent: bool,
    last_sync: Instant,
    pub(crate) shutdown: bool,
}

impl FlushQueue {
    pub(crate) fn new() -> FlushQueue {
        FlushQueue {
            pending: Vec::new(),
            dirty_bytes: 0,
            oldest: None,
            urgent: false,
            last_sync: Instant::now(),
            shutdown: false,
        }
    }
}

impl Shared {
    /// Queues `callback` (if any) behind `bytes` just written. Called with
    /// the writer lock held so callbacks queue in write order.
    pub(crate) fn enqueue(&self, callback: Option<DurableCallback>, bytes: u64, urgent: bool) {
        let mut q = self.queue.lock();
        if q.shutdown {
            // The flusher is gone (or going): nothing would run the callback.
            drop(q);
            if let Some(cb) = callback {
                cb(Err(RaftLogError::Closed));
            }
            return;
        }
        q.dirty_bytes += bytes;
        if let Some(cb) = callback {
            q.pending.push(cb);
            q.oldest.get_or_insert_with(Instant::now);
        }
        q.urgent |= urgent;
        drop(q);
        self.queue_cv.notify_one();
    }
}

/// `None`: sync now. `Some(None)`: wait for work. `Some(Some(d))`: wait `d`.
fn wait_time(q: &FlushQueue, mode: FsyncMode, now: Instant) -> Option<Option<Duration>> {
    if q.urgent {
        return None;
    }
    let remaining = |since: Instant, limit: Duration| {
        let elapsed = now.saturating_duration_since(since);
        (elapsed < limit).then(|| limit - elapsed)
    };
    match mode {
        FsyncMode::Always if q.pending.is_empty() => Some(None),
        FsyncMode::Always => None,
        FsyncMode::Batch { max_delay } => match q.oldest {
            None => Some(None),
            Some(_) if q.dirty_bytes >= BATCH_FLUSH_BYTES => None,
            Some(t) => remaining(t, max_delay).map(Some),
        },
        FsyncMode::Periodic { .. } if q.dirty_bytes == 0 && q.pending.is_empty() => Some(None),
        FsyncMode::Periodic { interval } => remaining(q.last_sync, interval).map(Some),
    }
}

/// The flusher thread's body; returns on shutdown, failing what is pending.
pub(crate) fn run(shared: Arc<Shared>) {
    loop {
        let batch = {
            let mut q = shared.queue.lock();
            loop {
                if q.shutdown {
                    let pending = std::mem::take(&mut q.pending);
                    drop(q);
                    for cb in pending {
                        cb(Err(RaftLogError::Closed));
                    }
                    return;
                }
                match wait_time(&q, shared.opts.fsync, Instant::now()) {
                    None => break,
                    Some(None) => shared.queue_cv.wait(&mut q),
                    Some(Some(d)) => {
                        shared.queue_cv.wait_for(&mut q, d);
                    }
                }
            }
            q.dirty_bytes = 0;
            q.oldest = None;
            q.urgent = false;
            q.last_sync = Instant::now();
            std::mem::take(&mut q.pending)
        };
        // Callbacks were queued after their writes, and the sync below
        // starts after they were taken: it covers all of them.
        let result = sync_now(&shared);
        for cb in batch {
            cb(result.clone().map_err(RaftLogError::Poisoned));
        }
    }
}

/// Fsyncs files rolled since the last sync, the directory if a file was
/// created, and the active file. A failure poisons the log (what reached the
/// disk is unknown), so later writes are refused.
pub(crate) fn sync_now(shared: &Shared) -> Result<(), Poison> {
    let (active, position, rolled, dir_dirty) = {
        let mut inner = shared.inner.lock();
        if let Some(e) = &inner.poisoned {
            return Err(e.clone());
        }
        let seq = inner.active;
        let active = &inner.files[&seq];
        let position = DurablePosition {
            file_seq: seq,
            offset: active.len,
        };
        let file = Arc::clone(&active.file);
        let rolled = std::mem::take(&mut inner.unsynced);
        (file, position, rolled, std::mem::take(&mut inner.dir_dirty))
    };
    let started = Instant::now();
    let result = (|| -> Result<(), RaftLogError> {
        for f in &rolled {
            f.sync_data()
                .map_err(RaftLogError::io("fsync rolled file"))?;
        }
        if dir_dirty {
            files::sync_dir(&shared.dir)?;
        }
        active.sync_data().map_err(RaftLogError::io("fdatasync"))
    })();
    shared.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
    // Every write acknowledged with `always` waits for one of these: a disk
    // that stalls shows here first.
    metrics::histogram!("chronos_raftlog_fsync_seconds").record(started.elapsed());
    let mut inner = shared.inner.lock();
    match result {
        Ok(()) => {
            inner.synced = inner.synced.max(position);
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "raft log fsync failed; refusing further writes");
            let poison = Poison::from(&e);
            inner.poisoned.get_or_insert_with(|| poison.clone());
            Err(poison)
        }
    }
}
