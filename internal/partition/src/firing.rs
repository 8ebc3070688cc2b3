//! Firing in a leader term: a timing wheel holds the near window of pending
//! events and moves each into its topic's fire log (a `Fire` command through
//! Raft) once the wall clock reaches its due time.
//!
//! The wheel holds the events of `pending` due within the window
//! (`horizon`), so memory follows the window, not the pending count. It is
//! loaded by range scans of at most [`LOAD_CHUNK`] keys, one per step, that
//! keep its end within a second of `now + horizon`: the scans of a term's
//! start and of a busy window are spread out between releases instead of
//! holding the owner for the seconds it takes to read a window of values.
//! Events published into the loaded part join the wheel when their proposal
//! is applied. Nothing here persists anything: a crash or a leader change
//! loses only the wheel, which the next term rebuilds.
//!
//! A released event is read from `pending` (so one a cancel or reschedule
//! removed is dropped) — unless its value came with its publish's answer
//! and the wheel kept it (up to `FiringOptions::kept_bytes`): such an event
//! joined the wheel after its publish applied, and whatever removes a
//! pending event first holds its id and, once applied, takes the event out
//! of the wheel, value and all (`release_hold`, `forget`). It is numbered in
//! its topic's fire log (`fire_tail`);
//! delivery takes it from the tail without waiting for its `Fire`. The
//! releases of a few milliseconds are gathered into one `Fire` entry
//! ([`Gathered`]), proposed before any other proposal of the term or after
//! [`FIRE_LINGER`]: fewer, larger entries cost less to log and apply, and
//! nothing waits for them. An event whose id has a cancel or a
//! reschedule in flight waits (`parked`) until that applies: it may remove
//! the event, and a delivered event must stay fired.
//!
//! **Invariant** (checked in release builds): a `Fire` carries only events
//! with `due_ts <= fire_ts`, where `fire_ts` is the wall clock when the wheel
//! released them (for a while not the wall clock after it jumped ahead:
//! `StepGuard`); the state machine checks it again.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chronos_proto::internal::{EventKeys, FireCommand, FiredRecord, PendingRef};
use chronos_scheduler::{Fired, InsertError, StepGuard, TimingWheel, WheelConfig};
use chronos_store::id_key;
use prost::Message;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::fire_tail::{FireTail, Slot};
use crate::owner::TermError;
use crate::owner::{Completions, Ctx, Written};
use crate::publisher::NewEvent;
use crate::types::Command;
use crate::wall_ms;

/// Pending keys read per step while loading the window (the scan reads
/// each key's value from a blob file, so a chunk must stay small).
const LOAD_CHUNK: usize = 256;
/// How far the window's loaded end may fall behind `now + horizon` before
/// it is loaded on.
const LOAD_SLACK_MS: i64 = 1_000;
/// Events per `Fire` command.
const FIRE_BATCH: usize = 10_000;
/// Released events read and numbered per step: between steps the term
/// delivers, so a burst flows to consumers while it is released, and its
/// buffers are reused instead of a whole burst's being held at once.
const RELEASE_STEP: usize = 2_048;
/// Released events in `Fire`s not yet applied, at most, before more are
/// released: a burst must not queue seconds of `Fire`s in the log ahead of
/// the records that acks and deliveries propose.
const UNAPPLIED_LIMIT: usize = 2 * FIRE_BATCH;
/// Longest a release waits for its `Fire` to be proposed: delivery does not
/// wait for it, any other proposal of the term takes it along first, and
/// at a few hundred events per second per partition a shorter linger would
/// make an entry of each event.
pub(crate) const FIRE_LINGER: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy)]
pub struct FiringOptions {
    pub tick_ms: i64,
    pub horizon_ms: i64,
    /// Bytes of published values the wheel keeps, at most, so that their
    /// release reads nothing: the events due soon after their publish,
    /// which is most of a steady flow.
    pub kept_bytes: usize,
}

impl FiringOptions {
    /// What a node gives each of its `partitions` to keep values in: 64 MiB
    /// shared, at least 256 KiB each.
    pub fn kept_bytes_per_partition(partitions: u32) -> usize {
        ((64 << 20) / partitions.max(1) as usize).max(256 << 10)
    }
}

