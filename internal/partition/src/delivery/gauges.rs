//! Each consumer group's lag and in-flight count on this partition, while
//! this node leads it, read when `/metrics` is rendered. Kept here and not
//! as registry gauges: the registry cannot forget a series, so a deleted
//! group, or one whose partition another node now leads, stayed listed (at
//! 0) until the process ended — a series per group name ever used.

use std::collections::BTreeMap;

use parking_lot::Mutex;

/// One group's figures on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupGauge {
    /// Fired events not yet handed out to the group.
    pub lag: u64,
    /// Deliveries waiting for an ack.
    pub inflight: u64,
}

/// The groups this partition's leader serves, by (topic, group).
#[derive(Debug, Default)]
pub struct GroupGauges {
    by_group: Mutex<BTreeMap<(String, String), GroupGauge>>,
}

impl GroupGauges {
    pub(crate) fn set(&self, key: &(String, String), gauge: GroupGauge) {
        let mut by_group = self.by_group.lock();
        match by_group.get_mut(key) {
            Some(g) => *g = gauge,
            None => {
                by_group.insert(key.clone(), gauge);
            }
        }
    }

    pub(crate) fn remove(&self, key: &(String, String)) {
        self.by_group.lock().remove(key);
    }

    /// The term ended: another node reports these groups now.
    pub(crate) fn clear(&self) {
        self.by_group.lock().clear();
    }

    /// (topic, group, figures), in order.
    pub fn snapshot(&self) -> Vec<(String, String, GroupGauge)> {
        let by_group = self.by_group.lock();
        (by_group.iter())
            .map(|((t, g), v)| (t.clone(), g.clone(), *v))
            .collect()
    }
}
