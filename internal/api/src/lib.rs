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
mod cancel;
mod consume;
mod describe;
mod events;
mod forward;
pub mod gateway;
pub mod guard;
mod inspect;
mod roster;
mod schedules;
mod shares;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use chronos_partition::Partition;
use chronos_proto::v1::admin_service_server::AdminServiceServer;
use chronos_proto::v1::event_service_server::EventServiceServer;
use tonic::service::interceptor::InterceptedService;
use tonic::Status;

pub use admin::Admin;
pub use chronos_placement::Router;
pub use events::Events;
pub use validate::Limits;

/// The partitions this node holds, in id order: all of them on a single
/// node, its replicas in a cluster (which come and go as replicas move).
#[derive(Default)]
pub struct Hosted(parking_lot::RwLock<Arc<Vec<Arc<Partition>>>>);

impl Hosted {
    pub fn new(mut partitions: Vec<Arc<Partition>>) -> Hosted {
        partitions.sort_by_key(|p| p.id());
        Hosted(parking_lot::RwLock::new(Arc::new(partitions)))
    }

    /// The partitions held now.
    pub fn all(&self) -> Arc<Vec<Arc<Partition>>> {
        self.0.read().clone()
    }

    pub fn get(&self, id: u32) -> Option<Arc<Partition>> {
        let all = self.0.read();
        all.binary_search_by_key(&id, |p| p.id())
            .ok()
            .map(|i| all[i].clone())
    }

    /// Adds a replica opened here (one of that id must not be held).
    pub fn insert(&self, partition: Arc<Partition>) {
        let mut all = self.0.write();
        let mut next: Vec<Arc<Partition>> = all.as_ref().clone();
        let at = match next.binary_search_by_key(&partition.id(), |p| p.id()) {
            Ok(_) => panic!("partition {} is held twice", partition.id()),
            Err(at) => at,
        };
        next.insert(at, partition);
        *all = Arc::new(next);
    }

    /// Stops serving `id` here; the replica, for the caller to shut down.
    pub fn remove(&self, id: u32) -> Option<Arc<Partition>> {
        let mut all = self.0.write();
        let at = all.binary_search_by_key(&id, |p| p.id()).ok()?;
        let mut next: Vec<Arc<Partition>> = all.as_ref().clone();
        let gone = next.remove(at);
        *all = Arc::new(next);
        Some(gone)
    }
}

/// The partitions this node serves and how requests reach them.
pub struct Node {
    pub node_id: u64,
    pub partitions: Hosted,
    /// This node's replica of the roster group (the cluster's node list);
    /// `None` on a single node.
    pub roster: Option<Arc<Partition>>,
    pub router: Router,
    pub limits: Limits,
    /// Longest a publish waits for its partition before answering UNAVAILABLE.
    pub publish_timeout: Duration,
    pub grpc_addr: String,
    /// Unacked deliveries a member may hold when it asks for 0.
    pub default_max_inflight: u32,
    /// The other nodes and the placement; `None` on a single node.
    pub cluster: Option<gateway::Cluster>,
    /// This node's clock against its peers' (always within bounds alone).
    pub clock: chronos_clock::Clock,
    /// Set when the node begins to stop: subscriptions end (clients
    /// subscribe again elsewhere) and `/ready` says so.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// The node's leadership handoffs (`Rebalance` starts them at once).
    pub handoffs: chronos_partition::Handoffs,
    /// Authentication, authorization, quotas and audit at the edge.
    pub guard: guard::Guard,
    /// Replays reading on this node, bounded by `limits.max_replays`.
    pub replays: chronos_partition::ReplayReaders,
}

impl Node {
    /// Checks that partition `id` exists; `field` names it, and is called
    /// only for the error (an ack's item checks one per delivery id).
    fn partition_id(&self, field: impl FnOnce() -> String, id: i64) -> Result<u32, Status> {
        u32::try_from(id)
            .ok()
            .filter(|&p| p < self.router.partitions())
            .ok_or_else(|| {
                status::invalid(
                    &field(),
                    format!(
                        "partition {id} does not exist; partitions are 0..{}",
                        self.router.partitions().saturating_sub(1)
                    ),
                )
            })
    }

    /// This node's replica of partition `id` (or of the roster group), if
    /// it holds one.
    pub fn local(&self, id: u32) -> Option<Arc<Partition>> {
        if id == chronos_placement::ROSTER_RAFT {
            return self.roster.clone();
        }
        self.partitions.get(id)
    }

    /// Every partition id of the cluster.
    pub fn all_partitions(&self) -> Vec<u32> {
        (0..self.router.partitions()).collect()
    }

    /// Largest message the public API (and so a forwarded call) carries.
    pub fn message_limit(&self) -> usize {
        // Large enough that an oversized payload reaches validation (and gets a
        // message naming the field); bounded so one request cannot take the heap.
        (64 << 20) + 2 * self.limits.max_payload_bytes
    }
}

/// The public services over one node, as a listener serves them: `gate`
/// sets each request's caller (authenticating clients on the public
/// listener; trusting the forwarding node on the node-to-node one).
pub fn services(
    node: Arc<Node>,
    gate: guard::Gate,
) -> (
    InterceptedService<EventServiceServer<events::Events>, guard::Gate>,
    InterceptedService<AdminServiceServer<admin::Admin>, guard::Gate>,
) {
    let limit = node.message_limit();
    let events = EventServiceServer::new(events::Events::new(node.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let admin = AdminServiceServer::new(admin::Admin::new(node));
    (
        InterceptedService::new(events, gate.clone()),
        InterceptedService::new(admin, gate),
    )
}
