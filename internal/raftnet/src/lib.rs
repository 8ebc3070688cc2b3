//! The network between Chronos nodes.
//!
//! Owns: one lazily connected gRPC channel per peer node ([`Peers`]), shared
//! by every partition's Raft traffic and by the gateway's forwarded
//! requests; the internal Raft service (`chronos.raft.v1.RaftService`) that
//! carries openraft's append-entries, vote and install-snapshot for many
//! groups, the partition id in each message: its receiving side
//! ([`service`] over the [`RaftRoutes`] open on this node) and its sending side
//! ([`Network`], openraft's network factory for one partition).
//! It also answers two questions a move asks: how this node sees a Raft group's
//! membership (`membership`), and which Raft groups it holds (`held`).
//! Does not own: placement (which nodes hold a partition), a Raft group's
//! membership (`chronos-partition` initialises it), or what a forwarded
//! request means (that is `chronos-api`).
//!
//! Wiring on a node: one `Peers` for the cluster; one `RaftRoutes`, served by
//! `service(groups, may_lead)` on the node's `raft_addr`; each partition opened with
//! `Network::new(id, peers.clone())` and registered with
//! `groups.insert(id, partition.raft().clone())` (removed before it shuts down).
//!
//! Payloads are openraft's own serde types in bincode ([`wire`]); an answer
//! carries openraft's `Result`, so a remote error arrives as the openraft
//! error it was. Transport failures become the `RPCError` openraft backs off
//! from properly (see `network.rs`). An append-entries request carries at
//! most a few MB of entries, fewer while requests time out: each call is
//! bounded by openraft's time-to-live (a heartbeat interval).

mod network;
mod peers;
mod routes;
mod server;
pub mod wire;

pub use network::{Connection, Network};
pub use peers::{Peer, PeerTls, Peers};
pub use routes::RaftRoutes;
pub use server::{held, membership, service, Service};
