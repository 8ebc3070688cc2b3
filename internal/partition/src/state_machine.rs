//! openraft's state machine over the partition's RocksDB [`Store`].
//!
//! Applying a batch of entries writes everything they change — pending events,
//! dedup entries, the next offset, the membership and the applied log id — into
//! one RocksDB write batch, so the stored state always matches the applied index
//! it records. RocksDB's WAL is off: after a crash the state is whatever was last
//! flushed, and openraft re-applies the log from that applied index. Applying is
//! therefore idempotent (every write is a put of a value determined by the entry).
//!
//! Snapshots are RocksDB checkpoints (hard links, cheap) under `snapshots/`; they
//! let the log be purged logically and old WAL segments retired, and they are
//! what a follower that is too far behind (or whose data was wiped) gets: the
//! leader ships the checkpoint packed into one file (`snapshot.rs`), and the
//! follower installs it into its live store (`state_machine/install.rs`,
//! crash-safe: an interrupted install is finished by [`StateMachine::open`]).

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[cfg(test)]
mod cancel_tests;
mod events;
mod groups;
mod install;
#[cfg(test)]
mod migrate_tests;
#[cfg(test)]
mod redrive_tests;
#[cfg(test)]
mod replication_tests;
pub(crate) mod roster;
mod schedules;
#[cfg(test)]
pub(crate) mod tests;

use chronos_proto::internal::{command, group_item, EventKeys, GroupState, TopicState};
use chronos_store::{Batch, Store};
use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::EntryPayload;
use openraft_legacy::network_v1::SnapshotReceiverFactory;
use prost::Message;

use crate::history::History;
use crate::snapshot::SnapshotDir;
use crate::types::{Applied, Entry, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};

const META_APPLIED: &str = "applied";
const META_MEMBERSHIP: &str = "membership";
const META_NEXT_OFFSET: &str = "next_offset";
const META_PENDING: &str = "pending_count";

/// What the state machine has applied, readable without asking it.
#[derive(Debug, Default)]
pub struct AppliedState {
    /// Index of the last applied entry (0 = none).
    pub index: AtomicU64,
    /// Offset the next event will get once everything proposed so far is applied.
    pub next_offset: AtomicU64,
    /// Events in `pending` (exact, as of the last commit).
    pub pending: AtomicU64,
    /// Counts applied batches (and snapshot installs) that changed a fire log.
    pub fire_log_changes: AtomicU64,
    /// Notified after every applied batch and snapshot install: the
    /// partition's owner waits on it to catch up and to deliver.
    pub notice: Arc<tokio::sync::Notify>,
}

pub struct StateMachine {
    store: Store,
    /// Every applied entry, written before the batch that applies it.
    history: History,
    snapshots: SnapshotDir,
    applied: Option<LogId>,
    membership: StoredMembership,
    next_offset: u64,
    /// Events in `pending`.
    pending: u64,
    /// The roster's version (the roster group only; 0 = never set).
    roster_version: u64,
    /// Per-topic state (next fire sequence, pending count), loaded from the
    /// `topics` column family on first use.
    /// (Looked up for every event applied: foldhash, not SipHash.)
    topics: foldhash::HashMap<String, TopicState>,
    /// Topics whose state changed since the last commit.
    dirty_topics: foldhash::HashSet<String>,
    /// Consumer groups by (topic, group), loaded from `groups` on first use.
    groups: foldhash::HashMap<(String, String), GroupState>,
    /// Groups whose state changed since the last commit.
    dirty_groups: foldhash::HashSet<(String, String)>,
    shared: Arc<AppliedState>,
    /// How long a fired event's place in its fire log stays findable by
    /// offset (`fired_at`): the dedup window, past which it cannot be
    /// looked up by id anyway.
    dedup_ttl_ms: i64,
    /// Set once `Raft::new` returned: before, openraft is loading its state
    /// and reads only a snapshot's meta (see `get_current_snapshot`).
    serving: Arc<std::sync::atomic::AtomicBool>,
    /// Bytes the last committed write batch held: the next one reserves as
    /// much (at most [`BATCH_RESERVE_MAX`]).
    batch_bytes: usize,
}

