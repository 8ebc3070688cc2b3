//! The one place where internal errors become gRPC statuses.

use chronos_partition::{CancelOutcome, PartitionError};
use tonic::Status;

/// Metadata key carrying the id of the node that leads the partition.
pub const LEADER_HINT: &str = "chronos-leader";

/// Metadata key naming the request field an INVALID_ARGUMENT is about
/// (`event.topic`, `events[3].payload`), so a client need not parse the message.
pub const FIELD: &str = "chronos-field";

/// INVALID_ARGUMENT about `field`: the message starts with the field, and
/// the field is in the `chronos-field` metadata (when it is printable ASCII).
pub fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    let mut status = Status::invalid_argument(format!("{field}: {why}"));
    if let Ok(v) = field.parse() {
        status.metadata_mut().insert(FIELD, v);
    }
    status
}

/// The field an INVALID_ARGUMENT names in its metadata.
pub fn field_of(status: &Status) -> Option<&str> {
    status.metadata().get(FIELD).and_then(|v| v.to_str().ok())
}

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
        PartitionError::StorageFull(_)
        | PartitionError::DiskLow { .. }
        | PartitionError::Busy(_) => Status::resource_exhausted(e.to_string()),
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
