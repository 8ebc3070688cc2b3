//! Where this node's replicas come and go: the node follows the roster (the
//! cluster's node list, kept by the roster's Raft group), recomputes the placement
//! when it changes, opens the replicas the placement gives it, moves the
//! replicas of the partitions it leads toward the placement, and deletes a
//! replica once its Raft group's leader no longer counts it.
//!
//! A move, driven by the partition's leader one step per look (every
//! `LOOK_EVERY`): add the new nodes as learners; once each is within
//! `CATCH_UP_SLACK` entries of the leader, make the placement's nodes the
//! voters (joint consensus; a leader that is itself moving away first only
//! adds them, hands leadership to one of them — the owner's handoff does
//! that — and the new leader finishes). At most `MAX_MOVES` partitions move
//! at a time from one leader; publishes, firing and delivery go on
//! throughout (the leader stays until it hands over, like any handoff).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chronos_api::Node;
use chronos_config::Config;
use chronos_partition::{
    FreeSpace, Handoffs, Partition, PartitionOptions, Placed, SoloNetwork, CATCH_UP_SLACK,
};
use chronos_placement::roster::active;
use chronos_placement::{Placement, ROSTER_RAFT};
use chronos_proto::internal::{Roster, RosterCommand, RosterNode};
use chronos_raftlog::RaftLog;
use chronos_raftnet::{Network, Peer, Peers, RaftRoutes};
use chronos_store::StoreResources;
use tokio::sync::watch;

use crate::serve::partition_options;

/// How often the node looks at the roster and at its moves.
const LOOK_EVERY: Duration = Duration::from_millis(500);
/// Partitions one leader moves at a time.
const MAX_MOVES: usize = 2;
/// The longest pause between asks whether a replica has left its Raft group.
const MAX_ASK_PAUSE: Duration = Duration::from_secs(8);
/// How long a released replica's last users get to let go of it.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Opens this node's replicas (the same options for every partition).
pub struct Opener {
    pub config: Config,
    pub raft_log: Arc<RaftLog>,
    pub resources: StoreResources,
    pub may_lead: watch::Receiver<bool>,
    pub free_space: watch::Receiver<FreeSpace>,
    pub handoffs: Handoffs,
    pub routes: RaftRoutes,
    /// `None` on a single node.
    pub peers: Option<Peers>,
}

impl Opener {
    pub fn dir(&self, id: u32) -> PathBuf {
        if id == ROSTER_RAFT {
            return self.config.data_dir.join("roster");
        }
        self.config.data_dir.join(format!("partition-{id:04}"))
    }

    /// Opens partition `id` (or the roster's Raft group) with `voters` at
    /// formation; a `join`ing replica waits for its leader to add it.
    pub async fn open(
        &self,
        id: u32,
        placed: Placed,
        join: bool,
    ) -> anyhow::Result<Arc<Partition>> {
        let opts = PartitionOptions {
            handoffs: self.handoffs.clone(),
            voters: placed.replicas.clone(),
            preferred_leader: placed.preferred,
            join,
            dir: self.dir(id),
            ..partition_options(
                &self.config,
                id,
                &self.resources,
                &self.raft_log,
                self.may_lead.clone(),
                self.free_space.clone(),
            )
        };
        let p = match &self.peers {
            None => Partition::open(opts, SoloNetwork).await,
            Some(peers) => Partition::open(opts, Network::new(id, peers.clone())).await,
        }
        .with_context(|| format!("opening partition {id}"))?;
        if self.peers.is_some() {
            self.routes.insert(id, p.raft().clone());
        }
        Ok(Arc::new(p))
    }

    /// Deletes what a crash left of replicas being deleted.
    pub fn finish_releases(&self) -> anyhow::Result<()> {
        let dir = &self.config.data_dir;
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_prefix("partition-")
                .and_then(|rest| rest.strip_suffix(".removed"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            self.raft_log
                .forget(id)
                .with_context(|| format!("forgetting partition {id}'s raft log"))?;
            std::fs::remove_dir_all(entry.path())
                .with_context(|| format!("deleting {}", entry.path().display()))?;
        }
        Ok(())
    }

    /// Partitions with a directory here (replicas from an earlier run).
    pub fn on_disk(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(&self.config.data_dir) else {
            return Vec::new();
        };
        let mut ids: Vec<u32> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("partition-")?.parse::<u32>().ok()
            })
            .filter(|&id| id < self.config.partitions)
            .collect();
        ids.sort_unstable();
        ids
    }
}

