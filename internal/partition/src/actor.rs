//! The partition actor: the one task that turns publish requests into Raft proposals.
//!
//! It owns the leader-side state of the publish path — the next offset and the
//! ids proposed but not yet applied — so nothing else takes a lock on it. It
//! drains its mailbox into a proposal while earlier proposals are being fsynced
//! (at most [`MAX_OUTSTANDING`] at once), which batches concurrent publishers
//! into one log entry: group commit at the Raft level on top of the WAL's.
//!
//! **Invariants**: offsets are dense and assigned only here, only while this node
//! leads and has applied its whole log (so the dedup index is complete); an
//! event's due time is decided here, once, and carried in the log entry.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chronos_proto::internal::{EventRecord, PublishCommand};
use chronos_proto::v1::Event;
use chronos_store::{id_key, Store};
use openraft::ServerState;
use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::PartitionError;
use crate::state_machine::AppliedState;
use crate::types::{Command, NodeId, Raft};
use crate::wall_ms;

/// Proposals in flight at once; further requests wait in the mailbox and are
/// batched into the next proposal. openraft 0.9's core waits for each append's
/// fsync before it appends the next entry, so a second proposal is only sent
/// once the first is on disk: the core appends it while the first is applied,
/// and everything that arrived during the fsync rides in it.
pub const MAX_OUTSTANDING: usize = 1;
/// Upper bound of events in one proposal (one log entry).
const MAX_EVENTS_PER_PROPOSAL: usize = 20_000;
/// Upper bound of payload bytes in one proposal.
const MAX_BYTES_PER_PROPOSAL: usize = 16 << 20;
/// A request's encoded records share buffers of at most this size (or of one
/// record, when it is larger).
const RECORD_BUFFER_BYTES: usize = 256 << 10;

/// Result of publishing one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishOutcome {
    pub offset: u64,
    pub due_ts: i64,
    pub duplicate: bool,
}

pub type PublishReply = oneshot::Sender<Result<Vec<PublishOutcome>, PartitionError>>;

pub struct PublishRequest {
    pub events: Vec<Event>,
    /// Replace still-pending events with the same ids instead of deduplicating.
    pub reschedule: bool,
    pub reply: PublishReply,
}

/// Outcome of one proposal, shared with requests that deduplicated against it.
type ProposalResult = watch::Receiver<Option<Result<(), PartitionError>>>;

struct InflightId {
    offset: u64,
    due_ts: i64,
    proposal: ProposalResult,
}

pub struct Actor {
    pub partition: u32,
    pub node_id: NodeId,
    pub raft: Raft,
    pub store: Store,
    pub applied: Arc<AppliedState>,
    pub mailbox: mpsc::Receiver<PublishRequest>,
    /// Published for /ready: true while `ready_term` is set.
    pub ready_flag: Arc<AtomicBool>,
    /// Index + 1 of the last log entry on disk, from the log store.
    flushed: watch::Receiver<u64>,
    /// Reports (due_ts, offset) of applied events to the firing loop.
    scheduled: mpsc::UnboundedSender<Vec<(i64, u64)>>,
    /// `flushed` when the newest proposal was sent.
    flushed_at_last_proposal: u64,
    /// Why the Raft group stopped (a storage failure), if it did: queued
    /// requests get this at once instead of waiting for their timeout.
    stopped: Option<PartitionError>,
    /// Another node leads: queued requests get `NotLeader` with its id at once
    /// instead of waiting for this node to lead.
    led_elsewhere: Option<PartitionError>,
    /// Term for which offsets are in sync with the log; None while not leading.
    ready_term: Option<u64>,
    /// Last log index seen when leadership was won; applied must reach it.
    catch_up_to: Option<(u64, u64)>,
    next_offset: u64,
    /// Keyed by `id_key`; Fx hashing: these keys are not attacker-chosen
    /// in a way that matters (a collision only costs time, bounded by the map size).
    inflight: HashMap<Vec<u8>, InflightId, BuildHasherDefault<rustc_hash::FxHasher>>,
    proposals: HashMap<u64, Vec<Vec<u8>>>,
    proposal_seq: u64,
    /// Requests in the newest proposal: more than one means concurrent publishers.
    last_batch_requests: usize,
    /// How long to gather concurrent requests before proposing.
    linger: Duration,
    /// How long an id deduplicates, decided here and carried in the command.
    dedup_ttl_ms: i64,
}

