//! Delivery in a leader term: the consumer groups of the partition with
//! their members and deliveries. See the module docs of `delivery`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chronos_proto::internal::{
    DeliveryCommand, FiredRecord, GroupCommand, GroupState, InflightRecord, TopicState, TopicTrim,
    TrimCommand,
};
use prost::Message;
use rustc_hash::FxHashMap;
use tokio::sync::Notify;

use super::group::GroupRt;
use super::pump::pump;
use super::{
    GroupControl, GroupGauge, GroupRuntime, Member, Reply, SettleItem, SettleOp, SettleResult,
    Start, MAX_PROPOSALS,
};
use crate::fire_tail::FireTail;
use crate::owner::{Completions, Ctx, TermCompletion, TermError, Written};
use crate::types::Command;
use crate::{wall_ms, PartitionError};

mod change;
pub(crate) use change::Changing;
use change::{Change, ChangeReply};

/// Fired records read per scan of a topic's fire log.
pub(super) const READ_BATCH: usize = 1_000;
/// Changes to groups share one log entry for up to
/// `DeliveryOptions::record_linger` unless this many have gathered.
const LINGER_MAX_CHANGES: usize = 4_096;
/// How often the per-group gauges are refreshed: every busy group's, and
/// the next [`IDLE_GAUGES`] idle groups' in turn.
const GAUGE_EVERY: Duration = Duration::from_secs(1);
/// Each idle group's gauges read its topic's state: so many per refresh
/// keep a step short with thousands of idle groups.
const IDLE_GAUGES: usize = 256;
/// Topics whose fire logs one trim looks at: a round over every topic of
/// the partition goes a step at a time.
const TRIM_TOPICS: usize = 256;

type GroupKey = (String, String);

/// Settle results waiting for the entry that records them.
pub(crate) struct Waiter {
    reply: Reply<Vec<SettleResult>>,
    results: Vec<SettleResult>,
}

impl Waiter {
    /// Answers once the entry recording the settles applied (or failed).
    pub fn answer(self, written: &Written) {
        let _ = self.reply.send(match written {
            Ok(_) => Ok(self.results),
            Err(e) => Err(e.clone()),
        });
    }
}

/// A member waiting for its new group's `Group` entry to apply.
pub(crate) struct Attaching {
    key: GroupKey,
    member: Arc<Member>,
    reply: Reply<()>,
}

impl Attaching {
    /// The term that proposed the group ended: the member must attach again.
    pub fn refuse(self, err: PartitionError) {
        let _ = self.reply.send(Err(err));
    }
}

pub(crate) struct Dispatcher {
    groups: HashMap<GroupKey, GroupRt>,
    /// The groups with members, deliveries or changes to record: the only
    /// ones a step looks at, so a partition with many idle groups (a topic
    /// per tenant) costs no more per step than one with a few.
    busy: HashSet<GroupKey>,
    /// Idle groups whose gauges are still to be refreshed in this round.
    idle_gauges: Vec<GroupKey>,
    /// Topics the trim round has still to look at.
    trim_round: Vec<String>,
    members: FxHashMap<u64, Arc<Member>>,
    /// Settles applied in memory, answered when the next recorded entry applies.
    waiters: Vec<Waiter>,
    /// Groups whose seek or delete is being applied: neither delivered
    /// from nor recorded until it is, so no older cursor overtakes it.
    changing: HashMap<GroupKey, Change>,
    /// Members waiting for their new group's entry to apply (how many such
    /// attaches each has), and those of them that detached meanwhile: they
    /// must not join when it does.
    attaching: HashMap<u64, usize>,
    left_while_attaching: HashSet<u64>,
    /// Recording proposals out.
    recording: usize,
    /// Since when changes have waited for a proposal.
    dirty_since: Option<Instant>,
    /// Someone waits for the changes' answer: record them without lingering.
    urgent: bool,
    /// Fire logs, credits or redeliveries changed since the last pump.
    needs_pump: bool,
    /// `AppliedState::fire_log_changes` as last seen.
    fire_log_seen: u64,
    gauges_at: Instant,
    trim_at: Instant,
    trimming: bool,
    /// Handed to members this owner found without credit: they notify it
    /// when credit returns.
    credit: Arc<Notify>,
}

