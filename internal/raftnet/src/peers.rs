//! One channel per peer node, shared by everything that talks to it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

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
/// so a request can be sent to "the leader" without a special case).
#[derive(Clone)]
pub struct Peers {
    me: u64,
    nodes: Arc<BTreeMap<u64, (Peer, Channel)>>,
}

impl Peers {
    /// Channels connect on first use and reconnect after failures; HTTP/2
    /// multiplexes every concurrent call over one connection per peer.
    pub fn new(me: u64, nodes: &[Peer]) -> Result<Peers, tonic::transport::Error> {
        let mut map = BTreeMap::new();
        for peer in nodes {
            let endpoint = Endpoint::from_shared(format!("http://{}", peer.raft_addr))?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true);
            map.insert(peer.id, (peer.clone(), endpoint.connect_lazy()));
        }
        Ok(Peers {
            me,
            nodes: Arc::new(map),
        })
    }

    pub fn me(&self) -> u64 {
        self.me
    }

    pub fn channel(&self, id: u64) -> Option<Channel> {
        self.nodes.get(&id).map(|(_, c)| c.clone())
    }

    pub fn peer(&self, id: u64) -> Option<&Peer> {
        self.nodes.get(&id).map(|(p, _)| p)
    }

    /// Every node, in id order.
    pub fn all(&self) -> impl Iterator<Item = &Peer> {
        self.nodes.values().map(|(p, _)| p)
    }
}
