//! A partition's replicas: its membership as this replica sees it, the
//! leader's steps of a move (learners first, then the voter set), and the
//! roster (the cluster's node list, held by the roster's Raft group).

use std::collections::{BTreeMap, BTreeSet};

use chronos_proto::internal::{Roster, RosterCommand};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::impls::BasicNode;
use openraft::ChangeMembers;

use crate::error::PartitionError;
use crate::types::{Command, NodeId, RaftMetrics, TypeConfig};
use crate::Partition;

/// Entries a replica may lack and still count as caught up: enough to be
/// handed leadership (openraft makes it wait for them before it campaigns)
/// or promoted from learner to voter.
pub const CATCH_UP_SLACK: u64 = 256;

fn change_error(id: u32, e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> PartitionError {
    match e {
        RaftError::APIError(e) => PartitionError::from_write_error(id, &e),
        RaftError::Fatal(f) => PartitionError::from_fatal(id, &f),
    }
}

/// The Raft group's membership as this replica knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    /// A change is half done (joint consensus of two voter sets).
    pub joint: bool,
    pub leader: Option<NodeId>,
    /// On the leader: its last log index and each other replica's matched
    /// index (`None` until it acknowledged an entry or a snapshot).
    pub last_log_index: u64,
    pub matched: BTreeMap<NodeId, Option<u64>>,
}

/// On the leader: each other replica's matched log index (`None` for none yet).
pub(crate) fn matched(m: &RaftMetrics) -> BTreeMap<NodeId, Option<u64>> {
    m.replication
        .iter()
        .flatten()
        .filter(|(id, _)| **id != m.id)
        .map(|(id, matched)| (*id, matched.map(|l| l.index)))
        .collect()
}

impl Partition {
    pub fn members(&self) -> Members {
        let m = self.raft().metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        Members {
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            joint: membership.get_joint_config().len() > 1,
            leader: m.current_leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            matched: matched(&m),
        }
    }

    /// Starts replicating to `node` as a learner (returns once the change
    /// is committed; the learner catches up in the background).
    pub async fn add_learner(&self, node: NodeId) -> Result<(), PartitionError> {
        let id = self.id();
        match self
            .raft()
            .add_learner(node, BasicNode::default(), false)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(change_error(id, e)),
        }
    }

    /// Makes `voters` the voter set (through joint consensus; returns once
    /// the final configuration is committed). Voters left out leave the
    /// Raft group; every new one must be a learner already.
    pub async fn set_voters(&self, voters: BTreeSet<NodeId>) -> Result<(), PartitionError> {
        assert!(!voters.is_empty(), "a Raft group needs a voter");
        let id = self.id();
        match self
            .raft()
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), false)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(change_error(id, e)),
        }
    }

    /// Drops learners that are no longer wanted (a move that changed course).
    pub async fn remove_learners(&self, nodes: BTreeSet<NodeId>) -> Result<(), PartitionError> {
        let id = self.id();
        match self
            .raft()
            .change_membership(ChangeMembers::RemoveNodes(nodes), false)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(change_error(id, e)),
        }
    }

    /// Stops this replica from campaigning: its node left the Raft group (a
    /// replica cut off from its Raft group would otherwise call elections no
    /// member answers).
    pub fn retire(&self) {
        self.raft().runtime_config().elect(false);
    }

    /// The roster this Raft group's state holds, if one was set (the roster's Raft group).
    pub fn roster(&self) -> Result<Option<Roster>, PartitionError> {
        crate::state_machine::roster::read(self.store())
            .map_err(|e| PartitionError::storage(self.id(), &e))
    }

    /// Replaces the roster if it is still at `cmd.expect_version`; whether
    /// it did (another change won the race otherwise). On the leader only.
    pub async fn write_roster(&self, cmd: RosterCommand) -> Result<bool, PartitionError> {
        let applied = crate::write(self.raft(), self.id(), Command::roster(cmd)).await?;
        Ok(applied.roster == Some(true))
    }
}
