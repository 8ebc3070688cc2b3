//! Offset estimates from round trips, and the verdict over the cluster.

use std::time::{Duration, Instant};

/// A sample older than this says nothing about the clock now.
pub const FRESH_FOR: Duration = Duration::from_secs(5);

/// A peer's clock minus this node's, from one round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerOffset {
    pub offset_ms: i64,
    /// Half the round trip: the true offset is within this of `offset_ms`.
    pub uncertainty_ms: i64,
    pub measured_at: Instant,
}

impl PeerOffset {
    /// The peer answered `remote_ms` to a probe sent at `sent_ms` (this
    /// node's wall clock) that took `rtt`: it read its clock about halfway.
    pub fn from_round_trip(sent_ms: i64, rtt: Duration, remote_ms: i64, at: Instant) -> PeerOffset {
        let rtt_ms = rtt.as_millis() as i64;
        PeerOffset {
            offset_ms: remote_ms - (sent_ms + rtt_ms / 2),
            uncertainty_ms: rtt_ms / 2 + 1,
            measured_at: at,
        }
    }

    /// Certainly further than `max_ms` from this node's clock.
    fn beyond(&self, max_ms: i64) -> bool {
        self.offset_ms.abs() - self.uncertainty_ms > max_ms
    }
}

/// What is known of one peer's clock: the latest sample only, so that a
/// clock that jumped counts as jumped from the next probe on (an older
/// sample with a shorter round trip would hide the jump).
#[derive(Debug, Default, Clone)]
pub(crate) struct Latest {
    latest: Option<PeerOffset>,
}

impl Latest {
    pub fn push(&mut self, s: PeerOffset) {
        self.latest = Some(s);
    }

    /// The latest sample, if it is fresh.
    pub fn fresh(&self, now: Instant) -> Option<PeerOffset> {
        self.latest
            .filter(|s| now.saturating_duration_since(s.measured_at) <= FRESH_FOR)
    }
}

/// True when a majority of the `cluster_size` nodes (this one counts as
/// agreeing with itself) agree with this node's clock: a peer agrees when
/// it has a fresh estimate not certainly beyond `max_ms`.
pub fn within_bounds(cluster_size: usize, peers: &[Option<PeerOffset>], max_ms: i64) -> bool {
    let agreeing = 1 + peers.iter().flatten().filter(|o| !o.beyond(max_ms)).count();
    agreeing * 2 > cluster_size
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset_ms: i64, uncertainty_ms: i64) -> Option<PeerOffset> {
        Some(PeerOffset {
            offset_ms,
            uncertainty_ms,
            measured_at: Instant::now(),
        })
    }

    #[test]
    fn offset_is_read_halfway_through_the_round_trip() {
        let now = Instant::now();
        let o = PeerOffset::from_round_trip(1_000, Duration::from_millis(10), 3_005, now);
        assert_eq!((o.offset_ms, o.uncertainty_ms), (2_000, 6));
    }

    #[test]
    fn a_skewed_node_loses_its_majority_and_its_peers_keep_theirs() {
        // Node 1 is 2 s ahead of nodes 2 and 3.
        assert!(!within_bounds(3, &[at(-2_000, 1), at(-2_001, 1)], 250));
        assert!(within_bounds(3, &[at(2_000, 1), at(1, 1)], 250));
        // Unmeasured peers do not agree: at start a node waits for a majority.
        assert!(!within_bounds(3, &[None, None], 250));
        assert!(within_bounds(3, &[None, at(3, 1)], 250));
        // Five nodes need two peers besides this one.
        assert!(!within_bounds(
            5,
            &[at(0, 1), None, at(900, 1), at(-900, 1)],
            250
        ));
        assert!(within_bounds(5, &[at(0, 1), at(10, 1), None, None], 250));
        // A slow round trip keeps an offset from being certainly too big.
        assert!(within_bounds(3, &[at(300, 100), None], 250));
        assert!(!within_bounds(3, &[at(400, 100), None], 250));
        assert!(within_bounds(1, &[], 250));
    }

    #[test]
    fn the_latest_fresh_sample_counts() {
        let now = Instant::now();
        let mut s = Latest::default();
        assert_eq!(s.fresh(now), None);
        s.push(PeerOffset {
            offset_ms: 12,
            uncertainty_ms: 1,
            measured_at: now,
        });
        s.push(PeerOffset {
            offset_ms: 2_000,
            uncertainty_ms: 30,
            measured_at: now,
        });
        assert_eq!(s.fresh(now).map(|o| o.offset_ms), Some(2_000));
        let later = now + FRESH_FOR + Duration::from_millis(1);
        assert_eq!(s.fresh(later), None, "a stale sample counts for nothing");
    }
}
