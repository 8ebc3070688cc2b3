//! The partition's owner: one task that holds every piece of leader-side
//! state and is driven by a closed set of inputs ([`Input`]).
//!
//! While this node leads the partition and has applied its whole log, the
//! owner holds a [`LeaderTerm`]: the publish path (next offset, ids in
//! flight), the timing wheel, and the consumer groups with their members and
//! deliveries. The term object is created when leading starts and dropped
//! when it stops, and carries the Raft term as a fence: every proposal's
//! answer comes back tagged with the term that made it, and only that term
//! may act on it. Nothing here polls for state changes: Raft metrics, the
//! state machine's applied notices, proposals' answers, members' credit and
//! named ticks wake the loop.
//!
//! The owner also keeps the partition's logs short on every replica
//! (`upkeep`): history fsync and node-log compaction, retention.
//!
//! A term fires and delivers only while its **lease** holds: a quorum of
//! voters acknowledged this leader (openraft's `last_quorum_acked`)
//! less than 9/10 of the minimum election timeout ago. No follower grants a
//! vote to another candidate sooner than that, so a leader that was cut off
//! or paused (SIGSTOP) never delivers beside the leader that replaced it; it
//! resumes when heartbeats are answered again, or ends its term when it
//! learns of the next one.
//!
//! When a node starts and no leader is known, a replica that is not the
//! partition's preferred leader (spread evenly by the placement) holds back
//! from campaigning for a few election timeouts, so the preferred one wins
//! the first election and leaders start out balanced.
//!
//! While the node may not lead (`PartitionOptions::may_lead`: its clock is
//! not within bounds of the cluster's, see `chronos-clock`, or it is
//! stopping) the owner holds no term, hands leadership to a caught-up voter
//! (`handoff`) and this replica neither campaigns nor sends heartbeats, so
//! another node leads instead of this one firing early or going away as
//! leader. When it may lead, `handoff` also returns the partition to its
//! preferred leader after a failover.

mod ahead;
mod alarm;
mod completions;
mod handoff;
mod recurring;
mod standing;
mod term;
mod upkeep;

#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chronos_store::Store;
use futures::future::BoxFuture;
use futures::stream::StreamExt;
use futures::FutureExt;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::ServerState;
use tokio::sync::{mpsc, watch, Notify};

use crate::delivery::{Control, DeliveryOptions, GroupControl, GroupGauges, Meters};
use crate::firing::FiringOptions;
use crate::publisher::PublishRequest;
use crate::state_machine::AppliedState;
use crate::types::{Applied, Command, NodeId, Raft, RaftMetrics, RaftServerMetrics};
use crate::{wall_ms, wall_us, PartitionError};

use alarm::Alarm;
pub(crate) use completions::{Completion, Completions, Done, TermCompletion};
pub(crate) use handoff::Handoff;
pub use handoff::Handoffs;
pub(crate) use standing::Standing;
pub(crate) use term::{LeaderTerm, TermError};
pub(crate) use upkeep::Upkeep;

/// Longest a control request waits for this node to become the ready leader.
const DEFER_LIMIT: Duration = Duration::from_secs(5);
/// After a term failed on a storage or decoding error, wait this long before
/// building the next one.
const RESTART_DELAY: Duration = Duration::from_millis(100);
/// Longest the loop sleeps on a wall-clock deadline, so a step of the wall
/// clock is noticed.
const MAX_NAP: Duration = Duration::from_secs(1);

/// What the owner needs from its partition, for every term.
pub(crate) struct Ctx {
    pub partition: u32,
    pub node_id: NodeId,
    pub raft: Raft,
    pub store: Store,
    pub applied: Arc<AppliedState>,
    /// With concurrent publishers, wait this long to gather them into one entry.
    pub linger: Duration,
    pub dedup_ttl_ms: i64,
    pub firing: FiringOptions,
    pub delivery: DeliveryOptions,
    pub meters: Meters,
    /// Where the term's dispatcher leaves each group's lag and in flight.
    pub gauges: Arc<GroupGauges>,
    /// The replica that should lead (the others hold back from the first
    /// election for it).
    pub preferred_leader: Option<NodeId>,
    /// The Raft group's voters at formation (empty: this node alone); `None`
    /// when this replica joins a Raft group that exists elsewhere.
    pub voters: Option<Vec<NodeId>>,
}

/// What applying a proposed command reported, or why it did not apply.
pub(crate) type Written = Result<Applied, PartitionError>;

