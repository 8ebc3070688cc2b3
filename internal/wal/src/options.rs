//! Configuration and small result types of the public interface.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::WalError;

/// When appended data is fsynced, and when `on_durable` callbacks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncMode {
    /// Group commit: fsync as soon as anything is pending; callbacks run after
    /// the fsync that covered their data. Appends arriving during an fsync
    /// share the next one.
    #[default]
    Always,
    /// Fsync once the oldest pending append is `max_delay` old (or once
    /// [`BATCH_FLUSH_BYTES`] are pending); callbacks still run after the fsync.
    Batch {
        /// Upper bound on how long an append waits for its fsync to start.
        max_delay: Duration,
    },
    /// NOT durable on callback: callbacks run right after the write, on the
    /// appending thread, and data is fsynced every `interval` in the background.
    Periodic {
        /// Time between background fsyncs.
        interval: Duration,
    },
}

/// In [`FsyncMode::Batch`], pending bytes that trigger an fsync before `max_delay`.
pub const BATCH_FLUSH_BYTES: u64 = 4 * 1024 * 1024;

/// Options for [`crate::Wal::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment is rolled before a record would push it past this size.
    /// A single larger record still gets a segment of its own.
    pub segment_bytes: u64,
    /// Distance between sparse-index checkpoints inside a segment.
    pub index_interval_bytes: u64,
    /// Durability policy.
    pub fsync: FsyncMode,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 256 * 1024 * 1024,
            index_interval_bytes: 64 * 1024,
            fsync: FsyncMode::Always,
        }
    }
}

impl WalOptions {
    pub(crate) fn validate(&self) -> Result<(), WalError> {
        if self.segment_bytes <= crate::codec::SEGMENT_HEADER_BYTES {
            return Err(WalError::InvalidOptions(
                "segment_bytes must exceed the 8-byte header",
            ));
        }
        if self.index_interval_bytes == 0 {
            return Err(WalError::InvalidOptions(
                "index_interval_bytes must be positive",
            ));
        }
        Ok(())
    }
}

/// Callback told when an append is durable (or that it never will be).
pub type DurableCallback = Box<dyn FnOnce(Result<(), WalError>) + Send + 'static>;

/// Which sealed segments [`crate::Wal::remove_segments`] may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Delete segments whose newest record is older than this.
    pub max_age: Option<Duration>,
    /// Delete oldest segments until the log's total size is at most this.
    pub max_bytes: Option<u64>,
}

/// What [`crate::Wal::remove_segments`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RemovedSegments {
    /// Number of segment files deleted.
    pub segments: u64,
    /// Their total size.
    pub bytes: u64,
    /// Last index of the newest deleted segment.
    pub last_removed_index: Option<u64>,
}

/// What [`crate::Wal::open`] had to repair.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    /// Bytes cut from torn segment tails plus the sizes of dropped segments.
    pub dropped_bytes: u64,
    /// Segment files deleted because they were garbage or followed damage.
    pub dropped_segments: Vec<PathBuf>,
    /// Sealed segments whose `.idx` was missing or stale and was rebuilt.
    pub rebuilt_indexes: u64,
}
