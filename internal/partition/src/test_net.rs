//! An in-process network between Raft groups for tests: requests go straight
//! to the target's `Raft` handle. A node can be cut off both ways.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use openraft::error::{RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use openraft_legacy::network_v1::{
    Adapter, ChunkedSnapshotReceiver, InstallSnapshotError, InstallSnapshotRequest,
    InstallSnapshotResponse, RaftNetwork,
};
use parking_lot::Mutex;

use crate::types::{NodeId, Raft, TypeConfig};

#[derive(Default)]
struct Nodes {
    up: BTreeMap<NodeId, Raft>,
    cut: BTreeSet<NodeId>,
}

/// Delivers requests to the nodes that are up and not cut off.
#[derive(Clone, Default)]
pub(crate) struct Router(Arc<Mutex<Nodes>>);

impl Router {
    /// The network factory of node `me`.
    pub fn node(&self, me: NodeId) -> Net {
        Net {
            router: self.clone(),
            me,
        }
    }

    pub fn add(&self, id: NodeId, raft: Raft) {
        self.0.lock().up.insert(id, raft);
    }

    pub fn remove(&self, id: NodeId) {
        self.0.lock().up.remove(&id);
    }

    /// Cuts `id` off from every other node, both ways (or heals it).
    pub fn cut(&self, id: NodeId, cut: bool) {
        let mut nodes = self.0.lock();
        if cut {
            nodes.cut.insert(id);
        } else {
            nodes.cut.remove(&id);
        }
    }
}

pub(crate) struct Net {
    router: Router,
    me: NodeId,
}

pub(crate) struct Conn {
    router: Router,
    me: NodeId,
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for Net {
    type Network = Adapter<TypeConfig, Conn, tokio::fs::File>;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Self::Network {
        Adapter::new(Conn {
            router: self.router.clone(),
            me: self.me,
            target,
        })
    }
}

impl Conn {
    fn raft<E: std::error::Error>(&self) -> Result<Raft, RPCError<TypeConfig, E>> {
        let nodes = self.router.0.lock();
        let reachable = !nodes.cut.contains(&self.me) && !nodes.cut.contains(&self.target);
        let raft = nodes.up.get(&self.target).filter(|_| reachable).cloned();
        raft.ok_or_else(|| {
            let why = std::io::Error::other(format!("node {} is unreachable", self.target));
            RPCError::Unreachable(Unreachable::new(&why))
        })
    }

    fn remote<E: std::error::Error>(&self, e: E) -> RPCError<TypeConfig, E> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig, RaftError<TypeConfig>>>
    {
        let raft = self.raft()?;
        raft.append_entries(rpc).await.map_err(|e| self.remote(e))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<TypeConfig>,
        RPCError<TypeConfig, RaftError<TypeConfig, InstallSnapshotError>>,
    > {
        let raft = self.raft()?;
        ChunkedSnapshotReceiver::install_snapshot(&raft, rpc)
            .await
            .map_err(|e| self.remote(e))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig, RaftError<TypeConfig>>> {
        let raft = self.raft()?;
        raft.vote(rpc).await.map_err(|e| self.remote(e))
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.raft()?;
        raft.handle_transfer_leader(req)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }
}
