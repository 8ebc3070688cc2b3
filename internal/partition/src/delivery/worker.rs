//! The delivery worker's loop: one tokio task per partition, active while
//! this node leads it. See the module docs of `delivery`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chronos_proto::internal::{
    DeliveryCommand, EventRecord, FiredRecord, GroupCommand, GroupState, InflightRecord,
    TopicState, TopicTrim, TrimCommand,
};
use chronos_proto::v1::Delivery;
use chronos_store::Store;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use prost::Message;
use tokio::sync::{mpsc, oneshot, Notify};

use super::group::GroupRt;
use super::{
    delivery_id, event_of, Control, DeliveryOptions, GroupRuntime, Member, SettleItem, SettleOp,
    SettleResult, Start, MAX_PROPOSALS,
};
use crate::types::{Command, Raft};
use crate::{wall_ms, PartitionError};

/// Fired records read per scan of a topic's fire log.
const READ_BATCH: usize = 1_000;
/// Changes to groups wait up to this long to share one log entry.
const LINGER: Duration = Duration::from_millis(2);
/// ... unless this many have gathered.
const LINGER_MAX_CHANGES: usize = 4_096;
/// How often the per-group gauges are refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(1);
/// Longest a request waits for this node to become the ready leader.
const DEFER_LIMIT: Duration = Duration::from_secs(5);
/// Longest sleep, so leadership changes and clock movement are noticed.
const MAX_NAP: Duration = Duration::from_millis(50);

type GroupKey = (String, String);
type WriteResult = Result<
    openraft::raft::ClientWriteResponse<crate::types::TypeConfig>,
    openraft::error::ClientWriteError<crate::types::NodeId, openraft::BasicNode>,
>;

/// Settle results waiting for the entry that records them.
struct Waiter {
    reply: oneshot::Sender<Result<Vec<SettleResult>, PartitionError>>,
    results: Vec<SettleResult>,
}

type Proposal = BoxFuture<'static, (Result<WriteResult, oneshot::error::RecvError>, Vec<Waiter>)>;

/// Metric handles, looked up once rather than per delivery.
pub(crate) struct Meters {
    deliveries: metrics::Counter,
    redeliveries: metrics::Counter,
    lateness: metrics::Histogram,
}

impl Meters {
    pub fn new() -> Meters {
        Meters {
            deliveries: metrics::counter!("chronos_deliveries_total"),
            redeliveries: metrics::counter!("chronos_redeliveries_total"),
            lateness: metrics::histogram!("chronos_delivery_lateness_seconds"),
        }
    }
}

pub(crate) struct Worker {
    pub meters: Meters,
    pub partition: u32,
    pub raft: Raft,
    pub store: Store,
    /// The actor's flag: leading, and the whole log applied.
    pub leading: Arc<AtomicBool>,
    pub control: mpsc::UnboundedReceiver<Control>,
    /// Notified by the state machine when a fire log grows.
    pub fire_log: Arc<Notify>,
    pub options: DeliveryOptions,
}

/// One leadership term's state.
struct Term {
    groups: HashMap<GroupKey, GroupRt>,
    members: HashMap<u64, Arc<Member>>,
    waiters: Vec<Waiter>,
    proposals: FuturesUnordered<Proposal>,
    /// Woken when a member gets credit back.
    wake: Arc<Notify>,
    /// Since when changes have waited for a proposal.
    dirty_since: Option<Instant>,
}

enum Stop {
    LostLead,
    Shutdown,
}

