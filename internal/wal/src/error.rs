//! The crate's error type. Every fallible public call returns [`WalError`];
//! I/O errors keep their [`std::io::Error`] (and so its `ErrorKind`) as the
//! source so callers can tell disk-full from other failures.

use std::io;
use std::path::PathBuf;

/// Why a record on disk was judged invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CorruptReason {
    /// Fewer bytes remain than a record frame (length + CRC + header) needs.
    #[error("short record frame")]
    ShortFrame,
    /// The length prefix exceeds [`crate::MAX_RECORD_BYTES`].
    #[error("record length {len_bytes} exceeds the maximum")]
    LengthTooLarge {
        /// The length read from disk.
        len_bytes: u64,
    },
    /// The payload runs past the end of the readable data.
    #[error("short record payload")]
    ShortPayload,
    /// The stored CRC does not match the header and payload.
    #[error("CRC mismatch")]
    CrcMismatch,
    /// The record's index does not follow the previous record's.
    #[error("non-contiguous index: expected {expected}, found {found}")]
    NonContiguous {
        /// The index the record should have had.
        expected: u64,
        /// The index it had.
        found: u64,
    },
}

/// Errors returned by the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An operating-system I/O call failed. `source.kind()` is preserved
    /// (e.g. `StorageFull` on a full disk).
    #[error("WAL I/O error during {op} on {}: {source}", path.display())]
    Io {
        /// What the WAL was doing.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An append's first record does not follow the log's last index.
    #[error("non-contiguous append: expected index {expected}, got {got}")]
    NonContiguous {
        /// The index the record had to have.
        expected: u64,
        /// The index it had.
        got: u64,
    },
    /// A record's `seq` is lower than the previous record's.
    #[error("seq went backwards: previous {previous}, got {got}")]
    SeqRegression {
        /// The previous record's seq.
        previous: u64,
        /// The offending seq.
        got: u64,
    },
    /// A record's index would overflow.
    #[error("invalid record index {index}")]
    InvalidIndex {
        /// The offending index.
        index: u64,
    },
    /// A payload is larger than [`crate::MAX_RECORD_BYTES`].
    #[error("record payload of {len_bytes} bytes exceeds the maximum of {max_bytes}")]
    RecordTooLarge {
        /// The payload's length.
        len_bytes: u64,
        /// The limit.
        max_bytes: u64,
    },
    /// A stored record failed validation while being read.
    #[error("corrupt record in {} at byte {pos_bytes}: {reason}", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the record inside the file.
        pos_bytes: u64,
        /// What was wrong.
        reason: CorruptReason,
    },
    /// A segment file was written by an unknown format version.
    #[error("segment {} has unsupported format version {version}", path.display())]
    UnsupportedVersion {
        /// The segment file.
        path: PathBuf,
        /// The version found.
        version: u16,
    },
    /// A read asked for an index that retention has already removed.
    #[error("index {requested} is below the first index {first}")]
    BelowFirstIndex {
        /// The index asked for.
        requested: u64,
        /// The first index still stored.
        first: u64,
    },
    /// The options passed to [`crate::Wal::open`] are unusable.
    #[error("invalid WAL options: {0}")]
    InvalidOptions(&'static str),
    /// An earlier write or fsync failed; the WAL accepts no more writes.
    /// Recovery is a restart (reopen), which re-reads what is on disk.
    #[error("WAL is in the failed state after an earlier I/O error; reopen to recover")]
    Failed,
    /// The WAL was closed.
    #[error("WAL is closed")]
    Closed,
}

impl WalError {
    /// The `io::ErrorKind` if this is an I/O error.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            WalError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        WalError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// A same-kind copy, used to hand one failure to every callback of a batch
    /// (`io::Error` is not `Clone`).
    pub(crate) fn duplicate(&self) -> WalError {
        match self {
            WalError::Io { op, path, source } => WalError::Io {
                op,
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            _ => WalError::Failed,
        }
    }
}
