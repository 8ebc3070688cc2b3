//! A leader term's recurring schedules: stores each occurrence as an event
//! `LOOKAHEAD_MS` to `LOOKAHEAD_MS + GATHER_MS` before its nominal time, through the term's publisher, with
//! the schedule's advance in the same log entry.
//!
//! Nothing per schedule is held here: the due index in the store
//! (`scan_schedules_due`) says which schedules come due, so memory does not
//! grow with the number of schedules. One proposal of occurrences is out at
//! a time, and a schedule with a change in flight (pause, update, delete) is
//! left alone until the change applies, so the advance the leader proposes
//! always matches the schedule when it applies.

use std::collections::HashMap;

use chronos_proto::internal::ScheduleAdvance;
use chronos_proto::v1::Event;
use chronos_store::id_key;

use super::{Ctx, TermError};
use crate::schedule::{decode_stored, format_ts, occurrence_event, plan_occurrences};
use crate::schedule::{GATHER_MS, LOOKAHEAD_MS, MISSED_AFTER_MS};

/// Schedules looked at per proposal: small, because the owner's releases
/// wait while a pass reads and plans them.
const SCAN_LIMIT: usize = 256;
/// Occurrences per proposal, at most (plus one schedule's catch-up): a long
/// outage's catch-up goes out in several entries, not one huge one.
const MAX_EVENTS: usize = 10_000;

#[derive(Default)]
pub(crate) struct Recurring {
    /// The occurrences of the proposal that is out, by schedule (`id_key`s).
    out: Option<HashMap<String, Vec<Vec<u8>>>>,
    /// Schedules with a change proposed and not yet applied (a count each).
    changing: HashMap<String, usize>,
    /// The due index changed (or was never read): read it at the next step.
    rescan: bool,
    /// The earliest next occurrence beyond what the last scan took.
    earliest: Option<i64>,
    /// No active schedule's next occurrence is below this: scans start here.
    floor: i64,
    /// The answer of the request out (unused: the term learns it from the proposal).
    answer: Option<PublishAnswer>,
    /// When this term began (wall clock, ms): occurrences due before it
    /// were missed, later ones are this term's to store.
    led_since: i64,
}

type PublishAnswer =
    tokio::sync::oneshot::Receiver<Result<Vec<crate::PublishOutcome>, crate::PartitionError>>;

/// Occurrences to store: their events and the schedules' advances.
pub(crate) struct Occurrences {
    pub events: Vec<Event>,
    pub advances: Vec<ScheduleAdvance>,
}

impl Recurring {
    pub fn new(led_since: i64) -> Recurring {
        Recurring {
            led_since,
            rescan: true,
            floor: i64::MIN,
            ..Default::default()
        }
    }

    /// When there is work (wall clock, ms).
    pub fn next_wake_ms(&self, now: i64) -> i64 {
        match (&self.out, self.rescan, self.earliest) {
            (Some(_), ..) => i64::MAX,
            (None, true, _) => now,
            (None, false, Some(at)) => at - LOOKAHEAD_MS,
            (None, false, None) => i64::MAX,
        }
    }

    /// The occurrences to store now, if any; the caller proposes them and
    /// reports the answer to `stored`.
    pub fn take_due(&mut self, ctx: &Ctx, now: i64) -> Result<Option<Occurrences>, TermError> {
        if now < self.next_wake_ms(now) {
            return Ok(None);
        }
        self.rescan = false;
        let until = now + LOOKAHEAD_MS + GATHER_MS;
        let due = ctx
            .store
            .scan_schedules_due(self.floor, until, SCAN_LIMIT)?;
        let beyond = match due.len() {
            n if n == SCAN_LIMIT => None,
            _ => ctx.store.first_schedule_due(until.saturating_add(1))?,
        };
        // Everything below the first entry found was taken (its key deleted).
        self.floor = due.first().map(|(ts, _)| *ts).or(beyond).unwrap_or(until);
        let mut taken = Occurrences {
            events: Vec::new(),
            advances: Vec::new(),
        };
        let mut ids = HashMap::new();
        let mut full = due.len() == SCAN_LIMIT;
        for (_, schedule_id) in &due {
            if taken.events.len() >= MAX_EVENTS {
                full = true;
                break;
            }
            if self.changing.contains_key(schedule_id) {
                continue;
            }
            let Some(stored) = ctx.store.get_schedule(schedule_id)? else {
                continue;
            };
            let (record, spec) = decode_stored(stored).map_err(|source| TermError::Decode {
                what: "a schedule",
                source,
            })?;
            let (nominals, next_ts) = match plan_occurrences(&record, &spec, now, self.led_since) {
                Ok(planned) => planned,
                Err(e) => {
                    // Validated at creation; a schedule this binary cannot
                    // read stops rather than stalling every other one.
                    tracing::error!(schedule = %schedule_id, "cannot compute occurrences: {e}");
                    (Vec::new(), 0)
                }
            };
            if record.next_ts < now - MISSED_AFTER_MS {
                metrics::counter!("chronos_schedule_missed_total").increment(1);
            }
            let mut keys = Vec::with_capacity(nominals.len());
            for &nominal in &nominals {
                let written = format_ts(nominal);
                let message_id = format!("{schedule_id}@{written}");
                keys.push(id_key(&spec.topic, &message_id));
                let event = occurrence_event(&spec, message_id, nominal, written);
                taken.events.push(event);
            }
            ids.insert(schedule_id.clone(), keys);
            taken.advances.push(ScheduleAdvance {
                schedule_id: schedule_id.clone(),
                version: record.version,
                from_ts: record.next_ts,
                next_ts,
                stored_ts: nominals,
            });
        }
        // A full scan asks for another at once; else wake for the next one
        // (a change in the window asks for a rescan when it applies).
        self.rescan = full;
        let moved_to = taken.advances.iter().map(|a| a.next_ts).filter(|t| *t > 0);
        self.earliest = moved_to.chain(beyond).min();
        if taken.advances.is_empty() {
            return Ok(None);
        }
        self.out = Some(ids);
        Ok(Some(taken))
    }

    /// The proposal of occurrences was answered (applied or not).
    pub fn awaiting(&mut self, answer: PublishAnswer) {
        self.answer = Some(answer);
    }

    pub fn stored(&mut self) {
        self.out = None;
        self.answer = None;
    }

    /// A change of `schedule_id` is being proposed: the occurrences of it in
    /// the proposal that is out (their `id_key`s), to hold back from firing.
    pub fn changing(&mut self, schedule_id: &str) -> Vec<Vec<u8>> {
        *self.changing.entry(schedule_id.to_string()).or_default() += 1;
        self.out
            .as_ref()
            .and_then(|out| out.get(schedule_id).cloned())
            .unwrap_or_default()
    }

    /// A change of `schedule_id` applied (or failed); `next_ts` is where it
    /// put the schedule (0: inactive).
    pub fn changed(&mut self, schedule_id: &str, next_ts: i64) {
        if next_ts > 0 {
            self.floor = self.floor.min(next_ts);
        }
        if let Some(n) = self.changing.get_mut(schedule_id) {
            *n -= 1;
            if *n == 0 {
                self.changing.remove(schedule_id);
            }
        }
        self.rescan = true;
    }
}
