//! Handing leadership over (openraft's leadership transfer): the leader
//! names a voter whose log holds all of its own, stops taking writes and
//! heartbeats, and that voter campaigns at once (no election timeout).
//!
//! - When this node may not lead (it is stopping, or its clock is off) it
//!   hands every partition it leads to the most caught-up other voter, the
//!   preferred leader first.
//! - Otherwise, once it has led for `settle` and the partition's preferred
//!   leader is caught up, it hands the partition back to it, so leaders
//!   return to balance after a failover or a restart. A node has at most one
//!   such rebalancing handoff in flight ([`Handoffs`]), and a partition is
//!   rebalanced at most once per `REBALANCE_EVERY`, so a preferred node that
//!   cannot keep leadership (its clock is off) does not make it flap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::membership::CATCH_UP_SLACK;
use crate::types::{NodeId, Raft, RaftMetrics};
use crate::Placed;

/// Least time between two rebalancing handoffs of one partition.
const REBALANCE_EVERY: Duration = Duration::from_secs(60);

/// A node's partitions share one rebalancing handoff at a time; `rebalance`
/// lets them skip their settle time once.
#[derive(Clone, Default)]
pub struct Handoffs {
    inner: Arc<Mutex<Slot>>,
}

#[derive(Default)]
struct Slot {
    /// The partition handing over, and when its turn ends at the latest.
    busy: Option<(u32, Instant)>,
    /// Requests to rebalance now (`chronos cluster rebalance`) so far.
    urgent: u64,
}

impl Handoffs {
    pub fn new() -> Handoffs {
        Handoffs::default()
    }

    /// Every partition of this node whose preferred leader is caught up is
    /// handed to it without waiting for its settle time, one at a time.
    pub fn rebalance_now(&self) {
        self.inner.lock().urgent += 1;
    }

    fn urgent(&self) -> u64 {
        self.inner.lock().urgent
    }

    fn try_take(&self, partition: u32, until: Instant, now: Instant) -> bool {
        let mut slot = self.inner.lock();
        match slot.busy {
            Some((p, end)) if p != partition && now < end => false,
            _ => {
                slot.busy = Some((partition, until));
                true
            }
        }
    }

    fn release(&self, partition: u32) {
        let mut slot = self.inner.lock();
        if slot.busy.is_some_and(|(p, _)| p == partition) {
            slot.busy = None;
        }
    }
}

pub(crate) struct Handoff {
    partition: u32,
    me: NodeId,
    /// Where the placement puts the partition now (changes with the roster).
    placed: watch::Receiver<Placed>,
    node: Handoffs,
    /// How long a leader keeps leadership before it rebalances it.
    settle: Duration,
    /// How long a handoff may take before it is tried again.
    patience: Duration,
    /// The term this replica leads and since when.
    leading: Option<(u64, Instant)>,
    /// The last handoff asked for in the current term.
    asked: Option<Instant>,
    /// Nodes asked in the current term that did not take over (a node that
    /// may not lead refuses): the next ask goes to another.
    tried: Vec<NodeId>,
    last_rebalance: Option<Instant>,
    /// `Handoffs::urgent` when last looked at.
    urgent_seen: u64,
}

impl Handoff {
    pub fn new(
        partition: u32,
        me: NodeId,
        placed: watch::Receiver<Placed>,
        node: Handoffs,
        settle: Duration,
        patience: Duration,
    ) -> Handoff {
        let urgent_seen = node.urgent();
        Handoff {
            partition,
            me,
            placed,
            node,
            settle,
            patience,
            leading: None,
            asked: None,
            tried: Vec::new(),
            last_rebalance: None,
            urgent_seen,
        }
    }

    /// When to look again without news from Raft (settle time or patience
    /// running out).
    pub fn wake_at(&self) -> Option<Instant> {
        let (_, since) = self.leading?;
        let at = match self.asked {
            Some(at) => at + self.patience,
            None if self.placed.borrow().preferred.is_some_and(|p| p != self.me) => {
                since + self.settle
            }
            None => return None,
        };
        // Past that, Raft's metrics (replication progress) drive the checks.
        (at > Instant::now()).then_some(at)
    }

