//! A partition: one openraft group whose log is a view of the node's shared
//! Raft log and whose state machine is RocksDB, driven by one owner task that
//! holds all leader-side state.
//!
//! Owns: the Raft type configuration, the log-entry codec, the log storage over
//! `chronos-raftlog`, the state machine over `chronos-store`, the history
//! (every applied entry, for replay, over `chronos-wal`), the owner and its
//! leader term (offsets, due times, dedup of in-flight ids, batching into
//! proposals, the timing wheel, consumer groups), replay, snapshots, history
//! retention and Raft log purge.
//! Does not own: validation of input (the API layer checks it before anything
//! reaches here), routing to partitions, gRPC, or the network between nodes:
//! [`Partition::open`] takes the Raft group's network factory (`chronos-raftnet`'s
//! for a Raft group of several voters, [`SoloNetwork`] for a single-voter one).
//!
//! Directory of one partition: `wal/` (the history's segments), `state/`
//! (RocksDB), `snapshots/`. The Raft log is the node's (`PartitionOptions::raft_log`).

mod codec;
mod delivery;
mod describe;
mod error;
mod fire_tail;
mod firing;
mod free_space;
mod groups;
mod history;
mod log_store;
mod membership;
mod migrate;
mod network;
mod owner;
mod pending;
mod publisher;
mod replay;
pub mod schedule;
mod snapshot;
mod state_machine;
#[cfg(test)]
mod test_net;
mod types;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chronos_proto::internal::CancelCommand;
use chronos_proto::v1::Event;
use chronos_raftlog::RaftLog;
use chronos_store::{Store, StoreResources};
use chronos_wal::Retention;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::InitializeError;
use openraft::error::RaftError;
use openraft::network::NetSnapshot;
use openraft::{BasicNode, RaftNetworkFactory, ServerState, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use delivery::{
    delivery_id, event_of, parse_delivery_id, DeliveryOptions, GroupGauge, Member, Outgoing,
    SettleItem, SettleOp, SettleResult, Start, Terms,
};
pub use describe::{Delivery, EventState, EventView};
pub use error::PartitionError;
pub use free_space::FreeSpace;
pub use groups::GroupInfo;
pub use membership::{Members, CATCH_UP_SLACK};
pub use network::SoloNetwork;
pub use pending::{PendingKey, PendingPage};
pub use publisher::PublishOutcome;
pub use replay::{
    ReplayQuery, ReplayRange, ReplayReader, ReplayReaders, ReplayStream, ReplayedEvent,
};
pub use types::{
    CancelOutcome, Entry, GroupDeleted, LeaderId, LogId, NodeId, Raft, TypeConfig, Vote,
};

use crate::delivery::Control;
pub use crate::firing::FiringOptions;
use crate::history::History;
use crate::log_store::LogStore;
pub use crate::owner::Handoffs;
use crate::owner::{Ctx, Owner, Upkeep};
use crate::publisher::PublishRequest;
use crate::state_machine::{AppliedState, StateMachine};
use crate::types::Command;

/// How long a follower may take to store one snapshot chunk.
const SNAPSHOT_CHUNK_TIMEOUT_MS: u64 = 10_000;

/// Requests queued for the owner before publishers feel backpressure.
const MAILBOX: usize = 4096;
/// Log entries in one append-entries RPC. One entry can hold a large batch
/// (a 1000-event publish is ~260 KB), so this keeps an RPC to a few MB; the
/// transport also splits a request that is still too large by bytes.
const MAX_PAYLOAD_ENTRIES: u64 = 64;

/// Everything needed to open one partition.
#[derive(Clone)]
pub struct PartitionOptions {
    pub id: u32,
    pub node_id: NodeId,
    /// The Raft group's voters, `node_id` among them; empty means `node_id` alone.
    /// Used only to initialise a new Raft group: every voter must be given the same list.
    pub voters: Vec<NodeId>,
    /// This replica joins a Raft group that exists elsewhere (a replica moved
    /// here): it never initialises one, it waits for the leader to add it.
    pub join: bool,
    /// This partition's own directory.
    pub dir: PathBuf,
    /// The node's Raft log, shared by all its partitions.
    pub raft_log: Arc<RaftLog>,
    /// The history's segment size.
    pub history_segment_bytes: u64,
    /// What the history keeps.
    pub retention: Retention,
    pub retention_check_interval: Duration,
    /// With concurrent publishers, wait this long to gather them into one entry.
    pub group_commit_linger: Duration,
    pub dedup_ttl: Duration,
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub snapshot_every_entries: u64,
    /// The leader's timing wheel: tick and near window.
    pub firing: FiringOptions,
    /// Consumer groups' ack timeout and redelivery policy.
    pub delivery: DeliveryOptions,
    /// RocksDB memory shared with the node's other partitions.
    pub resources: StoreResources,
    /// Whether this node may lead: its clock is within bounds of the
    /// cluster's (always on a single node) and it is not stopping. While
    /// false this replica does not lead.
    pub may_lead: watch::Receiver<bool>,
    /// The replica that should lead (the others let it win the first
    /// election, and a leader hands it leadership once it is caught up).
    pub preferred_leader: Option<NodeId>,
    /// The node's handoffs of leadership (one rebalancing handoff at a time).
    pub handoffs: Handoffs,
    /// How long a leader keeps a partition before handing it to its
    /// preferred leader.
    pub rebalance_after: Duration,
    /// The node's free disk space; new events are refused while it is low.
    pub free_space: watch::Receiver<FreeSpace>,
}

/// Where the placement puts a partition now (it changes with the roster):
/// a leader not among `replicas` hands leadership to one that is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placed {
    /// Empty: no placement (a single node).
    pub replicas: Vec<NodeId>,
    pub preferred: Option<NodeId>,
}

