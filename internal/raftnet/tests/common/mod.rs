//! A cluster of Chronos "nodes" inside one test process: each with its own
//! directory, a Raft service on a loopback port and its partitions.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chronos_partition::{DeliveryOptions, FiringOptions, NodeId, Partition, PartitionOptions};
use chronos_proto::v1::Event;
use chronos_raftlog::{RaftLog, RaftLogOptions};
use chronos_raftnet::{service, Network, Peer, Peers, RaftRoutes};
use chronos_store::StoreResources;
use chronos_wal::Retention;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The Raft log of the node whose data directory is `dir`.
pub fn raft_log(dir: &Path) -> Arc<RaftLog> {
    Arc::new(
        RaftLog::open(&dir.join("raftlog"), RaftLogOptions::default()).expect("raft log opens"),
    )
}

/// Options of a partition for tests: the default Raft timings, small memory.
pub fn options(
    id: u32,
    node_id: NodeId,
    voters: &[NodeId],
    dir: &Path,
    raft_log: Arc<RaftLog>,
) -> PartitionOptions {
    PartitionOptions {
        id,
        node_id,
        voters: voters.to_vec(),
        join: false,
        dir: dir.join(format!("partition-{id:04}")),
        raft_log,
        history_segment_bytes: 256 << 20,
        retention: Retention::default(),
        retention_check_interval: Duration::from_secs(60),
        group_commit_linger: Duration::ZERO,
        dedup_ttl: Duration::from_secs(3600),
        heartbeat_interval: Duration::from_millis(100),
        election_timeout_min: Duration::from_millis(300),
        election_timeout_max: Duration::from_millis(600),
        snapshot_every_entries: 10_000,
        firing: FiringOptions {
            tick_ms: 10,
            horizon_ms: 60_000,
            kept_bytes: 8 << 20,
        },
        delivery: DeliveryOptions::default(),
        resources: StoreResources::new(8 << 20, 32 << 20),
        may_lead: tokio::sync::watch::channel(true).1,
        preferred_leader: None,
        handoffs: Default::default(),
        rebalance_after: Duration::from_secs(10),
        free_space: chronos_partition::FreeSpace::unchecked(),
    }
}

/// Polls `check` until it answers `Some`, or fails naming `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn event(topic: &str, id: &str) -> Event {
    Event {
        message_id: id.to_string(),
        schedule_ts: 0,
        payload: bytes::Bytes::from(format!("payload of {id}")),
        topic: topic.to_string(),
        key: String::new(),
        headers: Default::default(),
    }
}

/// A tonic server for the Raft service over `routes` on `listener`.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(listener: TcpListener, routes: RaftRoutes) -> anyhow::Result<Server> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service(routes, tokio::sync::watch::channel(true).1))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                eprintln!("raft server on {addr}: {e}");
            }
        });
        Ok(Server {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Stops accepting and closes connections (forcibly after a second).
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(1), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

/// One node: directory, Raft service, partitions.
pub struct Node {
    pub id: NodeId,
    pub dir: tempfile::TempDir,
    pub routes: RaftRoutes,
    pub server: Server,
    pub peers: Peers,
    pub partitions: Vec<Arc<Partition>>,
}

impl Node {
    pub fn partition(&self, id: u32) -> &Arc<Partition> {
        &self.partitions[id as usize]
    }

    /// Starts the Raft service again on the address it had (after `server.stop()`).
    pub async fn restart_server(&mut self) -> anyhow::Result<()> {
        let listener = TcpListener::bind(self.server.addr).await?;
        self.server = Server::start(listener, self.routes.clone())?;
        Ok(())
    }

    /// Unregisters and shuts down the partitions, then stops the server.
    pub async fn stop(&mut self) {
        for p in &self.partitions {
            self.routes.remove(p.id());
            p.shutdown().await;
        }
        self.server.stop().await;
    }
}

/// Starts `ids.len()` nodes, each voter of `partitions` routes (ids 0..partitions).
pub async fn cluster(ids: &[NodeId], partitions: u32) -> anyhow::Result<Vec<Node>> {
    let mut listeners = Vec::new();
    for _ in ids {
        listeners.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    let mut all = Vec::new();
    for (id, l) in ids.iter().zip(&listeners) {
        all.push(Peer {
            id: *id,
            raft_addr: l.local_addr()?.to_string(),
            api_addr: String::new(),
        });
    }
    let mut nodes = Vec::new();
    for (&id, listener) in ids.iter().zip(listeners) {
        let routes = RaftRoutes::new();
        let server = Server::start(listener, routes.clone())?;
        let peers = Peers::new(id, &all, None)?;
        let dir = tempfile::tempdir()?;
        let log = raft_log(dir.path());
        let mut opened = Vec::new();
        for p in 0..partitions {
            let partition = Partition::open(
                options(p, id, ids, dir.path(), log.clone()),
                Network::new(p, peers.clone()),
            )
            .await?;
            routes.insert(p, partition.raft().clone());
            opened.push(Arc::new(partition));
        }
        nodes.push(Node {
            id,
            dir,
            routes,
            server,
            peers,
            partitions: opened,
        });
    }
    Ok(nodes)
}

/// Waits until every running node of `partition` names the same leader, and
/// that leader takes writes; returns its node id.
pub async fn leader_of(nodes: &[&Node], partition: u32, limit: Duration) -> anyhow::Result<NodeId> {
    wait_for(
        &format!("a leader of partition {partition}"),
        limit,
        || async move {
            let first = nodes.first()?.partition(partition).status().leader?;
            let agreed = nodes
                .iter()
                .all(|n| n.partition(partition).status().leader == Some(first));
            let leader = nodes.iter().find(|n| n.id == first)?;
            (agreed && leader.partition(partition).is_leading()).then_some(first)
        },
    )
    .await
}
