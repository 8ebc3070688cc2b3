//! What the owner waits for: proposals' answers (in log order) and
//! background jobs, and the `Fire` being gathered, which every proposal of
//! a term follows.

use std::time::Instant;

use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, FuturesUnordered};
use futures::FutureExt;

use super::{term, upkeep, Ctx, Written};
use crate::firing::Gathered;
use crate::publisher;
use crate::types::{Applied, Command};
use crate::PartitionError;

/// A proposal's answer, or a background job's, as it reaches the owner.
pub(crate) enum Completion {
    /// Answered whatever the term: its callers wait, and a term starts only
    /// once none is out.
    Published(publisher::Published),
    /// Acted on only by the term that proposed it.
    Term(TermCompletion),
    Upkeep(upkeep::Job),
}

pub(crate) enum TermCompletion {
    Fired(crate::firing::FireProposal, Written),
    /// Deliveries, acks and retries recorded; `waiters` are the acks' callers.
    Recorded {
        written: Written,
        waiters: Vec<crate::delivery::Waiter>,
    },
    GroupCreated(crate::delivery::Attaching, Written),
    Changed(crate::delivery::Changing, Written),
    Trimmed {
        written: Written,
        events: u64,
    },
    /// A scan of the recurring schedules (a job, not a proposal).
    Scanned(Result<super::recurring::Planned, term::TermError>),
    /// A command proposed for a caller (`Control::Propose`).
    Proposed {
        reply: crate::delivery::Reply<Applied>,
        written: Written,
        effect: term::Effect,
    },
}

/// A completion with the epoch of the term whose proposal it answers (None:
/// not a proposal).
pub(crate) struct Done {
    pub(super) epoch: Option<u64>,
    pub(super) completion: Completion,
}

/// Every outstanding proposal and job of the partition, of this term and of
/// ended ones (whose callers are still answered when they resolve).
///
/// Proposals' answers are taken in proposal order, which is log order: an
/// answer is acted on only after those of every earlier entry (a publish's
/// before the `Fire` of its event, a cancel's before a later `Fire`).
///
/// Every proposal of a term goes through here (`propose`), after the `Fire`
/// being gathered: a later command may number fire-log records after the
/// gathered ones (a publish, a redrive) or record their delivery, so it must
/// follow them in the log.
#[derive(Default)]
pub(crate) struct Completions {
    pub(super) proposals: FuturesOrdered<BoxFuture<'static, Done>>,
    pub(super) jobs: FuturesUnordered<BoxFuture<'static, Done>>,
    pub(super) gathered: Option<Gathered>,
}

impl Completions {
    /// Proposes `cmd` after the gathered `Fire`.
    pub async fn propose(
        &mut self,
        ctx: &Ctx,
        cmd: Command,
    ) -> Result<BoxFuture<'static, Written>, PartitionError> {
        self.propose_gathered(ctx).await?;
        ctx.propose(cmd).await
    }

    /// Releases the term of `epoch` numbered and delivered: they join the
    /// `Fire` being gathered.
    pub fn gather(&mut self, epoch: u64) -> &mut Gathered {
        let gathered = self.gathered.get_or_insert_with(|| Gathered::new(epoch));
        assert_eq!(gathered.epoch(), epoch, "a Fire gathered across terms");
        gathered
    }

    /// When the gathered `Fire` is due to be proposed, if there is one.
    pub fn gathered_due(&self) -> Option<Instant> {
        self.gathered.as_ref().map(Gathered::due)
    }

    /// Proposes the gathered `Fire`, if any.
    pub async fn propose_gathered(&mut self, ctx: &Ctx) -> Result<(), PartitionError> {
        let Some(gathered) = self.gathered.take() else {
            return Ok(());
        };
        let (epoch, cmd, proposal) = gathered.into_parts();
        match ctx.propose(cmd).await {
            Ok(written) => {
                self.push_term(epoch, async move {
                    TermCompletion::Fired(proposal, written.await)
                });
                Ok(())
            }
            // Its records may be delivered: the term ends (in log order)
            // rather than number or record anything after them.
            Err(e) => {
                let failed = Err(e.clone());
                self.push_term(
                    epoch,
                    async move { TermCompletion::Fired(proposal, failed) },
                );
                Err(e)
            }
        }
    }

    /// The term ended: what it gathered is never proposed. Those events stay
    /// pending and fire again in the next term (delivered twice at most, as
    /// after a crash); no other entry names their numbers.
    pub(super) fn drop_gathered(&mut self) {
        self.gathered = None;
    }

    /// The answer to a proposal of the term of `epoch`, made just now.
    pub fn push_proposal(
        &mut self,
        epoch: u64,
        fut: impl std::future::Future<Output = Completion> + Send + 'static,
    ) {
        let epoch = Some(epoch);
        self.proposals.push_back(
            fut.map(move |completion| Done { epoch, completion })
                .boxed(),
        );
    }

    /// A background job (not a proposal).
    pub fn push_job(
        &mut self,
        fut: impl std::future::Future<Output = Completion> + Send + 'static,
    ) {
        self.jobs.push(
            fut.map(move |completion| Done {
                epoch: None,
                completion,
            })
            .boxed(),
        );
    }

    /// A background job only the term of `epoch` acts on.
    pub fn push_term_job(
        &mut self,
        epoch: u64,
        fut: impl std::future::Future<Output = TermCompletion> + Send + 'static,
    ) {
        self.jobs.push(
            fut.map(move |completion| Done {
                epoch: Some(epoch),
                completion: Completion::Term(completion),
            })
            .boxed(),
        );
    }

    /// A proposal only the term of `epoch` acts on.
    pub fn push_term(
        &mut self,
        epoch: u64,
        fut: impl std::future::Future<Output = TermCompletion> + Send + 'static,
    ) {
        self.push_proposal(epoch, fut.map(Completion::Term));
    }
}