/// The most a new write batch reserves up front.
const BATCH_RESERVE_MAX: usize = 4 << 20;

/// Topic states and group states each kept in memory between commits, at most.
const CACHED_STATES: usize = 4096;

pub(crate) fn sm_err(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(e)
}

fn read_meta<T: serde::de::DeserializeOwned>(
    store: &Store,
    key: &str,
) -> Result<Option<T>, io::Error> {
    match store.get_meta(key).map_err(sm_err)? {
        Some(raw) => serde_json::from_slice(&raw).map(Some).map_err(sm_err),
        None => Ok(None),
    }
}

impl StateMachine {
    /// Opens the state machine over `store`; first finishes a snapshot
    /// install that a crash interrupted, so nothing reads a half-installed state.
    /// `dedup_ttl_ms` is the node's dedup window.
    pub fn open(
        store: Store,
        history: History,
        partition_dir: &Path,
        dedup_ttl_ms: i64,
    ) -> Result<StateMachine, io::Error> {
        let snapshots = SnapshotDir::open(partition_dir.join("snapshots")).map_err(sm_err)?;
        install::finish_interrupted(&store, &snapshots)?;
        ensure_due_counts(&store)?;
        let mut sm = StateMachine {
            store,
            history,
            snapshots,
            applied: None,
            membership: StoredMembership::default(),
            next_offset: 0,
            pending: 0,
            roster_version: 0,
            topics: Default::default(),
            dirty_topics: Default::default(),
            groups: Default::default(),
            dirty_groups: Default::default(),
            shared: Arc::new(AppliedState::default()),
            dedup_ttl_ms: dedup_ttl_ms.max(0),
            serving: Arc::default(),
            batch_bytes: 0,
        };
        sm.reload()?;
        Ok(sm)
    }

    /// Reads what the store says was applied, drops every cache derived from
    /// the store, and publishes the result to [`AppliedState`].
    fn reload(&mut self) -> Result<(), io::Error> {
        debug_assert!(
            self.dirty_topics.is_empty() && self.dirty_groups.is_empty(),
            "reload between commits only"
        );
        self.applied = read_meta(&self.store, META_APPLIED)?;
        self.membership = read_meta(&self.store, META_MEMBERSHIP)?.unwrap_or_default();
        self.next_offset = read_meta(&self.store, META_NEXT_OFFSET)?.unwrap_or(0u64);
        self.pending = read_meta(&self.store, META_PENDING)?.unwrap_or(0u64);
        self.roster_version = roster::read(&self.store)?.map_or(0, |r| r.version);
        self.topics.clear();
        self.dirty_topics.clear();
        self.groups.clear();
        self.dirty_groups.clear();
        self.shared
            .index
            .store(self.applied.map_or(0, |l| l.index), Ordering::Release);
        self.shared
            .next_offset
            .store(self.next_offset, Ordering::Release);
        self.shared.pending.store(self.pending, Ordering::Release);
        Ok(())
    }

    /// True when the group has a node other than this one to ship snapshots to
    /// (then the builder packs right away).
    fn has_peers(membership: &StoredMembership) -> bool {
        membership.membership().nodes().nth(1).is_some()
    }

    /// The log id of the last applied entry, as stored.
    pub fn applied(&self) -> Option<LogId> {
        self.applied
    }

    /// Flipped once openraft has loaded its state (see `get_current_snapshot`).
    pub fn serving_switch(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.serving.clone()
    }

    pub fn applied_state(&self) -> Arc<AppliedState> {
        self.shared.clone()
    }