impl Ctx {
    /// Hands `cmd` to Raft; the future resolves once it is applied (or failed).
    /// Only through [`Completions::propose`], which keeps log order.
    async fn propose(&self, cmd: Command) -> Result<BoxFuture<'static, Written>, PartitionError> {
        let partition = self.partition;
        let (responder, rx) = openraft::impls::ProgressResponder::complete_only();
        self.raft
            .client_write_ff(cmd, Some(responder))
            .await
            .map_err(|fatal| PartitionError::from_fatal(partition, &fatal))?;
        let raft = self.raft.clone();
        Ok(async move {
            match rx.await {
                Ok(Ok(resp)) => Ok(resp.data),
                Ok(Err(e)) => Err(PartitionError::from_write_error(partition, &e)),
                // The Raft group stopped before answering: say why (a failed fsync,
                // a full disk), as the metrics record it.
                Err(_) => Err(stopped(partition, &raft).await),
            }
        }
        .boxed())
    }

    pub fn not_leader(&self) -> PartitionError {
        PartitionError::NotLeader {
            partition: self.partition,
            leader: self.raft.metrics().borrow_watched().current_leader,
        }
    }
}

/// Why the partition's Raft group no longer answers, once Raft records it:
/// an answer is dropped (its apply failed, say on a full disk) a moment
/// before the Raft group's stop is in its metrics, and Raft records every stop.
async fn stopped(partition: u32, raft: &Raft) -> PartitionError {
    let mut metrics = raft.metrics();
    let recorded = async {
        while metrics.borrow_watched().running_state.is_ok() {
            if metrics.changed().await.is_err() {
                break;
            }
        }
    };
    // Bounded all the same: an answer is never held up for long.
    let _ = tokio::time::timeout(Duration::from_secs(2), recorded).await;
    let state = metrics.borrow_watched().running_state.clone();
    PartitionError::from_running_state(partition, &state)
}

/// True when the full metrics `m` hold what the server metrics `s` say
/// (openraft sends the server metrics first).
fn agrees(m: &RaftMetrics, s: &RaftServerMetrics) -> bool {
    m.vote == s.vote
        && m.state == s.state
        && m.current_leader == s.current_leader
        && m.membership_config == s.membership_config
}

/// The closed set of things the owner reacts to.
enum Input {
    /// Raft's view changed: leadership, term, health.
    Metrics,
    /// The state machine applied entries (the log caught up, fire logs grew).
    Applied,
    Publish(PublishRequest),
    /// The publish mailbox closed: the partition is shutting down.
    PublishesClosed,
    Control(Control),
    Done(Done),
    /// A member got credit back.
    Credit,
    /// The node became allowed to lead, or stopped being allowed.
    MayLead,
    Tick(Tick),
}

/// The owner's named timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tick {
    /// The wheel's next due time, a refill of its window, a publish linger, a
    /// redelivery or ack deadline, or a delivery linger.
    Term,
    /// Deferred control requests time out.
    Deferred,
    /// This replica stops holding back from the first election.
    Campaign,
    /// Time to hand leadership over, or to ask again.
    Handoff,
    /// A failed term may be rebuilt.
    Restart,
    /// History fsync and node-log compaction.
    Compact,
    /// History retention and openraft's purge.
    Retention,
}

pub(crate) struct Owner {
    ctx: Ctx,
    publishes: mpsc::Receiver<PublishRequest>,
    publishes_open: bool,
    controls: mpsc::UnboundedReceiver<Control>,
    /// Notified by the state machine after every applied batch.
    applied_notice: Arc<Notify>,
    /// Notified by members that got credit back.
    credit: Arc<Notify>,
    /// The term this node is the ready leader of, for `is_leading`.
    ready: watch::Sender<Option<u64>>,
    completions: Completions,
    term: Option<LeaderTerm>,
    /// Leading in this term; the term starts once the log up to this index is applied.
    catching_up: Option<(u64, u64)>,
    /// Publish proposals not yet answered, of any term: their callers wait,
    /// so the owner stops only once none is left.
    publishes_out: usize,
    /// Control requests that came while this node may become the ready leader.
    deferred: Vec<(Instant, Control)>,
    restart_at: Option<Instant>,
    /// The Raft group stopped on a storage failure.
    fatal: Option<PartitionError>,
    /// Another node leads (a hint for refused requests).
    led_elsewhere: Option<NodeId>,
    /// Raft has this replica as its leader (whether or not it may act as one).
    raft_leader: bool,
    /// Terms started so far: the next one's epoch.
    epochs: u64,
    upkeep: Upkeep,
    /// Whether this replica may lead and act (gate, lease, hold-back).
    standing: Standing,
    /// When to hand leadership to another replica.
    handoff: Handoff,
    /// The replica to hand leadership to once the term recorded its work.
    hand_to: Option<NodeId>,
}

