//! One event by id, for inspection: whether it is pending, fired or
//! cancelled and, once fired, where each consumer group of its topic is
//! with it. Reads the applied state only; nothing here changes it.

use chronos_proto::internal::{
    DeadLetterRecord, EventRecord, FiredRecord, GroupState, InflightRecord,
};
use chronos_store::{IdEntry, IdState};
use prost::Message;

use crate::{Partition, PartitionError};

/// What [`Partition::describe_event`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct EventView {
    pub state: EventState,
    pub offset: u64,
    pub due_ts: i64,
    /// The stored event: while pending, and once fired while its topic's
    /// fire log holds it.
    pub record: Option<EventRecord>,
    /// When it fired; `None` when not fired, or fired before its place in
    /// the fire log was recorded.
    pub fire_ts: Option<i64>,
    /// Each consumer group of the topic in this partition, by name, once
    /// fired; `None` when it fired before its place in the fire log was
    /// recorded (so where the groups are with it is not known).
    pub groups: Option<Vec<(String, Delivery)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventState {
    Pending,
    Fired,
    /// Cancelled before it came due.
    Cancelled,
}

/// Where one consumer group is with a fired event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Not yet handed to a member.
    Waiting,
    /// Handed to a member; acknowledged by `ack_deadline_ts` or redelivered.
    InFlight { attempt: u32, ack_deadline_ts: i64 },
    /// Rejected or timed out; redelivered at `retry_ts`.
    RetryWait { attempt: u32, retry_ts: i64 },
    /// In the group's dead-letter queue.
    Dead {
        attempts: u32,
        reason: String,
        dead_ts: i64,
    },
    /// Handed out and acknowledged.
    Acked,
    /// The group started (or was sought) after it, or at a due time after
    /// its due time: never delivered to this group.
    NotForGroup,
}

impl Partition {
    /// The event `(topic, message_id)` as this replica has applied it; `None`
    /// when its dedup entry is gone (never published, or past the dedup
    /// window).
    pub fn describe_event(
        &self,
        topic: &str,
        message_id: &str,
    ) -> Result<Option<EventView>, PartitionError> {
        // Past the TTL an entry no longer deduplicates, but while it is
        // stored it still says where the event went.
        let Some(id) = self
            .store
            .get_id(topic, message_id, i64::MIN)
            .map_err(|e| self.storage_error(&e))?
        else {
            return Ok(None);
        };
        let view = EventView {
            state: EventState::Cancelled,
            offset: id.offset,
            due_ts: id.due_ts,
            record: None,
            fire_ts: None,
            groups: Some(Vec::new()),
        };
        let pending = match id.state {
            IdState::Cancelled => return Ok(Some(view)),
            IdState::Pending => self
                .store
                .get_pending(id.due_ts, id.offset)
                .map_err(|e| self.storage_error(&e))?,
            IdState::Fired => None,
        };
        if let Some(raw) = pending {
            let record = EventRecord::decode(raw.as_slice()).map_err(|e| self.storage_error(&e))?;
            return Ok(Some(EventView {
                state: EventState::Pending,
                record: Some(record),
                ..view
            }));
        }
        let view = EventView {
            state: EventState::Fired,
            groups: None,
            ..view
        };
        self.describe_fired(topic, &id, view).map(Some)
    }

    fn describe_fired(
        &self,
        topic: &str,
        id: &IdEntry,
        mut view: EventView,
    ) -> Result<EventView, PartitionError> {
        let places = self
            .store
            .fired_at(id.offset)
            .map_err(|e| self.storage_error(&e))?;
        let Some(first) = places.iter().find(|p| p.group.is_none()) else {
            return Ok(view);
        };
        // Trimmed from the fire log once every group was done with it.
        if let Some(raw) = self
            .store
            .get_fired(topic, first.fire_seq)
            .map_err(|e| self.storage_error(&e))?
        {
            let fired = FiredRecord::decode(raw.as_slice()).map_err(|e| self.storage_error(&e))?;
            view.fire_ts = Some(fired.fire_ts);
            view.record =
                Some(EventRecord::decode(fired.event).map_err(|e| self.storage_error(&e))?);
        }
        let mut groups = Vec::new();
        for (group_topic, group, raw) in self
            .store
            .list_groups()
            .map_err(|e| self.storage_error(&e))?
        {
            if group_topic != topic {
                continue;
            }
            let state = GroupState::decode(raw.as_slice()).map_err(|e| self.storage_error(&e))?;
            // A copy redriven from this group's dead letters is the one it
            // is working on.
            let seq = places
                .iter()
                .rev()
                .find(|p| p.group.as_deref() == Some(group.as_str()))
                .unwrap_or(first)
                .fire_seq;
            let delivery = self.delivery(topic, &group, &state, seq, id.due_ts)?;
            groups.push((group, delivery));
        }
        view.groups = Some(groups);
        Ok(view)
    }

    fn storage_error(&self, e: &(dyn std::error::Error + 'static)) -> PartitionError {
        PartitionError::storage(self.id, e)
    }

    fn delivery(
        &self,
        topic: &str,
        group: &str,
        state: &GroupState,
        seq: u64,
        due_ts: i64,
    ) -> Result<Delivery, PartitionError> {
        if seq < state.start_seq || due_ts < state.from_due_ts {
            return Ok(Delivery::NotForGroup);
        }
        if let Some(raw) = self
            .store
            .get_dlq(topic, group, seq)
            .map_err(|e| self.storage_error(&e))?
        {
            let dead =
                DeadLetterRecord::decode(raw.as_slice()).map_err(|e| self.storage_error(&e))?;
            return Ok(Delivery::Dead {
                attempts: dead.attempts,
                reason: dead.reason,
                dead_ts: dead.dead_ts,
            });
        }
        if let Some(raw) = self
            .store
            .get_inflight(topic, group, seq)
            .map_err(|e| self.storage_error(&e))?
        {
            let flight =
                InflightRecord::decode(raw.as_slice()).map_err(|e| self.storage_error(&e))?;
            return Ok(if flight.delivered {
                Delivery::InFlight {
                    attempt: flight.attempt,
                    ack_deadline_ts: flight.at_ts,
                }
            } else {
                Delivery::RetryWait {
                    attempt: flight.attempt,
                    retry_ts: flight.at_ts,
                }
            });
        }
        Ok(if seq >= state.cursor {
            Delivery::Waiting
        } else {
            Delivery::Acked
        })
    }
}
