//! The sending side: openraft's network factory for one partition's Raft group,
//! over the node's shared [`Peers`] channels.
//!
//! Failures are reported the way openraft backs off from them: no channel to
//! the node, a refused connection or a Raft group not open there is `Unreachable`
//! (retried after a pause); a call past its time-to-live is `Timeout`; any
//! other transport failure is `Network`; an error openraft returned on the
//! other node comes back as that error, inside `RemoteError` — except that a
//! stopped Raft group there (`Fatal`) is `Unreachable` too, with the remote error
//! as its cause: openraft retries a `RemoteError` at once, without backoff.

use std::time::Duration;

use chronos_partition::{LogId, NodeId, TypeConfig};
use chronos_proto::raft::raft_service_client::RaftServiceClient;
use chronos_proto::raft::RaftRequest;
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes};
use openraft_legacy::network_v1::{
    Adapter, InstallSnapshotError, InstallSnapshotRequest, InstallSnapshotResponse, RaftNetwork,
};
use serde::de::DeserializeOwned;
use tonic::transport::Channel;
use tonic::Code;

use crate::peers::Peers;
use crate::wire::{self, MAX_MESSAGE_BYTES};

/// Most bytes of entries one append-entries request carries; a request with
/// more carries a prefix of them (at least one entry) and reports
/// `PartialSuccess`. openraft allows a request one heartbeat interval.
const APPEND_BUDGET_BYTES: usize = 4 << 20;
/// The budget shrinks (halving) to no less than this while requests time out.
const MIN_APPEND_BUDGET_BYTES: usize = 64 << 10;

type Error<E = openraft::error::Infallible> = RPCError<TypeConfig, RaftError<TypeConfig, E>>;

/// openraft's network factory for partition `partition`: a client per target
/// node, found by node id in [`Peers`] (the membership's `BasicNode` carries
/// no address). Snapshots go in chunks (openraft-legacy's adapter), so a
/// large one never has to fit in one message.
#[derive(Clone)]
pub struct Network {
    partition: u32,
    peers: Peers,
}

