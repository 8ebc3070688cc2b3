//! Applying schedule commands and the leader's advances of schedules.
//!
//! A schedule's state is decided here, in log order: the create computes its
//! first occurrence; a pause, update or delete cancels the occurrences stored
//! ahead that are still pending (so the change takes effect at the next
//! occurrence); an advance (carried by the publish that stores occurrences)
//! moves the schedule on only if it is still where the leader saw it, so an
//! occurrence is stored once whatever happens to leaders.

use std::io;

use chronos_proto::internal::{
    schedule_command::Op, CancelCommand, ScheduleAdvance, ScheduleCommand, ScheduleRecord,
};
use chronos_proto::v1::Schedule;
use chronos_store::{id_key, Batch};
use prost::Message;

use super::{sm_err, StateMachine};
use crate::schedule::{
    decode_stored, encode_state, occurrence_id, recurrence_of, remember, ScheduleApplied,
    ScheduleStatus,
};
use crate::types::CancelOutcome;

impl StateMachine {
    pub(super) fn apply_schedule(
        &mut self,
        batch: &mut Batch<'_>,
        c: &ScheduleCommand,
    ) -> Result<ScheduleApplied, io::Error> {
        let now = c.now_ts;
        let done = |status, record: Option<&ScheduleRecord>, cancelled| ScheduleApplied {
            status,
            record: record.map(Message::encode_to_vec),
            cancelled,
        };
        let (id, spec_raw) = match &c.op {
            Some(Op::Create(raw) | Op::Update(raw)) => {
                let spec = Schedule::decode(&raw[..]).map_err(sm_err)?;
                (spec.schedule_id, Some(raw))
            }
            Some(Op::Pause(id) | Op::Resume(id) | Op::Delete(id)) => (id.clone(), None),
            None => return Ok(done(ScheduleStatus::NotFound, None, Vec::new())),
        };
        let found = match self.store.get_schedule(&id).map_err(sm_err)? {
            Some(stored) => Some(decode_stored(stored).map_err(sm_err)?),
            None => None,
        };
        let Some((mut record, spec)) = found else {
            let Some(Op::Create(raw)) = &c.op else {
                return Ok(done(ScheduleStatus::NotFound, None, Vec::new()));
            };
            let spec = Schedule::decode(&raw[..]).map_err(sm_err)?;
            let mut record = ScheduleRecord {
                spec: raw.clone(),
                created_ts: now,
                updated_ts: now,
                version: 1,
                ..Default::default()
            };
            record.next_ts = first_after(&spec, &record, now);
            let active = (spec.topic.as_str(), record.next_ts);
            batch.put_schedule(&id, None, active, &encode_state(&record), Some(&raw[..]));
            return Ok(done(ScheduleStatus::Created, Some(&record), Vec::new()));
        };
        let was = (spec.topic.clone(), record.next_ts);
        let status = match &c.op {
            Some(Op::Create(raw)) => {
                let status = if *raw == record.spec {
                    ScheduleStatus::Existed
                } else {
                    ScheduleStatus::Conflict
                };
                return Ok(done(status, Some(&record), Vec::new()));
            }
            Some(Op::Delete(_)) => {
                let cancelled = self.cancel_stored(batch, &spec, &mut record)?;
                batch.delete_schedule(&id, &was.0, was.1);
                return Ok(done(ScheduleStatus::Deleted, Some(&record), cancelled));
            }
            Some(Op::Resume(_)) if !record.paused => {
                return Ok(done(ScheduleStatus::Resumed, Some(&record), Vec::new()));
            }
            Some(Op::Pause(_)) if record.paused => {
                return Ok(done(ScheduleStatus::Paused, Some(&record), Vec::new()));
            }
            Some(Op::Pause(_)) => {
                record.paused = true;
                ScheduleStatus::Paused
            }
            Some(Op::Resume(_)) => {
                record.paused = false;
                ScheduleStatus::Resumed
            }
            _ => {
                record.spec = spec_raw.cloned().unwrap_or_default();
                ScheduleStatus::Updated
            }
        };
        // Every change starts the schedule afresh from now: what was stored
        // ahead and has not fired is cancelled (an update stores it again
        // with the new content, under the same id).
        let spec = Schedule::decode(&record.spec[..]).map_err(sm_err)?;
        let cancelled = self.cancel_stored(batch, &spec, &mut record)?;
        record.version += 1;
        record.updated_ts = now;
        record.next_ts = if record.paused {
            0
        } else {
            first_after(&spec, &record, now)
        };
        let now_active = (spec.topic.as_str(), record.next_ts);
        // The spec too: an update changes it, and a state written before
        // specs were kept apart moves it out.
        batch.put_schedule(
            &id,
            Some((&was.0, was.1)),
            now_active,
            &encode_state(&record),
            Some(&record.spec[..]),
        );
        Ok(done(status, Some(&record), cancelled))
    }

