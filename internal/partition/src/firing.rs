//! The firing loop: while this node leads the partition, a timing wheel holds
//! the near window of pending events and moves each into its topic's fire log
//! (a `Fire` command through Raft) once the wall clock reaches its due time.
//!
//! The wheel is rebuilt from the `pending` column family every time this node
//! becomes the ready leader, and refilled by range scans as time moves on, so
//! memory follows the window (`horizon`), not the pending count. Events
//! published into the window reach the wheel from the actor, after their
//! proposal is applied. Nothing here persists anything: a crash or a leader
//! change loses only the wheel, which the next leader rebuilds.
//!
//! **Invariant**: a `Fire` carries only events with `due_ts <= fire_ts`, where
//! `fire_ts` is the wall clock when the wheel released them (the wheel never
//! releases early; the state machine asserts it again).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chronos_proto::internal::{FireCommand, PendingRef};
use chronos_scheduler::{Fired, InsertError, TimingWheel, WheelConfig};
use chronos_store::Store;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;

use crate::types::{Command, Raft};
use crate::wall_ms;

/// Pending keys read per range scan.
const SCAN_BATCH: usize = 10_000;
/// Events per `Fire` command.
const FIRE_BATCH: usize = 10_000;
/// `Fire` proposals out at once. openraft 0.9 appends one entry per fsync, so
/// a second proposal is appended while the first is applied; more would only
/// queue, while released events batch up here instead.
const MAX_FIRES_IN_FLIGHT: usize = 2;
/// Longest sleep, so leadership changes are noticed promptly.
const MAX_NAP: Duration = Duration::from_millis(50);

/// (due_ts, offset) of events the actor saw applied.
pub type NewEvents = mpsc::UnboundedReceiver<Vec<(i64, u64)>>;

#[derive(Debug, Clone, Copy)]
pub struct FiringOptions {
    pub tick_ms: i64,
    pub horizon_ms: i64,
}

pub struct Firing {
    pub partition: u32,
    pub raft: Raft,
    pub store: Store,
    /// The actor's flag: leading, and the whole log applied.
    pub leading: Arc<AtomicBool>,
    pub new_events: NewEvents,
    pub options: FiringOptions,
}

/// Why leading stopped.
enum Stop {
    LostLead,
    Shutdown,
}