impl Network {
    pub fn new(partition: u32, peers: Peers) -> Network {
        Network { partition, peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Adapter<TypeConfig, Connection, tokio::fs::File>;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Self::Network {
        Adapter::new(Connection {
            partition: self.partition,
            me: self.peers.me(),
            target,
            peers: self.peers.clone(),
            client: None,
            append_budget: APPEND_BUDGET_BYTES,
        })
    }
}

fn client_of(channel: Channel) -> RaftServiceClient<Channel> {
    RaftServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// One partition's Raft calls to one node; the channel under it is shared.
pub struct Connection {
    partition: u32,
    me: NodeId,
    target: NodeId,
    peers: Peers,
    /// The peer's channel and the `Peers` version it was taken at: openraft
    /// keeps a connection for the life of a replication stream, while the
    /// channel is replaced when the node's address or the certificates
    /// change. Looked up at each call until the node is known (it may be in
    /// a Raft group's membership before this node has its address).
    client: Option<(u64, RaftServiceClient<Channel>)>,
    /// Bytes of entries the next append-entries may carry: halved when one
    /// times out, doubled back after one succeeds, so a follower that is
    /// behind catches up in requests that fit the heartbeat interval instead
    /// of timing out on the same large request again and again.
    append_budget: usize,
}

/// Why a call got no answer from openraft on the other node.
enum Failure {
    Unreachable(Unreachable<TypeConfig>),
    Timeout(Timeout<TypeConfig>),
    Network(NetworkError<TypeConfig>),
}

impl Failure {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<TypeConfig, E> {
        match self {
            Failure::Unreachable(e) => RPCError::Unreachable(e),
            Failure::Timeout(e) => RPCError::Timeout(e),
            Failure::Network(e) => RPCError::Network(e),
        }
    }
}

impl Connection {
    /// Sends `payload` as `action` within `ttl`; openraft's answer, decoded.
    async fn send<T: DeserializeOwned>(
        &mut self,
        action: RPCTypes,
        payload: Vec<u8>,
        ttl: Duration,
    ) -> Result<T, Failure> {
        let version = self.peers.version();
        if self.client.as_ref().is_none_or(|(v, _)| *v != version) {
            self.client = self
                .peers
                .channel(self.target)
                .map(|c| (version, client_of(c)));
        }
        let Some((_, client)) = self.client.as_mut() else {
            let why = std::io::Error::other(format!("node {} is not a known peer", self.target));
            return Err(Failure::Unreachable(Unreachable::new(&why)));
        };
        let mut request = tonic::Request::new(RaftRequest {
            partition: self.partition,
            payload: payload.into(),
        });
        // The receiver gives up too once we stopped waiting.
        request.set_timeout(ttl);
        // openraft leaves timeouts to the network.
        let sent = tokio::time::timeout(ttl, async {
            match action {
                RPCTypes::AppendEntries => client.append_entries(request).await,
                RPCTypes::Vote => client.vote(request).await,
                RPCTypes::InstallSnapshot => client.install_snapshot(request).await,
                RPCTypes::TransferLeader => client.transfer_leader(request).await,
            }
        })
        .await;
        let reply = match sent {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => return Err(self.failed(action, ttl, status)),
            Err(_elapsed) => return Err(self.timeout(action, ttl)),
        };
        wire::decode(&reply.payload).map_err(|e| Failure::Network(NetworkError::new(&e)))
    }

    /// Sends a request whose answer is openraft's `Result<R, RaftError<E>>`.
    async fn call<R, E>(
        &mut self,
        action: RPCTypes,
        payload: Vec<u8>,
        ttl: Duration,
    ) -> Result<R, Error<E>>
    where
        R: DeserializeOwned,
        E: std::error::Error + DeserializeOwned + 'static,
    {
        let answer: Result<R, RaftError<TypeConfig, E>> = self
            .send(action, payload, ttl)
            .await
            .map_err(Failure::into_rpc)?;
        answer.map_err(|e| {
            let stopped = matches!(e, RaftError::Fatal(_));
            let remote = RemoteError::new(self.target, e);
            if stopped {
                // The Raft group there stopped (shut down, or a storage failure):
                // retrying at once cannot help, so openraft should back off.
                RPCError::Unreachable(Unreachable::new(&remote))
            } else {
                RPCError::RemoteError(remote)
            }
        })
    }

    fn adapt_append_budget(&mut self, timed_out: bool) {
        self.append_budget = if timed_out {
            (self.append_budget / 2).max(MIN_APPEND_BUDGET_BYTES)
        } else {
            self.append_budget
                .saturating_mul(2)
                .min(APPEND_BUDGET_BYTES)
        };
    }

    fn timeout(&self, action: RPCTypes, ttl: Duration) -> Failure {
        Failure::Timeout(Timeout {
            action,
            id: self.me,
            target: self.target,
            timeout: ttl,
        })
    }

    /// What a failed call means to openraft's retry policy.
    fn failed(&self, action: RPCTypes, ttl: Duration, status: tonic::Status) -> Failure {
        tracing::trace!(
            partition = self.partition,
            target = self.target,
            %action,
            "raft rpc failed: {status}"
        );
        match status.code() {
            // Connection refused or lost, or the Raft group is not open there (yet).
            Code::Unavailable | Code::NotFound => Failure::Unreachable(Unreachable::new(&status)),
            Code::DeadlineExceeded | Code::Cancelled => self.timeout(action, ttl),
            _ => Failure::Network(NetworkError::new(&status)),
        }
    }
}

/// Encodes `rpc`; one over `budget` bytes is cut to a prefix of its entries
/// that fits (at least one). Returns the payload and, when cut, the id of the
/// last entry it carries.
fn encode_append(
    mut rpc: AppendEntriesRequest<TypeConfig>,
    budget: usize,
) -> Result<(Vec<u8>, Option<LogId>), bincode::Error> {
    let whole = wire::encode(&rpc)?;
    if whole.len() <= budget || rpc.entries.len() <= 1 {
        return Ok((whole, None));
    }
    let sizes = rpc
        .entries
        .iter()
        .map(|entry| wire::encoded_len(entry).map(|n| n as usize))
        .collect::<Result<Vec<usize>, _>>()?;
    // What is not entries: vote, log ids, the length prefix.
    let mut bytes = whole.len().saturating_sub(sizes.iter().sum());
    let mut keep = 0;
    for len in sizes {
        if keep > 0 && bytes + len > budget {
            break;
        }
        bytes += len;
        keep += 1;
    }
    rpc.entries.truncate(keep);
    let last = rpc.entries.last().map(|e| e.log_id);
    Ok((wire::encode(&rpc)?, last))
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, Error> {
        let (payload, cut_at) = encode_append(rpc, self.append_budget)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let answer = self
            .call(RPCTypes::AppendEntries, payload, option.hard_ttl())
            .await;
        match &answer {
            Ok(_) => self.adapt_append_budget(false),
            Err(RPCError::Timeout(_)) => self.adapt_append_budget(true),
            Err(_) => {}
        }
        let answer = answer?;
        Ok(match (answer, cut_at) {
            // Only the prefix was sent: that much matches now.
            (AppendEntriesResponse::Success, Some(last)) => {
                AppendEntriesResponse::PartialSuccess(Some(last))
            }
            (answer, _) => answer,
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<TypeConfig>, Error<InstallSnapshotError>> {
        let payload = wire::encode(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.call(RPCTypes::InstallSnapshot, payload, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, Error> {
        let payload = wire::encode(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.call(RPCTypes::Vote, payload, option.hard_ttl()).await
    }

    /// Tells the target that this leader hands it leadership; it campaigns
    /// once its log holds the leader's last entry.
    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let payload = wire::encode(&req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let answer: Result<TransferLeaderResponse<TypeConfig>, Fatal<TypeConfig>> = self
            .send(RPCTypes::TransferLeader, payload, option.hard_ttl())
            .await
            .map_err(Failure::into_rpc)?;
        answer.map_err(|fatal| RPCError::Unreachable(Unreachable::new(&fatal)))
    }
}

#[cfg(test)]
mod tests {
    use openraft::impls::Vote;
    use openraft::EntryPayload;

    use super::*;
    use crate::wire::tests::{entry, log_id, publish};

    fn request(entries: usize, events_each: usize) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(log_id(2, 9)),
            leader_commit: None,
            entries: (0..entries as u64)
                .map(|i| entry(10 + i, EntryPayload::Normal(publish(events_each, 1000))))
                .collect(),
        }
    }

    #[test]
    fn the_append_budget_halves_on_timeouts_and_recovers() {
        let mut c = Connection {
            partition: 0,
            me: 1,
            target: 2,
            peers: Peers::new(1, &[], None).unwrap(),
            client: None,
            append_budget: APPEND_BUDGET_BYTES,
        };
        for _ in 0..20 {
            c.adapt_append_budget(true);
        }
        assert_eq!(c.append_budget, MIN_APPEND_BUDGET_BYTES);
        for _ in 0..20 {
            c.adapt_append_budget(false);
        }
        assert_eq!(c.append_budget, APPEND_BUDGET_BYTES);
    }

    #[test]
    fn small_requests_go_whole() {
        let (payload, cut) = encode_append(request(64, 10), APPEND_BUDGET_BYTES).expect("encodes");
        assert!(cut.is_none());
        assert!(payload.len() < APPEND_BUDGET_BYTES);
    }

    #[test]
    fn large_requests_carry_a_prefix_within_budget() {
        // Ten entries of ~1 MB: four fit in 4 MiB.
        let (payload, cut) =
            encode_append(request(10, 1000), APPEND_BUDGET_BYTES).expect("encodes");
        assert!(payload.len() <= APPEND_BUDGET_BYTES, "{}", payload.len());
        let sent: AppendEntriesRequest<TypeConfig> = wire::decode(&payload).expect("decodes");
        assert!(!sent.entries.is_empty() && sent.entries.len() < 10);
        assert_eq!(cut, sent.entries.last().map(|e| e.log_id));
        // One entry larger than the budget still goes, alone.
        let (payload, cut) = encode_append(request(2, 6000), APPEND_BUDGET_BYTES).expect("encodes");
        assert!(payload.len() > APPEND_BUDGET_BYTES);
        assert_eq!(cut, Some(log_id(2, 10)));
    }
}