/// The records one `Fire` appended, by topic, dropped from the tail once it applies.
pub(crate) struct FireProposal {
    appended: Vec<(String, Vec<u64>)>,
    offsets: Vec<u64>,
}

/// Releases numbered (and perhaps delivered) whose `Fire` is not proposed
/// yet; kept by [`Completions`], which proposes it before anything else.
pub(crate) struct Gathered {
    epoch: u64,
    since: Instant,
    cmd: FireCommand,
    /// The events' values as released, one per ref (see `Command::released`).
    values: Vec<Bytes>,
    proposal: FireProposal,
}

impl Gathered {
    pub fn new(epoch: u64) -> Gathered {
        Gathered {
            epoch,
            since: Instant::now(),
            cmd: FireCommand::default(),
            values: Vec::new(),
            proposal: FireProposal {
                appended: Vec::new(),
                offsets: Vec::new(),
            },
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// When it is proposed at the latest.
    pub fn due(&self) -> Instant {
        self.since + FIRE_LINGER
    }

    /// The term's epoch, the `Fire` to propose and what it appends.
    pub fn into_parts(self) -> (u64, Command, FireProposal) {
        let cmd = Command::fire_released(self.cmd, self.values);
        (self.epoch, cmd, self.proposal)
    }

    fn len(&self) -> usize {
        self.cmd.events.len()
    }

    /// Event `r` of `topic` (`value`), released at `fire_ts`, is record
    /// `seq` of its fire log.
    fn add(&mut self, fire_ts: i64, r: PendingRef, value: Bytes, topic: &str, seq: u64) {
        assert!(r.due_ts <= fire_ts, "the wheel released an event early");
        self.cmd.fire_ts = self.cmd.fire_ts.max(fire_ts);
        self.cmd.events.push(r);
        self.values.push(value);
        self.cmd.seqs.push(seq);
        self.cmd.released_ts.push(fire_ts);
        let appended = &mut self.proposal.appended;
        match appended.last_mut() {
            Some((t, seqs)) if t == topic => seqs.push(seq),
            _ => appended.push((topic.to_owned(), vec![seq])),
        }
        self.proposal.offsets.push(r.offset);
    }
}

pub(crate) struct Firing {
    /// Each entry with its value when the wheel kept it.
    wheel: TimingWheel<Option<Bytes>>,
    /// Bytes of the values kept in the wheel and in `ready`, and the most.
    kept_bytes: usize,
    kept_limit: usize,
    /// Values of released events the wheel kept, by offset.
    ready: FxHashMap<u64, Bytes>,
    /// The wheel's clock: the wall clock, never moving back.
    now: i64,
    /// What part of `pending` the wheel holds: every (due, offset) key at or
    /// before `loaded` (each was scanned, or inserted when its publish
    /// applied). Scans read on from it.
    loaded: Option<(i64, u64)>,
    /// Where the load in progress ends: the window's end when it began.
    load_to: i64,
    /// What the wheel released last (reused between steps).
    fired: Vec<Fired<Option<Bytes>>>,
    /// Released (due, offset), to be read and numbered by the next steps,
    /// first due first.
    released: BinaryHeap<Reverse<(i64, u64)>>,
    /// Offsets the wheel released that no answered `Fire` covers yet
    /// (waiting in `released`, parked, or proposed): a refill scan or a
    /// publish's answer may offer them again, and they must not fire twice.
    taken: FxHashSet<u64>,
    /// Events gathered or proposed in a `Fire` that has not applied.
    unapplied: usize,
    /// Ids (`id_key`) with a cancel or reschedule in flight, and how many.
    holds: HashMap<Vec<u8>, usize>,
    /// Released events whose id is held, by id.
    parked: HashMap<Vec<u8>, Vec<(i64, u64)>>,
    gauge: metrics::Gauge,
    /// A wall clock that just jumped ahead is not fired by at once.
    guard: StepGuard,
}

impl Firing {
    pub fn start(ctx: &Ctx) -> Result<Firing, TermError> {
        let now = wall_ms();
        let opts = ctx.firing;
        let config = WheelConfig {
            tick_ms: opts.tick_ms,
            horizon_ms: opts.horizon_ms,
            ..WheelConfig::default()
        };
        let mut firing = Firing {
            wheel: TimingWheel::new(config, now)?,
            kept_bytes: 0,
            kept_limit: opts.kept_bytes,
            ready: FxHashMap::default(),
            now,
            loaded: None,
            load_to: now + opts.horizon_ms,
            fired: Vec::new(),
            released: BinaryHeap::new(),
            taken: FxHashSet::default(),
            unapplied: 0,
            holds: HashMap::new(),
            parked: HashMap::new(),
            gauge: metrics::gauge!("chronos_wheel_entries", "partition" => ctx.partition.to_string()),
            guard: StepGuard::default(),
        };
        firing.load_chunk(ctx)?;
        Ok(firing)
    }

    /// Releases what came due, proposes it, and keeps the window loaded
    /// ahead of the clock. Returns whether records joined the fire logs' tail.
    pub async fn step(
        &mut self,
        ctx: &Ctx,
        epoch: u64,
        tail: &mut FireTail,
        completions: &mut Completions,
    ) -> Result<bool, TermError> {
        let wall = self.guard.now(wall_ms(), std::time::Instant::now());
        self.now = self.now.max(wall);
        self.wheel.advance(self.now, &mut self.fired);
        for f in self.fired.drain(..) {
            self.taken.insert(f.key);
            self.released.push(Reverse((f.due_ms, f.key)));
            if let Some(value) = f.item {
                self.ready.insert(f.key, value);
            }
        }
        let mut appended = false;
        if self.may_release() {
            appended = self.release(ctx, epoch, tail, completions).await?;
        }
        if completions
            .gathered_due()
            .is_some_and(|due| Instant::now() >= due)
        {
            completions.propose_gathered(ctx).await?;
        }
        let end = self.now + ctx.firing.horizon_ms;
        if !self.loading() && self.load_to + load_slack_ms(ctx) <= end {
            self.load_to = end;
        }
        if self.loading() {
            self.load_chunk(ctx)?;
            // What the next chunk delays must not include another owner's releases.
            tokio::task::yield_now().await;
        }
        self.gauge.set(self.wheel.len() as f64);
        Ok(appended)
    }

    /// Whether released events wait and may be read now (an applied `Fire`
    /// wakes the owner otherwise).
    fn may_release(&self) -> bool {
        !self.released.is_empty() && self.unapplied < UNAPPLIED_LIMIT
    }

    /// Whether part of the window is still to be scanned.
    fn loading(&self) -> bool {
        self.loaded < Some((self.load_to, u64::MAX))
    }

    /// When `step` has work next (wall-clock ms).
    pub fn next_wake_ms(&self, ctx: &Ctx) -> i64 {
        if self.may_release() || self.loading() {
            return self.now;
        }
        let next = self.wheel.next_due_ms().unwrap_or(i64::MAX);
        next.min(self.load_to + load_slack_ms(ctx) - ctx.firing.horizon_ms)
    }

    /// Events whose publish applied; those beyond the loaded part of the
    /// window wait for a scan. Their values are kept while there is room.
    pub fn insert_new(&mut self, partition: u32, batch: Vec<NewEvent>) {
        for (due, offset, value) in batch {
            if Some((due, offset)) > self.loaded {
                continue;
            }
            // A copy: the value shares its request's buffer, which would
            // otherwise stay whole for as long as one of its events waits.
            let kept = (self.kept_bytes + value.len() <= self.kept_limit)
                .then(|| Bytes::copy_from_slice(&value));
            let len = kept.as_ref().map_or(0, Bytes::len);
            match self.insert(due, offset, kept) {
                Ok(true) => self.kept_bytes += len,
                Ok(false) => {}
                Err(e) => tracing::warn!(partition, offset, "not scheduled: {e}"),
            }
        }
    }

    /// Whether this term's wheel released the event at `offset` and no
    /// applied `Fire` covers it yet: it is firing, whatever `pending` says.
    pub fn is_firing(&self, offset: u64) -> bool {
        self.taken.contains(&offset)
    }

    /// A cancel or a reschedule of this id is proposed: its event must not
    /// fire until that applies.
    pub fn hold(&mut self, id: Vec<u8>) {
        *self.holds.entry(id).or_default() += 1;
    }

    /// The cancel or reschedule of `id` applied (or failed); it removed the
    /// pending event at `removed`, if any.
    pub fn release_hold(&mut self, id: &[u8], removed: Option<u64>) {
        if let Some(offset) = removed {
            self.unschedule(offset);
        }
        let Some(n) = self.holds.get_mut(id) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.holds.remove(id);
            // Read from `pending` again when proposed: a removed one is dropped.
            if let Some(parked) = self.parked.remove(id) {
                self.released.extend(parked.into_iter().map(Reverse));
            }
        }
    }

    /// A reschedule removed the pending event at `offset`.
    pub fn forget(&mut self, offset: u64) {
        self.unschedule(offset);
    }

    /// The pending event at `offset` is gone: out of the wheel, and its
    /// kept value dropped.
    fn unschedule(&mut self, offset: u64) {
        if let Some(Some(value)) = self.wheel.cancel(offset) {
            self.give_back(&value);
        }
    }

    /// A kept value left the wheel (fired or removed).
    fn give_back(&mut self, value: &Bytes) {
        self.kept_bytes = self
            .kept_bytes
            .checked_sub(value.len())
            .expect("kept values counted once each");
    }

    /// A `Fire` applied (or failed: that ends the term).
    pub fn fired(
        &mut self,
        tail: &mut FireTail,
        proposal: FireProposal,
        written: Written,
    ) -> Result<(), TermError> {
        self.unapplied = self
            .unapplied
            .checked_sub(proposal.offsets.len())
            .expect("a Fire applied more events than were gathered");
        let applied = written?;
        for (topic, seqs) in proposal.appended {
            tail.applied(&topic, seqs);
        }
        for offset in proposal.offsets {
            self.taken.remove(&offset);
        }
        metrics::counter!("chronos_fired_events_total").increment(applied.fired);
        Ok(())
    }

    pub fn end(self) {
        self.gauge.set(0.0);
    }

    /// Scans the next keys of `pending` up to `load_to` into the wheel.
    fn load_chunk(&mut self, ctx: &Ctx) -> Result<(), TermError> {
        let keys = ctx
            .store
            .scan_pending(self.loaded, self.load_to, LOAD_CHUNK)?;
        // A scan reads on strictly after what is loaded and stops at the
        // window's end: a key skipped would never fire.
        assert!(
            keys.first().is_none_or(|k| Some(*k) > self.loaded)
                && keys.last().is_none_or(|k| k.0 <= self.load_to),
            "a load of pending read outside ({:?}, {}]",
            self.loaded,
            self.load_to
        );
        for &(due, offset) in &keys {
            self.insert(due, offset, None)?;
        }
        self.loaded = if keys.len() < LOAD_CHUNK {
            Some((self.load_to, u64::MAX))
        } else {
            keys.last().copied()
        };
        Ok(())
    }

    /// Puts an event in the wheel; whether it (and `value`) went in.
    fn insert(&mut self, due: i64, offset: u64, value: Option<Bytes>) -> Result<bool, TermError> {
        if self.taken.contains(&offset) {
            return Ok(false);
        }
        match self.wheel.insert(offset, due, value) {
            Ok(()) => Ok(true),
            // Seen by both the scan and the publish's answer: once is enough.
            Err(InsertError::DuplicateKey { .. }) => Ok(false),
            Err(source) => Err(TermError::Wheel { offset, source }),
        }
    }

    /// Takes the first [`RELEASE_STEP`] released events (by due time) with
    /// their values (kept, or read from `pending`), numbers them in their
    /// topics' fire logs and gathers them into the next `Fire` (proposed once
    /// it holds [`FIRE_BATCH`]). Returns whether any was numbered.
    async fn release(
        &mut self,
        ctx: &Ctx,
        epoch: u64,
        tail: &mut FireTail,
        completions: &mut Completions,
    ) -> Result<bool, TermError> {
        let fire_ts = self.now;
        let lateness = metrics::histogram!("chronos_fire_lateness_seconds");
        let n = self.released.len().min(RELEASE_STEP);
        let keys: Vec<(i64, u64)> = (0..n)
            .filter_map(|_| self.released.pop().map(|Reverse(k)| k))
            .collect();
        let mut appended = false;
        let values = self.values(ctx, &keys)?;
        for (&(due_ms, offset), (value, kept)) in keys.iter().zip(values) {
            // Cancelled or rescheduled since it was loaded.
            let Some(value) = value else {
                self.taken.remove(&offset);
                continue;
            };
            let keys = EventKeys::decode(value.as_ref()).map_err(|source| TermError::Decode {
                what: "a pending event",
                source,
            })?;
            if !self.holds.is_empty() {
                let id = id_key(&keys.topic, &keys.message_id);
                if self.holds.contains_key(&id) {
                    // Read again once the hold ends: the value may be gone.
                    self.parked.entry(id).or_default().push((due_ms, offset));
                    continue;
                }
            }
            if cfg!(debug_assertions) && kept {
                // A kept value stands for a read: the event about to fire
                // must still be pending, with that value (every test runs
                // this check).
                let stored = ctx.store.get_pending(due_ms, offset)?;
                assert_eq!(
                    stored.as_deref(),
                    Some(value.as_ref()),
                    "released {offset}: the kept value is not what pending holds"
                );
            }
            lateness.record((fire_ts - due_ms) as f64 / 1000.0);
            let record = FiredRecord {
                offset,
                due_ts: due_ms,
                fire_ts,
                event: value.clone(),
                only_group: String::new(),
            };
            let seq = tail.append(&ctx.store, &keys.topic, Slot::Ready(record))?;
            let r = PendingRef {
                due_ts: due_ms,
                offset,
            };
            let gathered = completions.gather(epoch);
            gathered.add(fire_ts, r, value, &keys.topic, seq);
            self.unapplied += 1;
            appended = true;
            if gathered.len() >= FIRE_BATCH {
                completions.propose_gathered(ctx).await?;
            }
        }
        Ok(appended)
    }

    /// The stored values of released `keys`, in order, and whether each was
    /// kept: a kept one from `ready`, the rest read from `pending` (`None`:
    /// no longer pending).
    fn values(
        &mut self,
        ctx: &Ctx,
        keys: &[(i64, u64)],
    ) -> Result<Vec<(Option<Bytes>, bool)>, TermError> {
        let mut values = Vec::with_capacity(keys.len());
        let mut unread = Vec::new();
        for (i, &(_, offset)) in keys.iter().enumerate() {
            // Nothing kept (a scanned window, a full budget): no lookups.
            let kept = match self.ready.is_empty() {
                true => None,
                false => self.ready.remove(&offset),
            };
            match &kept {
                Some(v) => self.give_back(v),
                None => unread.push(i),
            }
            let was_kept = kept.is_some();
            values.push((kept, was_kept));
        }
        if !unread.is_empty() {
            let wanted: Vec<(i64, u64)> = unread.iter().map(|&i| keys[i]).collect();
            let read = ctx.store.get_pending_run(&wanted)?;
            for (i, v) in unread.into_iter().zip(read) {
                values[i].0 = v.map(Bytes::from);
            }
        }
        Ok(values)
    }
}

/// The slack, smaller for short windows (tests) so the window stays mostly loaded.
fn load_slack_ms(ctx: &Ctx) -> i64 {
    LOAD_SLACK_MS.min(ctx.firing.horizon_ms / 4).max(1)
}

#[cfg(test)]
mod tests {
    use super::FiringOptions;

    #[test]
    fn a_node_keeps_64_mib_of_values_shared_by_its_partitions() {
        assert_eq!(FiringOptions::kept_bytes_per_partition(8), 8 << 20);
        assert_eq!(FiringOptions::kept_bytes_per_partition(1), 64 << 20);
        assert_eq!(FiringOptions::kept_bytes_per_partition(0), 64 << 20);
        // Many partitions still keep a little each.
        assert_eq!(FiringOptions::kept_bytes_per_partition(1024), 256 << 10);
    }
}