    /// Follows Raft's view; says to whom to hand leadership over when it
    /// should ([`Handoff::transfer`], once the term has recorded its work).
    pub fn observe(&mut self, m: &RaftMetrics, allowed: bool) -> Option<NodeId> {
        let now = Instant::now();
        let leads = m.state == ServerState::Leader && m.current_leader == Some(self.me);
        if !leads {
            self.leading = None;
            self.asked = None;
            self.urgent_seen = self.node.urgent();
            self.node.release(self.partition);
            return None;
        }
        if self.leading.is_none_or(|(term, _)| term != m.current_term) {
            self.leading = Some((m.current_term, now));
            self.asked = None;
            self.tried.clear();
        }
        if self.asked.is_some_and(|at| now < at + self.patience) {
            return None;
        }
        let placed = self.placed.borrow().clone();
        let mut caught_up = caught_up(m, self.me);
        // The placement moved this partition off this node: leadership goes
        // to a replica that stays (the move adds them as voters first).
        let moving_away = !placed.replicas.is_empty() && !placed.replicas.contains(&self.me);
        if moving_away {
            caught_up.retain(|id, _| placed.replicas.contains(id));
        }
        let urgent = !allowed || moving_away;
        if urgent {
            // Still leading after asking them: try the others first.
            let untried: BTreeMap<NodeId, u64> = caught_up
                .iter()
                .filter(|(id, _)| !self.tried.contains(id))
                .map(|(id, index)| (*id, *index))
                .collect();
            if !untried.is_empty() {
                caught_up = untried;
            }
        }
        let target = if urgent {
            // The preferred leader first, else whoever has the most.
            placed
                .preferred
                .filter(|p| caught_up.contains_key(p))
                .or_else(|| best(&caught_up))
        } else {
            self.rebalance_target(placed.preferred, &caught_up, now)
        };
        let to = target?;
        tracing::info!(
            partition = self.partition,
            to,
            reason = if !allowed {
                "may not lead"
            } else if moving_away {
                "moving away"
            } else {
                "rebalance"
            },
            "handing leadership over"
        );
        self.asked = Some(now);
        self.tried.push(to);
        Some(to)
    }

    /// Asks Raft to hand leadership to `to`.
    pub fn transfer(raft: &Raft, to: NodeId) {
        let trigger = raft.clone();
        tokio::spawn(async move {
            if let Err(e) = trigger.trigger().transfer_leader(to).await {
                tracing::warn!("leadership transfer to node {to}: {e}");
            }
        });
    }

    fn rebalance_target(
        &mut self,
        preferred: Option<NodeId>,
        caught_up: &BTreeMap<NodeId, u64>,
        now: Instant,
    ) -> Option<NodeId> {
        let urgent = self.node.urgent();
        let Some(preferred) = preferred.filter(|&p| p != self.me) else {
            self.urgent_seen = urgent;
            return None;
        };
        let asked_now = self.urgent_seen != urgent;
        let (_, since) = self.leading?;
        let settled = asked_now || now >= since + self.settle;
        let due = asked_now
            || self
                .last_rebalance
                .is_none_or(|at| now >= at + REBALANCE_EVERY);
        if !settled
            || !due
            || !caught_up.contains_key(&preferred)
            || !self.node.try_take(self.partition, now + self.patience, now)
        {
            return None;
        }
        self.urgent_seen = urgent;
        self.last_rebalance = Some(now);
        Some(preferred)
    }
}

/// The other voters whose log holds nearly all of the leader's, with their
/// matched index.
fn caught_up(m: &RaftMetrics, me: NodeId) -> BTreeMap<NodeId, u64> {
    let Some(last) = m.last_log_index else {
        return BTreeMap::new();
    };
    let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
    m.replication
        .iter()
        .flatten()
        .filter(|(id, _)| **id != me && voters.contains(id))
        .filter_map(|(id, matched)| {
            let index = matched.as_ref()?.index;
            (index + CATCH_UP_SLACK >= last).then_some((*id, index))
        })
        .collect()
}

fn best(caught_up: &BTreeMap<NodeId, u64>) -> Option<NodeId> {
    caught_up
        .iter()
        .max_by_key(|(id, index)| (**index, std::cmp::Reverse(**id)))
        .map(|(id, _)| *id)
}
