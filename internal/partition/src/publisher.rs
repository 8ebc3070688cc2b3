//! The publish path of a leader term: turns publish requests into Raft
//! proposals.
//!
//! It holds the term's next offset and the ids proposed but not yet applied.
//! One proposal is out at a time; everything that arrives meanwhile waits in
//! the mailbox and rides in the next proposal, which batches concurrent
//! publishers into one log entry. (Keeping two out, which openraft 0.10's
//! pipelined appends allow, measured no better: docs/benchmarks.md.)
//!
//! **Invariants** (checked in release builds): offsets are dense and assigned
//! only here, only in a term that started after the whole log was applied (so
//! the dedup index is complete); an event's due time is decided here, once,
//! never before its schedule time, and carried in the log entry.

use std::collections::HashMap;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use chronos_proto::internal::{EventKeys, EventRecord, PublishCommand, ScheduleAdvance};
use chronos_proto::v1::Event;
use chronos_store::{id_key, IdEntry, IdState};
use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::PartitionError;
use crate::fire_tail::{FireTail, Slot};
use crate::firing::Firing;
use crate::owner::{Completion, Completions, Ctx, TermError, Written};
use crate::types::Command;
use crate::wall_ms;

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
    /// Set on the term's own request storing recurring schedules'
    /// occurrences: the schedules' advances, stored in the same entry. Its
    /// events may reuse a cancelled id (an occurrence stored, then cancelled
    /// by a schedule change, is stored again under the same id).
    pub advances: Option<Vec<ScheduleAdvance>>,
    pub reply: PublishReply,
}

/// Outcome of one proposal, shared with requests that deduplicated against it.
type ProposalResult = watch::Receiver<Option<Result<(), PartitionError>>>;

struct InflightId {
    offset: u64,
    due_ts: i64,
    proposal: ProposalResult,
}

/// A request's answers, resolved once the proposals they depend on finish.
struct Planned {
    reply: PublishReply,
    outcomes: Vec<PublishOutcome>,
    waits_on: Vec<ProposalResult>,
    /// How late (ms) each occurrence stored after its time is: it fires at
    /// publish, late, where a client's event due at once is on time.
    late_ms: Vec<i64>,
}

/// A publish proposal's answer, carrying everything needed to answer its
/// callers even after the term that made it ended.
pub(crate) struct Published {
    seq: u64,
    written: Written,
    result: watch::Sender<Option<Result<(), PartitionError>>>,
    planned: Vec<Planned>,
    /// The new events, for the wheel.
    new_events: Vec<NewEvent>,
    /// Fire-log numbers of the events due at once, by topic.
    appended: Vec<(String, Vec<u64>)>,
    /// Ids (`id_key`) of the reschedules, held back from firing meanwhile.
    held: Vec<Vec<u8>>,
    /// It carried the term's request storing occurrences.
    occurred: bool,
}

/// A new pending event as the wheel takes it: (due_ts, offset) and its
/// stored value (the record `pending` holds under its key).
pub(crate) type NewEvent = (i64, u64, Bytes);

/// What the term learns from a publish proposal's answer.
pub(crate) struct Answered {
    pub seq: u64,
    /// The new events, if it applied.
    pub new_events: Option<Vec<NewEvent>>,
    pub appended: Vec<(String, Vec<u64>)>,
    pub held: Vec<Vec<u8>>,
    /// Pending events its reschedules removed.
    pub unscheduled: Vec<u64>,
    pub occurred: bool,
}

impl Published {
    /// Answers the callers; returns what the term must know.
    pub fn finish(self) -> Answered {
        let (new_events, unscheduled) = match self.written {
            Ok(applied) => {
                if applied.fired > 0 {
                    metrics::counter!("chronos_fired_events_total").increment(applied.fired);
                    let lateness = metrics::histogram!("chronos_fire_lateness_seconds");
                    let late = self.planned.iter().flat_map(|p| &p.late_ms);
                    let mut on_time = applied.fired as usize;
                    for ms in late {
                        lateness.record(*ms as f64 / 1000.0);
                        on_time = on_time.saturating_sub(1);
                    }
                    // Due when published: fired at once, on time.
                    lateness.record_many(0.0, on_time);
                }
                let _ = self.result.send(Some(Ok(())));
                (Some(self.new_events), applied.unscheduled)
            }
            Err(e) => {
                let _ = self.result.send(Some(Err(e)));
                (None, Vec::new())
            }
        };
        tokio::spawn(answer(self.planned));
        Answered {
            seq: self.seq,
            new_events,
            appended: self.appended,
            held: self.held,
            unscheduled,
            occurred: self.occurred,
        }
    }
}

