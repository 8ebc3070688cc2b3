//! What can go wrong in a partition, in terms the API layer maps to gRPC statuses.

use std::error::Error;
use std::io;

use chronos_raftlog::RaftLogError;
use chronos_store::StoreError;
use openraft::error::{ClientWriteError, Fatal};

use crate::free_space::FreeSpace;
use crate::types::{NodeId, TypeConfig};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PartitionError {
    /// This node does not lead the partition; `leader` is a hint for the caller.
    #[error("partition {partition} is led by {}", leader.map_or("no node right now".to_string(), |l| format!("node {l}")))]
    NotLeader {
        partition: u32,
        leader: Option<NodeId>,
    },
    /// Temporarily unable to serve (shutting down, no leader, log writer failed).
    #[error("{0}")]
    Unavailable(String),
    /// The disk is full; nothing was acknowledged.
    #[error("{0}")]
    StorageFull(String),
    /// The disk's free space is under the node's reserve: new events are
    /// refused (nothing stored) until space is freed.
    #[error(
        "partition {partition} takes no new events: {space}; nothing was stored, \
         and new events are taken again once space is freed"
    )]
    DiskLow { partition: u32, space: FreeSpace },
    /// A read of stored data failed.
    #[error("{0}")]
    Storage(String),
    /// The named thing (a consumer group) does not exist in this partition.
    #[error("{0}")]
    NotFound(String),
    /// The named thing is in use: a consumer group with members subscribed,
    /// or with a seek of it still applying.
    #[error("{0}")]
    InUse(String),
    /// The node already runs as much of this work at once as it is
    /// configured to (replays); the caller may retry once some ends.
    #[error("{0}")]
    Busy(String),
}

/// True when a full disk is behind `e`: an I/O error of kind `StorageFull`
/// anywhere in its chain of causes, or a storage crate's error that records
/// one (a poisoned node log, RocksDB's no-space error, openraft's copy).
pub(crate) fn caused_by_full_disk(mut e: &(dyn Error + 'static)) -> bool {
    loop {
        let full = if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::StorageFull {
                return true;
            }
            // `source()` of a wrapping io::Error skips the error it wraps.
            if let Some(inner) = io.get_ref() {
                e = inner;
                continue;
            }
            false
        } else if let Some(s) = e.downcast_ref::<StoreError>() {
            s.is_disk_full()
        } else if let Some(r) = e.downcast_ref::<RaftLogError>() {
            r.io_kind() == Some(io::ErrorKind::StorageFull)
        } else if let Some(c) = e.downcast_ref::<StorageCause>() {
            c.disk_full
        } else {
            false
        };
        if full {
            return true;
        }
        match e.source() {
            Some(next) => e = next,
            None => return false,
        }
    }
}

/// What openraft keeps of a storage failure that stops a Raft group (its
/// `ErrorSource`): the message, and whether a full disk caused it, decided
/// from the error's types when openraft takes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct StorageCause {
    message: String,
    disk_full: bool,
}

impl openraft::error::ErrorSource for StorageCause {
    fn from_error<E: Error + 'static>(error: &E) -> Self {
        let mut message = error.to_string();
        let mut cause = error.source();
        while let Some(c) = cause {
            let text = c.to_string();
            if !message.contains(&text) {
                message = format!("{message}: {text}");
            }
            cause = c.source();
        }
        StorageCause {
            message,
            disk_full: caused_by_full_disk(error),
        }
    }

    fn from_string(msg: impl ToString) -> Self {
        StorageCause {
            message: msg.to_string(),
            disk_full: false,
        }
    }
}

impl PartitionError {
    pub fn storage(partition: u32, e: &(dyn Error + 'static)) -> PartitionError {
        let msg = format!("partition {partition}: storage error: {e}");
        if caused_by_full_disk(e) {
            PartitionError::StorageFull(msg)
        } else {
            PartitionError::Storage(msg)
        }
    }

    /// The Raft group stopped; a storage failure (a failed fsync or write) is why.
    pub fn from_fatal(partition: u32, fatal: &Fatal<TypeConfig>) -> PartitionError {
        let msg = format!("partition {partition} cannot accept writes: {fatal}");
        if caused_by_full_disk(fatal) {
            PartitionError::StorageFull(msg)
        } else {
            PartitionError::Unavailable(msg)
        }
    }

    /// Why a partition whose Raft group is in `state` no longer answers: a
    /// Raft group stopped by a failure says which; one stopped on purpose (or not
    /// yet stopped, its owner gone) is shutting down.
    pub fn from_running_state(
        partition: u32,
        state: &Result<(), Fatal<TypeConfig>>,
    ) -> PartitionError {
        match state {
            Err(Fatal::Stopped) | Ok(()) => {
                PartitionError::Unavailable(format!("partition {partition} is shutting down"))
            }
            Err(fatal) => PartitionError::from_fatal(partition, fatal),
        }
    }

    pub fn from_write_error(partition: u32, e: &ClientWriteError<TypeConfig>) -> PartitionError {
        match e {
            ClientWriteError::ForwardToLeader(f) => PartitionError::NotLeader {
                partition,
                leader: f.leader_id,
            },
            other => PartitionError::Unavailable(format!("partition {partition}: {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use chronos_raftlog::{Poison, RaftLogError};
    use openraft::error::{ErrorSource, Fatal};
    use openraft::StorageError;

    use super::{PartitionError, StorageCause};

    fn full() -> io::Error {
        io::Error::from(io::ErrorKind::StorageFull)
    }

    #[test]
    fn a_full_disk_is_found_by_type_through_every_wrapper() {
        let io_err = || {
            io::Error::other(RaftLogError::Io {
                op: "write",
                source: full(),
            })
        };
        assert!(matches!(
            PartitionError::storage(3, &full()),
            PartitionError::StorageFull(_)
        ));
        assert!(matches!(
            PartitionError::storage(3, &io_err()),
            PartitionError::StorageFull(_)
        ));
        // The log refused writes after the failure: the kind is kept.
        let poisoned = RaftLogError::Poisoned(Poison {
            message: "fdatasync: no room".into(),
            io_kind: Some(io::ErrorKind::StorageFull),
        });
        assert!(matches!(
            PartitionError::storage(3, &io::Error::other(poisoned)),
            PartitionError::StorageFull(_)
        ));
        // The words alone are not a full disk.
        let lookalike = io::Error::other("No space left on device (ENOSPC, StorageFull)");
        assert!(matches!(
            PartitionError::storage(3, &lookalike),
            PartitionError::Storage(_)
        ));
    }

    #[test]
    fn a_raft_group_stopped_by_a_full_disk_answers_storage_full() {
        // As openraft builds it from what the log store returned.
        let returned = io::Error::other(RaftLogError::Io {
            op: "write",
            source: full(),
        });
        let fatal = Fatal::StorageError(StorageError::write_logs(StorageCause::from_error(
            &returned,
        )));
        let e = PartitionError::from_fatal(2, &fatal);
        assert!(matches!(e, PartitionError::StorageFull(_)), "{e:?}");
        assert!(e.to_string().contains("write"), "{e}");

        let other = io::Error::other(RaftLogError::Io {
            op: "write",
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        });
        let fatal = Fatal::StorageError(StorageError::write_logs(StorageCause::from_error(&other)));
        assert!(matches!(
            PartitionError::from_fatal(2, &fatal),
            PartitionError::Unavailable(_)
        ));
    }
}