impl Dispatcher {
    /// Loads every group of the partition and its in-flight set.
    pub fn start(ctx: &Ctx, credit: Arc<Notify>) -> Result<Dispatcher, TermError> {
        let decode = |what: &'static str| move |source| TermError::Decode { what, source };
        let mut groups = HashMap::new();
        for (topic, group, raw) in ctx.store.list_groups()? {
            let state = GroupState::decode(raw.as_slice()).map_err(decode("a group"))?;
            let rt = GroupRt::new(
                topic.clone(),
                group.clone(),
                state.cursor,
                state.from_due_ts,
            );
            groups.insert((topic, group), rt);
        }
        let mut restored = 0u64;
        let mut busy = HashSet::new();
        for (key, raw) in ctx.store.scan_inflight()? {
            let r = InflightRecord::decode(raw.as_slice()).map_err(decode("a delivery"))?;
            let (seq, key) = (key.seq, (key.topic, key.group));
            if let Some(g) = groups.get_mut(&key) {
                g.restore(seq, r.attempt, r.at_ts, r.delivered);
                restored += 1;
                busy.insert(key);
            }
        }
        tracing::info!(
            partition = ctx.partition,
            groups = groups.len(),
            inflight = restored,
            "delivering"
        );
        Ok(Dispatcher {
            groups,
            busy,
            idle_gauges: Vec::new(),
            trim_round: Vec::new(),
            members: FxHashMap::default(),
            waiters: Vec::new(),
            changing: HashMap::new(),
            attaching: HashMap::new(),
            left_while_attaching: HashSet::new(),
            recording: 0,
            dirty_since: None,
            urgent: false,
            needs_pump: true,
            fire_log_seen: ctx.applied.fire_log_changes.load(Ordering::Acquire),
            gauges_at: Instant::now(),
            trim_at: Instant::now() + ctx.delivery.trim_every,
            trimming: false,
            credit,
        })
    }

    /// A member got credit back.
    pub fn credit_returned(&mut self) {
        self.needs_pump = true;
    }

    /// Records joined a fire log, or the term's tail of one applied.
    pub fn fire_log_grew(&mut self) {
        self.needs_pump = true;
    }

    /// Runs what is due: gauges, fire-log trims, ack deadlines and
    /// redeliveries, deliveries to members with credit, and the proposal
    /// recording them.
    pub async fn step(
        &mut self,
        ctx: &Ctx,
        epoch: u64,
        tail: &FireTail,
        completions: &mut Completions,
    ) -> Result<(), TermError> {
        if self.gauges_at.elapsed() >= GAUGE_EVERY {
            self.gauges_at = Instant::now();
            self.set_gauges(ctx);
        }
        if !self.trimming && self.trim_round.is_empty() && Instant::now() >= self.trim_at {
            self.trim_at = Instant::now() + ctx.delivery.trim_every;
            self.trim_round = ctx
                .store
                .list_topics()?
                .into_iter()
                .map(|(t, _)| t)
                .collect();
        }
        if !self.trimming && !self.trim_round.is_empty() {
            self.trim(ctx, epoch, completions).await?;
        }
        let fire_log = ctx.applied.fire_log_changes.load(Ordering::Acquire);
        if fire_log != self.fire_log_seen {
            self.fire_log_seen = fire_log;
            self.needs_pump = true;
        }
        let now = wall_ms();
        self.expire(ctx, now);
        if std::mem::take(&mut self.needs_pump) {
            for key in &self.busy {
                if self.changing.contains_key(key) {
                    continue;
                }
                if let Some(group) = self.groups.get_mut(key) {
                    pump(ctx, tail, group, &self.members, &self.credit, now)?;
                }
            }
        }
        self.flush(ctx, epoch, completions, false).await?;
        // Groups with nothing left to do leave the busy set; a member
        // joining, a seek or a restored delivery puts one back.
        let (groups, changing) = (&self.groups, &self.changing);
        self.busy
            .retain(|key| changing.contains_key(key) || groups.get(key).is_some_and(|g| !g.idle()));
        Ok(())
    }

    /// When `step` has work next: a group's timer (wall-clock ms) or the
    /// recording linger, the gauges, a trim.
    pub fn next_wake(&self, ctx: &Ctx, now: Instant) -> Instant {
        let timer_ms = self
            .busy
            .iter()
            .filter_map(|key| self.groups.get(key)?.next_timer())
            .min()
            .unwrap_or(i64::MAX);
        let until_timer = Duration::from_millis(timer_ms.saturating_sub(wall_ms()).max(0) as u64);
        let mut at = now
            .checked_add(until_timer)
            .unwrap_or(now + Duration::from_secs(3600))
            .min(self.gauges_at + GAUGE_EVERY);
        if !self.trimming {
            at = at.min(match self.trim_round.is_empty() {
                true => self.trim_at,
                false => now,
            });
        }
        if let Some(since) = self.dirty_since {
            if self.recording < MAX_PROPOSALS {
                let linger = ctx.delivery.record_linger;
                at = at.min(if self.urgent { now } else { since + linger });
            }
        }
        at
    }