    /// Cancels the stored occurrences of the schedule that are still pending.
    fn cancel_stored(
        &mut self,
        batch: &mut Batch<'_>,
        spec: &Schedule,
        record: &mut ScheduleRecord,
    ) -> Result<Vec<(Vec<u8>, u64)>, io::Error> {
        let mut cancelled = Vec::new();
        for ts in std::mem::take(&mut record.stored_ts) {
            let cancel = CancelCommand {
                topic: spec.topic.clone(),
                message_id: occurrence_id(&spec.schedule_id, ts),
            };
            if let CancelOutcome::Cancelled { offset, .. } = self.apply_cancel(batch, &cancel)? {
                cancelled.push((id_key(&cancel.topic, &cancel.message_id), offset));
            }
        }
        Ok(cancelled)
    }

    /// Moves schedules on past the occurrences a publish stored. An advance
    /// whose schedule changed since the leader read it is ignored: the leader
    /// does not store occurrences of a schedule with a change in flight, so
    /// this is only a safeguard.
    pub(super) fn apply_advances(
        &mut self,
        batch: &mut Batch<'_>,
        advances: &[ScheduleAdvance],
    ) -> Result<(), io::Error> {
        let ids: Vec<&str> = advances.iter().map(|a| a.schedule_id.as_str()).collect();
        let states = self.store.get_schedule_states(&ids).map_err(sm_err)?;
        for (a, raw) in advances.iter().zip(states) {
            let Some(raw) = raw else {
                continue;
            };
            let mut record = ScheduleRecord::decode(&raw[..]).map_err(sm_err)?;
            if record.paused || record.version != a.version || record.next_ts != a.from_ts {
                tracing::warn!(
                    schedule = %a.schedule_id,
                    "a schedule advance no longer matches the schedule; ignored"
                );
                metrics::counter!("chronos_schedule_advances_ignored_total").increment(1);
                continue;
            }
            assert!(
                a.next_ts == 0 || a.next_ts > a.from_ts,
                "a schedule only moves forward"
            );
            record.next_ts = a.next_ts;
            record.occurrences += a.stored_ts.len() as u64;
            if let Some(&last) = a.stored_ts.last() {
                record.last_ts = last;
            }
            remember(&mut record, &a.stored_ts);
            // Non-empty only in a state written before specs were kept apart.
            let spec = std::mem::take(&mut record.spec);
            batch.advance_schedule(
                &a.schedule_id,
                a.from_ts,
                record.next_ts,
                &record.encode_to_vec(),
                (!spec.is_empty()).then_some(&spec[..]),
            );
        }
        Ok(())
    }
}

/// The schedule's first occurrence after `now` (0: none).
fn first_after(spec: &Schedule, record: &ScheduleRecord, now: i64) -> i64 {
    match recurrence_of(spec, record.created_ts) {
        Ok(rec) => rec.next_after(now).unwrap_or(0),
        // Validated before it was proposed; a node that cannot read it
        // (an older binary) keeps the schedule, inactive.
        Err(e) => {
            tracing::error!(schedule = %spec.schedule_id, "cannot compute occurrences: {e}");
            0
        }
    }
}