/// The placement over `roster`'s active nodes.
pub fn placement_of(roster: &Roster, config: &Config) -> Placement {
    let configured = config.cluster.effective_replication_factor();
    Placement::new(
        &active(roster),
        config.partitions,
        chronos_placement::roster::replication_factor(roster, configured),
    )
}

/// What the placement says of partition `id`.
pub fn placed(placement: &Placement, id: u32) -> Placed {
    Placed {
        replicas: placement.replicas(id).to_vec(),
        preferred: placement.preferred_leader(id),
    }
}

/// Where the roster's Raft group is placed: every node of the roster (a leaving node
/// stays until it holds nothing).
fn roster_placed(roster: &Roster) -> Placed {
    Placed {
        replicas: roster.nodes.iter().map(|n| n.id).collect(),
        preferred: None,
    }
}

/// Follows the roster and moves replicas, until `stop` turns true.
pub struct Replicas {
    pub node: Arc<Node>,
    pub opener: Opener,
    /// The roster a new cluster forms with (`cluster.nodes`); empty on a
    /// joining node, which never writes the first roster.
    pub seeds: Vec<RosterNode>,
    /// Version of the roster last acted on.
    pub seen: u64,
    /// Partitions with a move step running.
    pub busy: Arc<std::sync::Mutex<BTreeSet<u32>>>,
    /// This node left the roster and its roster replica stopped campaigning.
    pub retired: bool,
    /// Replicas the placement took away whose leader still keeps this node
    /// in the Raft group: when to ask again, and the current pause (doubling, so
    /// a slow move does not cost an RPC per peer every look).
    pub asks: BTreeMap<u32, (tokio::time::Instant, Duration)>,
}

