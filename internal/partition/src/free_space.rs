//! The node's free disk space against its reserve (`limits.min_free_disk`),
//! as last seen by the node's watcher. A partition refuses new events while
//! the space is low, so publishers cannot fill the disk: a full disk stops
//! every Raft group on the node until it is restarted, a low one only new
//! events, and those resume by themselves once space is freed.

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeSpace {
    /// Bytes an unprivileged writer may still use in the data directory.
    pub free: u64,
    /// `limits.min_free_disk`; 0 turns the check off.
    pub reserve: u64,
    /// New events are refused. Set when `free` falls below `reserve`, and
    /// cleared only once `free` is back above `reserve` by a margin, so a
    /// disk that hovers at the reserve does not flap.
    pub low: bool,
}

impl FreeSpace {
    /// A check that never refuses (no reserve, or a test).
    pub fn unchecked() -> watch::Receiver<FreeSpace> {
        let (_, rx) = watch::channel(FreeSpace {
            free: u64::MAX,
            reserve: 0,
            low: false,
        });
        rx
    }

    /// The state after measuring `free` bytes, from `self`.
    pub fn measured(self, free: u64) -> FreeSpace {
        let low = if self.reserve == 0 {
            false
        } else if self.low {
            free < self.reserve.saturating_add(self.margin())
        } else {
            free < self.reserve
        };
        FreeSpace { free, low, ..self }
    }

    /// How far above the reserve the space must be before new events are
    /// taken again: 5 % of the reserve, at most 64 MiB.
    fn margin(&self) -> u64 {
        (self.reserve / 20).min(64 << 20)
    }
}

impl std::fmt::Display for FreeSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the data directory's disk has {} MiB free, under the {} MiB kept free \
             (limits.min_free_disk)",
            self.free >> 20,
            self.reserve >> 20
        )
    }
}

#[cfg(test)]
mod tests {
    use super::FreeSpace;

    const MIB: u64 = 1 << 20;

    #[test]
    fn low_below_the_reserve_until_a_margin_above_it() {
        let s = FreeSpace {
            free: u64::MAX,
            reserve: 1024 * MIB,
            low: false,
        };
        let s = s.measured(1100 * MIB);
        assert!(!s.low);
        let s = s.measured(1023 * MIB);
        assert!(s.low);
        // Back above the reserve but within the margin (51 MiB): still low.
        let s = s.measured(1060 * MIB);
        assert!(s.low);
        let s = s.measured(1076 * MIB);
        assert!(!s.low);
        assert!(!s.measured(1060 * MIB).low);
    }

    #[test]
    fn a_zero_reserve_is_never_low() {
        let s = FreeSpace {
            free: 0,
            reserve: 0,
            low: false,
        };
        assert!(!s.measured(0).low);
    }
}
