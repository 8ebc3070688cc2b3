//! The preparer thread. It keeps the active file written with zeros (and
//! fsynced) a few MiB past its end, so appends overwrite blocks that are
//! allocated and on disk: their fdatasync then flushes data only, with no
//! journal commit for new blocks or a new size, and writeback never holds a
//! page an append wants while it allocates. Replay reads a zero length field
//! as the end of a file's records. A reused file (`spare.rs`) is allocated
//! already and needs none of it.
//!
//! After each roll it also takes the files that died out of the log
//! (`spare::reclaim`), so the next roll finds a spare instead of a new file.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::error::Poison;
use crate::log::Shared;
use crate::spare;

enum Work {
    /// Zeros to write ahead in this (the active) file.
    Zeros(std::sync::Arc<std::fs::File>),
    /// A roll happened; older files may be dead.
    Reclaim,
}

/// How far past the written end the zeros reach (never past `file_bytes`).
pub(crate) const AHEAD_BYTES: u64 = 8 * 1024 * 1024;
/// Zeros written per step.
const STEP_BYTES: u64 = 512 * 1024;

/// The range being zero-filled, written outside the writer lock: a write
/// into the page cache can wait on the disk for milliseconds, and every
/// partition's appends and reads would wait with it. The range is taken
/// under the writer lock, past everything written; an append that would
/// reach it waits for it instead (it is megabytes ahead, so rarely).
#[derive(Default)]
pub(crate) struct Zeroing {
    /// (file sequence, start, end) of the zeros being written.
    range: Mutex<Option<(u64, u64, u64)>>,
    done: Condvar,
}

impl Zeroing {
    /// Returns once no zeros are being written over `start..end` of file `seq`.
    pub(crate) fn wait_clear(&self, seq: u64, start: u64, end: u64) {
        let mut range = self.range.lock();
        while matches!(*range, Some((s, a, b)) if s == seq && start < b && a < end) {
            self.done.wait(&mut range);
        }
    }

    fn begin(&self, seq: u64, start: u64, end: u64) {
        *self.range.lock() = Some((seq, start, end));
    }

    fn end(&self) {
        *self.range.lock() = None;
        self.done.notify_all();
    }
}

static ZEROS: [u8; STEP_BYTES as usize] = [0; STEP_BYTES as usize];

/// Where the zeros should reach for a file written to `len` that rolls at
/// `file_bytes`.
pub(crate) fn target(len: u64, file_bytes: u64) -> u64 {
    (len + AHEAD_BYTES).min(file_bytes)
}

/// The thread's body; returns when the log shuts down. Failures only cost
/// the speed-up (appends then extend the file as without it) and are logged.
pub(crate) fn run(shared: Arc<Shared>) {
    let file_bytes = shared.opts.file_bytes;
    let zeroing = Arc::clone(&shared.inner.lock().zeroing);
    loop {
        let work = {
            let mut inner = shared.inner.lock();
            loop {
                if inner.stopping {
                    return;
                }
                let active = &inner.files[&inner.active];
                if active.allocated < target(active.len, file_bytes) && !inner.prealloc_failed {
                    break Work::Zeros(Arc::clone(&active.file));
                }
                if inner.rolled_since_reclaim {
                    inner.rolled_since_reclaim = false;
                    break Work::Reclaim;
                }
                let wake = Arc::clone(&inner.prealloc_wake);
                wake.wait(&mut inner);
            }
        };
        let file = match work {
            Work::Zeros(file) => file,
            Work::Reclaim => {
                match spare::reclaim(&shared) {
                    Ok(_) | Err(crate::RaftLogError::Closed) => {}
                    Err(e) => tracing::warn!(error = %e, "raft log: reclaiming dead files failed"),
                }
                continue;
            }
        };
        let mut wrote = false;
        loop {
            let (seq, start, end) = {
                let inner = shared.inner.lock();
                if inner.stopping {
                    return;
                }
                let seq = inner.active;
                let active = &inner.files[&seq];
                if !Arc::ptr_eq(&active.file, &file) {
                    break; // rolled meanwhile; the loop above picks the new file
                }
                let start = active.allocated.max(active.len);
                let end = target(active.len, file_bytes).min(start + STEP_BYTES);
                if start >= end {
                    break;
                }
                // Under the writer lock: the writer's next record goes at
                // `len`, and every byte from `start` on is unwritten.
                zeroing.begin(seq, start, end);
                (seq, start, end)
            };
            let written = file.write_all_at(&ZEROS[..(end - start) as usize], start);
            zeroing.end();
            let mut inner = shared.inner.lock();
            if let Err(e) = written {
                tracing::warn!(error = %e, "raft log: zero-filling ahead failed; appends extend the file");
                inner.prealloc_failed = true;
                break;
            }
            if let Some(f) = inner.files.get_mut(&seq) {
                f.allocated = f.allocated.max(end);
            }
            wrote = true;
        }
        // Makes the new blocks and size durable now, so the appends that
        // reach them later need no journal commit.
        if wrote {
            // This also flushes the log's own dirty pages; a failure here
            // may be the only report of theirs, so it poisons the log.
            if let Err(e) = file.sync_data() {
                let poison = Poison::io("fsync of zero-filled space", &e);
                tracing::error!(error = %poison, "raft log fsync failed; refusing further writes");
                let mut inner = shared.inner.lock();
                inner.prealloc_failed = true;
                inner.poisoned.get_or_insert(poison);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    use super::Zeroing;

    #[test]
    fn a_write_waits_only_for_zeros_over_its_own_bytes() {
        let z = Arc::new(Zeroing::default());
        z.begin(1, 100, 200);
        // Before the range, after it, and in another file: no wait.
        z.wait_clear(1, 0, 100);
        z.wait_clear(1, 200, 300);
        z.wait_clear(2, 150, 160);
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let z = Arc::clone(&z);
            std::thread::spawn(move || {
                z.wait_clear(1, 90, 110);
                tx.send(()).unwrap();
            })
        };
        assert!(
            rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "a write overlapping the zeros went ahead of them"
        );
        z.end();
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the write goes on once the zeros are written");
        waiter.join().unwrap();
    }
}