    /// Commits `batch` together with the applied log id it brings the state to.
    fn commit(
        &mut self,
        mut batch: Batch<'_>,
        membership_changed: &mut bool,
    ) -> Result<(), io::Error> {
        let Some(applied) = self.applied else {
            return Ok(());
        };
        for topic in std::mem::take(&mut self.dirty_topics) {
            if let Some(state) = self.topics.get(&topic) {
                batch.put_topic(&topic, &state.encode_to_vec());
            }
        }
        self.write_dirty_groups(&mut batch);
        batch.put_meta(META_APPLIED, &to_json(&applied)?);
        batch.put_meta(META_NEXT_OFFSET, &to_json(&self.next_offset)?);
        batch.put_meta(META_PENDING, &to_json(&self.pending)?);
        if std::mem::take(membership_changed) {
            batch.put_meta(META_MEMBERSHIP, &to_json(&self.membership)?);
        }
        self.batch_bytes = batch.size_in_bytes().min(BATCH_RESERVE_MAX);
        batch.commit().map_err(sm_err)?;
        // The caches are written through and clean after a commit; past a
        // bound they are dropped and refilled on use, so memory follows the
        // topics and groups in use, not every one this replica ever saw.
        if self.topics.len() > CACHED_STATES {
            self.topics = Default::default();
        }
        if self.groups.len() > CACHED_STATES {
            self.groups = Default::default();
        }
        self.shared
            .next_offset
            .store(self.next_offset, Ordering::Release);
        self.shared.pending.store(self.pending, Ordering::Release);
        self.shared.index.store(applied.index, Ordering::Release);
        Ok(())
    }

    /// Commits what `batch` holds (if anything) and leaves a fresh batch in its place.
    fn commit_so_far<'s>(
        &mut self,
        store: &'s Store,
        batch: &mut Batch<'s>,
        membership_changed: &mut bool,
    ) -> Result<(), io::Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let done = std::mem::replace(batch, store.batch_with_capacity(self.batch_bytes));
        self.commit(done, membership_changed)
    }

    /// Appends `entries` to the history, each with the offset the next event
    /// has before it.
    fn write_history(&self, entries: &[Entry]) -> Result<(), io::Error> {
        let mut next = self.next_offset;
        let pairs: Vec<(&Entry, u64)> = entries
            .iter()
            .map(|e| {
                let before = next;
                if let Some((first, n)) = crate::codec::entry_offsets(e) {
                    next = next.max(first + n);
                }
                (e, before)
            })
            .collect();
        self.history.append(&pairs).map_err(sm_err)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = tokio::fs::File;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<S>(&mut self, entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        let (entries, responders): (Vec<Entry>, Vec<_>) =
            entries.try_collect::<Vec<_>>().await?.into_iter().unzip();
        let replies = self.apply_entries(entries)?;
        for (responder, reply) in responders.into_iter().zip(replies) {
            if let Some(responder) = responder {
                responder.send(reply);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: tokio::fs::File,
    ) -> Result<(), io::Error> {
        self.install_received(meta, snapshot).await.map(|_| ())
    }

    /// The current snapshot packed into one file, packing it now if needed
    /// (blocking this state machine meanwhile; with peers the builder has
    /// usually packed it already). Except while openraft loads its state at
    /// start: it reads only the meta then (and installs a snapshot only when
    /// it is past what was applied, which a checkpoint of this store never
    /// is), so an unpacked snapshot is not packed for it. Every later call is
    /// to ship the data: a group's membership as applied here may not show
    /// the new member yet, so it does not decide.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        if !self.serving.load(Ordering::Acquire) {
            let Some((meta, path)) = self.snapshots.current_file()? else {
                return Ok(None);
            };
            // The descriptor standing in for the data must never be installed.
            assert!(
                meta.last_log_id <= self.applied,
                "snapshot at {:?} is past the applied {:?}",
                meta.last_log_id,
                self.applied
            );
            let file = tokio::fs::File::open(&path).await?;
            return Ok(Some(Snapshot {
                meta,
                snapshot: file,
            }));
        }
        let snapshots = self.snapshots.clone();
        let packed = tokio::task::spawn_blocking(move || snapshots.packed())
            .await
            .map_err(sm_err)??;
        let Some((meta, path)) = packed else {
            return Ok(None);
        };
        let file = tokio::fs::File::open(&path).await?;
        Ok(Some(Snapshot {
            meta,
            snapshot: file,
        }))
    }
}

