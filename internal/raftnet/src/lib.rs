//! The network between Chronos nodes.
//!
//! Owns: one lazily connected gRPC channel per peer node ([`Peers`]), shared
//! by every partition group's Raft traffic and by the gateway's forwarded
//! requests, and the internal Raft service carrying openraft's append-entries,
//! vote and install-snapshot for many groups (the partition id in each message).
//! Does not own: placement (which nodes hold a partition) or what a forwarded
//! request means (that is `chronos-api`).

mod peers;

pub use peers::{Peer, Peers};
