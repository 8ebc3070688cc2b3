//! Group commit: the background thread that fsyncs written data and then
//! runs the `on_durable` callbacks it covered.
//!
//! Appends push a [`Pending`] (in append order, under the writer lock) after
//! their bytes are written. The flusher takes *everything* pending at once,
//! fsyncs the segment files those appends wrote to, and then runs their
//! callbacks in order. Appends that arrive while an fsync is running wait for
//! the next one, so one fsync covers many appends under load.
//!
//! If an fsync fails the WAL enters the failed state: that batch's callbacks
//! get the error, later appends are refused, and anything still queued gets
//! [`WalError::Failed`]. After a failed fsync the kernel may have dropped the
//! dirty pages, so nothing written is trusted until a restart re-reads disk.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::error::WalError;
use crate::options::{DurableCallback, FsyncMode, BATCH_FLUSH_BYTES};
use crate::wal::{SegmentFile, Shared};

/// One append (or a sync/close marker) waiting for an fsync.
pub(crate) struct Pending {
    /// The segment the append ended in. Segments it filled before were
    /// fsynced when they were sealed.
    pub file: Option<Arc<SegmentFile>>,
    /// Last index the append wrote, if any.
    pub last_index: Option<u64>,
    /// Truncation epoch at append time.
    pub epoch: u64,
    pub bytes: u64,
    pub enqueued_at: Instant,
    pub callback: Option<DurableCallback>,
    /// Flush now regardless of the mode's delay (sync and close).
    pub force: bool,
}

struct QueueState {
    pending: VecDeque<Pending>,
    pending_bytes: u64,
    forced: usize,
    shutdown: bool,
    last_drain: Instant,
}

/// The hand-off between appenders and the flusher thread.
pub(crate) struct FlushQueue {
    state: Mutex<QueueState>,
    wake: Condvar,
}

impl FlushQueue {
    pub fn new() -> Self {
        FlushQueue {
            state: Mutex::new(QueueState {
                pending: VecDeque::new(),
                pending_bytes: 0,
                forced: 0,
                shutdown: false,
                last_drain: Instant::now(),
            }),
            wake: Condvar::new(),
        }
    }

    pub fn push(&self, pending: Pending, mode: FsyncMode) {
        let mut st = self.state.lock();
        let was_empty = st.pending.is_empty();
        st.pending_bytes += pending.bytes;
        st.forced += usize::from(pending.force);
        let notify = match mode {
            FsyncMode::Always => true,
            FsyncMode::Batch { .. } => {
                was_empty || pending.force || st.pending_bytes >= BATCH_FLUSH_BYTES
            }
            FsyncMode::Periodic { .. } => was_empty || pending.force,
        };
        st.pending.push_back(pending);
        drop(st);
        if notify {
            self.wake.notify_one();
        }
    }

    /// Asks the flusher to flush what is queued and exit.
    pub fn shutdown(&self) {
        self.state.lock().shutdown = true;
        self.wake.notify_one();
    }

    /// Blocks until a batch is due; returns it and whether to exit afterwards.
    fn next_batch(&self, mode: FsyncMode) -> (Vec<Pending>, bool) {
        let mut st = self.state.lock();
        loop {
            if st.shutdown {
                return (drain(&mut st), true);
            }
            if st.pending.is_empty() {
                self.wake.wait(&mut st);
                continue;
            }
            let now = Instant::now();
            match due_at(&st, mode) {
                Some(due) if st.forced > 0 || due <= now => return (drain(&mut st), false),
                Some(due) => {
                    self.wake.wait_until(&mut st, due);
                }
                None if st.forced > 0 => return (drain(&mut st), false),
                None => self.wake.wait(&mut st),
            }
        }
    }
}

/// When the queued work must be flushed; `None` = only when forced.
fn due_at(st: &QueueState, mode: FsyncMode) -> Option<Instant> {
    let oldest = st.pending.front()?.enqueued_at;
    match mode {
        FsyncMode::Always => Some(oldest),
        FsyncMode::Batch { .. } if st.pending_bytes >= BATCH_FLUSH_BYTES => Some(oldest),
        FsyncMode::Batch { max_delay } => oldest.checked_add(max_delay),
        FsyncMode::Periodic { interval } => st.last_drain.checked_add(interval),
    }
}

fn drain(st: &mut QueueState) -> Vec<Pending> {
    st.pending_bytes = 0;
    st.forced = 0;
    st.last_drain = Instant::now();
    st.pending.drain(..).collect()
}

/// The flusher thread's body.
pub(crate) fn run(shared: &Shared) {
    let mode = shared.opts.fsync;
    loop {
        let (batch, exit) = shared.queue.next_batch(mode);
        if !batch.is_empty() {
            complete(shared, batch);
        }
        if exit {
            return;
        }
    }
}

/// Fsyncs what `batch` wrote, advances the durable index, runs callbacks.
fn complete(shared: &Shared, batch: Vec<Pending>) {
    let outcome = if shared.failed.load(Ordering::Acquire) {
        Err(WalError::Failed)
    } else {
        sync_files(shared, &batch)
    };
    match &outcome {
        Ok(()) => advance_durable(shared, &batch),
        Err(e) => shared.mark_failed(e),
    }
    for pending in batch {
        if let Some(callback) = pending.callback {
            let result = match &outcome {
                Ok(()) => Ok(()),
                Err(e) => Err(e.duplicate()),
            };
            if catch_unwind(AssertUnwindSafe(|| callback(result))).is_err() {
                tracing::error!(dir = %shared.dir.display(), "on_durable callback panicked");
            }
        }
    }
}

fn sync_files(shared: &Shared, batch: &[Pending]) -> Result<(), WalError> {
    let mut synced: Vec<&Arc<SegmentFile>> = Vec::new();
    for file in batch.iter().filter_map(|p| p.file.as_ref()) {
        if synced.iter().any(|s| Arc::ptr_eq(s, file)) {
            continue;
        }
        shared.sync_file(file)?;
        synced.push(file);
    }
    Ok(())
}

fn advance_durable(shared: &Shared, batch: &[Pending]) {
    let mut mark = shared.durable.lock();
    let newest = batch
        .iter()
        .filter(|p| p.epoch == mark.epoch)
        .filter_map(|p| p.last_index)
        .max();
    if let Some(index) = newest {
        mark.index = mark.index.max(index + 1);
        shared.durable_index.store(mark.index, Ordering::Release);
    }
}
