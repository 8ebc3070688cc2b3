//! The public gRPC API of a node: `chronos.v1.EventService` and `AdminService`.
//!
//! Owns: input validation (every bad field named, nothing stored), routing of
//! events to partitions by consistent hashing, splitting batches by partition,
//! the mapping of internal errors to gRPC statuses (only in `status.rs`),
//! consumer streams spanning partitions (`consume.rs`), and the API's request
//! metrics.
//! Does not own: storage or Raft (that is `chronos-partition`), the listeners,
//! health, reflection and process lifecycle (that is the `chronos` binary).

mod admin;
mod consume;
mod events;
pub mod router;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use chronos_partition::Partition;
use chronos_proto::v1::admin_service_server::AdminServiceServer;
use chronos_proto::v1::event_service_server::EventServiceServer;
use tonic::Status;

pub use router::Router;
pub use validate::Limits;

/// The partitions this node serves and how requests reach them.
pub struct Node {
    pub node_id: u64,
    pub partitions: Vec<Arc<Partition>>,
    pub router: Router,
    pub limits: Limits,
    /// Longest a publish waits for its partition before answering UNAVAILABLE.
    pub publish_timeout: Duration,
    pub grpc_addr: String,
    /// Unacked deliveries a member may hold when it asks for 0.
    pub default_max_inflight: u32,
}

impl Node {
    fn partition(&self, field: &str, id: i64) -> Result<&Arc<Partition>, Status> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.partitions.get(i))
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "{field}: partition {id} does not exist; partitions are 0..{}",
                    self.partitions.len().saturating_sub(1)
                ))
            })
    }
}

/// The two public services over one node.
pub fn services(
    node: Arc<Node>,
) -> (
    EventServiceServer<events::Events>,
    AdminServiceServer<admin::Admin>,
) {
    // Large enough that an oversized payload reaches validation (and gets a
    // message naming the field); bounded so one request cannot take the heap.
    let limit = (64 << 20) + 2 * node.limits.max_payload_bytes;
    let events = EventServiceServer::new(events::Events::new(node.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let admin = AdminServiceServer::new(admin::Admin::new(node));
    (events, admin)
}
