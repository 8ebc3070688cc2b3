//! The Raft network of a single-voter Raft group: there is nobody to talk to.
//!
//! openraft needs a network factory even when the Raft group has one voter; every
//! call answers "unreachable". A Raft group of several voters uses
//! `chronos-raftnet`'s gRPC transport instead.

use std::future::Future;

use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use crate::types::{NodeId, Snapshot, TypeConfig, Vote};

#[derive(Debug, Clone, Default)]
pub struct SoloNetwork;

fn unreachable(target: NodeId) -> Unreachable<TypeConfig> {
    let why = std::io::Error::other(format!(
        "node {target}: this partition's Raft group has a single voter"
    ));
    Unreachable::new(&why)
}

pub struct NoPeer(NodeId);

impl RaftNetworkFactory<TypeConfig> for SoloNetwork {
    type Network = NoPeer;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> NoPeer {
        NoPeer(target)
    }
}

impl RaftNetworkV2<TypeConfig> for NoPeer {
    type SnapshotData = tokio::fs::File;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(unreachable(self.0)))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(unreachable(self.0)))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        Err(StreamingError::Unreachable(unreachable(self.0)))
    }
}
