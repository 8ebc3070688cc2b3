//! The receiving side of the Raft service: finds the partition's Raft group in
//! [`RaftRoutes`] and hands it the decoded openraft request.

use chronos_partition::{Raft, TypeConfig};
use chronos_proto::raft::raft_service_server::{RaftService, RaftServiceServer};
use chronos_proto::raft::{
    HeldReply, HeldRequest, MembershipReply, MembershipRequest, RaftReply, RaftRequest,
};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use openraft_legacy::network_v1::{ChunkedSnapshotReceiver, InstallSnapshotRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::routes::RaftRoutes;
use crate::wire::{self, MAX_MESSAGE_BYTES};

/// The Raft service over `routes`, ready to add to a tonic server on the
/// node-to-node listener. While `may_lead` is false (the node is stopping,
/// or its clock is off) leadership handed to it is refused, so a leader that
/// hands over to it does not get it straight back.
pub fn service(routes: RaftRoutes, may_lead: watch::Receiver<bool>) -> RaftServiceServer<Service> {
    RaftServiceServer::new(Service { routes, may_lead })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Answers openraft's RPCs for every Raft group in [`RaftRoutes`].
pub struct Service {
    routes: RaftRoutes,
    may_lead: watch::Receiver<bool>,
}

impl Service {
    /// The addressed group and its decoded request; a partition not open
    /// here is `NOT_FOUND`, a payload that is not the expected request
    /// `INVALID_ARGUMENT`.
    fn unpack<T: DeserializeOwned>(
        &self,
        request: Request<RaftRequest>,
        what: &str,
    ) -> Result<(Raft, T), Status> {
        let RaftRequest { partition, payload } = request.into_inner();
        let raft = self.routes.get(partition).ok_or_else(|| {
            Status::not_found(format!("partition {partition} is not open on this node"))
        })?;
        let rpc = wire::decode(&payload).map_err(|e| {
            Status::invalid_argument(format!("partition {partition}: undecodable {what}: {e}"))
        })?;
        Ok((raft, rpc))
    }
}

/// Openraft's answer, error included, as the reply payload.
fn reply<T: Serialize>(result: &T) -> Result<Response<RaftReply>, Status> {
    let payload =
        wire::encode(result).map_err(|e| Status::internal(format!("encoding the answer: {e}")))?;
    Ok(Response::new(RaftReply {
        payload: payload.into(),
    }))
}

#[tonic::async_trait]
impl RaftService for Service {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let (raft, rpc): (_, AppendEntriesRequest<TypeConfig>) =
            self.unpack(request, "append-entries request")?;
        reply(&raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let (raft, rpc): (_, VoteRequest<_>) = self.unpack(request, "vote request")?;
        reply(&raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let (raft, rpc): (_, InstallSnapshotRequest<TypeConfig>) =
            self.unpack(request, "install-snapshot request")?;
        reply(&ChunkedSnapshotReceiver::install_snapshot(&raft, rpc).await)
    }

    async fn transfer_leader(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let (raft, rpc): (_, TransferLeaderRequest<TypeConfig>) =
            self.unpack(request, "transfer-leader request")?;
        if !*self.may_lead.borrow() {
            return Err(Status::unavailable(
                "this node may not lead now (stopping, or its clock is off)",
            ));
        }
        reply(&raft.handle_transfer_leader(rpc).await)
    }

    async fn membership(
        &self,
        request: Request<MembershipRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let partition = request.into_inner().partition;
        let Some(raft) = self.routes.get(partition) else {
            return Ok(Response::new(MembershipReply::default()));
        };
        let m = raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        Ok(Response::new(MembershipReply {
            held: true,
            leader: m.current_leader,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            joint: membership.get_joint_config().len() > 1,
        }))
    }

    async fn held(&self, _: Request<HeldRequest>) -> Result<Response<HeldReply>, Status> {
        Ok(Response::new(HeldReply {
            partitions: self.routes.ids(),
        }))
    }
}

/// Asks the node behind `channel` how it sees `partition`'s membership.
pub async fn membership(
    channel: tonic::transport::Channel,
    partition: u32,
) -> Result<MembershipReply, Status> {
    let mut client = chronos_proto::raft::raft_service_client::RaftServiceClient::new(channel);
    let mut request = Request::new(MembershipRequest { partition });
    request.set_timeout(std::time::Duration::from_secs(2));
    Ok(client.membership(request).await?.into_inner())
}

/// Asks the node behind `channel` which Raft groups it has open.
pub async fn held(channel: tonic::transport::Channel) -> Result<Vec<u32>, Status> {
    let mut client = chronos_proto::raft::raft_service_client::RaftServiceClient::new(channel);
    let mut request = Request::new(HeldRequest {});
    request.set_timeout(std::time::Duration::from_secs(2));
    Ok(client.held(request).await?.into_inner().partitions)
}