/// The term's fire logs and wheel: a publish numbers its events due at once
/// in the one and holds its reschedules back in the other.
pub(crate) struct Firings<'a> {
    pub tail: &'a mut FireTail,
    pub firing: &'a mut Firing,
}

/// The proposal being made: its new events' records and their ids (`id_key`).
#[derive(Default)]
struct Draft {
    events: Vec<Bytes>,
    keys: Vec<Vec<u8>>,
}

pub(crate) struct Publisher {
    next_offset: u64,
    /// Keyed by `id_key` (client-chosen bytes): foldhash, seeded per process,
    /// so colliding ids cannot be computed ahead.
    inflight: foldhash::HashMap<Vec<u8>, InflightId>,
    /// The ids of each unanswered proposal, by number.
    proposals: HashMap<u64, Vec<Vec<u8>>>,
    seq: u64,
    /// Requests in the newest proposal: more than one means concurrent publishers.
    last_batch_requests: usize,
    /// The first request of the next proposal, and until when more may join it.
    lingering: Option<(PublishRequest, Instant)>,
}

impl Publisher {
    pub fn new(next_offset: u64) -> Publisher {
        Publisher {
            next_offset,
            inflight: HashMap::default(),
            proposals: HashMap::new(),
            seq: 0,
            last_batch_requests: 0,
            lingering: None,
        }
    }

    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// True when the next request may be taken from the mailbox.
    pub fn takes(&self) -> bool {
        self.proposals.is_empty() && self.lingering.is_none()
    }

    pub fn linger_deadline(&self) -> Option<Instant> {
        self.lingering.as_ref().map(|(_, at)| *at)
    }

    /// Takes `req`: proposes it with whatever else waits in the mailbox, or,
    /// while publishers are concurrent, first lets more join it for the
    /// linger. Returns the proposals made (0 or 1).
    pub async fn receive(
        &mut self,
        ctx: &Ctx,
        epoch: u64,
        req: PublishRequest,
        mailbox: &mut mpsc::Receiver<PublishRequest>,
        fl: Firings<'_>,
        completions: &mut Completions,
    ) -> Result<usize, TermError> {
        // The last proposal carried several requests: let more join this one,
        // so one fsync covers them. A lone publisher never waits.
        if self.last_batch_requests > 1 && !ctx.linger.is_zero() {
            self.lingering = Some((req, Instant::now() + ctx.linger));
            return Ok(0);
        }
        self.propose(ctx, epoch, req, mailbox, fl, completions)
            .await
    }

    /// Proposes the lingering request once its linger is over.
    pub async fn step(
        &mut self,
        ctx: &Ctx,
        epoch: u64,
        mailbox: &mut mpsc::Receiver<PublishRequest>,
        fl: Firings<'_>,
        completions: &mut Completions,
    ) -> Result<usize, TermError> {
        match self.lingering.take() {
            Some((req, at)) if at <= Instant::now() => {
                self.propose(ctx, epoch, req, mailbox, fl, completions)
                    .await
            }
            other => {
                self.lingering = other;
                Ok(0)
            }
        }
    }

    /// The proposal `seq` was answered: its ids no longer deduplicate here
    /// (the state machine has them, if it applied).
    pub fn answered(&mut self, seq: u64) {
        for key in self.proposals.remove(&seq).unwrap_or_default() {
            self.inflight.remove(&key);
        }
    }

    /// The term ended: a request still lingering goes to the next leader.
    pub fn end(self, ctx: &Ctx) {
        if let Some((req, _)) = self.lingering {
            let _ = req.reply.send(Err(ctx.not_leader()));
        }
    }

