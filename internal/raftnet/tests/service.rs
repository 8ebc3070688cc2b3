//! The Raft service and the Network's error paths, over real gRPC on loopback.

mod common;

use std::path::Path;
use std::time::Duration;

use chronos_partition::{NodeId, Partition, SoloNetwork, TypeConfig};
use chronos_proto::raft::raft_service_client::RaftServiceClient;
use chronos_proto::raft::RaftRequest;
use chronos_raftnet::{wire, Network, Peer, Peers, RaftRoutes};
use common::{options, raft_log, Server};
use openraft::error::{RPCError, RaftError};
use openraft::impls::Vote;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, VoteRequest, VoteResponse};
use openraft::BasicNode;
use openraft_legacy::network_v1::{
    InstallSnapshotError, InstallSnapshotRequest, RaftNetwork, SnapshotMeta,
};
use tokio::net::TcpListener;
use tonic::Code;

/// No call here is expected to time out; 3 MiB snapshot chunks in a debug
/// build beside the whole test suite once took more than 2 s.
const TTL: Duration = Duration::from_secs(15);
/// Above any term node 1 reaches by its own elections during a test.
const LEADER_TERM: u64 = 1000;

/// Node 1 serving partition `id` (in `dir`) of a group of `voters` (empty:
/// node 1 alone). It reaches no other node: with other voters it never leads.
async fn serving(id: u32, voters: &[NodeId], dir: &Path) -> anyhow::Result<(Partition, Server)> {
    let partition =
        Partition::open(options(id, 1, voters, dir, raft_log(dir)), SoloNetwork).await?;
    let routes = RaftRoutes::new();
    routes.insert(id, partition.raft().clone());
    let server = Server::start(TcpListener::bind("127.0.0.1:0").await?, routes)?;
    Ok((partition, server))
}

fn peers(me: NodeId, others: &[(NodeId, String)]) -> anyhow::Result<Peers> {
    let all: Vec<Peer> = others
        .iter()
        .map(|(id, addr)| Peer {
            id: *id,
            raft_addr: addr.clone(),
            api_addr: String::new(),
        })
        .collect();
    Ok(Peers::new(me, &all, None)?)
}

fn vote_request(term: u64) -> VoteRequest<TypeConfig> {
    VoteRequest::new(Vote::new(term, 2), None)
}

#[tokio::test]
async fn unknown_partition_is_not_found_and_garbage_is_invalid() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (partition, mut server) = serving(5, &[], dir.path()).await?;
    let mut client = RaftServiceClient::connect(format!("http://{}", server.addr)).await?;

    let payload = wire::encode(&vote_request(1))?;
    let status = client
        .vote(RaftRequest {
            partition: 9,
            payload: payload.into(),
        })
        .await
        .expect_err("partition 9 is not open");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("partition 9"), "{status:?}");

    let garbage = bytes::Bytes::from_static(&[0xff; 7]);
    for rpc in ["append-entries", "vote", "install-snapshot"] {
        let request = RaftRequest {
            partition: 5,
            payload: garbage.clone(),
        };
        let status = match rpc {
            "append-entries" => client.append_entries(request).await,
            "vote" => client.vote(request).await,
            _ => client.install_snapshot(request).await,
        }
        .expect_err("garbage is refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{rpc}: {status:?}");
        assert!(status.message().contains(rpc), "{rpc}: {status:?}");
    }
    // A vote request is not an append-entries request either.
    let status = client
        .append_entries(RaftRequest {
            partition: 5,
            payload: wire::encode(&vote_request(1))?.into(),
        })
        .await
        .expect_err("wrong message");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // The group still answers well-formed requests.
    let reply = client
        .vote(RaftRequest {
            partition: 5,
            payload: wire::encode(&vote_request(0))?.into(),
        })
        .await?
        .into_inner();
    let answer: Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>> =
        wire::decode(&reply.payload)?;
    let answer = answer?;
    assert!(
        !answer.vote_granted,
        "a stale vote is not granted: {answer:?}"
    );

    partition.shutdown().await;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn network_errors_map_to_what_openraft_backs_off_from() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Node 1 is a voter of [1, 2] and cannot win: it takes a leader's requests.
    let (partition, mut server) = serving(3, &[1, 2], dir.path()).await?;
    // Nothing listens on a port that was bound and released.
    let dead = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
    let peers = peers(2, &[(1, server.addr.to_string()), (4, dead.to_string())])?;
    let option = || RPCOption::new(TTL);

    // Node 1 answers for partition 3: a stale vote comes back refused.
    let mut net = Network::new(3, peers.clone());
    let mut to_1 = net.new_client(1, &BasicNode::default()).await.into_inner();
    let answer = to_1.vote(vote_request(0), option()).await?;
    assert!(!answer.vote_granted);

    // Unknown node id, nothing listening, partition not open there: unreachable.
    for (partition, target, why) in [
        (3, 9, "no node 9"),
        (3, 4, "node 4 is down"),
        (8, 1, "no partition 8"),
    ] {
        let mut net = Network::new(partition, peers.clone());
        let mut client = net
            .new_client(target, &BasicNode::default())
            .await
            .into_inner();
        let err = client.vote(vote_request(1), option()).await.expect_err(why);
        assert!(matches!(err, RPCError::Unreachable(_)), "{why}: {err:?}");
    }

    // A client made before its node was known (a node added to the cluster
    // joins a group's membership before every node has its address) reaches
    // it once the address arrives: openraft keeps that client.
    let late = Peers::new(2, &[], None)?;
    let mut net = Network::new(3, late.clone());
    let mut to_late = net.new_client(1, &BasicNode::default()).await.into_inner();
    let err = to_late
        .vote(vote_request(0), option())
        .await
        .expect_err("node 1 not known yet");
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    late.upsert(&Peer {
        id: 1,
        raft_addr: server.addr.to_string(),
        api_addr: String::new(),
    })?;
    let answer = to_late.vote(vote_request(0), option()).await?;
    assert!(!answer.vote_granted);

    // Snapshot chunks of openraft's default size (3 MiB) get through; an error
    // openraft returns there (a new snapshot not starting at offset 0) comes
    // back as itself.
    let chunk = |id: &str, offset: u64| InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(LEADER_TERM, 2),
        meta: SnapshotMeta {
            last_log_id: None,
            last_membership: Default::default(),
            snapshot_id: id.into(),
        },
        offset,
        data: vec![1; 3 << 20],
        done: false,
    };
    // A chunk before the last is answered with the receiver's vote, unchanged.
    to_1.install_snapshot(chunk("snapshot-1", 0), option())
        .await?;
    let err = to_1
        .install_snapshot(chunk("snapshot-2", 7), option())
        .await
        .expect_err("a chunk at the wrong offset");
    match err {
        RPCError::RemoteError(remote) => {
            assert_eq!(remote.target, 1);
            let mismatch = matches!(
                remote.source,
                RaftError::APIError(InstallSnapshotError::SnapshotMismatch(_))
            );
            assert!(mismatch, "{remote:?}");
        }
        other => panic!("want a remote snapshot mismatch, got {other:?}"),
    }

    // A stopped group there is unreachable: openraft backs off from it.
    partition.shutdown().await;
    let heartbeat = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(LEADER_TERM, 2),
        prev_log_id: None,
        leader_commit: None,
        entries: vec![],
    };
    let err = to_1
        .append_entries(heartbeat, option())
        .await
        .expect_err("the group stopped");
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    assert!(err.to_string().contains("stopped"), "{err}");
    server.stop().await;
    Ok(())
}
