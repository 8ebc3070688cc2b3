//! Which partition an event belongs to: consistent hashing of its routing key.
//!
//! The routing key is the event's `key`, or its `message_id` when it has none.
//! Keys are first reduced to a stable 64-bit hash (CRC32C of two halves; not
//! `std`'s `Hash`, which may change between Rust releases) so placement never
//! moves under a running data directory.

use hashring::HashRing;

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

#[cfg(test)]
mod tests {
    use super::*;

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