/// What `status` reports about a partition.
#[derive(Debug, Clone, Default)]
pub struct PartitionStatus {
    pub id: u32,
    pub leader: Option<NodeId>,
    pub is_leader: bool,
    pub term: u64,
    pub voters: Vec<NodeId>,
    /// Replicas catching up before they vote (a move in progress).
    pub learners: Vec<NodeId>,
    pub last_log_index: u64,
    /// Highest index this node knows committed.
    pub committed_index: u64,
    pub applied_index: u64,
    pub next_offset: u64,
    pub wal_bytes: u64,
    pub wal_segments: u64,
    /// Events waiting to come due (exact, as applied).
    pub pending: u64,
    pub next_due_ts: Option<i64>,
    /// False once the Raft group stopped on a storage failure.
    pub healthy: bool,
    /// On the leader: each other voter and the highest log index it matches.
    pub replication: Vec<(NodeId, u64)>,
}

/// Handle to a running partition. Cheap to share behind an `Arc`.
pub struct Partition {
    id: u32,
    raft: Raft,
    history: History,
    store: Store,
    applied: Arc<AppliedState>,
    /// The term this node is the ready leader of (set by the owner).
    ready_term: watch::Receiver<Option<u64>>,
    mailbox: parking_lot::Mutex<Option<mpsc::Sender<PublishRequest>>>,
    /// Consumer-group requests to the owner.
    control: mpsc::UnboundedSender<Control>,
    owner: parking_lot::Mutex<Option<JoinHandle<()>>>,
    placed: watch::Sender<Placed>,
    free_space: watch::Receiver<FreeSpace>,
    /// Its consumer groups' lag and in flight, while this node leads it.
    gauges: Arc<delivery::GroupGauges>,
}

fn open_err(id: u32, what: &str, e: impl std::fmt::Display) -> PartitionError {
    PartitionError::Unavailable(format!("partition {id}: opening {what}: {e}"))
}

