//! Where things live in a cluster, the same on every node: which partition
//! an event belongs to ([`Router`]: consistent hashing of its routing key)
//! and which nodes hold each partition and which of them should lead it
//! ([`Placement`]), over the cluster's node list ([`roster`]).
//!
//! The routing key is the event's `key`, or its `message_id` when it has none.
//! Keys are first reduced to a stable 64-bit hash (CRC32C of two halves; not
//! `std`'s `Hash`, which may change between Rust releases) so placement never
//! moves under a running data directory.

use hashring::HashRing;

pub mod roster;
pub use roster::{RosterError, ROSTER_RAFT};

/// Virtual nodes per partition on the ring: smooths the share each one gets.
const VNODES_PER_PARTITION: u32 = 64;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
struct VNode {
    partition: u32,
    replica: u32,
}

pub struct Router {
    ring: HashRing<VNode>,
    partitions: u32,
}

/// A stable 64-bit hash of `key`.
fn stable_hash(key: &[u8]) -> u64 {
    let lo = crc32c::crc32c(key);
    let hi = crc32c::crc32c_append(0x9e37_79b9, key);
    (u64::from(hi) << 32) | u64::from(lo)
}

impl Router {
    pub fn new(partitions: u32) -> Router {
        let mut ring = HashRing::new();
        for partition in 0..partitions {
            for replica in 0..VNODES_PER_PARTITION {
                ring.add(VNode { partition, replica });
            }
        }
        Router { ring, partitions }
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition of an event with this `key` (empty = none) and `message_id`.
    pub fn route(&self, key: &str, message_id: &str) -> u32 {
        let routing = if key.is_empty() { message_id } else { key };
        let h = stable_hash(routing.as_bytes());
        self.ring.get(&h).map_or(0, |v| v.partition)
    }
}

/// Virtual nodes per cluster node on the placement ring.
const VNODES_PER_NODE: u32 = 64;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
struct NodeVNode {
    node: u64,
    replica: u32,
}

/// Which nodes hold each partition: `replication_factor` distinct nodes
/// chosen by consistent hashing over the node list. Every node computes the
/// same placement from the same list; adding a node moves few partitions.
#[derive(Debug, Clone)]
pub struct Placement {
    replicas: Vec<Vec<u64>>,
    /// Each partition's preferred leader: one of its replicas, chosen so that
    /// every node prefers as many partitions as the others (±1 where the
    /// replica sets allow it).
    preferred: Vec<u64>,
    /// Copies asked for (each partition has fewer while there are fewer nodes).
    replication_factor: u32,
}

impl Placement {
    pub fn new(nodes: &[u64], partitions: u32, replication_factor: u32) -> Placement {
        let mut ring = HashRing::new();
        for &node in nodes {
            for replica in 0..VNODES_PER_NODE {
                ring.add(NodeVNode { node, replica });
            }
        }
        let mut distinct: Vec<u64> = nodes.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let want = (replication_factor as usize).clamp(1, distinct.len().max(1));
        let replicas: Vec<Vec<u64>> = (0..partitions)
            .map(|p| {
                let mut chosen: Vec<u64> = Vec::with_capacity(want);
                // Probe the ring with a sequence of keys for this partition:
                // each probe lands on a node; keep the first `want` distinct.
                for k in 0..4096u32 {
                    if chosen.len() == want {
                        break;
                    }
                    let h = stable_hash(format!("partition-{p}/{k}").as_bytes());
                    if let Some(v) = ring.get(&h) {
                        if !chosen.contains(&v.node) {
                            chosen.push(v.node);
                        }
                    }
                }
                // Practically unreachable; keeps the count exact regardless.
                for &n in &distinct {
                    if chosen.len() == want {
                        break;
                    }
                    if !chosen.contains(&n) {
                        chosen.push(n);
                    }
                }
                chosen
            })
            .collect();
        let preferred = spread_leaders(&replicas);
        Placement {
            replicas,
            preferred,
            replication_factor,
        }
    }

    pub fn replication_factor(&self) -> u32 {
        self.replication_factor
    }

    /// The replica of `partition` that should lead it, the same on every node.
    pub fn preferred_leader(&self, partition: u32) -> Option<u64> {
        self.preferred.get(partition as usize).copied()
    }

    /// The nodes holding `partition` (its Raft voters).
    pub fn replicas(&self, partition: u32) -> &[u64] {
        self.replicas
            .get(partition as usize)
            .map_or(&[], Vec::as_slice)
    }

