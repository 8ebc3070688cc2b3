//! Whether this replica may lead and act as leader: the node's gate, the
//! quorum lease and the hold-back at formation, in one place (see the
//! module docs of `owner`). The owner feeds it Raft's metrics and the gate's
//! changes; it switches the replica's campaigning, heartbeats and ticks.

use std::time::{Duration, Instant};

use openraft::async_runtime::watch::WatchReceiver;
use openraft::Instant as _;
use tokio::sync::watch;

use crate::types::{NodeId, Raft, RaftMetrics};

pub(crate) struct Standing {
    /// Whether this node may lead (clock within bounds, not stopping).
    gate: watch::Receiver<bool>,
    gate_open: bool,
    allowed: bool,
    /// How long a quorum's acknowledgement lets a leader act.
    lease: Duration,
    /// While leading: until when the last quorum acknowledgement lets the
    /// term fire and deliver (`None`: not known; a single voter needs none).
    lease_until: Option<Instant>,
    single_voter: bool,
    /// Raft's ticks are off: this replica leads a Raft group it is the only
    /// member of, where a tick finds nothing to do (no election to time, no
    /// one to send heartbeats to) but still wakes Raft 50 times a second.
    ticks_off: bool,
    /// This replica leaves the first election to the preferred leader, for
    /// `hold_back` from when it may first lead.
    holds_back: bool,
    hold_back: Duration,
    hold_back_until: Option<Instant>,
}

impl Standing {
    pub fn new(gate: watch::Receiver<bool>, lease: Duration, hold_back: Duration) -> Standing {
        Standing {
            gate,
            gate_open: true,
            allowed: true,
            lease,
            lease_until: None,
            single_voter: false,
            ticks_off: false,
            holds_back: false,
            hold_back,
            hold_back_until: None,
        }
    }

    /// At start: a replica that is not the preferred leader of a Raft group with
    /// no known leader leaves it the first election.
    pub fn start(&mut self, raft: &Raft, me: NodeId, preferred: Option<NodeId>) {
        self.holds_back = preferred.is_some_and(|p| p != me)
            && raft.metrics().borrow_watched().current_leader.is_none();
        self.follow_gate(raft);
    }

    /// The gate changed, or (`Err`) nobody will change it any more.
    pub async fn gate_changed(&mut self) -> bool {
        if !self.gate_open {
            return std::future::pending().await;
        }
        let open = self.gate.changed().await.is_ok();
        self.gate_open = open;
        open
    }

    /// Reads the gate: closed, this replica stops campaigning and, if it
    /// leads, sending heartbeats, so the followers elect another leader.
    pub fn follow_gate(&mut self, raft: &Raft) {
        self.allowed = *self.gate.borrow_and_update();
        self.switch(raft);
    }

    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// The Raft group has this replica as its only voter: no lease to renew, no
    /// one to hand leadership to.
    pub fn single_voter(&self) -> bool {
        self.single_voter
    }

    /// Takes what Raft's metrics say about the lease and the first election;
    /// `leads`: Raft has this replica as its leader.
    pub fn observe(&mut self, raft: &Raft, m: &RaftMetrics, leads: bool) {
        if m.current_leader.is_some() && self.holds_back {
            self.holds_back = false;
            self.hold_back_until = None;
            self.switch(raft);
        }
        let membership = m.membership_config.membership();
        self.single_voter = membership.voter_ids().count() == 1;
        // A learner being added gets its heartbeats.
        let sole_leader = leads && membership.nodes().count() == 1;
        if sole_leader != self.ticks_off {
            raft.runtime_config().tick(!sole_leader);
            self.ticks_off = sole_leader;
        }
        self.lease_until = m
            .last_quorum_acked
            .as_ref()
            .and_then(|acked| (Instant::now() + self.lease).checked_sub(acked.elapsed()));
    }

    /// Whether a term may fire and deliver now.
    pub fn leased(&self, now: Instant) -> bool {
        self.single_voter || self.lease_until.is_some_and(|until| now < until)
    }

    /// When the hold-back ends (`Tick::Campaign`).
    pub fn campaign_at(&self) -> Option<Instant> {
        self.hold_back_until
    }

    /// The hold-back is over: campaign.
    pub fn campaign(&mut self, raft: &Raft) {
        self.holds_back = false;
        self.hold_back_until = None;
        self.switch(raft);
    }

    /// Campaigning and heartbeats as the gate and the first election allow.
    fn switch(&mut self, raft: &Raft) {
        if self.holds_back && self.allowed && self.hold_back_until.is_none() {
            self.hold_back_until = Some(Instant::now() + self.hold_back);
        }
        let runtime = raft.runtime_config();
        runtime.elect(self.allowed && !self.holds_back);
        runtime.heartbeat(self.allowed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::async_runtime::watch::WatchReceiver;
    use tokio::time::{timeout, Instant};

    use crate::state_machine::tests::{options, wait_for};
    use crate::{Partition, SoloNetwork};

    /// openraft reports its metrics at every tick (20 ms here) even when
    /// nothing changed; a partition that is its Raft group's only member and
    /// leads it turns the ticks off, so its Raft falls quiet when idle.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sole_leader_turns_raft_ticks_off() {
        let dir = tempfile::tempdir().unwrap();
        let p = Partition::open(options(dir.path()), SoloNetwork)
            .await
            .unwrap();
        wait_for("the partition to lead", || p.is_ready()).await;
        let mut metrics = p.raft().metrics();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            metrics.borrow_and_update();
            // The term's start settles first; with ticks on, no 300 ms
            // ever passes without a report.
            if timeout(Duration::from_millis(300), metrics.changed())
                .await
                .is_err()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Raft kept reporting while idle: its ticks are on"
            );
        }
        p.shutdown().await;
    }
}