impl Replicas {
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(LOOK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Err(e) = self.look().await {
                tracing::warn!("replicas: {e:#}");
            }
        }
    }

    async fn look(&mut self) -> anyhow::Result<()> {
        let Some(roster_raft) = self.node.roster.clone() else {
            return Ok(());
        };
        let Some(roster) = roster_raft.roster()? else {
            // The first roster: the formed Raft group's leader writes the seeds.
            if roster_raft.is_leading() && !self.seeds.is_empty() {
                let cmd = RosterCommand {
                    expect_version: 0,
                    nodes: self.seeds.clone(),
                    replication_factor: self.opener.config.cluster.effective_replication_factor(),
                };
                if roster_raft.write_roster(cmd).await? {
                    tracing::info!(nodes = self.seeds.len(), "the roster is written");
                }
            }
            return Ok(());
        };
        if roster.version != self.seen {
            self.follow(&roster, &roster_raft)?;
        }
        let Some(cluster) = &self.node.cluster else {
            return Ok(());
        };
        let placement = cluster.placement();
        let me = self.node.node_id;
        let listed = roster.nodes.iter().any(|n| n.id == me);
        if !listed && self.node.partitions.all().is_empty() && !self.retired {
            tracing::info!("this node left the cluster and holds nothing: it can be stopped");
            roster_raft.retire();
            self.retired = true;
        }
        // Replicas the placement gives this node: they join their Raft groups.
        if listed {
            for id in placement.hosted_on(me) {
                if self.node.partitions.get(id).is_none() {
                    tracing::info!(partition = id, "a replica moves here");
                    let p = self.opener.open(id, placed(&placement, id), true).await?;
                    self.node.partitions.insert(p);
                }
            }
        }
        // Moves of the Raft groups this node leads.
        let mut moving: Vec<(bool, Arc<Partition>, BTreeSet<u64>)> = Vec::new();
        let mut targets: Vec<(Arc<Partition>, BTreeSet<u64>)> = self
            .node
            .partitions
            .all()
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    placement.replicas(p.id()).iter().copied().collect(),
                )
            })
            .collect();
        targets.push((
            roster_raft.clone(),
            roster_placed(&roster).replicas.into_iter().collect(),
        ));
        for (p, target) in targets {
            let m = p.members();
            if m.leader != Some(me) || target.is_empty() {
                continue;
            }
            let settled = m.voters == target && m.learners.is_empty() && !m.joint;
            if !settled {
                let started = !m.learners.is_empty() || m.joint || !m.voters.is_subset(&target);
                moving.push((started, p, target));
            }
        }
        // The roster's Raft group first, outside the limit: a node learns the
        // roster (and so opens the replicas it is given) only through it,
        // so partition moves to that node wait on it. Then moves under way,
        // then new ones, in partition order.
        moving.sort_by_key(|(started, p, _)| (p.id() != ROSTER_RAFT, !*started, p.id()));
        let limit =
            MAX_MOVES + usize::from(moving.first().is_some_and(|m| m.1.id() == ROSTER_RAFT));
        for (_, p, target) in moving.into_iter().take(limit) {
            if !self.busy.lock().is_ok_and(|mut b| b.insert(p.id())) {
                continue;
            }
            let busy = self.busy.clone();
            tokio::spawn(async move {
                if let Err(e) = step(&p, me, &target).await {
                    tracing::info!(partition = p.id(), "move: {e}");
                }
                if let Ok(mut b) = busy.lock() {
                    b.remove(&p.id());
                }
            });
        }
        // Replicas the placement took away: deleted once their leader
        // confirms this node is out of the Raft group.
        let mut released = Vec::new();
        for p in self.node.partitions.all().iter() {
            if placement.replicas(p.id()).contains(&me) || p.members().leader == Some(me) {
                self.asks.remove(&p.id());
                continue;
            }
            let now = tokio::time::Instant::now();
            let (next, pause) = self.asks.get(&p.id()).copied().unwrap_or((now, LOOK_EVERY));
            if now < next {
                continue;
            }
            if self.left_group(p, &placement).await {
                self.asks.remove(&p.id());
                released.push(p.id());
            } else {
                let pause = (pause * 2).min(MAX_ASK_PAUSE);
                self.asks.insert(p.id(), (now + pause, pause));
            }
        }
        // After the loop: its list of partitions holds each replica too,
        // and a release waits until nothing else does.
        for id in released {
            self.release(id).await?;
        }
        if roster_raft.members().leader == Some(me) {
            self.finish_leaving(&roster, &roster_raft).await?;
        }
        Ok(())
    }

    /// Acts on a new roster: the peers, the placement, each replica's place.
    fn follow(&mut self, roster: &Roster, roster_raft: &Partition) -> anyhow::Result<()> {
        let Some(cluster) = &self.node.cluster else {
            return Ok(());
        };
        for n in &roster.nodes {
            // This node's config says how it reaches the nodes it lists (a
            // proxy, another interface); the roster's address serves for
            // nodes added since.
            let peer = match self
                .opener
                .config
                .cluster
                .nodes
                .iter()
                .find(|c| c.id == n.id)
            {
                Some(c) => Peer {
                    id: n.id,
                    raft_addr: c.raft_addr.clone(),
                    api_addr: c.api_addr.clone(),
                },
                None => Peer {
                    id: n.id,
                    raft_addr: n.raft_addr.clone(),
                    api_addr: n.api_addr.clone(),
                },
            };
            cluster
                .peers
                .upsert(&peer)
                .with_context(|| format!("node {}'s raft_addr", n.id))?;
        }
        for peer in cluster.peers.all() {
            if peer.id != self.node.node_id && !roster.nodes.iter().any(|n| n.id == peer.id) {
                cluster.peers.remove(peer.id);
            }
        }
        let placement = placement_of(roster, &self.opener.config);
        for p in self.node.partitions.all().iter() {
            p.set_placement(placed(&placement, p.id()));
        }
        roster_raft.set_placement(roster_placed(roster));
        tracing::info!(
            version = roster.version,
            nodes = ?active(roster),
            leaving = ?roster.nodes.iter().filter(|n| n.leaving).map(|n| n.id).collect::<Vec<_>>(),
            "following the roster"
        );
        cluster.set_placement(placement);
        self.seen = roster.version;
        Ok(())
    }

    /// Whether `p`'s leader says this node is no longer in its Raft group.
    async fn left_group(&self, p: &Partition, placement: &Placement) -> bool {
        let Some(cluster) = &self.node.cluster else {
            return false;
        };
        let me = self.node.node_id;
        let mut ask: Vec<u64> = p.members().leader.into_iter().collect();
        let replicas: Vec<u64> = placement
            .replicas(p.id())
            .iter()
            .copied()
            .filter(|n| !ask.contains(n))
            .collect();
        ask.extend(replicas);
        for node in ask.into_iter().filter(|&n| n != me) {
            let Some(channel) = cluster.peers.channel(node) else {
                continue;
            };
            let Ok(view) = chronos_raftnet::membership(channel, p.id()).await else {
                continue;
            };
            // Only the leader's word counts, and only on a finished change.
            if view.held && view.leader == Some(node) {
                return !view.joint && !view.voters.contains(&me) && !view.learners.contains(&me);
            }
        }
        false
    }

    /// Stops serving partition `id` here and deletes the replica.
    async fn release(&self, id: u32) -> anyhow::Result<()> {
        tracing::info!(partition = id, "the replica moved away; deleting it here");
        self.opener.routes.remove(id);
        let Some(p) = self.node.partitions.remove(id) else {
            return Ok(());
        };
        p.shutdown().await;
        let until = tokio::time::Instant::now() + RELEASE_WAIT;
        while Arc::strong_count(&p) > 1 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if Arc::strong_count(&p) > 1 {
            tracing::warn!(
                partition = id,
                "the released replica is still in use; deleting it anyway"
            );
        }
        drop(p);
        let dir = self.opener.dir(id);
        let doomed = dir.with_extension("removed");
        std::fs::rename(&dir, &doomed).with_context(|| format!("renaming {}", dir.display()))?;
        self.opener.finish_releases()
    }

    /// On the roster's leader: a leaving node that holds no partition any
    /// more leaves the roster.
    async fn finish_leaving(&self, roster: &Roster, roster_raft: &Partition) -> anyhow::Result<()> {
        let Some(cluster) = &self.node.cluster else {
            return Ok(());
        };
        for n in roster.nodes.iter().filter(|n| n.leaving) {
            let held = if n.id == self.node.node_id {
                self.node.partitions.all().iter().map(|p| p.id()).collect()
            } else {
                let Some(channel) = cluster.peers.channel(n.id) else {
                    continue;
                };
                match chronos_raftnet::held(channel).await {
                    Ok(held) => held,
                    Err(_) => continue,
                }
            };
            if held.iter().any(|&p| p != ROSTER_RAFT) {
                continue;
            }
            let cmd = RosterCommand {
                expect_version: roster.version,
                nodes: chronos_placement::roster::forget(roster, n.id),
                replication_factor: roster.replication_factor,
            };
            if roster_raft.write_roster(cmd).await? {
                tracing::info!(
                    node = n.id,
                    "the node holds nothing now; it left the roster"
                );
            }
            return Ok(()); // one change per look: the version moved
        }
        Ok(())
    }
}