    pub async fn handle(
        &mut self,
        ctx: &Ctx,
        epoch: u64,
        c: GroupControl,
        completions: &mut Completions,
    ) -> Result<(), TermError> {
        match c {
            GroupControl::Attach {
                topic,
                group,
                start,
                member,
                reply,
            } => {
                let key = (topic, group);
                if self.being_deleted(&key) {
                    let _ = reply.send(Err(PartitionError::Unavailable(format!(
                        "consumer group {:?} on topic {:?} is being deleted; subscribe \
                         again to make a new one",
                        key.1, key.0
                    ))));
                } else if self.groups.contains_key(&key) {
                    self.join(key, member);
                    let _ = reply.send(Ok(()));
                } else {
                    let attaching = Attaching { key, member, reply };
                    self.create(ctx, epoch, attaching, start, completions).await;
                }
            }
            GroupControl::Detach { member } => {
                if self.attaching.contains_key(&member) {
                    self.left_while_attaching.insert(member);
                }
                if let Some(left) = self.members.remove(&member) {
                    // A member is only in busy groups.
                    let (mut dead, keeps) = (0, left.keeps_unacked());
                    for key in &self.busy {
                        if let Some(g) = self.groups.get_mut(key) {
                            dead += g.release_member(member, ctx.delivery.max_attempts, keeps);
                        }
                    }
                    metrics::counter!("chronos_dead_letters_total").increment(dead);
                    self.needs_pump = true;
                }
            }
            GroupControl::Settle {
                group,
                items,
                wait,
                reply,
            } => {
                let results = self.settle(ctx, &group, items);
                let changed = results.iter().any(|r| *r != SettleResult::Unknown);
                if changed {
                    self.urgent |= wait;
                    self.waiters.push(Waiter { reply, results });
                } else {
                    let _ = reply.send(Ok(results));
                }
            }
            GroupControl::Seek {
                topic,
                group,
                ts,
                reply,
            } => {
                let reply = ChangeReply::seek(reply);
                self.change(ctx, epoch, (topic, group), Some(ts), reply, completions)
                    .await?;
            }
            GroupControl::Delete {
                topic,
                group,
                reply,
            } => {
                let reply = ChangeReply::delete(reply);
                self.change(ctx, epoch, (topic, group), None, reply, completions)
                    .await?;
            }
            GroupControl::Runtime { reply } => {
                let rows = self
                    .groups
                    .values()
                    .map(|g| GroupRuntime {
                        topic: g.topic.clone(),
                        group: g.name.clone(),
                        members: g.members.clone(),
                        inflight: g.flights.len() as u64,
                    })
                    .collect();
                let _ = reply.send(Ok(rows));
            }
        }
        Ok(())
    }

    /// Proposes a new group for an attaching member; it joins once applied.
    async fn create(
        &mut self,
        ctx: &Ctx,
        epoch: u64,
        attaching: Attaching,
        start: Start,
        completions: &mut Completions,
    ) {
        let (kind, start_ts) = start.to_command();
        let cmd = GroupCommand {
            topic: attaching.key.0.clone(),
            group: attaching.key.1.clone(),
            start: kind as i32,
            start_ts,
            now_ts: wall_ms(),
            seek: false,
            delete: false,
        };
        match completions.propose(ctx, Command::group(cmd)).await {
            Ok(applied) => {
                *self.attaching.entry(attaching.member.id()).or_default() += 1;
                completions.push_term(epoch, async move {
                    TermCompletion::GroupCreated(attaching, applied.await)
                })
            }
            Err(e) => attaching.refuse(e),
        }
    }