impl Worker {
    pub async fn run(mut self) {
        // Requests that came while this node is (or may become: no leader is
        // known yet) the leader but has not applied its whole log: served as
        // soon as it has, refused if that takes longer than `DEFER_LIMIT`.
        let mut deferred: Vec<(Instant, Control)> = Vec::new();
        loop {
            if !self.leading.load(Ordering::Acquire) {
                let (healthy, maybe_here) = {
                    let m = self.raft.metrics().borrow().clone();
                    let maybe_here = m.current_leader.is_none_or(|l| l == m.id);
                    (m.running_state.is_ok(), maybe_here)
                };
                if !healthy {
                    deferred.drain(..).for_each(|(_, c)| self.refuse(c));
                    self.refuse_until_closed().await;
                    return;
                }
                let now = Instant::now();
                let (keep, refuse): (Vec<_>, Vec<_>) = deferred
                    .drain(..)
                    .partition(|(at, _)| maybe_here && now.duration_since(*at) < DEFER_LIMIT);
                deferred = keep;
                refuse.into_iter().for_each(|(_, c)| self.refuse(c));
                match tokio::time::timeout(Duration::from_millis(10), self.control.recv()).await {
                    Ok(Some(c)) if maybe_here => deferred.push((Instant::now(), c)),
                    Ok(Some(c)) => self.refuse(c),
                    Ok(None) => return,
                    Err(_) => {}
                }
                continue;
            }
            let mut term = Term {
                groups: HashMap::new(),
                members: HashMap::new(),
                waiters: Vec::new(),
                proposals: FuturesUnordered::new(),
                wake: Arc::new(Notify::new()),
                dirty_since: None,
            };
            let waiting = deferred.drain(..).map(|(_, c)| c).collect();
            let stop = self.lead(&mut term, waiting).await;
            let reason = format!("partition {} stopped delivering", self.partition);
            for member in term.members.values() {
                member.close(reason.clone());
            }
            for w in term.waiters.drain(..) {
                let _ = w.reply.send(Err(self.not_leader()));
            }
            match stop {
                Ok(Stop::LostLead) => {
                    tracing::info!(partition = self.partition, "delivery paused: not leading")
                }
                Ok(Stop::Shutdown) => return,
                Err(e) => {
                    tracing::warn!(partition = self.partition, "delivery restarts: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn not_leader(&self) -> PartitionError {
        PartitionError::NotLeader {
            partition: self.partition,
            leader: self.raft.metrics().borrow().current_leader,
        }
    }

    /// Answers a request that needs the leader.
    fn refuse(&self, c: Control) {
        let err = self.not_leader();
        match c {
            Control::Attach { reply, .. } | Control::Seek { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Control::Settle { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Control::Runtime { reply } => {
                let _ = reply.send(Ok(Vec::new()));
            }
            Control::Detach { .. } => {}
        }
    }

    /// The Raft group stopped for good: refuse everything until the partition closes.
    async fn refuse_until_closed(&mut self) {
        while let Some(c) = self.control.recv().await {
            self.refuse(c);
        }
    }

    async fn lead(&mut self, term: &mut Term, deferred: Vec<Control>) -> Result<Stop, String> {
        self.load(term)?;
        for c in deferred {
            self.handle(term, c).await?;
        }
        let mut gauges_at = Instant::now();
        let mut trimmed_at = Instant::now();
        loop {
            if !self.leading.load(Ordering::Acquire) {
                return Ok(Stop::LostLead);
            }
            if gauges_at.elapsed() >= GAUGE_EVERY {
                gauges_at = Instant::now();
                self.set_gauges(term);
            }
            if trimmed_at.elapsed() >= self.options.trim_every {
                trimmed_at = Instant::now();
                let (topics, trimmed) = self.trim_plan(term)?;
                if !topics.is_empty() {
                    self.raft
                        .client_write(Command::trim(TrimCommand { topics }))
                        .await
                        .map_err(|e| format!("proposing a fire-log trim: {e}"))?;
                    metrics::counter!("chronos_fired_trimmed_total").increment(trimmed);
                }
            }
            let now = wall_ms();
            self.expire(term, now);
            for group in term.groups.values_mut() {
                self.pump(group, &term.members, now)?;
            }
            self.flush(term).await?;
            let wake_at = term
                .groups
                .values()
                .filter_map(GroupRt::next_timer)
                .min()
                .unwrap_or(i64::MAX);
            let mut nap = Duration::from_millis(
                (wake_at.saturating_sub(wall_ms())).clamp(0, MAX_NAP.as_millis() as i64) as u64,
            );
            if let Some(since) = term.dirty_since {
                nap = nap.min(LINGER.saturating_sub(since.elapsed()));
            }
            tokio::select! {
                c = self.control.recv() => match c {
                    Some(c) => self.handle(term, c).await?,
                    None => return Ok(Stop::Shutdown),
                },
                _ = self.fire_log.notified() => {}
                _ = term.wake.notified() => {}
                Some((done, waiters)) = term.proposals.next() => complete(done, waiters)?,
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    /// Proposes dropping the start of each topic's fire log: events older than
    /// the retention age that every group of the topic is done with (past its
    /// cursor and not in flight). Returns the trims and how many events they drop.
    fn trim_plan(&self, term: &Term) -> Result<(Vec<TopicTrim>, u64), String> {
        let read = |e: &dyn std::fmt::Display| format!("trimming fire logs: {e}");
        let cutoff = wall_ms().saturating_sub(
            self.options
                .fired_retention
                .as_millis()
                .min(i64::MAX as u128) as i64,
        );
        let mut floors: HashMap<&str, u64> = HashMap::new();
        for g in term.groups.values() {
            let held = g.flights.keys().min().copied().unwrap_or(u64::MAX);
            let floor = floors.entry(g.topic.as_str()).or_insert(u64::MAX);
            *floor = (*floor).min(g.cursor).min(held);
        }
        let mut topics = Vec::new();
        let mut trimmed = 0;
        for (topic, _) in self.store.list_topics().map_err(|e| read(&e))? {
            let floor = floors.get(topic.as_str()).copied().unwrap_or(u64::MAX);
            let Some(first) = self.store.first_fired_seq(&topic).map_err(|e| read(&e))? else {
                continue;
            };
            let mut below = first;
            'scan: loop {
                let rows = self
                    .store
                    .scan_fired(&topic, below, READ_BATCH)
                    .map_err(|e| read(&e))?;
                for (seq, raw) in &rows {
                    let rec = FiredRecord::decode(raw.as_slice()).map_err(|e| read(&e))?;
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
                trimmed += below - first;
                topics.push(TopicTrim {
                    topic,
                    below_seq: below,
                });
            }
        }
        Ok((topics, trimmed))
    }

    /// Per-group lag (fired events not yet handed out) and in-flight counts.
    fn set_gauges(&self, term: &Term) {
        let partition = self.partition.to_string();
        for g in term.groups.values() {
            let next = match self.store.get_topic(&g.topic) {
                Ok(Some(raw)) => TopicState::decode(raw.as_slice()).map_or(0, |t| t.next_fire_seq),
                _ => continue,
            };
            let labels = [
                ("partition", partition.clone()),
                ("topic", g.topic.clone()),
                ("group", g.name.clone()),
            ];
            metrics::gauge!("chronos_group_lag", &labels).set(next.saturating_sub(g.cursor) as f64);
            metrics::gauge!("chronos_group_inflight", &labels).set(g.flights.len() as f64);
        }
    }

    /// Loads every group of the partition and its in-flight set.
    fn load(&self, term: &mut Term) -> Result<(), String> {
        let read = |e: &dyn std::fmt::Display| format!("loading groups: {e}");
        for (topic, group, raw) in self.store.list_groups().map_err(|e| read(&e))? {
            let state = GroupState::decode(raw.as_slice()).map_err(|e| read(&e))?;
            let rt = GroupRt::new(
                topic.clone(),
                group.clone(),
                state.cursor,
                state.from_due_ts,
            );
            term.groups.insert((topic, group), rt);
        }
        let mut restored = 0u64;
        for (key, raw) in self.store.scan_inflight().map_err(|e| read(&e))? {
            let r = InflightRecord::decode(raw.as_slice()).map_err(|e| read(&e))?;
            if let Some(g) = term.groups.get_mut(&(key.topic, key.group)) {
                g.restore(key.seq, r.attempt, r.at_ts, r.delivered);
                restored += 1;
            }
        }
        tracing::info!(
            partition = self.partition,
            groups = term.groups.len(),
            inflight = restored,
            "delivery leading"
        );
        Ok(())
    }

    /// Runs every group's timers: timed-out deliveries are retried or dead.
    fn expire(&self, term: &mut Term, now: i64) {
        let opts = self.options;
        for g in term.groups.values_mut() {
            if g.next_timer().is_none_or(|at| at > now) {
                continue;
            }
            let expired = g.expire(now, opts.max_attempts, |a| opts.backoff_ms(a));
            for m in expired.credits {
                if let Some(member) = term.members.get(&m) {
                    member.give_back(1);
                }
            }
            metrics::counter!("chronos_ack_timeouts_total")
                .increment(expired.retried + expired.dead);
            metrics::counter!("chronos_dead_letters_total").increment(expired.dead);
        }
    }

    /// Hands the group's ready redeliveries, then its next fired events, to
    /// its members while they have credit.
    fn pump(
        &self,
        g: &mut GroupRt,
        members: &HashMap<u64, Arc<Member>>,
        now: i64,
    ) -> Result<(), String> {
        if g.members.is_empty() {
            return Ok(());
        }
        let topic = g.topic.clone();
        let read = |e: &dyn std::fmt::Display| format!("reading fire log of {topic}: {e}");
        while let Some(&seq) = g.ready.first() {
            let Some(member) = pick(g, members) else {
                return Ok(());
            };
            let attempt = g.flights.get(&seq).map_or(0, |f| f.attempt) + 1;
            match self.store.get_fired(&g.topic, seq).map_err(|e| read(&e))? {
                Some(raw) => {
                    let rec = FiredRecord::decode(Bytes::from(raw)).map_err(|e| read(&e))?;
                    self.deliver(g, &member, seq, rec, attempt, now)?;
                }
                // Trimmed from the fire log: nothing left to deliver.
                None => {
                    g.ack(seq);
                    member.give_back(1);
                }
            }
        }
        loop {
            let budget: i64 = g
                .members
                .iter()
                .filter_map(|m| members.get(m))
                .map(|m| m.credits().max(0))
                .sum();
            if budget == 0 {
                return Ok(());
            }
            let limit = (budget as usize).min(READ_BATCH);
            let records = self
                .store
                .scan_fired(&g.topic, g.cursor, limit)
                .map_err(|e| read(&e))?;
            if records.is_empty() {
                return Ok(());
            }
            for (seq, raw) in records {
                // From an owned buffer, so the event (and its payload) are
                // slices of it rather than copies.
                let rec = FiredRecord::decode(Bytes::from(raw)).map_err(|e| read(&e))?;
                let for_us = rec.only_group.is_empty() || rec.only_group == g.name;
                if rec.due_ts < g.from_due_ts || !for_us {
                    g.advance(seq + 1);
                    continue;
                }
                let Some(member) = pick(g, members) else {
                    return Ok(());
                };
                g.advance(seq + 1);
                self.deliver(g, &member, seq, rec, 1, now)?;
            }
        }
    }

    /// Sends one delivery (the member holds a credit for it) and records it.
    fn deliver(
        &self,
        g: &mut GroupRt,
        member: &Arc<Member>,
        seq: u64,
        rec: FiredRecord,
        attempt: u32,
        now: i64,
    ) -> Result<(), String> {
        let record = EventRecord::decode(rec.event.clone())
            .map_err(|e| format!("decoding fired event {}/{seq}: {e}", g.topic))?;
        let delivery = Delivery {
            delivery_id: delivery_id(self.partition, &g.topic, seq, attempt),
            event: Some(event_of(record)),
            partition: self.partition,
            offset: rec.offset,
            due_ts: rec.due_ts,
            attempt,
        };
        if !member.send(delivery) {
            // The stream is gone; its Detach follows. Try this event again then.
            member.give_back(1);
            g.release_member(member.id());
            if g.flights.contains_key(&seq) {
                g.ready.insert(seq);
            } else {
                // A first delivery, past the cursor already: keep it as a
                // (recorded) redelivery rather than read it again.
                g.requeue(seq, now);
            }
            return Ok(());
        }
        g.delivered(
            seq,
            attempt,
            now + self.options.ack_timeout_ms(),
            member.id(),
        );
        self.meters.deliveries.increment(1);
        if attempt == 1 {
            self.meters
                .lateness
                .record((now - rec.due_ts).max(0) as f64 / 1000.0);
        } else {
            self.meters.redeliveries.increment(1);
        }
        Ok(())
    }

    /// Proposes every group's changes in one entry, when a slot is free and
    /// the changes have gathered for [`LINGER`] (or are many): fewer, larger
    /// entries leave the log's fsyncs to `Fire` and publishes.
    async fn flush(&self, term: &mut Term) -> Result<(), String> {
        let pending: usize = term.groups.values().map(GroupRt::pending_changes).sum();
        if pending == 0 {
            term.dirty_since = None;
            return Ok(());
        }
        let since = *term.dirty_since.get_or_insert_with(Instant::now);
        if term.proposals.len() >= MAX_PROPOSALS
            || (since.elapsed() < LINGER && pending < LINGER_MAX_CHANGES)
        {
            return Ok(());
        }
        self.propose(term).await.map_err(|e| e.to_string())
    }

    async fn handle(&self, term: &mut Term, c: Control) -> Result<(), String> {
        match c {
            Control::Attach {
                topic,
                group,
                start,
                member,
                reply,
            } => {
                let result = self.attach(term, topic, group, start, member).await;
                let _ = reply.send(result);
            }
            Control::Detach { member } => {
                if term.members.remove(&member).is_some() {
                    for g in term.groups.values_mut() {
                        g.release_member(member);
                    }
                }
            }
            Control::Settle {
                group,
                items,
                reply,
            } => {
                let results = self.settle(term, &group, items);
                let changed = results.iter().any(|r| *r != SettleResult::Unknown);
                if changed {
                    term.waiters.push(Waiter { reply, results });
                } else {
                    let _ = reply.send(Ok(results));
                }
            }
            Control::Seek {
                topic,
                group,
                ts,
                reply,
            } => {
                let result = self.seek(term, topic, group, ts).await;
                let _ = reply.send(result);
            }
            Control::Runtime { reply } => {
                let rows = term
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

    async fn attach(
        &self,
        term: &mut Term,
        topic: String,
        group: String,
        start: Start,
        member: Arc<Member>,
    ) -> Result<(), PartitionError> {
        let key = (topic.clone(), group.clone());
        if !term.groups.contains_key(&key) {
            let (kind, start_ts) = start.to_command();
            let cmd = GroupCommand {
                topic: topic.clone(),
                group: group.clone(),
                start: kind as i32,
                start_ts,
                now_ts: wall_ms(),
                seek: false,
            };
            let (cursor, from_due_ts) = self.propose_group(cmd).await?;
            term.groups
                .insert(key.clone(), GroupRt::new(topic, group, cursor, from_due_ts));
        }
        member.add_waker(term.wake.clone());
        if let Some(g) = term.groups.get_mut(&key) {
            if !g.members.contains(&member.id()) {
                g.members.push(member.id());
            }
        }
        term.members.insert(member.id(), member);
        Ok(())
    }

    async fn seek(
        &self,
        term: &mut Term,
        topic: String,
        group: String,
        ts: i64,
    ) -> Result<(), PartitionError> {
        let key = (topic.clone(), group.clone());
        if !term.groups.contains_key(&key) {
            return Err(PartitionError::NotFound(format!(
                "no consumer group {group:?} on topic {topic:?} in partition {}",
                self.partition
            )));
        }
        // Earlier cursor advances must apply before the seek, or they would
        // move a backward seek forward again.
        self.propose(term).await?;
        let cmd = GroupCommand {
            topic,
            group,
            start: 0,
            start_ts: ts,
            now_ts: wall_ms(),
            seek: true,
        };
        let (cursor, from_due_ts) = self.propose_group(cmd).await?;
        if let Some(g) = term.groups.get_mut(&key) {
            g.reset(cursor, from_due_ts);
        }
        Ok(())
    }

    /// Proposes every group's pending changes now, in one entry, whatever
    /// the linger and the proposal limit; the waiting acks are answered when
    /// it applies.
    async fn propose(&self, term: &mut Term) -> Result<(), PartitionError> {
        term.dirty_since = None;
        let groups: Vec<_> = term
            .groups
            .values_mut()
            .filter_map(GroupRt::take_delta)
            .collect();
        if groups.is_empty() {
            return Ok(());
        }
        let rx = self
            .raft
            .client_write_ff(Command::delivery(DeliveryCommand {
                now_ts: wall_ms(),
                groups,
            }))
            .await
            .map_err(|e| PartitionError::Unavailable(format!("proposing deliveries: {e}")))?;
        let waiters = std::mem::take(&mut term.waiters);
        term.proposals
            .push(async move { (rx.await, waiters) }.boxed());
        Ok(())
    }

    async fn propose_group(&self, cmd: GroupCommand) -> Result<(u64, i64), PartitionError> {
        let applied = crate::write(&self.raft, self.partition, Command::group(cmd)).await?;
        applied.group.ok_or_else(|| {
            PartitionError::Storage(format!(
                "partition {}: group command applied without a position",
                self.partition
            ))
        })
    }

    /// Applies acks and nacks to the in-memory state; they are recorded by the
    /// next flush, and answered when it applies.
    fn settle(&self, term: &mut Term, group: &str, items: Vec<SettleItem>) -> Vec<SettleResult> {
        let now = wall_ms();
        let opts = self.options;
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            let Some(g) = term.groups.get_mut(&(item.topic, group.to_string())) else {
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
                        let dead = (attempt >= opts.max_attempts)
                            .then(|| format!("nacked on attempt {attempt} of {attempt}"));
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
            if let Some(member) = holder.and_then(|m| term.members.get(&m)) {
                member.give_back(1);
            }
            results.push(result);
        }
        results
    }
}

/// The next member of the group (round-robin) that has a credit, taking it.
fn pick(g: &mut GroupRt, members: &HashMap<u64, Arc<Member>>) -> Option<Arc<Member>> {
    let n = g.members.len();
    for i in 0..n {
        let idx = (g.next_member + i) % n;
        let Some(member) = members.get(&g.members[idx]) else {
            continue;
        };
        if !member.is_gone() && member.try_take() {
            g.next_member = (idx + 1) % n;
            return Some(member.clone());
        }
    }
    None
}

/// Answers the acks recorded by an applied entry; a failed entry ends the term.
fn complete(
    done: Result<WriteResult, oneshot::error::RecvError>,
    waiters: Vec<Waiter>,
) -> Result<(), String> {
    match done {
        Ok(Ok(_)) => {
            for w in waiters {
                let _ = w.reply.send(Ok(w.results));
            }
            Ok(())
        }
        Ok(Err(e)) => {
            let err = PartitionError::Unavailable(format!("deliveries not recorded: {e}"));
            for w in waiters {
                let _ = w.reply.send(Err(err.clone()));
            }
            Err(err.to_string())
        }
        Err(_) => Err("delivery proposal abandoned: raft stopped".into()),
    }
}
