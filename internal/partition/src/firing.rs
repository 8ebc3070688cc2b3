//! Firing in a leader term: a timing wheel holds the near window of pending
//! events and moves each into its topic's fire log (a `Fire` command through
//! Raft) once the wall clock reaches its due time.
//!
//! The wheel is built from the `pending` column family when the term starts,
//! and refilled by range scans as time moves on, so memory follows the window
//! (`horizon`), not the pending count. Events published into the window join
//! the wheel when their proposal is applied. Nothing here persists anything:
//! a crash or a leader change loses only the wheel, which the next term
//! rebuilds.
//!
//! **Invariant** (checked in release builds): a `Fire` carries only events
//! with `due_ts <= fire_ts`, where `fire_ts` is the wall clock when the wheel
//! released them (for a while not the wall clock after it jumped ahead:
//! `StepGuard`); the state machine checks it again.

use chronos_proto::internal::{FireCommand, PendingRef};
use chronos_scheduler::{Fired, InsertError, StepGuard, TimingWheel, WheelConfig};

use crate::owner::TermError;
use crate::owner::{Completions, Ctx, TermCompletion, Written};
use crate::types::Command;
use crate::wall_ms;

/// Pending keys read per range scan.
const SCAN_BATCH: usize = 10_000;
/// Events per `Fire` command.
const FIRE_BATCH: usize = 10_000;
/// `Fire` proposals out at once: a second is appended while the first is
/// applied; meanwhile released events batch up here (four measured no
/// better: docs/benchmarks.md).
const MAX_FIRES_IN_FLIGHT: usize = 2;

#[derive(Debug, Clone, Copy)]
pub struct FiringOptions {
    pub tick_ms: i64,
    pub horizon_ms: i64,
}

pub(crate) struct Firing {
    wheel: TimingWheel<()>,
    /// The wheel's clock: the wall clock, never moving back.
    now: i64,
    /// What part of `pending` the wheel holds: everything due at or before
    /// `loaded_to`, read up to `last_key`.
    loaded_to: i64,
    last_key: Option<(i64, u64)>,
    /// Released but not yet proposed: waits while `MAX_FIRES_IN_FLIGHT`
    /// proposals are out, then goes in one (bigger) proposal.
    released: Vec<Fired<()>>,
    in_flight: usize,
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
            now,
            loaded_to: now + opts.horizon_ms,
            last_key: None,
            released: Vec::new(),
            in_flight: 0,
            gauge: metrics::gauge!("chronos_wheel_entries", "partition" => ctx.partition.to_string()),
            guard: StepGuard::default(),
        };
        firing.load(ctx)?;
        Ok(firing)
    }

    /// Releases what came due, proposes it when a slot is free, and keeps
    /// the window loaded ahead of the clock.
    pub async fn step(
        &mut self,
        ctx: &Ctx,
        epoch: u64,
        completions: &mut Completions,
    ) -> Result<(), TermError> {
        let wall = self.guard.now(wall_ms(), std::time::Instant::now());
        self.now = self.now.max(wall);
        self.wheel.advance(self.now, &mut self.released);
        if !self.released.is_empty() && self.in_flight < MAX_FIRES_IN_FLIGHT {
            self.propose(ctx, epoch, completions).await?;
        }
        if self.now + ctx.firing.horizon_ms / 2 >= self.loaded_to {
            self.loaded_to = self.now + ctx.firing.horizon_ms;
            self.load(ctx)?;
        }
        self.gauge.set(self.wheel.len() as f64);
        Ok(())
    }

    /// When `step` has work next (wall-clock ms).
    pub fn next_wake_ms(&self, ctx: &Ctx) -> i64 {
        self.wheel
            .next_due_ms()
            .unwrap_or(i64::MAX)
            .min(self.loaded_to - ctx.firing.horizon_ms / 2)
    }

    /// Events whose publish applied; those beyond the window wait for a scan.
    pub fn insert_new(&mut self, partition: u32, batch: Vec<(i64, u64)>) {
        for (due, offset) in batch {
            if due <= self.loaded_to {
                if let Err(e) = insert(&mut self.wheel, due, offset) {
                    tracing::warn!(partition, offset, "not scheduled: {e}");
                }
            }
        }
    }

    /// A `Fire` applied (or failed: that ends the term).
    pub fn fired(&mut self, written: Written) -> Result<(), TermError> {
        self.in_flight -= 1;
        // Counted as applied: events already fired or cancelled are skipped.
        let applied = written?;
        metrics::counter!("chronos_fired_events_total").increment(applied.fired);
        Ok(())
    }

    pub fn end(self) {
        self.gauge.set(0.0);
    }

    /// Scans `pending` from the last loaded key up to the window's end into the wheel.
    fn load(&mut self, ctx: &Ctx) -> Result<(), TermError> {
        loop {
            let keys = ctx
                .store
                .scan_pending(self.last_key, self.loaded_to, SCAN_BATCH)?;
            for &(due, offset) in &keys {
                insert(&mut self.wheel, due, offset)?;
            }
            if let Some(last) = keys.last() {
                self.last_key = Some(*last);
            }
            if keys.len() < SCAN_BATCH {
                return Ok(());
            }
        }
    }

    /// Proposes the released events (in chunks); each answers when applied.
    async fn propose(
        &mut self,
        ctx: &Ctx,
        epoch: u64,
        completions: &mut Completions,
    ) -> Result<(), TermError> {
        let fire_ts = self.now;
        let lateness = metrics::histogram!("chronos_fire_lateness_seconds");
        for chunk in self.released.chunks(FIRE_BATCH) {
            let events: Vec<PendingRef> = chunk
                .iter()
                .map(|f| {
                    assert!(f.due_ms <= fire_ts, "the wheel released an event early");
                    lateness.record((fire_ts - f.due_ms) as f64 / 1000.0);
                    PendingRef {
                        due_ts: f.due_ms,
                        offset: f.key,
                    }
                })
                .collect();
            let applied = ctx
                .propose(Command::fire(FireCommand { fire_ts, events }))
                .await?;
            self.in_flight += 1;
            completions.push_term(epoch, async move { TermCompletion::Fired(applied.await) });
        }
        self.released.clear();
        Ok(())
    }
}

fn insert(wheel: &mut TimingWheel<()>, due: i64, offset: u64) -> Result<(), TermError> {
    match wheel.insert(offset, due, ()) {
        // Seen by both the scan and the publish's answer: once is enough.
        Ok(()) | Err(InsertError::DuplicateKey { .. }) => Ok(()),
        Err(source) => Err(TermError::Wheel { offset, source }),
    }
}
