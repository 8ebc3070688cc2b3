//! Zero-filling ahead of the writer. A background thread keeps the active
//! file written with zeros (and fsynced) a few MiB past its end, so appends
//! overwrite blocks that are allocated and on disk: their fdatasync then
//! flushes data only, with no journal commit for new blocks or a new size,
//! and writeback never holds a page an append wants while it allocates.
//! Replay reads a zero length field as the end of a file's records.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::error::Poison;
use crate::log::Shared;

/// How far past the written end the zeros reach (never past `file_bytes`).
pub(crate) const AHEAD_BYTES: u64 = 8 * 1024 * 1024;
/// Zeros written per step. Each step holds the writer lock (an append
/// must not land where zeros are about to go), so it is kept short.
const STEP_BYTES: u64 = 512 * 1024;

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
    loop {
        let file = {
            let mut inner = shared.inner.lock();
            loop {
                if inner.stopping {
                    return;
                }
                let active = &inner.files[&inner.active];
                if active.zeroed < target(active.len, file_bytes) && !inner.prealloc_failed {
                    break;
                }
                let wake = Arc::clone(&inner.prealloc_wake);
                wake.wait(&mut inner);
            }
            Arc::clone(&inner.files[&inner.active].file)
        };
        let mut wrote = false;
        loop {
            let mut inner = shared.inner.lock();
            if inner.stopping {
                return;
            }
            let seq = inner.active;
            let active = inner.files.get_mut(&seq).expect("active file is held");
            if !Arc::ptr_eq(&active.file, &file) {
                break; // rolled meanwhile; the loop above picks the new file
            }
            let start = active.zeroed.max(active.len);
            let end = target(active.len, file_bytes).min(start + STEP_BYTES);
            if start >= end {
                break;
            }
            // Under the writer lock: the writer's next record goes at
            // `len`, and every byte from `start` on is unwritten.
            if let Err(e) = file.write_all_at(&ZEROS[..(end - start) as usize], start) {
                tracing::warn!(error = %e, "raft log: zero-filling ahead failed; appends extend the file");
                inner.prealloc_failed = true;
                break;
            }
            active.zeroed = end;
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
