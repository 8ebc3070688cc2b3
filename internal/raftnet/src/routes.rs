//! Which partitions' Raft groups this node runs, for the Raft service to route to.

use std::collections::HashMap;
use std::sync::Arc;

use chronos_partition::Raft;
use parking_lot::RwLock;

/// Registry `partition id -> Raft group` of the partitions open on this node.
/// Cheap to clone; every clone sees the same routes. A partition is inserted
/// once it opened and removed when it shuts down: an RPC for a partition not
/// here is answered `NOT_FOUND`, which the sender treats as unreachable.
#[derive(Clone, Default)]
pub struct RaftRoutes {
    rafts: Arc<RwLock<HashMap<u32, Raft>>>,
}

impl RaftRoutes {
    pub fn new() -> RaftRoutes {
        RaftRoutes::default()
    }

    /// Routes `partition`'s RPCs to `raft` (replacing an earlier Raft group of that id).
    pub fn insert(&self, partition: u32, raft: Raft) {
        self.rafts.write().insert(partition, raft);
    }

    /// Stops routing to `partition`; returns the Raft group it routed to.
    pub fn remove(&self, partition: u32) -> Option<Raft> {
        self.rafts.write().remove(&partition)
    }

    pub fn get(&self, partition: u32) -> Option<Raft> {
        self.rafts.read().get(&partition).cloned()
    }

    /// Ids of the registered partitions, ascending.
    pub fn ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.rafts.read().keys().copied().collect();
        ids.sort_unstable();
        ids
    }
}