    /// The partitions `node` holds, in id order.
    pub fn hosted_on(&self, node: u64) -> Vec<u32> {
        (0..self.replicas.len() as u32)
            .filter(|&p| self.replicas(p).contains(&node))
            .collect()
    }
}

/// Picks a leader among each partition's replicas, greedily: the replica
/// preferring the fewest partitions so far, the earlier listed on a tie.
fn spread_leaders(replicas: &[Vec<u64>]) -> Vec<u64> {
    let mut load: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    replicas
        .iter()
        .map(|r| {
            let pick = r
                .iter()
                .copied()
                .min_by_key(|n| load.get(n).copied().unwrap_or(0))
                .unwrap_or(0);
            *load.entry(pick).or_default() += 1;
            pick
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferred_leaders_spread_evenly_over_the_nodes() {
        for (nodes, partitions, rf) in [
            (vec![1, 2, 3], 8, 3),
            (vec![1, 2, 3], 8, 2),
            (vec![1, 2, 3, 4, 5], 64, 3),
            (vec![1, 2], 7, 2),
        ] {
            let pl = Placement::new(&nodes, partitions, rf);
            let mut led = std::collections::BTreeMap::new();
            for p in 0..partitions {
                let l = pl.preferred_leader(p).expect("a preferred leader");
                assert!(pl.replicas(p).contains(&l), "{l} does not hold {p}");
                *led.entry(l).or_insert(0usize) += 1;
            }
            let (min, max) = (
                nodes
                    .iter()
                    .map(|n| led.get(n).copied().unwrap_or(0))
                    .min()
                    .unwrap(),
                led.values().copied().max().unwrap(),
            );
            assert!(max - min <= 1, "{nodes:?} p={partitions} rf={rf}: {led:?}");
        }
        assert_eq!(Placement::new(&[1, 2, 3], 8, 3).preferred_leader(8), None);
    }

    #[test]
    fn placement_picks_distinct_nodes_and_spreads_them() {
        let nodes = [1, 2, 3, 4, 5];
        let a = Placement::new(&nodes, 64, 3);
        let b = Placement::new(&[5, 4, 3, 2, 1], 64, 3);
        let mut held = [0usize; 6];
        for p in 0..64 {
            let r = a.replicas(p);
            assert_eq!(r.len(), 3, "partition {p}: {r:?}");
            let mut d = r.to_vec();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), 3, "partition {p} has repeated nodes: {r:?}");
            assert_eq!(r, b.replicas(p), "placement depends on list order");
            for &n in r {
                held[n as usize] += 1;
            }
        }
        // 192 replicas over 5 nodes: about 38 each.
        for n in 1..=5 {
            assert!(
                (20..=60).contains(&held[n]),
                "node {n} holds {}: {held:?}",
                held[n]
            );
        }
        assert_eq!(a.hosted_on(1).len(), held[1]);
        // Every node holds every partition when RF = node count.
        let all = Placement::new(&[1, 2, 3], 8, 3);
        assert_eq!(all.hosted_on(2), (0..8).collect::<Vec<_>>());
        // RF larger than the node count is capped; one node holds everything.
        assert_eq!(Placement::new(&[7], 4, 3).replicas(3), &[7]);
    }

    #[test]
    fn adding_a_node_moves_few_replicas() {
        let before = Placement::new(&[1, 2, 3, 4], 64, 2);
        let after = Placement::new(&[1, 2, 3, 4, 5], 64, 2);
        let moved = (0..64)
            .filter(|&p| {
                let (b, a) = (before.replicas(p), after.replicas(p));
                b.iter().any(|n| !a.contains(n))
            })
            .count();
        assert!(moved < 48, "{moved} of 64 partitions changed replicas");
    }

    #[test]
    fn key_wins_over_message_id_and_routing_is_stable() {
        let r = Router::new(8);
        assert_eq!(r.route("user-1", "a"), r.route("user-1", "b"));
        assert_eq!(r.route("", "m-17"), Router::new(8).route("", "m-17"));
    }

    #[test]
    fn every_partition_gets_a_fair_share() {
        let r = Router::new(8);
        let mut counts = [0u32; 8];
        for i in 0..80_000 {
            counts[r.route("", &format!("msg-{i}")) as usize] += 1;
        }
        for (p, c) in counts.iter().enumerate() {
            assert!(
                (5_000..=15_000).contains(c),
                "partition {p} got {c} of 80000: {counts:?}"
            );
        }
    }

    #[test]
    fn placement_is_pinned() {
        // If this changes, existing data directories would route ids elsewhere.
        let r = Router::new(8);
        let got: Vec<u32> = (0..8).map(|i| r.route("", &format!("id-{i}"))).collect();
        assert_eq!(got, PINNED.to_vec(), "routing changed");
    }

    const PINNED: [u32; 8] = [3, 4, 1, 1, 0, 5, 4, 0];
}
