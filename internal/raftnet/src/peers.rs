//! One channel per peer node, shared by everything that talks to it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// How long a connection attempt to a peer may take before the call fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A node of the cluster as every other node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: u64,
    /// Node-to-node listener: the internal Raft service and forwarded requests.
    pub raft_addr: String,
    /// Public gRPC listener.
    pub api_addr: String,
}

/// The cluster's nodes and a lazily connected channel to each (this node included,
/// so a request can be sent to "the leader" without a special case). Nodes
/// are added as the roster learns of them; every clone sees the same set.
#[derive(Clone)]
pub struct Peers {
    me: u64,
    nodes: Arc<RwLock<BTreeMap<u64, (Peer, Channel)>>>,
    /// Swapped whole when the certificates are re-read (SIGHUP).
    tls: Arc<RwLock<Option<PeerTls>>>,
    /// Bumped whenever channels are replaced, so holders of one know to
    /// take it again.
    version: Arc<AtomicU64>,
}

/// Mutual TLS to the other nodes: this node's certificate and the cluster
/// CA; each peer must present a certificate naming it
/// (`node-<id>.<cluster>`), whatever address it is reached at.
#[derive(Clone, Debug)]
pub struct PeerTls {
    pub config: ClientTlsConfig,
    pub cluster: String,
}

fn connect(peer: &Peer, tls: Option<&PeerTls>) -> Result<Channel, tonic::transport::Error> {
    let endpoint = match tls {
        None => Endpoint::from_shared(format!("http://{}", peer.raft_addr))?,
        Some(tls) => Endpoint::from_shared(format!("https://{}", peer.raft_addr))?.tls_config(
            tls.config
                .clone()
                .domain_name(chronos_tls::node_name(&tls.cluster, peer.id)),
        )?,
    };
    let endpoint = endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}

impl Peers {
    /// Channels connect on first use and reconnect after failures; HTTP/2
    /// multiplexes every concurrent call over one connection per peer.
    pub fn new(
        me: u64,
        nodes: &[Peer],
        tls: Option<PeerTls>,
    ) -> Result<Peers, tonic::transport::Error> {
        let peers = Peers {
            me,
            nodes: Arc::default(),
            tls: Arc::new(RwLock::new(tls)),
            version: Arc::default(),
        };
        for peer in nodes {
            peers.upsert(peer)?;
        }
        Ok(peers)
    }

    /// Adds `peer`, or replaces its entry (and channel) if its addresses changed.
    pub fn upsert(&self, peer: &Peer) -> Result<(), tonic::transport::Error> {
        if self
            .nodes
            .read()
            .get(&peer.id)
            .is_some_and(|(p, _)| p == peer)
        {
            return Ok(());
        }
        // Under the nodes' lock, so a certificate reload cannot slip between
        // connecting with the old ones and inserting.
        let mut nodes = self.nodes.write();
        let channel = connect(peer, self.tls.read().as_ref())?;
        nodes.insert(peer.id, (peer.clone(), channel));
        self.version.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Presents `tls` (rotated certificates) from now on: every peer gets a
    /// new channel, so the next call opens a connection with it; calls
    /// already under way finish on the old one. Nothing changes on an error.
    pub fn reload_tls(&self, tls: PeerTls) -> Result<(), tonic::transport::Error> {
        let mut nodes = self.nodes.write();
        let channels = nodes
            .values()
            .map(|(peer, _)| Ok((peer.id, connect(peer, Some(&tls))?)))
            .collect::<Result<Vec<_>, tonic::transport::Error>>()?;
        for (id, channel) in channels {
            if let Some(entry) = nodes.get_mut(&id) {
                entry.1 = channel;
            }
        }
        *self.tls.write() = Some(tls);
        self.version.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Forgets a node that left the cluster.
    pub fn remove(&self, id: u64) {
        self.nodes.write().remove(&id);
    }

    pub fn me(&self) -> u64 {
        self.me
    }

    /// Changes whenever a channel was replaced (a node's address or the
    /// certificates changed): a holder of a channel takes it again then.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn channel(&self, id: u64) -> Option<Channel> {
        self.nodes.read().get(&id).map(|(_, c)| c.clone())
    }

    pub fn peer(&self, id: u64) -> Option<Peer> {
        self.nodes.read().get(&id).map(|(p, _)| p.clone())
    }

    /// Every node, in id order.
    pub fn all(&self) -> Vec<Peer> {
        self.nodes.read().values().map(|(p, _)| p.clone()).collect()
    }
}
