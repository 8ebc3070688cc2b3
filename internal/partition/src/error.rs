//! What can go wrong in a partition, in terms the API layer maps to gRPC statuses.

use openraft::error::{ClientWriteError, Fatal};

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
    /// A read of stored data failed.
    #[error("{0}")]
    Storage(String),
    /// The named thing (a consumer group) does not exist in this partition.
    #[error("{0}")]
    NotFound(String),
}

fn looks_like_disk_full(msg: &str) -> bool {
    msg.contains("No space left") || msg.contains("StorageFull") || msg.contains("ENOSPC")
}

impl PartitionError {
    pub fn storage(partition: u32, e: &dyn std::error::Error) -> PartitionError {
        let msg = format!("partition {partition}: storage error: {e}");
        if looks_like_disk_full(&msg) {
            PartitionError::StorageFull(msg)
        } else {
            PartitionError::Storage(msg)
        }
    }

    /// The Raft group stopped; a storage failure (a failed fsync or write) is why.
    pub fn from_fatal(partition: u32, fatal: &Fatal<TypeConfig>) -> PartitionError {
        let msg = format!("partition {partition} cannot accept writes: {fatal}");
        if looks_like_disk_full(&msg) {
            PartitionError::StorageFull(msg)
        } else {
            PartitionError::Unavailable(msg)
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
