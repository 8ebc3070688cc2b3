//! A partition's consumer-group API: members attach to the partition owner,
//! acks go to it, and the admin views combine the state machine's records
//! (cursor, dead letters) with the leader's runtime view (members, in flight).

use std::collections::HashSet;
use std::sync::Arc;

use chronos_proto::internal::{
    DeadLetterRecord, EventKeys, EventRecord, FiredRecord, GroupState, RedriveCommand, TopicState,
};
use chronos_proto::v1::DeadLetter;
use prost::Message;
use tokio::sync::oneshot;

use crate::delivery::{event_of, Control, GroupControl, Member, SettleItem, SettleResult, Start};
use crate::types::{Command, GroupDeleted};
use crate::{wall_ms, Partition, PartitionError};

/// Pending events looked at to find a topic's next due time.
const NEXT_DUE_SCAN: usize = 1_000;
/// Dead letters per Redrive entry.
const REDRIVE_CHUNK: usize = 10_000;

/// A consumer group as one partition sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupInfo {
    pub topic: String,
    pub group: String,
    /// Ids of the members attached here (a member of several partitions
    /// appears in each).
    pub members: Vec<u64>,
    pub inflight: u64,
    /// Fired events of the topic the group has not yet been handed.
    pub lag: u64,
    /// When the next event for the group is (or was) due; 0 if none is known.
    pub next_due_ts: i64,
    pub dead_letters: u64,
}

impl Partition {
    fn control(&self, c: Control) -> Result<(), PartitionError> {
        self.control.send(c).map_err(|_| {
            PartitionError::Unavailable(format!("partition {} is shutting down", self.id))
        })
    }

    /// Proposes `cmd` through the owner (ordered with its term's proposals);
    /// what applying it reported.
    pub(crate) async fn propose(
        &self,
        cmd: Command,
    ) -> Result<crate::types::Applied, PartitionError> {
        self.ask(|reply| Control::Propose { cmd, reply }).await
    }