    /// Takes `first` and whatever else waits in the mailbox (bounded) into
    /// one proposal, at once (the term's own requests do not linger).
    pub async fn propose(
        &mut self,
        ctx: &Ctx,
        epoch: u64,
        first: PublishRequest,
        mailbox: &mut mpsc::Receiver<PublishRequest>,
        fl: Firings<'_>,
        completions: &mut Completions,
    ) -> Result<usize, TermError> {
        let seq = self.seq;
        self.seq += 1;
        let (result_tx, result_rx) = watch::channel(None);
        let now = wall_ms();
        let first_offset = self.next_offset;
        let mut draft = Draft::default();
        let mut bytes = 0usize;
        let mut planned = Vec::new();
        let mut has_reschedule = false;
        let mut advances = Vec::new();
        let mut occurred = false;
        let mut next = Some(first);
        while let Some(req) = next.take() {
            occurred |= req.advances.is_some();
            if !req.reply.is_closed() {
                has_reschedule |= req.reschedule;
                let advancing = req.advances.clone();
                let before = draft.events.len();
                let planned_one = self.plan(ctx, &*fl.firing, req, now, &result_rx, &mut draft);
                bytes += draft.events[before..].iter().map(Bytes::len).sum::<usize>();
                match planned_one {
                    Ok(p) => {
                        planned.push(p);
                        advances.extend(advancing.into_iter().flatten());
                    }
                    Err((reply, e)) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            if draft.events.len() < MAX_EVENTS_PER_PROPOSAL && bytes < MAX_BYTES_PER_PROPOSAL {
                next = mailbox.try_recv().ok();
            }
        }
        let Draft { events, keys } = draft;
        self.last_batch_requests = planned.len();
        if events.is_empty() && advances.is_empty() {
            // Nothing new (all duplicates): answer without touching the log.
            drop(result_tx);
            tokio::spawn(answer(planned));
            return Ok(0);
        }
        assert_eq!(
            self.next_offset,
            first_offset + events.len() as u64,
            "offsets of a proposal are dense"
        );
        let due: Vec<(i64, u64)> = planned
            .iter()
            .flat_map(|p| {
                p.outcomes
                    .iter()
                    .filter(|o| !o.duplicate)
                    .map(|o| (o.due_ts, o.offset))
            })
            .collect();
        // Due times, values and fire numbers below pair up by position.
        assert_eq!(
            due.len(),
            events.len(),
            "a planned outcome per drafted event"
        );
        // Events due already go straight into their topics' fire logs when
        // this applies, under numbers given here, in event order.
        let mut fire_seqs = Vec::new();
        let mut appended: Vec<(String, Vec<u64>)> = Vec::new();
        for (raw, &(due_ts, _)) in events.iter().zip(&due) {
            if due_ts > now {
                continue;
            }
            let topic = EventKeys::decode(raw.as_ref())
                .map_err(|source| TermError::Decode {
                    what: "a published event",
                    source,
                })?
                .topic;
            let seq = fl.tail.append(&ctx.store, &topic, Slot::Awaiting)?;
            fire_seqs.push(seq);
            match appended.last_mut() {
                Some((t, seqs)) if *t == topic => seqs.push(seq),
                _ => appended.push((topic, vec![seq])),
            }
        }
        // Those stored as pending go to the wheel with their values, which it
        // may keep so that their release need not read `pending`; those due
        // already are in a fire log once this applies, and never pending.
        let new_events: Vec<NewEvent> = due
            .into_iter()
            .zip(&events)
            .filter(|((due_ts, _), _)| *due_ts > now)
            .map(|((due_ts, offset), raw)| (due_ts, offset, raw.clone()))
            .collect();
        // A reschedule may remove its id's pending event: that event must
        // not fire meanwhile.
        let held: Vec<Vec<u8>> = if has_reschedule {
            keys.clone()
        } else {
            Vec::new()
        };
        for id in &held {
            fl.firing.hold(id.clone());
        }
        let cmd = Command::publish(PublishCommand {
            publish_ts: now,
            first_offset,
            events,
            dedup_expiry_ts: now.saturating_add(ctx.dedup_ttl_ms),
            has_reschedule,
            fire_seqs,
            advances,
        });
        let proposed = completions.propose(ctx, cmd).await;
        self.proposals.insert(seq, keys);
        completions.push_proposal(epoch, async move {
            let written = match proposed {
                Ok(applied) => applied.await,
                Err(e) => Err(e),
            };
            Completion::Published(Published {
                seq,
                written,
                result: result_tx,
                planned,
                new_events,
                appended,
                held,
                occurred,
            })
        });
        Ok(1)
    }

    /// Decides each event of `req`: duplicate of an applied event, duplicate of
    /// one in flight, or new (gets an offset and a due time, joins `draft`).
    /// A reschedule is new unless its event fired or is firing.
    #[allow(clippy::result_large_err)]
    fn plan(
        &mut self,
        ctx: &Ctx,
        firing: &Firing,
        req: PublishRequest,
        now: i64,
        this_proposal: &ProposalResult,
        draft: &mut Draft,
    ) -> Result<Planned, (PublishReply, PartitionError)> {
        let mut outcomes = Vec::with_capacity(req.events.len());
        let mut waits_on: Vec<ProposalResult> = Vec::new();
        let mut late_ms = Vec::new();
        let mut records = BytesMut::new();
        let ids: Vec<Vec<u8>> = req
            .events
            .iter()
            .map(|ev| id_key(&ev.topic, &ev.message_id))
            .collect();
        let stored = match ctx.store.get_ids(&ids, now) {
            Ok(stored) => stored,
            Err(e) => return Err((req.reply, PartitionError::storage(ctx.partition, &e))),
        };
        let count = req.events.len();
        // The reads that can fail come before anything is drafted, so a
        // request that fails leaves nothing of itself in the proposal.
        let fired_before: Vec<bool> = if req.reschedule {
            let fired = (stored.iter())
                .map(|s| s.as_ref().map_or(Ok(false), |e| has_fired(ctx, firing, e)))
                .collect();
            match fired {
                Ok(fired) => fired,
                Err(e) => return Err((req.reply, e)),
            }
        } else {
            vec![false; count]
        };
        let recurring = req.advances.is_some();
        for (i, ((ev, key), stored)) in req.events.into_iter().zip(ids).zip(stored).enumerate() {
            let dedup = !req.reschedule;
            // A reschedule moves a pending event. One that fired, or is
            // firing, stays as it was and this publish is its duplicate:
            // storing the moved copy would deliver the event twice.
            let firing_now = |f: &InflightId| f.due_ts <= now;
            if let Some(f) = self.inflight.get(&key).filter(|f| dedup || firing_now(f)) {
                outcomes.push(PublishOutcome {
                    offset: f.offset,
                    due_ts: f.due_ts,
                    duplicate: true,
                });
                waits_on.push(f.proposal.clone());
                continue;
            }
            let reusable = |e: &IdEntry| recurring && e.state == IdState::Cancelled;
            // An earlier publish of the id still in flight applies first: its
            // event, not the stored one, is what this reschedule moves.
            let moves_stored = |key: &Vec<u8>| !dedup && !self.inflight.contains_key(key);
            let fired = stored.is_some() && moves_stored(&key) && fired_before[i];
            if let Some(e) = stored.filter(|e| (dedup && !reusable(e)) || fired) {
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
            if recurring && ev.schedule_ts < now {
                late_ms.push(now - ev.schedule_ts);
            }
            assert!(
                due_ts >= ev.schedule_ts,
                "an event is never due before its schedule time"
            );
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
            draft.events.push(records.split().freeze());
            self.inflight.insert(
                key.clone(),
                InflightId {
                    offset,
                    due_ts,
                    proposal: this_proposal.clone(),
                },
            );
            draft.keys.push(key);
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
            late_ms,
        })
    }
}

/// Whether the event of a stored id fired or is firing in this term (a
/// cancelled one did neither).
fn has_fired(ctx: &Ctx, firing: &Firing, e: &IdEntry) -> Result<bool, PartitionError> {
    Ok(match e.state {
        IdState::Fired => true,
        IdState::Cancelled => false,
        // Firing leaves the id as it was and only takes the event out of `pending`.
        IdState::Pending => {
            firing.is_firing(e.offset) || {
                let present = ctx.store.pending_present(&[(e.due_ts, e.offset)]);
                let present =
                    present.map_err(|err| PartitionError::storage(ctx.partition, &err))?;
                !present[0]
            }
        }
    })
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