impl Owner {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: Ctx,
        publishes: mpsc::Receiver<PublishRequest>,
        controls: mpsc::UnboundedReceiver<Control>,
        applied_notice: Arc<Notify>,
        ready: watch::Sender<Option<u64>>,
        upkeep: Upkeep,
        standing: Standing,
        handoff: Handoff,
    ) -> Owner {
        Owner {
            ctx,
            publishes,
            publishes_open: true,
            controls,
            applied_notice,
            credit: Arc::new(Notify::new()),
            ready,
            completions: Completions::default(),
            term: None,
            catching_up: None,
            publishes_out: 0,
            deferred: Vec::new(),
            restart_at: None,
            fatal: None,
            led_elsewhere: None,
            raft_leader: false,
            epochs: 0,
            upkeep,
            standing,
            handoff,
            hand_to: None,
        }
    }

    pub async fn run(mut self) {
        let mut metrics = self.ctx.raft.metrics();
        // openraft sends its full metrics at every tick (50 times a second)
        // and every log write, changed or not; its server metrics (vote,
        // role, leader, membership) only when they change. Only a leader
        // with other voters needs more (its lease, its handoffs' replication
        // progress): the others wake for the server metrics, and follow the
        // full ones only until they agree, as they are sent after.
        let mut server = self.ctx.raft.server_metrics();
        let mut full_behind = false;
        let ctx = &self.ctx;
        self.standing
            .start(&ctx.raft, ctx.node_id, ctx.preferred_leader);
        // The owner acts on a copy of Raft's metrics, never under the
        // watch's read lock: acting reads them again (a leader's id for a
        // refusal), and a second read queued behind openraft's waiting
        // writer deadlocks both, and with them the runtime's workers (a
        // rolling restart's drain stalled on exactly that).
        server.borrow_and_update();
        let m = metrics.borrow_and_update().clone();
        self.observe(&m);
        let mut alarm = Alarm::new(self.ctx.partition);
        loop {
            if !self.publishes_open && self.publishes_out == 0 {
                break;
            }
            let takes_publishes = self.publishes_open
                && (self.refusal().is_some()
                    || self.publishes.is_closed()
                    || self.term.as_ref().is_some_and(LeaderTerm::takes_publishes));
            let fire_ms = self.next_fire_ms();
            let fire_ms = fire_ms.filter(|_| !alarm.set(fire_ms, wall_us()));
            let (wake_at, tick) = self.next_tick(fire_ms);
            let has_answers = !self.completions.proposals.is_empty();
            let has_jobs = !self.completions.jobs.is_empty();
            let follows_full = full_behind || (self.raft_leader && !self.standing.single_voter());
            let input = tokio::select! {
                changed = metrics.changed(), if follows_full => match changed {
                    Ok(()) => Input::Metrics,
                    Err(_) => break,
                },
                changed = server.changed() => match changed {
                    Ok(()) => Input::Metrics,
                    // Raft stopped: its full metrics say why.
                    Err(_) => {
                        let m = metrics.borrow_and_update().clone();
                        self.observe(&m);
                        break;
                    }
                },
                _ = self.applied_notice.notified() => Input::Applied,
                req = self.publishes.recv(), if takes_publishes => match req {
                    Some(req) => Input::Publish(req),
                    None => Input::PublishesClosed,
                },
                c = self.controls.recv() => match c {
                    Some(c) => Input::Control(c),
                    None => break,
                },
                Some(done) = self.completions.proposals.next(), if has_answers => Input::Done(done),
                Some(done) = self.completions.jobs.next(), if has_jobs => Input::Done(done),
                _ = self.credit.notified() => Input::Credit,
                // False: nobody changes it any more (a test, shutdown); it stays.
                open = self.standing.gate_changed() => match open {
                    true => Input::MayLead,
                    false => continue,
                },
                _ = alarm.rung(), if alarm.armed() => Input::Tick(Tick::Term),
                _ = tokio::time::sleep_until(wake_at.into()) => Input::Tick(tick),
            };
            match input {
                Input::Metrics => {
                    let m = metrics.borrow_and_update().clone();
                    full_behind = !agrees(&m, &server.borrow_and_update());
                    self.observe(&m);
                }
                Input::MayLead => {
                    self.standing.follow_gate(&self.ctx.raft);
                    if !self.standing.allowed() {
                        // The term ends and leadership goes elsewhere.
                        self.record_term_now().await;
                    }
                    if self.standing.allowed()
                        && self
                            .ctx
                            .preferred_leader
                            .is_none_or(|p| p == self.ctx.node_id)
                    {
                        form_raft_group(&self.ctx, "this node may lead now").await;
                    }
                    let m = metrics.borrow_watched().clone();
                    self.observe(&m);
                }
                _ => {}
            }
            self.handle(input).await;
        }
        let reason = format!("partition {} is shutting down", self.ctx.partition);
        self.end_term(&reason);
        for (_, c) in std::mem::take(&mut self.deferred) {
            refuse(c, PartitionError::Unavailable(reason.clone()));
        }
        tracing::debug!(partition = self.ctx.partition, "partition owner stopped");
    }

    async fn handle(&mut self, input: Input) {
        let result = match input {
            Input::Metrics | Input::Applied | Input::MayLead => Ok(()),
            Input::Publish(req) => self.publish(req).await,
            Input::PublishesClosed => {
                self.publishes_open = false;
                Ok(())
            }
            Input::Control(c) => self.control(c).await,
            Input::Done(done) => self.complete(done),
            Input::Credit => {
                if let Some(term) = &mut self.term {
                    term.credit_returned();
                }
                Ok(())
            }
            Input::Tick(tick) => self.tick(tick).await,
        };
        if let Err(e) = result {
            tracing::warn!(partition = self.ctx.partition, "leader term ends: {e}");
            self.end_term(&format!(
                "partition {} stopped delivering: {e}",
                self.ctx.partition
            ));
            self.restart_at = Some(Instant::now() + RESTART_DELAY);
        }
        self.try_start_term().await;
        let leased = self.standing.leased(Instant::now());
        if let Some(term) = &mut self.term {
            match term
                .step(
                    &self.ctx,
                    leased,
                    &mut self.publishes,
                    &mut self.completions,
                )
                .await
            {
                Ok(proposed) => self.publishes_out += proposed,
                Err(e) => {
                    tracing::warn!(partition = self.ctx.partition, "leader term ends: {e}");
                    self.end_term(&format!(
                        "partition {} stopped delivering: {e}",
                        self.ctx.partition
                    ));
                    self.restart_at = Some(Instant::now() + RESTART_DELAY);
                }
            }
        }
        if let Some(to) = self.hand_to.take() {
            self.record_term_now().await;
            Handoff::transfer(&self.ctx.raft, to);
        }
    }

    /// Proposes what the term released and settled before leadership goes
    /// elsewhere, so that the next leader (a handoff's waits for the log up
    /// to it) does not fire or deliver it again.
    async fn record_term_now(&mut self) {
        if let Some(term) = &mut self.term {
            if let Err(e) = term.record_now(&self.ctx, &mut self.completions).await {
                tracing::warn!(partition = self.ctx.partition, "before handing over: {e}");
            }
        }
    }

    /// Follows Raft's view: a term that is no longer ours ends at once.
    fn observe(&mut self, m: &RaftMetrics) {
        self.fatal = m
            .running_state
            .as_ref()
            .err()
            .map(|f| PartitionError::from_fatal(self.ctx.partition, f));
        self.led_elsewhere = m.current_leader.filter(|&l| l != self.ctx.node_id);
        self.raft_leader =
            m.state == ServerState::Leader && m.current_leader == Some(self.ctx.node_id);
        self.standing.observe(&self.ctx.raft, m, self.raft_leader);
        let allowed = self.standing.allowed();
        self.hand_to = self.handoff.observe(m, allowed).or(self.hand_to);
        let leading = self.raft_leader && self.fatal.is_none() && allowed;
        let leading_term = leading.then_some(m.current_term);
        if self
            .term
            .as_ref()
            .is_some_and(|t| Some(t.term()) != leading_term)
        {
            let why = if allowed {
                ""
            } else {
                ": this node may not lead (its clock is off, or it is stopping)"
            };
            let reason = format!("partition {} stopped delivering{why}", self.ctx.partition);
            self.end_term(&reason);
            tracing::info!(partition = self.ctx.partition, "not leading{why}");
        }
        // Requests deferred while no leader was known go to the one now known
        // (their callers retry there) instead of waiting out `DEFER_LIMIT`.
        if self.term.is_none() && leading_term.is_none() {
            if let Some(err) = self.refusal() {
                for (_, c) in std::mem::take(&mut self.deferred) {
                    refuse(c, err.clone());
                }
            }
        }
        match leading_term {
            Some(term) if self.term.is_none() => {
                if self.catching_up.is_none_or(|(t, _)| t != term) {
                    self.catching_up = Some((term, m.last_log_index.unwrap_or(0)));
                }
            }
            Some(_) => {}
            None => self.catching_up = None,
        }
    }

    /// Starts the term once this node leads, has applied its whole log and
    /// no proposal of an earlier term is unanswered: then the dedup index,
    /// the next offset and the fire logs' next numbers are exact.
    async fn try_start_term(&mut self) {
        let Some((term, index)) = self.catching_up else {
            return;
        };
        if self.ctx.applied.index.load(Ordering::Acquire) < index
            || !self.completions.proposals.is_empty()
            || self.completions.gathered.is_some()
            || self.restart_at.is_some_and(|at| Instant::now() < at)
        {
            return;
        }
        self.catching_up = None;
        self.restart_at = None;
        self.epochs += 1;
        match LeaderTerm::start(&self.ctx, term, self.epochs, self.credit.clone()) {
            Ok(t) => {
                tracing::info!(
                    partition = self.ctx.partition,
                    term,
                    next_offset = t.next_offset(),
                    "leading"
                );
                self.term = Some(t);
                self.ready.send_replace(Some(term));
            }
            Err(e) => {
                tracing::warn!(
                    partition = self.ctx.partition,
                    "leader term cannot start: {e}"
                );
                self.catching_up = Some((term, index));
                self.restart_at = Some(Instant::now() + RESTART_DELAY);
                return;
            }
        }
        for (_, c) in std::mem::take(&mut self.deferred) {
            if let Err(e) = self.control(c).await {
                tracing::warn!(partition = self.ctx.partition, "deferred request: {e}");
            }
        }
    }

    fn end_term(&mut self, reason: &str) {
        self.completions.drop_gathered();
        if let Some(term) = self.term.take() {
            term.end(&self.ctx, reason);
            self.ready.send_replace(None);
        }
    }

    /// Why queued publishes and requests are answered at once rather than
    /// proposed or deferred: the Raft group stopped, or (while this node has no
    /// term) another node leads or this one may not.
    fn refusal(&self) -> Option<PartitionError> {
        if let Some(fatal) = &self.fatal {
            return Some(fatal.clone());
        }
        if self.term.is_some() {
            return None;
        }
        (self.led_elsewhere.is_some() || !self.standing.allowed()).then_some(
            PartitionError::NotLeader {
                partition: self.ctx.partition,
                leader: self.led_elsewhere,
            },
        )
    }

    async fn publish(&mut self, req: PublishRequest) -> Result<(), TermError> {
        if let Some(why) = self.refusal() {
            let _ = req.reply.send(Err(why));
            return Ok(());
        }
        match &mut self.term {
            Some(term) => {
                let proposed = term
                    .publish(&self.ctx, req, &mut self.publishes, &mut self.completions)
                    .await?;
                self.publishes_out += proposed;
            }
            // Taken only to answer it: the mailbox is closing.
            None => {
                let _ = req.reply.send(Err(PartitionError::Unavailable(format!(
                    "partition {} is shutting down",
                    self.ctx.partition
                ))));
            }
        }
        Ok(())
    }

    async fn control(&mut self, c: Control) -> Result<(), TermError> {
        if let Some(term) = &mut self.term {
            return term.control(&self.ctx, c, &mut self.completions).await;
        }
        if let Some(err) = self.refusal() {
            refuse(c, err);
        } else if !matches!(c, Control::Group(GroupControl::Detach { .. })) {
            // No leader known yet, or this node is catching up to lead.
            self.deferred.push((Instant::now(), c));
        }
        Ok(())
    }

    fn complete(&mut self, done: Done) -> Result<(), TermError> {
        let Done { epoch, completion } = done;
        match completion {
            Completion::Upkeep(job) => {
                self.upkeep.finished(self.ctx.partition, job);
                Ok(())
            }
            Completion::Published(p) => {
                self.publishes_out -= 1;
                let answered = p.finish();
                match self.term.as_mut().filter(|t| Some(t.epoch()) == epoch) {
                    Some(t) => t.published(&self.ctx, answered),
                    None => Ok(()),
                }
            }
            Completion::Term(completion) => {
                match self.term.as_mut().filter(|t| Some(t.epoch()) == epoch) {
                    Some(t) => t.complete(&self.ctx, completion),
                    // An ended term's proposal: answer its callers, nothing else.
                    None => {
                        term::answer_stale(&self.ctx, completion);
                        Ok(())
                    }
                }
            }
        }
    }

    async fn tick(&mut self, tick: Tick) -> Result<(), TermError> {
        match tick {
            // `step` runs after every input.
            Tick::Term | Tick::Restart => {}
            Tick::Deferred => {
                let now = Instant::now();
                let (keep, expired): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
                    .into_iter()
                    .partition(|(at, _)| now.duration_since(*at) < DEFER_LIMIT);
                self.deferred = keep;
                for (_, c) in expired {
                    refuse(c, self.ctx.not_leader());
                }
            }
            Tick::Campaign => {
                self.standing.campaign(&self.ctx.raft);
                form_raft_group(&self.ctx, "the preferred leader is silent").await;
            }
            Tick::Handoff => {
                let m = self.ctx.raft.metrics().borrow_watched().clone();
                self.hand_to = self
                    .handoff
                    .observe(&m, self.standing.allowed())
                    .or(self.hand_to);
            }
            Tick::Compact => self
                .upkeep
                .compact(self.ctx.partition, &mut self.completions),
            Tick::Retention => {
                self.upkeep
                    .retention(self.ctx.partition, &self.ctx.raft, &mut self.completions)
                    .await
            }
        }
        Ok(())
    }

    /// The wall-clock millisecond the term's wheel has work next. Without
    /// a lease the term waits for Raft's metrics, not its timers.
    fn next_fire_ms(&self) -> Option<i64> {
        let term = self.term.as_ref()?;
        self.standing
            .leased(Instant::now())
            .then(|| term.next_fire_ms(&self.ctx))
    }

    /// The earliest named timer, with the wheel's `fire_ms` when the alarm
    /// does not wake for it.
    fn next_tick(&self, fire_ms: Option<i64>) -> (Instant, Tick) {
        let now = Instant::now();
        let mut next = (now + MAX_NAP, Tick::Term);
        let mut consider = |at: Instant, tick: Tick| {
            if at < next.0 {
                next = (at, tick);
            }
        };
        if let Some(ms) = fire_ms {
            let fire_in = Duration::from_millis(ms.saturating_sub(wall_ms()).max(0) as u64);
            consider(
                now.checked_add(fire_in).unwrap_or(now + MAX_NAP),
                Tick::Term,
            );
        }
        if let Some(term) = self.term.as_ref().filter(|_| self.standing.leased(now)) {
            consider(term.next_wake(&self.ctx), Tick::Term);
        }
        if let Some(at) = self
            .completions
            .gathered_due()
            .filter(|_| self.term.is_some())
        {
            consider(at, Tick::Term);
        }
        if let Some((at, _)) = self.deferred.first() {
            consider(*at + DEFER_LIMIT, Tick::Deferred);
        }
        if let Some(at) = self.restart_at {
            consider(at, Tick::Restart);
        }
        if let Some(at) = self.standing.campaign_at() {
            consider(at, Tick::Campaign);
        }
        if let Some(at) = self.handoff.wake_at() {
            consider(at, Tick::Handoff);
        }
        let (at, tick) = self.upkeep.next_tick();
        consider(at, tick);
        next
    }
}

/// Initialises the Raft group here (and so campaigns) unless it already is.
async fn form_raft_group(ctx: &Ctx, why: &str) {
    let Some(voters) = &ctx.voters else {
        return;
    };
    if ctx.raft.is_initialized().await.unwrap_or(true) {
        return;
    }
    tracing::info!(partition = ctx.partition, "{why}; forming the Raft group");
    if let Err(e) = crate::initialize(&ctx.raft, ctx.partition, ctx.node_id, voters).await {
        tracing::warn!(partition = ctx.partition, "forming the Raft group: {e}");
    }
}

/// Answers a request that needs the ready leader.
fn refuse(c: Control, err: PartitionError) {
    match c {
        Control::Propose { reply, .. } => {
            let _ = reply.send(Err(err));
        }
        Control::Group(c) => match c {
            GroupControl::Attach { reply, .. } | GroupControl::Seek { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            GroupControl::Settle { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            GroupControl::Delete { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            GroupControl::Runtime { reply } => {
                let _ = reply.send(Ok(Vec::new()));
            }
            GroupControl::Detach { .. } => {}
        },
    }
}