impl Partition {
    /// Opens (creating on first start) the partition and starts its Raft group
    /// over `network`. A new Raft group is initialised with `opts.voters`; every
    /// voter does so with the same list, which openraft allows (the first
    /// election decides), so no node has to be told it bootstraps the Raft group.
    pub async fn open<N>(opts: PartitionOptions, network: N) -> Result<Partition, PartitionError>
    where
        N: RaftNetworkFactory<TypeConfig>,
        N::Network: NetSnapshot<TypeConfig, SnapshotData = tokio::fs::File>,
    {
        let id = opts.id;
        let history = History::open(id, &opts.dir.join("wal"), opts.history_segment_bytes)
            .map_err(|e| open_err(id, "history", e))?;
        let store = Store::open(&opts.dir.join("state"), &opts.resources)
            .map_err(|e| open_err(id, "state", e))?;
        let dedup_ttl_ms = opts.dedup_ttl.as_millis().min(i64::MAX as u128) as i64;
        let sm = StateMachine::open(store.clone(), history.clone(), &opts.dir, dedup_ttl_ms)
            .map_err(|e| open_err(id, "state machine", e))?;
        let applied = sm.applied_state();
        migrate::take_over_old_log(
            id,
            &opts.raft_log,
            &history,
            &opts.dir.join("wal"),
            sm.applied(),
        )
        .map_err(|e| open_err(id, "the raft log of an older layout", e))?;
        let log_store = LogStore::open(opts.raft_log.clone(), id, history.clone())
            .map_err(|e| open_err(id, "raft log", e))?;
        let reader = log_store.reader();
        history
            .align(
                applied.index.load(Ordering::Acquire),
                applied.next_offset.load(Ordering::Acquire),
                |from, to| reader.entries(from, to),
            )
            .map_err(|e| open_err(id, "history", e))?;

        let config = openraft::Config {
            cluster_name: format!("chronos-partition-{id}"),
            heartbeat_interval: opts.heartbeat_interval.as_millis() as u64,
            election_timeout_min: opts.election_timeout_min.as_millis() as u64,
            election_timeout_max: opts.election_timeout_max.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_every_entries),
            // openraft's purge is driven by history retention (the owner's upkeep):
            // a follower that fell behind or was wiped gets the retained log
            // (read from the history), so replay works on every replica for
            // the same history; a snapshot is needed only below retention.
            max_in_snapshot_log_to_keep: u64::MAX,
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            // Each snapshot chunk (3 MiB) gets this long; openraft's 200 ms
            // default is too short for a busy two-core machine.
            install_snapshot_timeout: SNAPSHOT_CHUNK_TIMEOUT_MS,
            // A node whose data directory was wiped comes back with an empty
            // log; the leader catches it up instead of refusing it.
            allow_log_reversion: Some(true),
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| open_err(id, "raft config", e))?,
        );
        let serving = sm.serving_switch();
        let raft = Raft::new(opts.node_id, config, network, log_store, sm)
            .await
            .map_err(|e| open_err(id, "raft", e))?;
        serving.store(true, Ordering::Release);
        // openraft's `initialize` campaigns at once: at formation only the
        // preferred leader does, and only once it may lead (its clock has
        // been measured; else its owner does it when the gate opens); the
        // others join its Raft group, or initialize themselves once they stop
        // holding back (it may be down).
        let single = opts.voters.len() <= 1;
        if !opts.join
            && (single
                || (opts.preferred_leader.is_none_or(|p| p == opts.node_id)
                    && *opts.may_lead.borrow()))
        {
            initialize(&raft, id, opts.node_id, &opts.voters).await?;
        }

        let (tx, rx) = mpsc::channel(MAILBOX);
        let (control, control_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_term) = watch::channel(None);
        let gauges = Arc::new(delivery::GroupGauges::default());
        let ctx = Ctx {
            partition: id,
            node_id: opts.node_id,
            raft: raft.clone(),
            store: store.clone(),
            applied: applied.clone(),
            linger: opts.group_commit_linger,
            dedup_ttl_ms,
            firing: opts.firing,
            delivery: opts.delivery,
            meters: crate::delivery::Meters::new(),
            gauges: gauges.clone(),
            preferred_leader: opts.preferred_leader,
            voters: (!opts.join).then(|| opts.voters.clone()),
        };
        let (placed, placed_rx) = watch::channel(Placed {
            replicas: opts.voters.clone(),
            preferred: opts.preferred_leader,
        });
        let upkeep = Upkeep::new(
            history.clone(),
            opts.raft_log.clone(),
            opts.retention,
            opts.retention_check_interval,
        );
        let notice = applied.notice.clone();
        let owner = Owner::new(
            ctx,
            rx,
            control_rx,
            notice,
            ready_tx,
            upkeep,
            crate::owner::Standing::new(
                opts.may_lead.clone(),
                opts.election_timeout_min * 9 / 10,
                opts.election_timeout_max * 5,
            ),
            crate::owner::Handoff::new(
                id,
                opts.node_id,
                placed_rx,
                opts.handoffs.clone(),
                opts.rebalance_after,
                opts.election_timeout_max * 2,
            ),
        );
        let owner = tokio::spawn(owner.run());
        Ok(Partition {
            id,
            raft,
            history,
            store,
            applied,
            ready_term,
            mailbox: parking_lot::Mutex::new(Some(tx)),
            control,
            owner: parking_lot::Mutex::new(Some(owner)),
            placed,
            free_space: opts.free_space,
            gauges,
        })
    }

    /// Where the placement puts this partition now.
    pub fn set_placement(&self, placed: Placed) {
        self.placed.send_if_modified(|cur| {
            let changed = *cur != placed;
            *cur = placed;
            changed
        });
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// The partition's Raft group: for the node-to-node transport, which hands
    /// it the RPCs of the Raft group's other voters.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// True while this node leads the Raft group, has applied its whole log and so
    /// takes writes; it fires and delivers only then.
    pub fn is_leading(&self) -> bool {
        self.ready_term.borrow().is_some()
    }

    /// Durably stores `events` (already validated) and returns one outcome per
    /// event, in order. Returns once the events are in the fsynced log and applied.
    pub async fn publish(&self, events: Vec<Event>) -> Result<Vec<PublishOutcome>, PartitionError> {
        self.publish_with(events, false).await
    }

    /// Like `publish`; with `reschedule`, an event replaces a still-pending one
    /// with the same (topic, message_id) — it moves — instead of being a duplicate.
    /// An id whose event fired (or is firing) is a duplicate all the same: one
    /// id fires once. A cancelled id is published again.
    pub async fn publish_with(
        &self,
        events: Vec<Event>,
        reschedule: bool,
    ) -> Result<Vec<PublishOutcome>, PartitionError> {
        // A Raft group stopped by a storage failure answers at once, with the cause.
        if let Err(fatal) = &self.raft.metrics().borrow_watched().running_state {
            return Err(PartitionError::from_fatal(self.id, fatal));
        }
        self.room_for_new_events()?;
        let mailbox = self.mailbox.lock().clone();
        let Some(mailbox) = mailbox else {
            return Err(PartitionError::Unavailable(format!(
                "partition {} is shutting down",
                self.id
            )));
        };
        let (reply, rx) = oneshot::channel();
        mailbox
            .send(PublishRequest {
                events,
                reschedule,
                advances: None,
                reply,
            })
            .await
            .map_err(|_| self.stopped_error())?;
        match rx.await {
            Ok(result) => result,
            Err(_) => Err(self.stopped_error()),
        }
    }

    /// Refuses new events while the node's free disk space is under its
    /// reserve. Fires, deliveries, acks, cancels and recurring schedules'
    /// occurrences go on: they write little, and the reserve is for them.
    fn room_for_new_events(&self) -> Result<(), PartitionError> {
        let space = *self.free_space.borrow();
        if space.low {
            return Err(PartitionError::DiskLow {
                partition: self.id,
                space,
            });
        }
        Ok(())
    }

    /// This partition's topics (as applied) with their pending counts, by name.
    pub fn topics(&self) -> Result<Vec<(String, u64)>, PartitionError> {
        let rows = self
            .store
            .list_topics()
            .map_err(|e| PartitionError::storage(self.id, &e))?;
        rows.into_iter()
            .map(|(name, raw)| {
                let state =
                    <chronos_proto::internal::TopicState as prost::Message>::decode(raw.as_slice())
                        .map_err(|e| PartitionError::storage(self.id, &e))?;
                Ok((name, state.pending))
            })
            .collect()
    }

    /// Stops the pending event (topic, message_id) from firing. Proposed by
    /// the owner, decided when the command applies: in log order after every
    /// acknowledged publish and every `Fire` the term proposed before it.
    pub async fn cancel(
        &self,
        topic: String,
        message_id: String,
    ) -> Result<CancelOutcome, PartitionError> {
        let mut outcomes = self
            .cancel_many(vec![CancelCommand { topic, message_id }])
            .await?;
        Ok(outcomes.remove(0))
    }

    /// Cancels in one log entry, decided in order (a repeated id finds its
    /// earlier cancel's outcome); one outcome per cancel.
    pub async fn cancel_many(
        &self,
        cancels: Vec<CancelCommand>,
    ) -> Result<Vec<CancelOutcome>, PartitionError> {
        if let Err(fatal) = &self.raft.metrics().borrow_watched().running_state {
            return Err(PartitionError::from_fatal(self.id, fatal));
        }
        let n = cancels.len();
        let outcomes = self.propose(Command::cancels(cancels)).await?.cancels;
        if outcomes.len() != n {
            return Err(PartitionError::Storage(format!(
                "partition {}: {n} cancels applied with {} outcomes",
                self.id,
                outcomes.len()
            )));
        }
        Ok(outcomes)
    }

    /// Creates, updates, pauses, resumes or deletes a recurring schedule.
    /// Proposed by the owner (which holds back the schedule's stored
    /// occurrences meanwhile); decided when it applies.
    pub async fn change_schedule(
        &self,
        op: chronos_proto::internal::schedule_command::Op,
    ) -> Result<schedule::ScheduleApplied, PartitionError> {
        if let Err(fatal) = &self.raft.metrics().borrow_watched().running_state {
            return Err(PartitionError::from_fatal(self.id, fatal));
        }
        // A new schedule adds events; changes of existing ones are let through.
        if matches!(op, chronos_proto::internal::schedule_command::Op::Create(_)) {
            self.room_for_new_events()?;
        }
        let cmd = Command::schedule(chronos_proto::internal::ScheduleCommand {
            now_ts: wall_ms(),
            op: Some(op),
        });
        self.propose(cmd).await?.schedule.ok_or_else(|| {
            PartitionError::Storage(format!(
                "partition {}: schedule change applied without an outcome",
                self.id
            ))
        })
    }

    /// A schedule as applied here: its record and spec.
    pub fn schedule(&self, schedule_id: &str) -> Result<Option<schedule::Stored>, PartitionError> {
        let raw = self
            .store
            .get_schedule(schedule_id)
            .map_err(|e| PartitionError::storage(self.id, &e))?;
        raw.map(|stored| self.decode_schedule(stored)).transpose()
    }

    /// Schedules in id order after `after`, only `topic`'s unless empty.
    pub fn schedules(
        &self,
        topic: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<schedule::Stored>, PartitionError> {
        let rows = self
            .store
            .list_schedules(topic, after, limit)
            .map_err(|e| PartitionError::storage(self.id, &e))?;
        rows.into_iter()
            .map(|(_, stored)| self.decode_schedule(stored))
            .collect()
    }

    fn decode_schedule(
        &self,
        stored: chronos_store::StoredSchedule,
    ) -> Result<schedule::Stored, PartitionError> {
        schedule::decode_stored(stored).map_err(|e| PartitionError::storage(self.id, &e))
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Why the partition cannot answer: its Raft group stopped (and on what).
    fn stopped_error(&self) -> PartitionError {
        let state = self.raft.metrics().borrow_watched().running_state.clone();
        PartitionError::from_running_state(self.id, &state)
    }

    /// Streams applied events in the query's range, in offset order; the
    /// reader holds `slot` until it ends.
    pub fn replay(&self, query: ReplayQuery, slot: ReplayReader) -> ReplayStream {
        let applied = self.applied.index.load(Ordering::Acquire);
        replay::replay(self.id, self.history.wal().clone(), applied, query, slot)
    }

    /// True when the Raft group is healthy and has a leader, and — when that
    /// leader is this node — it has applied its whole log and takes writes.
    pub fn is_ready(&self) -> bool {
        let m = self.raft.metrics().borrow_watched().clone();
        let leader_ready = m.current_leader != Some(m.id) || self.is_leading();
        m.running_state.is_ok() && m.current_leader.is_some() && leader_ready
    }

    /// Why the Raft group stopped, when a failure (a storage error) stopped
    /// it: the partition then takes nothing until the node is restarted.
    pub fn failure(&self) -> Option<PartitionError> {
        match &self.raft.metrics().borrow_watched().running_state {
            Err(openraft::error::Fatal::Stopped) | Ok(()) => None,
            Err(fatal) => Some(PartitionError::from_fatal(self.id, fatal)),
        }
    }

    /// The node this partition's Raft group currently follows as leader.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow_watched().current_leader
    }

    pub fn status(&self) -> PartitionStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let wal = self.history.stats();
        let applied = self.applied.index.load(Ordering::Acquire);
        PartitionStatus {
            id: self.id,
            leader: m.current_leader,
            is_leader: m.state == ServerState::Leader,
            term: m.current_term,
            voters: m.membership_config.membership().voter_ids().collect(),
            learners: m.membership_config.membership().learner_ids().collect(),
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: applied,
            next_offset: self.applied.next_offset.load(Ordering::Acquire),
            wal_bytes: wal.disk_bytes,
            wal_segments: wal.segment_count,
            pending: self.applied.pending.load(Ordering::Acquire),
            next_due_ts: self.store.first_pending_due().ok().flatten(),
            healthy: m.running_state.is_ok(),
            committed_index: m.local_committed.map_or(applied, |l| l.index.max(applied)),
            replication: membership::matched(&m)
                .into_iter()
                .map(|(id, matched)| (id, matched.unwrap_or(0)))
                .collect(),
        }
    }

    /// The history's counters for /metrics.
    pub fn wal_stats(&self) -> chronos_wal::WalStats {
        self.history.stats()
    }

    /// (topic, group, lag and in flight) of every consumer group this node
    /// serves as the partition's leader (none at a follower).
    pub fn group_gauges(&self) -> Vec<(String, String, GroupGauge)> {
        self.gauges.snapshot()
    }

    /// Stops taking publishes, lets in-flight ones finish, stops Raft, then
    /// flushes state and fsyncs the history so the next start replays nothing.
    pub async fn shutdown(&self) {
        drop(self.mailbox.lock().take());
        let owner = self.owner.lock().take();
        if let Some(mut owner) = owner {
            // It stops once the publishes in flight are answered.
            if tokio::time::timeout(Duration::from_secs(10), &mut owner)
                .await
                .is_err()
            {
                owner.abort();
            }
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(partition = self.id, "raft shutdown: {e}");
        }
        if let Err(e) = self.store.flush() {
            tracing::warn!(partition = self.id, "state flush at shutdown: {e}");
        }
        if let Err(e) = self.history.sync() {
            tracing::warn!(partition = self.id, "history fsync at shutdown: {e}");
        }
    }
}

