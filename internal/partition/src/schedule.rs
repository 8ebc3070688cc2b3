//! Recurring schedules: what an occurrence is, shared by the state machine
//! (which stores schedules and moves them on) and the leader (which stores
//! each occurrence as an event ahead of its time).
//!
//! An occurrence is identified by its schedule and nominal time: its event's
//! message_id is `<schedule_id>@<nominal, RFC 3339 UTC with ms>`, so every
//! replica, leader and consumer names it the same way and the dedup index
//! holds it once.

use chronos_proto::internal::ScheduleRecord;
use chronos_proto::v1::schedule::Recurrence as Spec;
use chronos_proto::v1::{Event, MissedRuns, Schedule};
use chronos_recurrence::{Recurrence, RecurrenceError, Rule};
use chronos_store::StoredSchedule;
use prost::Message;
use serde::{Deserialize, Serialize};

/// Header naming the schedule an occurrence came from.
pub const SCHEDULE_HEADER: &str = "chronos-schedule-id";
/// Header with the occurrence's nominal time (RFC 3339, UTC, ms).
pub const NOMINAL_HEADER: &str = "chronos-nominal-time";
/// Occurrences are stored at least this long before their nominal time, so
/// they are in the wheel before they come due...
pub const LOOKAHEAD_MS: i64 = 2_000;
/// ...and at most this much longer: each scan of the due index takes what
/// comes due in the next half second too, so scans and proposals happen a
/// few times a second rather than once per occurrence.
pub const GATHER_MS: i64 = 500;
/// An occurrence not stored this long after its nominal time was missed (no
/// leader could store it): the schedule's missed-run policy decides.
pub const MISSED_AFTER_MS: i64 = 1_000;
/// Default and upper bound of `catch_up_limit`.
pub const DEFAULT_CATCH_UP: u32 = 100;
pub const MAX_CATCH_UP: u32 = 10_000;
/// Stored occurrences a record remembers (to cancel them on a change).
const REMEMBERED: usize = 16;
/// Occurrences are stored at most this long before their nominal time (a
/// burst of many starts before `LOOKAHEAD_MS`)...
pub const MAX_AHEAD_MS: i64 = 14_000;
// ...so a schedule every second (the shortest interval) has at most 15
// stored ahead, and a change remembers every one of them to cancel.
const _: () = assert!(MAX_AHEAD_MS / chronos_recurrence::MIN_EVERY_MS + 1 < REMEMBERED as i64);

/// What applying a schedule command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScheduleStatus {
    Created,
    /// A create of a schedule that exists with the same content.
    Existed,
    /// A create of a schedule that exists with different content.
    Conflict,
    Updated,
    Paused,
    Resumed,
    Deleted,
    NotFound,
}

/// The outcome of a schedule command: its status, the record after it (an
/// encoded `ScheduleRecord`; the old one for `Deleted`) and the pending
/// occurrences it cancelled (`id_key`, offset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleApplied {
    pub status: ScheduleStatus,
    pub record: Option<Vec<u8>>,
    pub cancelled: Vec<(Vec<u8>, u64)>,
}

/// The schedule's recurrence; `created_ts` anchors an interval without a start.
pub fn recurrence_of(spec: &Schedule, created_ts: i64) -> Result<Recurrence, RecurrenceError> {
    let start = (spec.start_ts > 0).then_some(spec.start_ts);
    let end = (spec.end_ts > 0).then_some(spec.end_ts);
    let rule = match &spec.recurrence {
        Some(Spec::Cron(expr)) => Rule::Cron(chronos_recurrence::parse_cron(expr)?),
        Some(Spec::EveryMs(ms)) => {
            Rule::Every(chronos_recurrence::every(*ms, start.unwrap_or(created_ts))?)
        }
        Some(Spec::Times(t)) => Rule::Times(t.times_ts.clone()),
        None => Rule::Times(Vec::new()),
    };
    Recurrence::new(rule, &spec.time_zone, start, end)
}

/// The recurrence of a schedule being created or updated, which must also
/// space a list's instants at least the shortest interval apart: closer
/// ones would put more occurrences ahead than a record remembers to cancel.
/// (A stored schedule is read with [`recurrence_of`], so one stored before
/// the rule keeps firing.)
pub fn new_recurrence(spec: &Schedule, created_ts: i64) -> Result<Recurrence, RecurrenceError> {
    if let Some(Spec::Times(t)) = &spec.recurrence {
        chronos_recurrence::check_spacing(&t.times_ts)?;
    }
    recurrence_of(spec, created_ts)
}

/// The wall clock, ms since the epoch: when a schedule change is decided.
pub fn now_ms() -> i64 {
    crate::wall_ms()
}

/// RFC 3339 in UTC with milliseconds: how occurrence ids and headers write times.
pub fn format_ts(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => ms.to_string(),
    }
}

pub fn occurrence_id(schedule_id: &str, nominal_ts: i64) -> String {
    format!("{schedule_id}@{}", format_ts(nominal_ts))
}