/// A request's answers, resolved once the proposals they depend on finish.
struct Planned {
    reply: PublishReply,
    outcomes: Vec<PublishOutcome>,
    waits_on: Vec<ProposalResult>,
}

impl Actor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        partition: u32,
        node_id: NodeId,
        raft: Raft,
        store: Store,
        applied: Arc<AppliedState>,
        mailbox: mpsc::Receiver<PublishRequest>,
        ready_flag: Arc<AtomicBool>,
        flushed: watch::Receiver<u64>,
        linger: Duration,
        scheduled: mpsc::UnboundedSender<Vec<(i64, u64)>>,
        dedup_ttl_ms: i64,
    ) -> Actor {
        Actor {
            partition,
            node_id,
            raft,
            store,
            applied,
            mailbox,
            ready_flag,
            flushed,
            flushed_at_last_proposal: 0,
            scheduled,
            stopped: None,
            led_elsewhere: None,
            ready_term: None,
            catch_up_to: None,
            next_offset: 0,
            inflight: HashMap::default(),
            proposals: HashMap::new(),
            proposal_seq: 0,
            last_batch_requests: 0,
            linger,
            dedup_ttl_ms,
        }
    }

    pub async fn run(mut self) {
        let mut metrics = self.raft.metrics();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<u64>();
        loop {
            self.refresh_readiness(&metrics.borrow_and_update());
            let ready = self.ready_term.is_some();
            self.ready_flag.store(ready, Ordering::Release);
            let can_propose = ready && self.may_propose();
            let refuse = self.refusal(ready).is_some();
            // Shutting down while another node may lead (or none does): what
            // is still queued can only wait, so its callers hear "shutting down".
            if !ready && !refuse && self.mailbox.is_closed() {
                break;
            }
            tokio::select! {
                req = self.mailbox.recv(), if can_propose || refuse => match req {
                    Some(first) => match self.refusal(ready) {
                        Some(why) => {
                            let _ = first.reply.send(Err(why.clone()));
                        }
                        None => {
                            // Publishers are concurrent (the last proposal carried
                            // several requests): let more join this one, so one
                            // fsync covers them. A lone publisher never waits.
                            if self.last_batch_requests > 1 && !self.linger.is_zero() {
                                tokio::time::sleep(self.linger).await;
                            }
                            self.propose(first, &done_tx).await
                        }
                    },
                    None => break,
                },
                Some(seq) = done_rx.recv() => self.finish(seq),
                // The previous proposal reached the disk: the next may go.
                _ = self.flushed.changed(), if ready && !can_propose => {}
                // Also while ready: a leader that steps down (a higher term
                // seen) must stop proposing and firing at once, traffic or not.
                changed = metrics.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                // Applied index moves without a metrics change in some paths; poll briefly.
                _ = tokio::time::sleep(Duration::from_millis(5)), if !ready => {}
            }
        }
        // Mailbox closed: let outstanding proposals finish so their callers get answers.
        while !self.proposals.is_empty() {
            match done_rx.recv().await {
                Some(seq) => self.finish(seq),
                None => break,
            }
        }
        self.ready_flag.store(false, Ordering::Release);
        tracing::debug!(partition = self.partition, "partition actor stopped");
    }

    /// Why queued requests are answered at once rather than proposed: the
    /// group stopped, or (while this node is not ready) another node leads.
    fn refusal(&self, ready: bool) -> Option<&PartitionError> {
        let elsewhere = self.led_elsewhere.as_ref().filter(|_| !ready);
        self.stopped.as_ref().or(elsewhere)
    }

    fn may_propose(&self) -> bool {
        match self.proposals.len() {
            0 => true,
            n if n < MAX_OUTSTANDING => *self.flushed.borrow() > self.flushed_at_last_proposal,
            _ => false,
        }
    }

    fn finish(&mut self, seq: u64) {
        for key in self.proposals.remove(&seq).unwrap_or_default() {
            self.inflight.remove(&key);
        }
    }

    /// Ready = leading, and (after winning) everything in the log is applied and
    /// our own proposals are done, so the dedup index and next offset are exact.
    fn refresh_readiness(&mut self, m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>) {
        self.stopped = m
            .running_state
            .as_ref()
            .err()
            .map(|f| PartitionError::from_fatal(self.partition, f));
        let leading = m.state == ServerState::Leader && m.current_leader == Some(self.node_id);
        self.led_elsewhere = m
            .current_leader
            .filter(|&l| l != self.node_id)
            .map(|leader| PartitionError::NotLeader {
                partition: self.partition,
                leader: Some(leader),
            });
        if !leading {
            self.ready_term = None;
            self.catch_up_to = None;
            return;
        }
        if self.ready_term == Some(m.current_term) {
            return;
        }
        self.ready_term = None;
        let target = match self.catch_up_to {
            Some((term, index)) if term == m.current_term => index,
            _ => {
                let index = m.last_log_index.unwrap_or(0);
                self.catch_up_to = Some((m.current_term, index));
                index
            }
        };
        let applied = self.applied.index.load(Ordering::Acquire);
        if applied >= target && self.proposals.is_empty() {
            self.next_offset = self.applied.next_offset.load(Ordering::Acquire);
            self.ready_term = Some(m.current_term);
            tracing::info!(
                partition = self.partition,
                term = m.current_term,
                next_offset = self.next_offset,
                "leading"
            );
        }
    }

    /// Takes `first` and whatever else waits in the mailbox (bounded) into one proposal.
    async fn propose(&mut self, first: PublishRequest, done_tx: &mpsc::UnboundedSender<u64>) {
        let seq = self.proposal_seq;
        self.proposal_seq += 1;
        let (result_tx, result_rx) = watch::channel(None);
        let now = wall_ms();
        let first_offset = self.next_offset;
        let mut events: Vec<Bytes> = Vec::new();
        let mut keys = Vec::new();
        let mut bytes = 0usize;
        let mut planned = Vec::new();
        let mut has_reschedule = false;
        let mut next = Some(first);
        while let Some(req) = next.take() {
            if !req.reply.is_closed() {
                has_reschedule |= req.reschedule;
                let before = events.len();
                let planned_one = self.plan(req, now, &result_rx, &mut events, &mut keys);
                bytes += events[before..].iter().map(Bytes::len).sum::<usize>();
                match planned_one {
                    Ok(p) => planned.push(p),
                    Err((reply, e)) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            if events.len() < MAX_EVENTS_PER_PROPOSAL && bytes < MAX_BYTES_PER_PROPOSAL {
                next = self.mailbox.try_recv().ok();
            }
        }
        self.last_batch_requests = planned.len();
        if events.is_empty() {
            // Nothing new (all duplicates): answer without touching the log.
            drop(result_tx);
            tokio::spawn(answer(planned));
            return;
        }
        debug_assert_eq!(self.next_offset, first_offset + events.len() as u64);
        let cmd = Command::publish(PublishCommand {
            publish_ts: now,
            first_offset,
            events,
            dedup_expiry_ts: now.saturating_add(self.dedup_ttl_ms),
            has_reschedule,
        });
        self.flushed_at_last_proposal = *self.flushed.borrow();
        let pending = match self.raft.client_write_ff(cmd).await {
            Ok(rx) => Some(rx),
            Err(fatal) => {
                let _ = result_tx.send(Some(Err(PartitionError::from_fatal(
                    self.partition,
                    &fatal,
                ))));
                None
            }
        };
        self.proposals.insert(seq, keys);
        let partition = self.partition;
        let done_tx = done_tx.clone();
        let raft = self.raft.clone();
        let scheduled = self.scheduled.clone();
        let new_events: Vec<(i64, u64)> = planned
            .iter()
            .flat_map(|p| {
                p.outcomes
                    .iter()
                    .filter(|o| !o.duplicate)
                    .map(|o| (o.due_ts, o.offset))
            })
            .collect();
        tokio::spawn(async move {
            if let Some(rx) = pending {
                let result = match rx.await {
                    Ok(Ok(resp)) => {
                        // Applied: the firing loop may now schedule the rest.
                        if !new_events.is_empty() {
                            let _ = scheduled.send(new_events);
                        }
                        if resp.data.fired > 0 {
                            metrics::counter!("chronos_fired_events_total")
                                .increment(resp.data.fired);
                            // Fired at publish time: zero lateness.
                            metrics::histogram!("chronos_fire_lateness_seconds")
                                .record_many(0.0, resp.data.fired as usize);
                        }
                        Ok(())
                    }
                    Ok(Err(e)) => Err(PartitionError::from_write_error(partition, &e)),
                    // The group stopped before answering: say why (a failed
                    // fsync, a full disk), as the metrics record it.
                    Err(_) => Err(match &raft.metrics().borrow().running_state {
                        Err(fatal) => PartitionError::from_fatal(partition, fatal),
                        Ok(()) => PartitionError::Unavailable(format!(
                            "partition {partition}: raft stopped"
                        )),
                    }),
                };
                let _ = result_tx.send(Some(result));
            }
            let _ = done_tx.send(seq);
            answer(planned).await;
        });
    }

    /// Decides each event of `req`: duplicate of an applied event, duplicate of
    /// one in flight, or new (gets an offset and a due time, joins `events`).
    #[allow(clippy::result_large_err)]
    fn plan(
        &mut self,
        req: PublishRequest,
        now: i64,
        this_proposal: &ProposalResult,
        events: &mut Vec<Bytes>,
        keys: &mut Vec<Vec<u8>>,
    ) -> Result<Planned, (PublishReply, PartitionError)> {
        let mut outcomes = Vec::with_capacity(req.events.len());
        let mut waits_on: Vec<ProposalResult> = Vec::new();
        let mut records = BytesMut::new();
        let ids: Vec<Vec<u8>> = req
            .events
            .iter()
            .map(|ev| id_key(&ev.topic, &ev.message_id))
            .collect();
        let stored = match self.store.get_ids(&ids, now) {
            Ok(stored) => stored,
            Err(e) => return Err((req.reply, PartitionError::storage(self.partition, &e))),
        };
        let count = req.events.len();
        for (i, ((ev, key), stored)) in req.events.into_iter().zip(ids).zip(stored).enumerate() {
            let dedup = !req.reschedule;
            if let Some(f) = self.inflight.get(&key).filter(|_| dedup) {
                outcomes.push(PublishOutcome {
                    offset: f.offset,
                    due_ts: f.due_ts,
                    duplicate: true,
                });
                waits_on.push(f.proposal.clone());
                continue;
            }
            if let Some(e) = stored.filter(|_| dedup) {
                outcomes.push(PublishOutcome {
                    offset: e.offset,
                    due_ts: e.due_ts,
                    duplicate: true,
                });
                continue;
            }
            let offset = self.next_offset;
            self.next_offset += 1;
            let due_ts = ev.schedule_ts.max(now);
            debug_assert!(due_ts >= ev.schedule_ts, "due before schedule");
            let record = EventRecord {
                topic: ev.topic,
                message_id: ev.message_id,
                key: ev.key,
                payload: ev.payload,
                headers: ev.headers,
                schedule_ts: ev.schedule_ts,
                due_ts,
                reschedule: req.reschedule,
            };
            // One buffer per request holds every record: `split` hands each
            // its slice without a copy or an allocation of its own.
            let len = record.encoded_len();
            if records.capacity() - records.len() < len {
                // Room for the rest of the request if its records are alike.
                let rest = len.saturating_mul(count - i);
                records.reserve(rest.min(RECORD_BUFFER_BYTES).max(len));
            }
            record
                .encode(&mut records)
                .expect("reserved enough for the record");
            events.push(records.split().freeze());
            self.inflight.insert(
                key.clone(),
                InflightId {
                    offset,
                    due_ts,
                    proposal: this_proposal.clone(),
                },
            );
            keys.push(key);
            outcomes.push(PublishOutcome {
                offset,
                due_ts,
                duplicate: false,
            });
        }
        if outcomes.iter().any(|o| !o.duplicate) {
            waits_on.push(this_proposal.clone());
        }
        Ok(Planned {
            reply: req.reply,
            outcomes,
            waits_on,
        })
    }
}

/// Sends each request its outcomes once every proposal it depends on succeeded,
/// or the first failure among them.
async fn answer(planned: Vec<Planned>) {
    for p in planned {
        let mut failure = None;
        for mut dep in p.waits_on {
            let result = match dep.wait_for(Option::is_some).await {
                Ok(v) => v.clone().unwrap_or(Ok(())),
                Err(_) => Err(PartitionError::Unavailable("proposal abandoned".into())),
            };
            if let Err(e) = result {
                failure = Some(e);
                break;
            }
        }
        let _ = p.reply.send(match failure {
            Some(e) => Err(e),
            None => Ok(p.outcomes),
        });
    }
}