impl Firing {
    pub async fn run(mut self) {
        loop {
            while !self.leading.load(Ordering::Acquire) {
                // Not leading: what the actor reports is for a past or future leader.
                while self.new_events.try_recv().is_ok() {}
                if self.raft.metrics().borrow().running_state.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            match self.lead().await {
                Ok(Stop::LostLead) => {
                    tracing::info!(partition = self.partition, "firing paused: not leading")
                }
                Ok(Stop::Shutdown) => return,
                Err(e) => {
                    tracing::warn!(partition = self.partition, "firing loop restarts: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            metrics::gauge!("chronos_wheel_entries", "partition" => self.partition.to_string())
                .set(0.0);
        }
    }

    async fn lead(&mut self) -> Result<Stop, String> {
        let opts = self.options;
        let mut now = wall_ms();
        let config = WheelConfig {
            tick_ms: opts.tick_ms,
            horizon_ms: opts.horizon_ms,
            ..WheelConfig::default()
        };
        let mut wheel: TimingWheel<()> =
            TimingWheel::new(config, now).map_err(|e| e.to_string())?;
        let mut window = Window {
            loaded_to: now + opts.horizon_ms,
            last_key: None,
        };
        self.load(&mut wheel, &mut window)?;
        let label = self.partition.to_string();
        let mut fired: Vec<Fired<()>> = Vec::new();
        // Released but not yet proposed: waits while `MAX_FIRES_IN_FLIGHT`
        // proposals are out, then goes in one (bigger) proposal.
        let mut released: Vec<Fired<()>> = Vec::new();
        let mut in_flight = FuturesUnordered::new();
        loop {
            if !self.leading.load(Ordering::Acquire) {
                return Ok(Stop::LostLead);
            }
            now = now.max(wall_ms());
            fired.clear();
            wheel.advance(now, &mut fired);
            released.append(&mut fired);
            if !released.is_empty() && in_flight.len() < MAX_FIRES_IN_FLIGHT {
                for proposal in self.propose_fire(now, &released).await? {
                    in_flight.push(proposal);
                }
                released.clear();
            }
            if now + opts.horizon_ms / 2 >= window.loaded_to {
                window.loaded_to = now + opts.horizon_ms;
                self.load(&mut wheel, &mut window)?;
            }
            metrics::gauge!("chronos_wheel_entries", "partition" => label.clone())
                .set(wheel.len() as f64);
            let wake_at = wheel
                .next_due_ms()
                .unwrap_or(i64::MAX)
                .min(window.loaded_to - opts.horizon_ms / 2);
            let nap = Duration::from_millis(
                (wake_at - wall_ms()).clamp(0, MAX_NAP.as_millis() as i64) as u64,
            );
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                Some(done) = in_flight.next() => fire_applied(done)?,
                batch = self.new_events.recv() => match batch {
                    Some(batch) => self.insert_new(&mut wheel, &window, batch),
                    None => return Ok(Stop::Shutdown),
                },
            }
        }
    }

    /// Scans `pending` from the last loaded key up to the window's end into the wheel.
    fn load(&self, wheel: &mut TimingWheel<()>, window: &mut Window) -> Result<(), String> {
        loop {
            let keys = self
                .store
                .scan_pending(window.last_key, window.loaded_to, SCAN_BATCH)
                .map_err(|e| format!("scanning pending: {e}"))?;
            for &(due, offset) in &keys {
                insert(wheel, due, offset)?;
            }
            if let Some(last) = keys.last() {
                window.last_key = Some(*last);
            }
            if keys.len() < SCAN_BATCH {
                return Ok(());
            }
        }
    }

    /// Events applied since the wheel was loaded; those beyond the window wait for a scan.
    fn insert_new(&self, wheel: &mut TimingWheel<()>, window: &Window, batch: Vec<(i64, u64)>) {
        for (due, offset) in batch {
            if due <= window.loaded_to {
                if let Err(e) = insert(wheel, due, offset) {
                    tracing::warn!(partition = self.partition, offset, "not scheduled: {e}");
                }
            }
        }
    }

    /// Proposes the released events (in chunks); the receivers resolve when applied.
    async fn propose_fire(
        &self,
        fire_ts: i64,
        released: &[Fired<()>],
    ) -> Result<Vec<Proposal>, String> {
        let lateness = metrics::histogram!("chronos_fire_lateness_seconds");
        let mut proposals = Vec::new();
        for chunk in released.chunks(FIRE_BATCH) {
            let events: Vec<PendingRef> = chunk
                .iter()
                .map(|f| {
                    debug_assert!(f.due_ms <= fire_ts, "wheel released an event early");
                    lateness.record((fire_ts - f.due_ms) as f64 / 1000.0);
                    PendingRef {
                        due_ts: f.due_ms,
                        offset: f.key,
                    }
                })
                .collect();
            let rx = self
                .raft
                .client_write_ff(Command::fire(FireCommand { fire_ts, events }))
                .await
                .map_err(|e| format!("proposing fire: {e}"))?;
            proposals.push(rx);
        }
        Ok(proposals)
    }
}

type WriteResult = Result<
    openraft::raft::ClientWriteResponse<crate::types::TypeConfig>,
    openraft::error::ClientWriteError<crate::types::NodeId, openraft::BasicNode>,
>;
/// An in-flight `Fire`, answered once applied (openraft's oneshot responder).
type Proposal = tokio::sync::oneshot::Receiver<WriteResult>;

/// Books an applied `Fire`; an error (lost leadership, stopped group) ends this term's loop.
fn fire_applied(
    done: Result<WriteResult, tokio::sync::oneshot::error::RecvError>,
) -> Result<(), String> {
    match done {
        Ok(Ok(resp)) => {
            // Counted as applied: events already fired or cancelled are skipped.
            metrics::counter!("chronos_fired_events_total").increment(resp.data.fired);
            Ok(())
        }
        Ok(Err(e)) => Err(format!("fire not applied: {e}")),
        Err(_) => Err("fire abandoned: raft stopped".into()),
    }
}

/// What part of `pending` the wheel holds: everything due at or before
/// `loaded_to`, read up to `last_key`.
struct Window {
    loaded_to: i64,
    last_key: Option<(i64, u64)>,
}

fn insert(wheel: &mut TimingWheel<()>, due: i64, offset: u64) -> Result<(), String> {
    match wheel.insert(offset, due, ()) {
        // Seen by both the scan and the actor's report: once is enough.
        Ok(()) | Err(InsertError::DuplicateKey { .. }) => Ok(()),
        Err(e) => Err(format!("scheduling offset {offset}: {e}")),
    }
}