    async fn ask<T, C: Into<Control>>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, PartitionError>>) -> C,
    ) -> Result<T, PartitionError> {
        let (reply, rx) = oneshot::channel();
        self.control(make(reply).into())?;
        rx.await.map_err(|_| self.stopped_error())?
    }

    /// Makes `member` a member of `group` on `topic` in this partition,
    /// creating the group at `start` if it does not exist here yet.
    pub async fn attach(
        &self,
        topic: String,
        group: String,
        start: Start,
        member: Arc<Member>,
    ) -> Result<(), PartitionError> {
        self.ask(|reply| GroupControl::Attach {
            topic,
            group,
            start,
            member,
            reply,
        })
        .await
    }

    /// The member's stream ended: what it held is redelivered to others.
    pub fn detach(&self, member: u64) {
        let _ = self.control(GroupControl::Detach { member }.into());
    }

    /// Acks and nacks deliveries of `group`; answered once recorded durably.
    /// `wait`: the caller waits for the answer, so what the partition has
    /// gathered is recorded at once rather than after the linger.
    pub async fn settle(
        &self,
        group: String,
        items: Vec<SettleItem>,
        wait: bool,
    ) -> Result<Vec<SettleResult>, PartitionError> {
        self.ask(|reply| GroupControl::Settle {
            group,
            items,
            wait,
            reply,
        })
        .await
    }

    /// Moves `group`'s position so that events due at or after `ts` are
    /// delivered (again, if they were before).
    pub async fn seek(&self, topic: String, group: String, ts: i64) -> Result<(), PartitionError> {
        self.ask(|reply| GroupControl::Seek {
            topic,
            group,
            ts,
            reply,
        })
        .await
    }

    /// Removes `group` from this partition with its in-flight events and
    /// dead letters: what went with it, or None if it was not here.
    /// Refused while a member is subscribed.
    pub async fn delete_group(
        &self,
        topic: String,
        group: String,
    ) -> Result<Option<GroupDeleted>, PartitionError> {
        self.ask(|reply| GroupControl::Delete {
            topic,
            group,
            reply,
        })
        .await
    }

    /// Every consumer group of this partition (of `topic` when given).
    pub async fn groups(&self, topic: Option<&str>) -> Result<Vec<GroupInfo>, PartitionError> {
        let storage = |e: &(dyn std::error::Error + 'static)| PartitionError::storage(self.id, e);
        let runtime = self.ask(|reply| GroupControl::Runtime { reply }).await?;
        let mut out = Vec::new();
        for (t, group, raw) in self.store.list_groups().map_err(|e| storage(&e))? {
            if topic.is_some_and(|want| want != t) {
                continue;
            }
            let state = GroupState::decode(raw.as_slice()).map_err(|e| storage(&e))?;
            let rt = runtime.iter().find(|r| r.topic == t && r.group == group);
            let topic_state = match self.store.get_topic(&t).map_err(|e| storage(&e))? {
                Some(raw) => TopicState::decode(raw.as_slice()).map_err(|e| storage(&e))?,
                None => TopicState::default(),
            };
            let lag = lag(&topic_state, &group, state.cursor);
            let next_due_ts = if lag > 0 {
                self.fired_due(&t, state.cursor)?
            } else {
                self.next_pending_due(&t)?
            };
            out.push(GroupInfo {
                members: rt.map_or_else(Vec::new, |r| r.members.clone()),
                inflight: rt.map_or(0, |r| r.inflight),
                lag,
                next_due_ts,
                dead_letters: state.dead_letters,
                topic: t,
                group,
            });
        }
        Ok(out)
    }

    /// Due time of the fired event at `seq` (0 if gone).
    fn fired_due(&self, topic: &str, seq: u64) -> Result<i64, PartitionError> {
        let storage = |e: &(dyn std::error::Error + 'static)| PartitionError::storage(self.id, e);
        Ok(
            match self.store.get_fired(topic, seq).map_err(|e| storage(&e))? {
                Some(raw) => {
                    FiredRecord::decode(raw.as_slice())
                        .map_err(|e| storage(&e))?
                        .due_ts
                }
                None => 0,
            },
        )
    }

    /// Due time of the topic's earliest pending event among the partition's
    /// first [`NEXT_DUE_SCAN`] pending events (0 if none is there).
    fn next_pending_due(&self, topic: &str) -> Result<i64, PartitionError> {
        let storage = |e: &(dyn std::error::Error + 'static)| PartitionError::storage(self.id, e);
        let keys = self
            .store
            .scan_pending(None, i64::MAX, NEXT_DUE_SCAN)
            .map_err(|e| storage(&e))?;
        let events = self.store.get_pendings(&keys).map_err(|e| storage(&e))?;
        for ((due, _), raw) in keys.iter().zip(events) {
            let Some(raw) = raw else { continue };
            if EventKeys::decode(raw.as_slice())
                .map_err(|e| storage(&e))?
                .topic
                == topic
            {
                return Ok(*due);
            }
        }
        Ok(0)
    }

    /// Up to `limit` dead letters of `group`, oldest first, with their fire
    /// sequence numbers.
    pub fn dead_letters(
        &self,
        topic: &str,
        group: &str,
        limit: usize,
    ) -> Result<Vec<(u64, DeadLetter)>, PartitionError> {
        let storage = |e: &(dyn std::error::Error + 'static)| PartitionError::storage(self.id, e);
        let rows = self
            .store
            .scan_dlq(topic, group, 0, limit)
            .map_err(|e| storage(&e))?;
        let mut out = Vec::with_capacity(rows.len());
        for (seq, raw) in rows {
            let dead = DeadLetterRecord::decode(raw.as_slice()).map_err(|e| storage(&e))?;
            let fired = FiredRecord::decode(dead.fired.as_ref()).map_err(|e| storage(&e))?;
            let event = EventRecord::decode(fired.event.as_ref()).map_err(|e| storage(&e))?;
            out.push((
                seq,
                DeadLetter {
                    event: Some(event_of(event)),
                    partition: self.id,
                    offset: fired.offset,
                    attempts: dead.attempts,
                    reason: dead.reason,
                    dead_ts: dead.dead_ts,
                },
            ));
        }
        Ok(out)
    }

    /// Puts `group`'s dead letters (those with these message ids, or all)
    /// back into the topic, due now, for this group only. Returns how many.
    pub async fn redrive(
        &self,
        topic: &str,
        group: &str,
        message_ids: &[String],
    ) -> Result<u64, PartitionError> {
        let wanted: HashSet<&str> = message_ids.iter().map(String::as_str).collect();
        let mut seqs = Vec::new();
        let mut from = 0;
        loop {
            let storage =
                |e: &(dyn std::error::Error + 'static)| PartitionError::storage(self.id, e);
            let rows = self
                .store
                .scan_dlq(topic, group, from, REDRIVE_CHUNK)
                .map_err(|e| storage(&e))?;
            let Some(&(last, _)) = rows.last() else { break };
            for (seq, raw) in &rows {
                if !wanted.is_empty() {
                    let dead = DeadLetterRecord::decode(raw.as_slice()).map_err(|e| storage(&e))?;
                    let fired =
                        FiredRecord::decode(dead.fired.as_ref()).map_err(|e| storage(&e))?;
                    let keys = EventKeys::decode(fired.event.as_ref()).map_err(|e| storage(&e))?;
                    if !wanted.contains(keys.message_id.as_str()) {
                        continue;
                    }
                }
                seqs.push(*seq);
            }
            from = last + 1;
        }
        let mut redriven = 0;
        for chunk in seqs.chunks(REDRIVE_CHUNK) {
            let cmd = Command::redrive(RedriveCommand {
                topic: topic.to_string(),
                group: group.to_string(),
                seqs: chunk.to_vec(),
                now_ts: wall_ms(),
                // Numbered by the owner's term when it proposes it.
                first_seq: None,
            });
            redriven += self.propose(cmd).await?.redriven;
        }
        Ok(redriven)
    }

    /// True when `group` exists on `topic` in this partition (as applied).
    pub fn has_group(&self, topic: &str, group: &str) -> Result<bool, PartitionError> {
        self.store
            .get_group(topic, group)
            .map(|g| g.is_some())
            .map_err(|e| PartitionError::storage(self.id, &e))
    }
}

/// How many of `topic`'s fired events from `cursor` on are for `group`:
/// all of them but the copies that redrives made for other groups and the
/// numbers a redrive left unused (theirs is no group's name).
pub(crate) fn lag(topic: &TopicState, group: &str, cursor: u64) -> u64 {
    let next = topic.next_fire_seq;
    let others: u64 = (topic.redriven.iter())
        .filter(|r| r.group != group)
        .map(|r| r.end_seq.min(next).saturating_sub(r.first_seq.max(cursor)))
        .sum();
    next.saturating_sub(cursor).saturating_sub(others)
}

#[cfg(test)]
mod tests {
    use chronos_proto::internal::{RedrivenRange, TopicState};

    use super::lag;

    #[test]
    fn lag_leaves_out_other_groups_redriven_copies_from_the_cursor_on() {
        let range = |first_seq, end_seq, group: &str| RedrivenRange {
            first_seq,
            end_seq,
            group: group.into(),
        };
        let topic = TopicState {
            next_fire_seq: 20,
            redriven: vec![range(5, 8, "a"), range(10, 12, "b"), range(15, 25, "a")],
            ..TopicState::default()
        };
        // For "b": 20 - 0 minus a's 3 and a's 5 below 20.
        assert_eq!(lag(&topic, "b", 0), 12);
        // From 6: a's 6..8 and 15..20.
        assert_eq!(lag(&topic, "b", 6), 14 - 2 - 5);
        // For "a": b's 10..12 only.
        assert_eq!(lag(&topic, "a", 0), 18);
        assert_eq!(lag(&topic, "a", 11), 9 - 1);
        // Past everything, or past the end: nothing.
        assert_eq!(lag(&topic, "c", 20), 0);
        assert_eq!(lag(&topic, "c", 30), 0);
    }
}
