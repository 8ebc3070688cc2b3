//! A leader term: everything this node holds only while it leads the
//! partition, created when it starts leading (with its whole log applied)
//! and dropped when it stops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};

use chronos_proto::internal::command;
use chronos_store::id_key;

use super::recurring::Recurring;
use super::{Completions, Ctx, TermCompletion, Written};
use crate::delivery::{Control, Dispatcher, Reply};
use crate::fire_tail::FireTail;
use crate::firing::Firing;
use crate::publisher::{Answered, Firings, PublishRequest, Publisher};
use crate::types::{Applied, CancelOutcome, Command};
use crate::wall_ms;
use crate::PartitionError;

/// Why a term cannot go on; the owner ends it and builds a new one.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TermError {
    #[error("storage: {0}")]
    Store(#[from] chronos_store::StoreError),
    #[error("decoding {what}: {source}")]
    Decode {
        what: &'static str,
        source: prost::DecodeError,
    },
    #[error("wheel: {0}")]
    WheelConfig(#[from] chronos_scheduler::ConfigError),
    #[error("scheduling offset {offset}: {source}")]
    Wheel {
        offset: u64,
        source: chronos_scheduler::InsertError,
    },
    #[error(transparent)]
    Write(#[from] PartitionError),
    #[error("a background task of the term: {0}")]
    Task(#[from] tokio::task::JoinError),
}

pub(crate) struct LeaderTerm {
    /// The Raft term this node leads in.
    term: u64,
    /// The fence: this object's number among the owner's terms (a Raft term
    /// can hold two, when a term ended on an error and was rebuilt). Answers
    /// to other terms' proposals never act here.
    epoch: u64,
    publisher: Publisher,
    firing: Firing,
    /// The fire logs' records this term proposed that have not applied.
    tail: FireTail,
    dispatcher: Dispatcher,
    recurring: Recurring,
}

/// What a command proposed for a caller does to the term until it applies.
pub(crate) enum Effect {
    None,
    /// Cancels: their ids' events are held back from firing.
    Cancels {
        ids: Vec<Vec<u8>>,
    },
    /// A redrive: numbers `first..first + n` of the topic's fire log.
    Redrive {
        topic: String,
        first: u64,
        n: u64,
    },
    /// A schedule change: its stored occurrences (`id_key`s) are held back
    /// from firing, since it may cancel them.
    Schedule {
        schedule_id: String,
        held: Vec<Vec<u8>>,
    },
}

impl LeaderTerm {
    /// Builds the term's state from the applied state machine.
    pub fn start(
        ctx: &Ctx,
        term: u64,
        epoch: u64,
        credit: Arc<Notify>,
    ) -> Result<LeaderTerm, TermError> {
        let next_offset = ctx
            .applied
            .next_offset
            .load(std::sync::atomic::Ordering::Acquire);
        Ok(LeaderTerm {
            term,
            epoch,
            publisher: Publisher::new(next_offset),
            firing: Firing::start(ctx)?,
            tail: FireTail::default(),
            dispatcher: Dispatcher::start(ctx, credit)?,
            recurring: Recurring::new(wall_ms()),
        })
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn next_offset(&self) -> u64 {
        self.publisher.next_offset()
    }

    pub fn takes_publishes(&self) -> bool {
        self.publisher.takes()
    }

    /// Returns the proposals made (0 or 1).
    pub async fn publish(
        &mut self,
        ctx: &Ctx,
        req: PublishRequest,
        mailbox: &mut mpsc::Receiver<PublishRequest>,
        completions: &mut Completions,
    ) -> Result<usize, TermError> {
        let fl = Firings {
            tail: &mut self.tail,
            firing: &mut self.firing,
        };
        self.publisher
            .receive(ctx, self.epoch, req, mailbox, fl, completions)
            .await
    }

    /// A publish proposal of this term was answered.
    pub fn published(&mut self, ctx: &Ctx, a: Answered) -> Result<(), TermError> {
        self.publisher.answered(a.seq);
        if a.occurred {
            self.recurring.stored(wall_ms());
        }
        for (topic, seqs) in a.appended.iter() {
            self.tail.applied(topic, seqs.iter().copied());
            self.dispatcher.fire_log_grew();
        }
        let applied = a.new_events.is_some();
        if let Some(events) = a.new_events {
            self.firing.insert_new(ctx.partition, events);
        }
        // After the insert: a reschedule may move an event that an earlier
        // reschedule of the same id in the same command stored.
        for offset in a.unscheduled {
            self.firing.forget(offset);
        }
        for id in &a.held {
            self.firing.release_hold(id, None);
        }
        // Whether it will still apply is unknown: its numbers and holds
        // cannot be trusted, so the term ends (a lost leadership ends it
        // anyway).
        if !applied && (!a.appended.is_empty() || !a.held.is_empty()) {
            return Err(TermError::Write(ctx.not_leader()));
        }
        Ok(())
    }

    pub async fn control(
        &mut self,
        ctx: &Ctx,
        c: Control,
        completions: &mut Completions,
    ) -> Result<(), TermError> {
        match c {
            Control::Propose { cmd, reply } => self.propose(ctx, cmd, reply, completions).await,
            Control::Group(c) => {
                self.dispatcher
                    .handle(ctx, self.epoch, c, completions)
                    .await
            }
        }
    }

    /// Proposes cancels or a redrive for a caller, in log order with this
    /// term's fires and deliveries: a cancel holds its id's event back from
    /// firing until it applies; a redrive's records are numbered here.
    async fn propose(
        &mut self,
        ctx: &Ctx,
        mut cmd: Command,
        reply: Reply<Applied>,
        completions: &mut Completions,
    ) -> Result<(), TermError> {
        let effect = match &mut cmd.pb.kind {
            Some(command::Kind::Cancels(c)) => {
                let ids: Vec<Vec<u8>> = (c.cancels.iter())
                    .map(|c| id_key(&c.topic, &c.message_id))
                    .collect();
                for id in &ids {
                    self.firing.hold(id.clone());
                }
                Effect::Cancels { ids }
            }
            Some(command::Kind::Redrive(r)) => {
                let n = r.seqs.len() as u64;
                let first = self.tail.reserve(&ctx.store, &r.topic, n)?;
                r.first_seq = Some(first);
                Effect::Redrive {
                    topic: r.topic.clone(),
                    first,
                    n,
                }
            }
            Some(command::Kind::Schedule(c)) => self.schedule_changing(ctx, c)?,
            _ => Effect::None,
        };
        match completions.propose(ctx, cmd).await {
            Ok(applied) => {
                completions.push_term(self.epoch, async move {
                    TermCompletion::Proposed {
                        reply,
                        written: applied.await,
                        effect,
                    }
                });
                Ok(())
            }
            Err(e) => {
                let _ = reply.send(Err(e.clone()));
                Err(TermError::Write(e))
            }
        }
    }

    /// A command proposed for a caller applied (or failed).
    fn proposed(&mut self, effect: Effect, written: &Written) -> Result<(), TermError> {
        match effect {
            Effect::None => {}
            Effect::Cancels { ids } => {
                let outcomes = written.as_ref().map_or(&[][..], |a| a.cancels.as_slice());
                if written.is_ok() {
                    assert_eq!(outcomes.len(), ids.len(), "one outcome per cancel");
                }
                for (i, id) in ids.iter().enumerate() {
                    let removed = match outcomes.get(i) {
                        Some(CancelOutcome::Cancelled { offset, .. }) => Some(*offset),
                        _ => None,
                    };
                    self.firing.release_hold(id, removed);
                }
            }
            Effect::Redrive { topic, first, n } => self.tail.applied(&topic, first..first + n),
            Effect::Schedule { schedule_id, held } => {
                let applied = match written {
                    Ok(Applied {
                        schedule: Some(s), ..
                    }) => Some(s),
                    _ => None,
                };
                let cancelled = applied.map_or(&[][..], |s| s.cancelled.as_slice());
                // Where the change put the schedule; unknown (a failed
                // proposal) ends the term, whose successor scans everything.
                let next_ts = applied
                    .and_then(|s| s.record.as_deref())
                    .and_then(|raw| crate::schedule::decode_record(raw).ok())
                    .map_or(0, |(record, _)| record.next_ts);
                for id in held {
                    let removed = cancelled.iter().find(|(k, _)| *k == id).map(|(_, o)| *o);
                    self.firing.release_hold(&id, removed);
                }
                self.recurring.changed(&schedule_id, next_ts, wall_ms());
            }
        }
        // Whether a failed one will still apply is unknown: end the term.
        written
            .as_ref()
            .map(|_| ())
            .map_err(|e| TermError::Write(e.clone()))
    }

    /// A schedule change is about to be proposed: holds back every occurrence
    /// of it that may be stored and pending (what the record remembers and
    /// what the proposal out stores), and keeps new ones from being stored.
    fn schedule_changing(
        &mut self,
        ctx: &Ctx,
        c: &chronos_proto::internal::ScheduleCommand,
    ) -> Result<Effect, TermError> {
        use chronos_proto::internal::schedule_command::Op;
        let schedule_id = match &c.op {
            Some(Op::Create(raw) | Op::Update(raw)) => {
                <chronos_proto::v1::Schedule as prost::Message>::decode(&raw[..])
                    .map_err(|source| TermError::Decode {
                        what: "a schedule",
                        source,
                    })?
                    .schedule_id
            }
            Some(Op::Pause(id) | Op::Resume(id) | Op::Delete(id)) => id.clone(),
            None => String::new(),
        };
        let mut held = self.recurring.changing(&schedule_id);
        if let Some(stored) = ctx.store.get_schedule(&schedule_id)? {
            let (record, spec) =
                crate::schedule::decode_stored(stored).map_err(|source| TermError::Decode {
                    what: "a schedule",
                    source,
                })?;
            held.extend(record.stored_ts.iter().map(|&ts| {
                id_key(
                    &spec.topic,
                    &crate::schedule::occurrence_id(&schedule_id, ts),
                )
            }));
        }
        for id in &held {
            self.firing.hold(id.clone());
        }
        Ok(Effect::Schedule { schedule_id, held })
    }

    pub fn credit_returned(&mut self) {
        self.dispatcher.credit_returned();
    }

    /// A proposal of this term (other than a publish) was answered.
    pub fn complete(&mut self, ctx: &Ctx, completion: TermCompletion) -> Result<(), TermError> {
        match completion {
            TermCompletion::Fired(proposal, written) => {
                self.dispatcher.fire_log_grew();
                self.firing.fired(&mut self.tail, proposal, written)
            }
            TermCompletion::Recorded { written, waiters } => {
                self.dispatcher.recorded(written, waiters)
            }
            TermCompletion::GroupCreated(attaching, written) => {
                self.dispatcher.group_created(ctx, attaching, written);
                Ok(())
            }
            TermCompletion::Changed(changing, written) => {
                self.dispatcher.changed(ctx, changing, written);
                Ok(())
            }
            TermCompletion::Trimmed { written, events } => self.dispatcher.trimmed(written, events),
            TermCompletion::Scanned(planned) => self.recurring.scanned(planned),

            TermCompletion::Proposed {
                reply,
                written,
                effect,
            } => {
                let result = self.proposed(effect, &written);
                self.dispatcher.fire_log_grew();
                let _ = reply.send(written);
                result
            }
        }
    }

    /// Does what is due after any input: a lingering publish, and while
    /// `leased`, the wheel and deliveries. Returns the publish proposals made.
    pub async fn step(
        &mut self,
        ctx: &Ctx,
        leased: bool,
        mailbox: &mut mpsc::Receiver<PublishRequest>,
        completions: &mut Completions,
    ) -> Result<usize, TermError> {
        let fl = Firings {
            tail: &mut self.tail,
            firing: &mut self.firing,
        };
        let mut proposed = self
            .publisher
            .step(ctx, self.epoch, mailbox, fl, completions)
            .await?;
        // Releases first: what is due now must not wait behind a scan of
        // schedules for occurrences due seconds from now.
        if leased
            && self
                .firing
                .step(ctx, self.epoch, &mut self.tail, completions)
                .await?
        {
            self.dispatcher.fire_log_grew();
        }
        if self.publisher.takes() {
            proposed += self.store_occurrences(ctx, mailbox, completions).await?;
        }
        if leased {
            self.dispatcher
                .step(ctx, self.epoch, &self.tail, completions)
                .await?;
        }
        Ok(proposed)
    }

    /// Stores the recurring schedules' occurrences that are within the
    /// lookahead, as one publish (with whatever else waits in the mailbox),
    /// once a scan planned them; starts that scan when one is due.
    async fn store_occurrences(
        &mut self,
        ctx: &Ctx,
        mailbox: &mut mpsc::Receiver<PublishRequest>,
        completions: &mut Completions,
    ) -> Result<usize, TermError> {
        let Some(due) = self.recurring.take_ready() else {
            if let Some(scan) = self.recurring.start_scan(&ctx.store, wall_ms()) {
                let scanned = tokio::task::spawn_blocking(move || scan.run());
                completions.push_term_job(self.epoch, async move {
                    let planned = scanned.await.map_err(TermError::from).and_then(|r| r);
                    TermCompletion::Scanned(planned)
                });
            }
            return Ok(0);
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let req = PublishRequest {
            events: due.events,
            reschedule: false,
            advances: Some(due.advances),
            reply,
        };
        // Its answer reaches the term as the proposal's (`published`); the
        // receiver only keeps the request from looking abandoned.
        self.recurring.awaiting(answer);
        let fl = Firings {
            tail: &mut self.tail,
            firing: &mut self.firing,
        };
        let proposed = self
            .publisher
            .propose(ctx, self.epoch, req, mailbox, fl, completions)
            .await?;
        if proposed == 0 {
            self.recurring.stored(wall_ms());
        }
        Ok(proposed)
    }

    /// The wall-clock millisecond the wheel has work next (a release, a
    /// refill of its window).
    pub fn next_fire_ms(&self, ctx: &Ctx) -> i64 {
        self.firing.next_wake_ms(ctx)
    }

    /// When the term has work next, other than the wheel's.
    pub fn next_wake(&self, ctx: &Ctx) -> Instant {
        let now = Instant::now();
        let mut at = self.dispatcher.next_wake(ctx, now);
        if let Some(linger) = self.publisher.linger_deadline() {
            at = at.min(linger);
        }
        // While a publish is out its answer wakes the owner; the occurrences wait for it.
        let wall = wall_ms();
        let recur_in = self.recurring.next_wake_ms(wall).saturating_sub(wall);
        if self.publisher.takes() && recur_in < 3_600_000 {
            at = at.min(now + Duration::from_millis(recur_in.max(0) as u64));
        }
        at
    }

    /// Proposes what the term has released and settled, without waiting
    /// out the lingers: leadership is about to go to another replica, which
    /// must neither fire nor deliver again what this one did.
    pub async fn record_now(
        &mut self,
        ctx: &Ctx,
        completions: &mut Completions,
    ) -> Result<(), TermError> {
        self.dispatcher
            .flush(ctx, self.epoch, completions, true)
            .await?;
        completions.propose_gathered(ctx).await?;
        Ok(())
    }

    pub fn end(self, ctx: &Ctx, reason: &str) {
        self.publisher.end(ctx);
        self.firing.end();
        self.dispatcher.end(ctx, reason);
    }
}

/// Answers the callers of an ended term's proposal; nothing else acts on it.
pub(crate) fn answer_stale(ctx: &Ctx, completion: TermCompletion) {
    match completion {
        TermCompletion::Recorded { written, waiters } => {
            for w in waiters {
                w.answer(&written);
            }
        }
        TermCompletion::GroupCreated(attaching, _) => attaching.refuse(ctx.not_leader()),
        TermCompletion::Changed(changing, written) => changing.answer(&written),
        // Applied (or not) whatever the term: the outcome stands.
        TermCompletion::Proposed { reply, written, .. } => {
            let _ = reply.send(written);
        }
        TermCompletion::Fired(..) | TermCompletion::Trimmed { .. } | TermCompletion::Scanned(_) => {
        }
    }
}
