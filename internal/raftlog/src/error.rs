//! The crate's error type. I/O errors keep their [`std::io::Error`] as the
//! source so callers can tell a full disk from other failures.

use std::io;

/// Errors returned by [`crate::RaftLog`].
#[derive(Debug, thiserror::Error)]
pub enum RaftLogError {
    /// An operating-system I/O call failed.
    #[error("raft log I/O error during {op}: {source}")]
    Io {
        /// What the log was doing.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The options cannot work.
    #[error("invalid raft log options: {0}")]
    InvalidOptions(&'static str),
    /// An append does not continue the partition's log (or is empty).
    #[error("partition {partition}: invalid append: {reason}")]
    InvalidAppend {
        /// The partition appended to.
        partition: u32,
        /// What was wrong.
        reason: String,
    },
    /// A payload or blob larger than a record may carry.
    #[error("record body of {len_bytes} bytes exceeds the maximum")]
    TooLarge {
        /// The body's size.
        len_bytes: usize,
    },
    /// A record read back for an entry did not check out.
    #[error("corrupt record in file {file_seq} at offset {offset}: {reason}")]
    Corrupt {
        /// Sequence number of the file.
        file_seq: u64,
        /// Offset of the record in the file.
        offset: u64,
        /// What was wrong.
        reason: &'static str,
    },
    /// An earlier write or fsync failed; the log refuses writes until reopened
    /// because what reached the disk is unknown.
    #[error("raft log refuses writes after an earlier failure: {0}")]
    Poisoned(Poison),
    /// The log was closed before the operation completed.
    #[error("raft log is closed")]
    Closed,
}

/// The failure that made the log refuse writes: its message and, for an
/// operating-system error, its kind (a full disk is `StorageFull`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Poison {
    /// What failed, as reported.
    pub message: String,
    /// The I/O error's kind, when an I/O call failed.
    pub io_kind: Option<io::ErrorKind>,
}

impl Poison {
    pub(crate) fn io(what: &str, e: &io::Error) -> Poison {
        Poison {
            message: format!("{what}: {e}"),
            io_kind: Some(e.kind()),
        }
    }
}

impl From<&RaftLogError> for Poison {
    fn from(e: &RaftLogError) -> Poison {
        match e {
            RaftLogError::Poisoned(p) => p.clone(),
            RaftLogError::Io { source, .. } => Poison {
                message: e.to_string(),
                io_kind: Some(source.kind()),
            },
            other => Poison {
                message: other.to_string(),
                io_kind: None,
            },
        }
    }
}

impl RaftLogError {
    /// The I/O error's kind when an I/O call failed, now or in the failure
    /// that poisoned the log (`StorageFull`: the disk is full).
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            RaftLogError::Io { source, .. } => Some(source.kind()),
            RaftLogError::Poisoned(p) => p.io_kind,
            _ => None,
        }
    }

    pub(crate) fn io(op: &'static str) -> impl FnOnce(io::Error) -> RaftLogError {
        move |source| RaftLogError::Io { op, source }
    }
}