/// The event of one occurrence, under `message_id`: due at its nominal time
/// (`nominal_ts`, written `nominal`) plus the schedule's jitter (a fixed
/// spread per occurrence, the same on every replica).
pub fn occurrence_event(
    spec: &Schedule,
    message_id: String,
    nominal_ts: i64,
    nominal: String,
) -> Event {
    let mut headers = spec.headers.clone();
    headers.insert(SCHEDULE_HEADER.into(), spec.schedule_id.clone());
    headers.insert(NOMINAL_HEADER.into(), nominal);
    let jitter = if spec.jitter_ms > 0 {
        let h = crc32c::crc32c(message_id.as_bytes()) as i64;
        h % (spec.jitter_ms + 1)
    } else {
        0
    };
    Event {
        message_id,
        schedule_ts: nominal_ts.saturating_add(jitter),
        payload: spec.payload.clone(),
        topic: spec.topic.clone(),
        key: spec.key.clone(),
        headers,
    }
}

/// A schedule as stored: its state and its spec.
pub type Stored = (ScheduleRecord, Schedule);

pub fn decode_record(raw: &[u8]) -> Result<Stored, prost::DecodeError> {
    let record = ScheduleRecord::decode(raw)?;
    let spec = Schedule::decode(&record.spec[..])?;
    Ok((record, spec))
}

/// A schedule as the store keeps it: the record (with its spec) and the spec.
pub fn decode_stored(stored: StoredSchedule) -> Result<Stored, prost::DecodeError> {
    let mut record = ScheduleRecord::decode(&stored.state[..])?;
    if let Some(spec) = stored.spec {
        record.spec = spec.into();
    }
    let spec = Schedule::decode(&record.spec[..])?;
    Ok((record, spec))
}

/// The state to store for `record`: all of it but the spec, which is kept
/// apart (see `chronos_store::StoredSchedule`).
pub fn encode_state(record: &ScheduleRecord) -> Vec<u8> {
    ScheduleRecord {
        spec: Default::default(),
        stored_ts: record.stored_ts.clone(),
        ..*record
    }
    .encode_to_vec()
}

/// What the leader stores for a schedule whose next occurrence is
/// `record.next_ts`, at `now`, in a term that has led since `led_since`:
/// the nominal times to publish and where the schedule goes next (0: it
/// ended).
///
/// Only an occurrence that came due before this term could store it was
/// missed (no leader could): one this term is merely late with (it is
/// saturated) is stored late, never skipped by the missed-run policy.
pub fn plan_occurrences(
    record: &ScheduleRecord,
    spec: &Schedule,
    now: i64,
    led_since: i64,
) -> Result<(Vec<i64>, i64), RecurrenceError> {
    let rec = recurrence_of(spec, record.created_ts)?;
    let next = record.next_ts;
    if next >= now.min(led_since) - MISSED_AFTER_MS {
        return Ok((vec![next], rec.next_after(next).unwrap_or(0)));
    }
    let resume = rec.next_after(now).unwrap_or(0);
    let fire = match MissedRuns::try_from(spec.missed_runs).unwrap_or(MissedRuns::Skip) {
        MissedRuns::Skip => Vec::new(),
        MissedRuns::FireOnce => rec.latest_in(next - 1, now).into_iter().collect(),
        MissedRuns::CatchUp => {
            let limit = match spec.catch_up_limit {
                0 => DEFAULT_CATCH_UP,
                n => n.min(MAX_CATCH_UP),
            };
            rec.between(next - 1, now, limit as usize)
        }
    };
    Ok((fire, resume))
}

/// Remembers stored occurrences, newest last, at most `REMEMBERED`.
pub fn remember(record: &mut ScheduleRecord, stored: &[i64]) {
    record.stored_ts.extend_from_slice(stored);
    let excess = record.stored_ts.len().saturating_sub(REMEMBERED);
    record.stored_ts.drain(..excess);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_second(missed_runs: MissedRuns) -> (ScheduleRecord, Schedule) {
        let spec = Schedule {
            schedule_id: "s".into(),
            topic: "t".into(),
            recurrence: Some(Spec::EveryMs(1_000)),
            missed_runs: missed_runs as i32,
            ..Default::default()
        };
        let record = ScheduleRecord {
            next_ts: 100_000,
            created_ts: 90_000,
            ..Default::default()
        };
        (record, spec)
    }

    #[test]
    fn an_occurrence_due_while_no_term_led_is_missed_one_this_term_is_late_with_is_not() {
        let (record, spec) = every_second(MissedRuns::Skip);
        // Led since before it came due, 5 s behind: stored late, not skipped.
        assert_eq!(
            plan_occurrences(&record, &spec, 105_000, 99_000).unwrap(),
            (vec![100_000], 101_000)
        );
        // Due 5 s before this term began: missed, and skipped.
        let (fired, resume) = plan_occurrences(&record, &spec, 105_000, 105_000).unwrap();
        assert_eq!((fired, resume), (vec![], 106_000));
        // Within a second of either: on time.
        assert_eq!(
            plan_occurrences(&record, &spec, 100_900, 100_900)
                .unwrap()
                .0,
            vec![100_000]
        );
        // Fire once: the latest missed occurrence only.
        let (record, spec) = every_second(MissedRuns::FireOnce);
        assert_eq!(
            plan_occurrences(&record, &spec, 105_000, 105_000).unwrap(),
            (vec![105_000], 106_000)
        );
    }
}