/// One step of moving `p` (led here) toward the voters `target`.
async fn step(p: &Partition, me: u64, target: &BTreeSet<u64>) -> anyhow::Result<()> {
    let m = p.members();
    let missing: Vec<u64> = target
        .iter()
        .copied()
        .filter(|n| !m.voters.contains(n) && !m.learners.contains(n))
        .collect();
    for &n in &missing {
        tracing::info!(partition = p.id(), node = n, "adding a learner");
        p.add_learner(n).await?;
    }
    if !missing.is_empty() {
        return Ok(());
    }
    // A learner that has not acknowledged anything yet (its node has not
    // opened the replica) is behind however short the log is.
    let behind: BTreeMap<u64, Option<u64>> = target
        .iter()
        .filter(|n| !m.voters.contains(n))
        .map(|&n| (n, m.matched.get(&n).copied().flatten()))
        .filter(|&(_, matched)| matched.is_none_or(|i| i + CATCH_UP_SLACK < m.last_log_index))
        .collect();
    if !behind.is_empty() {
        return Ok(());
    }
    let voters: BTreeSet<u64> = if target.contains(&me) {
        target.clone()
    } else {
        // Leaving: the new replicas vote beside this one; once leadership
        // went to one of them, it drops this node.
        m.voters.union(target).copied().collect()
    };
    if voters != m.voters || m.joint {
        tracing::info!(partition = p.id(), ?voters, "changing voters");
        p.set_voters(voters.clone()).await?;
    }
    let strays: BTreeSet<u64> = m.learners.difference(&voters).copied().collect();
    if !strays.is_empty() {
        tracing::info!(
            partition = p.id(),
            ?strays,
            "dropping learners no longer wanted"
        );
        p.remove_learners(strays).await?;
    }
    Ok(())
}
