//! A leader term: everything this node holds only while it leads the
//! partition, created when it starts leading (with its whole log applied)
//! and dropped when it stops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};

use super::{Completions, Ctx, TermCompletion};
use crate::delivery::{Control, Dispatcher};
use crate::firing::Firing;
use crate::publisher::{PublishRequest, Publisher};
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
    dispatcher: Dispatcher,
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
            dispatcher: Dispatcher::start(ctx, credit)?,
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
    ) -> usize {
        self.publisher
            .receive(ctx, self.epoch, req, mailbox, completions)
            .await
    }

    /// A publish proposal of this term was answered.
    pub fn published(&mut self, ctx: &Ctx, seq: u64, new_events: Option<Vec<(i64, u64)>>) {
        self.publisher.answered(seq);
        if let Some(events) = new_events {
            self.firing.insert_new(ctx.partition, events);
        }
    }

    pub async fn control(
        &mut self,
        ctx: &Ctx,
        c: Control,
        completions: &mut Completions,
    ) -> Result<(), TermError> {
        self.dispatcher
            .handle(ctx, self.epoch, c, completions)
            .await
    }

    pub fn credit_returned(&mut self) {
        self.dispatcher.credit_returned();
    }

    /// A proposal of this term (other than a publish) was answered.
    pub fn complete(&mut self, ctx: &Ctx, completion: TermCompletion) -> Result<(), TermError> {
        match completion {
            TermCompletion::Fired(written) => self.firing.fired(written),
            TermCompletion::Recorded { written, waiters } => {
                self.dispatcher.recorded(written, waiters)
            }
            TermCompletion::GroupCreated(attaching, written) => {
                self.dispatcher.group_created(ctx, attaching, written);
                Ok(())
            }
            TermCompletion::Sought(seeking, written) => {
                self.dispatcher.sought(seeking, written);
                Ok(())
            }
            TermCompletion::Trimmed { written, events } => self.dispatcher.trimmed(written, events),
            TermCompletion::Proposed(reply, written) => {
                let _ = reply.send(written);
                Ok(())
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
        let proposed = self
            .publisher
            .step(ctx, self.epoch, mailbox, completions)
            .await;
        if leased {
            self.firing.step(ctx, self.epoch, completions).await?;
            self.dispatcher.step(ctx, self.epoch, completions).await?;
        }
        Ok(proposed)
    }

    /// When `step` has work next.
    pub fn next_wake(&self, ctx: &Ctx) -> Instant {
        let now = Instant::now();
        let fire_in = self
            .firing
            .next_wake_ms(ctx)
            .saturating_sub(wall_ms())
            .max(0);
        let mut at = now
            .checked_add(Duration::from_millis(fire_in as u64))
            .unwrap_or(now + Duration::from_secs(3600))
            .min(self.dispatcher.next_wake(now));
        if let Some(linger) = self.publisher.linger_deadline() {
            at = at.min(linger);
        }
        at
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
        TermCompletion::Sought(seeking, written) => seeking.answer(&written),
        // Applied (or not) whatever the term: the outcome stands.
        TermCompletion::Proposed(reply, written) => {
            let _ = reply.send(written);
        }
        TermCompletion::Fired(_) | TermCompletion::Trimmed { .. } => {}
    }
}