    pub fn group_created(&mut self, ctx: &Ctx, attaching: Attaching, written: Written) {
        let id = attaching.member.id();
        let left = self.left_while_attaching.contains(&id);
        if let Some(n) = self.attaching.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.attaching.remove(&id);
                self.left_while_attaching.remove(&id);
            }
        }
        let position = written.and_then(|applied| {
            applied.group.ok_or_else(|| {
                PartitionError::Storage(format!(
                    "partition {}: group command applied without a position",
                    ctx.partition
                ))
            })
        });
        match position {
            Ok((cursor, from_due_ts)) => {
                let Attaching { key, member, reply } = attaching;
                // Another member's attach may have created it meanwhile.
                self.groups.entry(key.clone()).or_insert_with(|| {
                    GroupRt::new(key.0.clone(), key.1.clone(), cursor, from_due_ts)
                });
                if !left {
                    self.join(key, member);
                }
                let _ = reply.send(Ok(()));
            }
            Err(e) => attaching.refuse(e),
        }
    }

    pub fn recorded(&mut self, written: Written, waiters: Vec<Waiter>) -> Result<(), TermError> {
        self.recording -= 1;
        for w in waiters {
            w.answer(&written);
        }
        written?;
        Ok(())
    }

    pub fn trimmed(&mut self, written: Written, events: u64) -> Result<(), TermError> {
        self.trimming = false;
        written?;
        metrics::counter!("chronos_fired_trimmed_total").increment(events);
        Ok(())
    }

    /// The term ended: members' streams end with `reason` (they reattach to
    /// the next leader); settles not yet proposed are refused.
    pub fn end(self, ctx: &Ctx, reason: &str) {
        for member in self.members.values() {
            member.close(reason.to_string());
        }
        for w in self.waiters {
            let _ = w.reply.send(Err(ctx.not_leader()));
        }
        ctx.gauges.clear();
    }

    fn join(&mut self, key: GroupKey, member: Arc<Member>) {
        if let Some(g) = self.groups.get_mut(&key) {
            if !g.members.contains(&member.id()) {
                g.members.push(member.id());
            }
            self.busy.insert(key);
        }
        self.members.insert(member.id(), member);
        self.needs_pump = true;
    }

    /// Proposes every group's changes in one entry, when a slot is free and
    /// the changes have gathered for `record_linger` (or are many) or someone
    /// waits for them, or at once with `now`: fewer, larger entries leave
    /// the log's fsyncs to `Fire` and publishes.
    pub async fn flush(
        &mut self,
        ctx: &Ctx,
        epoch: u64,
        completions: &mut Completions,
        now: bool,
    ) -> Result<(), TermError> {
        let pending: usize = self
            .busy
            .iter()
            .filter(|key| !self.changing.contains_key(*key))
            .filter_map(|key| self.groups.get(key))
            .map(GroupRt::pending_changes)
            .sum();
        if pending == 0 {
            self.dirty_since = None;
            self.urgent = false;
            return Ok(());
        }
        let since = *self.dirty_since.get_or_insert_with(Instant::now);
        let waited = self.urgent
            || since.elapsed() >= ctx.delivery.record_linger
            || pending >= LINGER_MAX_CHANGES;
        if !now && (self.recording >= MAX_PROPOSALS || !waited) {
            return Ok(());
        }
        self.dirty_since = None;
        self.urgent = false;
        let mut groups = Vec::new();
        for key in &self.busy {
            if self.changing.contains_key(key) {
                continue;
            }
            if let Some(delta) = self.groups.get_mut(key).and_then(GroupRt::take_delta) {
                groups.push(delta);
            }
        }
        let applied = completions
            .propose(
                ctx,
                Command::delivery(DeliveryCommand {
                    now_ts: wall_ms(),
                    groups,
                }),
            )
            .await?;
        let waiters = std::mem::take(&mut self.waiters);
        self.recording += 1;
        completions.push_term(epoch, async move {
            TermCompletion::Recorded {
                written: applied.await,
                waiters,
            }
        });
        Ok(())
    }

    /// Runs every group's timers: timed-out deliveries are retried or dead.
    fn expire(&mut self, ctx: &Ctx, now: i64) {
        let opts = ctx.delivery;
        for key in &self.busy {
            let Some(g) = self.groups.get_mut(key) else {
                continue;
            };
            if g.next_timer().is_none_or(|at| at > now) {
                continue;
            }
            let expired = g.expire(now, opts.max_attempts, |a| opts.backoff_ms(a));
            for m in expired.credits {
                if let Some(member) = self.members.get(&m) {
                    member.give_back(1);
                }
            }
            metrics::counter!("chronos_ack_timeouts_total")
                .increment(expired.retried + expired.dead);
            metrics::counter!("chronos_dead_letters_total").increment(expired.dead);
            self.needs_pump = true;
        }
    }

    /// Applies acks and nacks to the in-memory state; they are recorded by the
    /// next flush, and answered when it applies.
    fn settle(&mut self, ctx: &Ctx, group: &str, items: Vec<SettleItem>) -> Vec<SettleResult> {
        let now = wall_ms();
        let opts = ctx.delivery;
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            let Some(g) = self.groups.get_mut(&(item.topic, group.to_string())) else {
                results.push(SettleResult::Unknown);
                continue;
            };
            let (result, holder) = match item.op {
                SettleOp::Ack => match g.ack(item.seq) {
                    Some(holder) => (SettleResult::Acked, holder),
                    None => (SettleResult::Unknown, None),
                },
                SettleOp::Nack { delay_ms } => match g.flights.get(&item.seq).map(|f| f.attempt) {
                    Some(attempt) if attempt == item.attempt => {
                        let dead = (attempt >= opts.max_attempts).then(|| {
                            format!("nacked on attempt {attempt} of {}", opts.max_attempts)
                        });
                        if dead.is_some() {
                            metrics::counter!("chronos_dead_letters_total").increment(1);
                        }
                        let delay = match delay_ms {
                            0 => opts.backoff_ms(attempt),
                            d => d.min(i64::MAX as u64) as i64,
                        };
                        let holder = g.fail(item.seq, now.saturating_add(delay), dead);
                        (SettleResult::Nacked, holder)
                    }
                    _ => (SettleResult::Unknown, None),
                },
            };
            if let Some(member) = holder.and_then(|m| self.members.get(&m)) {
                member.give_back(1);
            }
            results.push(result);
        }
        results
    }

    /// Proposes dropping the start of the fire logs of the round's next
    /// topics: events older than the retention age that every group of the
    /// topic is done with (past its cursor and not in flight).
    async fn trim(
        &mut self,
        ctx: &Ctx,
        epoch: u64,
        completions: &mut Completions,
    ) -> Result<(), TermError> {
        let cutoff = wall_ms().saturating_sub(
            ctx.delivery
                .fired_retention
                .as_millis()
                .min(i64::MAX as u128) as i64,
        );
        let chunk = (self.trim_round).split_off(self.trim_round.len().saturating_sub(TRIM_TOPICS));
        let looked_at: HashSet<&str> = chunk.iter().map(String::as_str).collect();
        let mut floors: HashMap<&str, u64> = HashMap::new();
        for g in self.groups.values() {
            if !looked_at.contains(g.topic.as_str()) {
                continue;
            }
            let held = g.flights.keys().min().copied().unwrap_or(u64::MAX);
            let floor = floors.entry(g.topic.as_str()).or_insert(u64::MAX);
            *floor = (*floor).min(g.cursor).min(held);
        }
        let mut topics = Vec::new();
        let mut events = 0;
        for topic in &chunk {
            let floor = floors.get(topic.as_str()).copied().unwrap_or(u64::MAX);
            let Some(first) = ctx.store.first_fired_seq(topic)? else {
                continue;
            };
            let mut below = first;
            'scan: loop {
                let rows = ctx.store.scan_fired(topic, below, READ_BATCH)?;
                for (seq, raw) in &rows {
                    let rec = FiredRecord::decode(raw.as_slice()).map_err(|source| {
                        TermError::Decode {
                            what: "a fired record",
                            source,
                        }
                    })?;
                    if *seq >= floor || rec.fire_ts >= cutoff {
                        break 'scan;
                    }
                    below = seq + 1;
                }
                if rows.len() < READ_BATCH {
                    break;
                }
            }
            if below > first {
                events += below - first;
                topics.push(TopicTrim {
                    topic: topic.clone(),
                    below_seq: below,
                });
            }
        }
        if topics.is_empty() {
            return Ok(());
        }
        let applied = completions
            .propose(ctx, Command::trim(TrimCommand { topics }))
            .await?;
        self.trimming = true;
        completions.push_term(epoch, async move {
            TermCompletion::Trimmed {
                written: applied.await,
                events,
            }
        });
        Ok(())
    }

    /// Per-group lag (fired events not yet handed out) and in-flight counts:
    /// of busy groups, and of the next idle ones in turn.
    fn set_gauges(&mut self, ctx: &Ctx) {
        if self.idle_gauges.is_empty() {
            self.idle_gauges = (self.groups.keys())
                .filter(|key| !self.busy.contains(*key))
                .cloned()
                .collect();
        }
        let idle = self
            .idle_gauges
            .split_off(self.idle_gauges.len().saturating_sub(IDLE_GAUGES));
        for key in self.busy.iter().chain(&idle) {
            let Some(g) = self.groups.get(key) else {
                continue;
            };
            let Ok(Some(raw)) = ctx.store.get_topic(&g.topic) else {
                continue;
            };
            let topic = TopicState::decode(raw.as_slice()).unwrap_or_default();
            let gauge = GroupGauge {
                lag: crate::groups::lag(&topic, &key.1, g.cursor),
                inflight: g.flights.len() as u64,
            };
            ctx.gauges.set(key, gauge);
        }
    }
}
