//! Configuration and the small result types of the public interface.

use chronos_wal::FsyncMode;

use crate::error::RaftLogError;

/// In [`FsyncMode::Batch`], pending bytes that trigger an fsync before `max_delay`.
pub const BATCH_FLUSH_BYTES: u64 = 4 * 1024 * 1024;

/// Options for [`crate::RaftLog::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftLogOptions {
    /// The active file is rolled before a write would push it past this size.
    /// A single larger write still goes into one file.
    pub file_bytes: u64,
    /// Durability policy for appends (votes are always fsynced).
    pub fsync: FsyncMode,
    /// `gc` rewrites live entries out of the oldest files while the log holds
    /// more files than this, so those files can be deleted. At least 1.
    pub max_files_before_rewrite: usize,
    /// Dead files kept to be written again instead of new ones (their blocks
    /// are allocated, so nothing is zero-filled first; see `spare.rs`). Files
    /// beyond this are deleted.
    pub spare_files: usize,
}

impl Default for RaftLogOptions {
    fn default() -> Self {
        RaftLogOptions {
            file_bytes: 64 * 1024 * 1024,
            fsync: FsyncMode::Always,
            max_files_before_rewrite: 16,
            spare_files: 4,
        }
    }
}

impl RaftLogOptions {
    pub(crate) fn validate(&self) -> Result<(), RaftLogError> {
        if self.file_bytes <= crate::codec::FILE_HEADER_BYTES {
            return Err(RaftLogError::InvalidOptions(
                "file_bytes must exceed the file header",
            ));
        }
        if self.max_files_before_rewrite == 0 {
            return Err(RaftLogError::InvalidOptions(
                "max_files_before_rewrite must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Callback told when an append is durable (or that it never will be).
pub type DurableCallback = Box<dyn FnOnce(Result<(), RaftLogError>) + Send + 'static>;

/// What one [`crate::RaftLog::gc`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GcReport {
    /// Files deleted.
    pub files_removed: u64,
    /// Files kept to be reused.
    pub files_kept: u64,
    /// Their total size.
    pub bytes_removed: u64,
    /// Live entries copied out of old files into the active file.
    pub entries_rewritten: u64,
}

/// Counters and sizes of a [`crate::RaftLog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RaftLogStats {
    /// Log files on disk.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Partitions holding anything.
    pub partitions: u64,
    /// Entries held over all partitions.
    pub entries: u64,
    /// fdatasync rounds completed (each may cover many appends).
    pub fsyncs: u64,
    /// `append` calls that wrote.
    pub appends: u64,
    /// Entries written by `append`.
    pub entries_appended: u64,
    /// Bytes written to log files (all record kinds, headers included).
    pub bytes_written: u64,
    /// Entries copied by gc.
    pub entries_rewritten: u64,
    /// Files deleted by gc.
    pub files_removed: u64,
    /// Rolls that reused a dead file instead of creating one.
    pub files_reused: u64,
    /// Dead files waiting to be reused.
    pub spare_files: u64,
}

/// How far the log files are known fsynced: everything in files before
/// `file_seq`, and the first `offset` bytes of file `file_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct DurablePosition {
    /// Sequence number of the file.
    pub file_seq: u64,
    /// Bytes of that file known durable.
    pub offset: u64,
}
