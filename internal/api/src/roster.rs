//! Membership commands (`AddNode`, `RemoveNode`) and what status shows of
//! the roster and of replicas moving. The leader of the roster's Raft group applies a
//! change (by `chronos_placement::roster`'s rules); any other node forwards
//! the request to it. The moves themselves are the binary's (each partition
//! leader moves its own replicas toward the placement over the roster).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chronos_partition::{Partition, CATCH_UP_SLACK};
use chronos_placement::roster::{self as rules, RosterError};
use chronos_placement::{Placement, ROSTER_RAFT};
use chronos_proto::internal::{Roster, RosterCommand, RosterNode};
use chronos_proto::v1::{NodeInfo, PartitionInfo, PartitionMove, ReplicaProgress};
use tonic::Status;

use crate::forward::ForwardAdmin;
use crate::gateway::{Incoming, Target};
use crate::{status, Node};

/// How long a membership command may wait for the leader of the roster's Raft group.
const ROSTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at a change that lost the version race to another change.
const ROSTER_ATTEMPTS: usize = 5;

fn from_rule(e: RosterError) -> Status {
    match e {
        RosterError::Invalid { .. } => Status::invalid_argument(e.to_string()),
        RosterError::AlreadyExists(_) => Status::already_exists(e.to_string()),
        RosterError::NotFound(_) => Status::not_found(e.to_string()),
        RosterError::Refused(_) => Status::failed_precondition(e.to_string()),
    }
}

/// The roster as status and the membership commands show it.
pub fn node_infos(roster: &Roster) -> Vec<NodeInfo> {
    roster
        .nodes
        .iter()
        .map(|n| NodeInfo {
            id: n.id,
            api_addr: n.api_addr.clone(),
            raft_addr: n.raft_addr.clone(),
            reachable: false,
            clock_offset_ms: None,
            state: if n.leaving { "leaving" } else { "active" }.into(),
        })
        .collect()
}

/// Applies `change` to the roster on `p`, the leader of the roster's Raft group.
async fn apply(
    p: &Partition,
    change: impl Fn(&Roster) -> Result<Vec<RosterNode>, RosterError>,
) -> Result<Roster, Status> {
    for _ in 0..ROSTER_ATTEMPTS {
        let current = p.roster().map_err(status::from_partition)?.ok_or_else(|| {
            Status::unavailable("the cluster is still forming: its roster is not written yet")
        })?;
        let nodes = change(&current).map_err(from_rule)?;
        if nodes == current.nodes {
            return Ok(current);
        }
        let cmd = RosterCommand {
            expect_version: current.version,
            nodes,
            replication_factor: current.replication_factor,
        };
        if p.write_roster(cmd).await.map_err(status::from_partition)? {
            return p
                .roster()
                .map_err(status::from_partition)?
                .ok_or_else(|| Status::internal("the roster vanished after a change"));
        }
    }
    Err(Status::aborted(
        "the roster kept changing under this request; try again",
    ))
}

impl Node {
    fn roster_change_ready(&self) -> Result<(), Status> {
        if self.roster.is_none() {
            return Err(Status::failed_precondition(
                "this is a single node (no cluster.nodes): there is no roster to change",
            ));
        }
        Ok(())
    }

    /// Runs a roster change on the leader of the roster's Raft group: `change` there,
    /// or `req` forwarded to it. The roster after the change.
    pub(crate) async fn change_roster<R>(
        &self,
        incoming: &Incoming,
        req: R,
        change: impl Fn(&Roster) -> Result<Vec<RosterNode>, RosterError>,
        there: impl Fn(R::Reply) -> (Vec<NodeInfo>, u64),
    ) -> Result<(Vec<NodeInfo>, u64), Status>
    where
        R: ForwardAdmin + Clone,
    {
        self.roster_change_ready()?;
        let deadline = Instant::now() + ROSTER_TIMEOUT;
        let (change, there) = (&change, &there);
        self.on_leader(ROSTER_RAFT, incoming, deadline, |target| {
            let req = req.clone();
            async move {
                match target {
                    Target::Local(p) => {
                        let roster = apply(&p, change).await?;
                        Ok((node_infos(&roster), roster.version))
                    }
                    Target::Remote { channel, .. } => self
                        .ask(channel, req, incoming, deadline, None)
                        .await
                        .map(there),
                }
            }
        })
        .await
    }

    /// The rules `AddNode` applies.
    pub(crate) fn add_rule(
        node: RosterNode,
    ) -> impl Fn(&Roster) -> Result<Vec<RosterNode>, RosterError> {
        move |r| rules::add(r, node.clone())
    }

    /// The rules `RemoveNode` applies.
    pub(crate) fn remove_rule(
        &self,
        id: u64,
    ) -> impl Fn(&Roster) -> Result<Vec<RosterNode>, RosterError> {
        let rf = self.cluster.as_ref().map_or(1, |c| c.replication_factor());
        move |r| rules::remove(r, id, rf)
    }

    /// The roster this node has applied (`None` on a single node, or before
    /// the cluster formed).
    pub fn roster_now(&self) -> Option<Roster> {
        self.roster.as_ref()?.roster().ok().flatten()
    }
}

/// The partitions whose replicas are not yet where `placement` puts them,
/// as their leaders report them.
pub fn moves(placement: &Placement, infos: &[PartitionInfo]) -> Vec<PartitionMove> {
    infos
        .iter()
        .filter_map(|info| {
            let target: BTreeSet<u64> =
                placement.replicas(info.partition).iter().copied().collect();
            let voters: BTreeSet<u64> = info.voters.iter().copied().collect();
            if target.is_empty() || (voters == target && info.learners.is_empty()) {
                return None;
            }
            let learners: Vec<ReplicaProgress> = info
                .learners
                .iter()
                .map(|&id| {
                    info.replicas
                        .iter()
                        .find(|r| r.node_id == id)
                        .cloned()
                        .unwrap_or(ReplicaProgress {
                            node_id: id,
                            matched_index: 0,
                            lag: info.last_log_index,
                        })
                })
                .collect();
            let step = if target
                .iter()
                .any(|t| !voters.contains(t) && !info.learners.contains(t))
            {
                "adding learners"
            } else if learners.iter().any(|l| l.lag > CATCH_UP_SLACK) {
                "catching up"
            } else if info.leader.is_some_and(|l| !target.contains(&l)) {
                "handing leadership to a staying replica"
            } else {
                "changing voters"
            };
            Some(PartitionMove {
                partition: info.partition,
                voters: info.voters.clone(),
                target: target.into_iter().collect(),
                learners,
                step: step.into(),
            })
        })
        .collect()
}