impl StateMachine {
    /// Applies committed entries in one write batch (split where a command
    /// must read what earlier ones wrote); one reply per entry.
    pub(crate) fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<Vec<Applied>, io::Error> {
        self.write_history(&entries)?;
        let store = self.store.clone();
        let mut batch = store.batch_with_capacity(self.batch_bytes);
        let mut replies = Vec::new();
        let mut membership_changed = false;
        let mut fire_log_grew = false;
        for entry in entries {
            let mut fired = 0;
            let mut cancels = Vec::new();
            let mut group = None;
            let mut group_deleted = None;
            let mut redriven = 0;
            let mut roster = None;
            let mut unscheduled = Vec::new();
            let mut schedule = None;
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(cmd) => match &cmd.pb.kind {
                    Some(command::Kind::Publish(p)) => {
                        // Advances read the schedules earlier entries changed.
                        if p.has_reschedule || !p.advances.is_empty() {
                            self.commit_so_far(&store, &mut batch, &mut membership_changed)?;
                        }
                        fired = self.apply_publish(&mut batch, p, &mut unscheduled)?;
                        self.apply_advances(&mut batch, &p.advances)?;
                    }
                    // Firing and cancelling read `pending` and `ids`, which must
                    // already hold what earlier entries wrote: commit those (with
                    // their applied index) first, so replay reads what the leader did.
                    Some(command::Kind::Fire(f)) => {
                        self.commit_so_far(&store, &mut batch, &mut membership_changed)?;
                        fired = self.apply_fire(&mut batch, f, cmd.released.as_deref())?;
                    }
                    Some(command::Kind::Cancel(c)) => {
                        self.commit_so_far(&store, &mut batch, &mut membership_changed)?;
                        cancels = self.apply_cancels(&mut batch, std::slice::from_ref(c))?;
                    }
                    Some(command::Kind::Cancels(c)) => {
                        self.commit_so_far(&store, &mut batch, &mut membership_changed)?;
                        cancels = self.apply_cancels(&mut batch, &c.cancels)?;
                    }
                    // Creating or seeking a group reads the fire log; a dead
                    // letter copies its fired record; redrive reads the DLQ.
                    Some(command::Kind::Group(g)) if g.delete => {
                        self.commit_so_far(&store, &mut batch, &mut membership_changed)?;
                        group_deleted = Some(self.apply_group_delete(&mut batch, g)?);
                    }
                    Some(command::Kind::Group(g)) => {
                        self.commit_so_far(&store, &mut batch, &mut membership_changed)?;
                        group = Some(self.apply_group(g)?);
                    }
                    Some(command::Kind::Delivery(d)) => {
                        let has_dead = d.groups.iter().any(|g| {
                            g.items
                                .iter()
                                .any(|i| matches!(i.op, Some(group_item::Op::Dead(_))))
                        });
                        if has_dead {
                            self.commit_so_far(&store, &mut batch, &mut membership_changed)?;
                        }
                        self.apply_delivery(&mut batch, d)?;
                    }
                    Some(command::Kind::Trim(t)) => {
                        for topic in &t.topics {
                            batch.trim_fired(&topic.topic, topic.below_seq);
                            self.trim_redriven(&topic.topic, topic.below_seq)?;
                        }
                    }
                    Some(command::Kind::Redrive(r)) => {
                        self.commit_so_far(&store, &mut batch, &mut membership_changed)?;
                        redriven = self.apply_redrive(&mut batch, r)?;
                    }
                    Some(command::Kind::Schedule(c)) => {
                        self.commit_so_far(&store, &mut batch, &mut membership_changed)?;
                        schedule = Some(self.apply_schedule(&mut batch, c)?);
                    }
                    Some(command::Kind::Roster(r)) => {
                        roster = Some(self.apply_roster(&mut batch, entry.log_id.index, r));
                    }
                    None => {}
                },
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    membership_changed = true;
                }
            }
            self.applied = Some(entry.log_id);
            fire_log_grew |= fired > 0 || redriven > 0;
            replies.push(Applied {
                next_offset: self.next_offset,
                fired,
                cancels,
                group,
                group_deleted,
                redriven,
                roster,
                unscheduled,
                schedule,
            });
        }
        self.commit(batch, &mut membership_changed)?;
        if fire_log_grew {
            self.shared.fire_log_changes.fetch_add(1, Ordering::AcqRel);
        }
        self.shared.notice.notify_one();
        Ok(replies)
    }
}