/// Gives a new Raft group its first membership: `voters` (or `node_id` alone), each
/// without an address (the transport finds a node by id). A Raft group already
/// initialised — by an earlier start, or by another voter's vote or entries
/// arriving first — keeps what it has.
pub(crate) async fn initialize(
    raft: &Raft,
    id: u32,
    node_id: NodeId,
    voters: &[NodeId],
) -> Result<(), PartitionError> {
    if raft
        .is_initialized()
        .await
        .map_err(|e| open_err(id, "raft", e))?
    {
        return Ok(());
    }
    let members: BTreeMap<NodeId, BasicNode> = if voters.is_empty() {
        BTreeMap::from([(node_id, BasicNode::default())])
    } else {
        voters.iter().map(|&v| (v, BasicNode::default())).collect()
    };
    if !members.contains_key(&node_id) {
        return Err(open_err(
            id,
            "raft membership",
            format!("node {node_id} is not among the voters {voters:?}"),
        ));
    }
    match raft.initialize(members).await {
        Ok(()) => Ok(()),
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(open_err(id, "raft membership", e)),
    }
}

/// Proposes `cmd` and waits until it is applied; what applying it reported.
pub(crate) async fn write(
    raft: &Raft,
    partition: u32,
    cmd: Command,
) -> Result<types::Applied, PartitionError> {
    match raft.client_write(cmd).await {
        Ok(resp) => Ok(resp.data),
        Err(RaftError::APIError(e)) => Err(PartitionError::from_write_error(partition, &e)),
        Err(RaftError::Fatal(fatal)) => Err(PartitionError::from_fatal(partition, &fatal)),
    }
}

/// The wall clock in ms since the Unix epoch (0 if the clock is before 1970).
/// The wall clock in µs, for waking exactly when a millisecond starts.
pub(crate) fn wall_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

pub(crate) fn wall_ms() -> i64 {
    wall_us().div_euclid(1_000)
}
