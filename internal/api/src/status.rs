//! The one place where internal errors become gRPC statuses.

use chronos_partition::{CancelOutcome, PartitionError};
use tonic::Status;

/// Metadata key carrying the id of the node that leads the partition.
pub const LEADER_HINT: &str = "chronos-leader";

pub fn from_partition(e: PartitionError) -> Status {
    match &e {
        PartitionError::NotLeader { leader, .. } => {
            let mut status = Status::unavailable(e.to_string());
            if let Some(leader) = leader {
                if let Ok(v) = leader.to_string().parse() {
                    status.metadata_mut().insert(LEADER_HINT, v);
                }
            }
            status
        }
        PartitionError::Unavailable(_) => Status::unavailable(e.to_string()),
        PartitionError::StorageFull(_) | PartitionError::DiskLow { .. } => {
            Status::resource_exhausted(e.to_string())
        }
        PartitionError::Storage(_) => Status::internal(e.to_string()),
        PartitionError::NotFound(_) => Status::not_found(e.to_string()),
        PartitionError::InUse(_) => Status::failed_precondition(e.to_string()),
    }
}

/// The answer to a Cancel that found nothing to cancel.
pub fn cancel_refused(outcome: CancelOutcome, topic: &str, message_id: &str) -> Option<Status> {
    match outcome {
        CancelOutcome::Cancelled { .. } | CancelOutcome::AlreadyCancelled { .. } => None,
        CancelOutcome::NotFound => Some(Status::not_found(format!(
            "no event {message_id:?} on topic {topic:?} (within the dedup window); \
             if it was published with a key, pass that key"
        ))),
        CancelOutcome::AlreadyFired { offset } => Some(Status::failed_precondition(format!(
            "event {message_id:?} on topic {topic:?} (offset {offset}) already fired"
        ))),
    }
}