impl SnapshotReceiverFactory<TypeConfig> for StateMachine {
    type SnapshotReceiver = tokio::fs::File;

    async fn begin_receiving_snapshot(&mut self) -> Result<tokio::fs::File, io::Error> {
        self.snapshots.incoming_file().await
    }
}

/// Builds a snapshot off the apply path: checkpoint first, then read what the
/// checkpoint actually contains, so the meta always matches the data.
pub struct SnapshotBuilder {
    store: Store,
    snapshots: SnapshotDir,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = tokio::fs::File;

    /// Checkpoints the live store (under the live lock, so never in the middle
    /// of an install), commits it as the current snapshot unless an install
    /// committed a newer one meanwhile, and — when the group has other nodes —
    /// packs it right away, off the apply path. The returned data is the pack
    /// when there is one; openraft only keeps the meta of a built snapshot.
    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let store = self.store.clone();
        let snapshots = self.snapshots.clone();
        let (meta, pack) = tokio::task::spawn_blocking(move || build_blocking(&store, &snapshots))
            .await
            .map_err(sm_err)??;
        let file = match pack {
            Some(path) => tokio::fs::File::open(path).await,
            None => self.snapshots.meta_file().await,
        }
        .map_err(sm_err)?;
        Ok(Snapshot {
            meta,
            snapshot: file,
        })
    }
}

fn build_blocking(
    store: &Store,
    snapshots: &SnapshotDir,
) -> Result<(SnapshotMeta, Option<std::path::PathBuf>), io::Error> {
    let (dir, _busy) = snapshots.new_checkpoint_dir();
    {
        let _live = snapshots.lock_live();
        store.checkpoint(&dir).map_err(sm_err)?;
    }
    let copy = Store::open_read_only(&dir).map_err(sm_err)?;
    let applied: Option<LogId> = read_meta(&copy, META_APPLIED)?;
    let membership: StoredMembership = read_meta(&copy, META_MEMBERSHIP)?.unwrap_or_default();
    drop(copy);
    let meta = SnapshotMeta {
        last_log_id: applied,
        last_membership: membership,
    };
    let io = |e: std::io::Error| sm_err(e);
    if !snapshots.commit(&dir, &meta).map_err(io)? {
        // An install committed a newer snapshot meanwhile: that one stands.
        let current = snapshots.current_meta().map_err(io)?;
        return Ok((current.unwrap_or(meta), None));
    }
    if !StateMachine::has_peers(&meta.last_membership) {
        return Ok((meta, None));
    }
    match snapshots.packed() {
        Ok(Some((packed_meta, path))) if packed_meta.last_log_id == meta.last_log_id => {
            Ok((meta, Some(path)))
        }
        Ok(_) => Ok((meta, None)),
        Err(e) => {
            // Packing is retried when the snapshot is asked for.
            tracing::warn!(last_log_id = ?meta.last_log_id, "packing snapshot: {e}");
            Ok((meta, None))
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, io::Error> {
    serde_json::to_vec(value).map_err(sm_err)
}

/// Counts pending events by due second if this store predates the counts
/// (a data directory or a snapshot written by an older version).
pub(crate) fn ensure_due_counts(store: &Store) -> Result<(), io::Error> {
    if store.due_counts_built().map_err(sm_err)? {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let counted = store
        .rebuild_due_counts(|raw| EventKeys::decode(raw).map(|k| k.topic))
        .map_err(sm_err)?;
    tracing::info!(
        counted,
        ms = started.elapsed().as_millis() as u64,
        "counted pending events by due time"
    );
    Ok(())
}
