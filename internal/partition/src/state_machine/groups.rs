//! Applying consumer-group commands: creating and seeking groups, recording
//! deliveries, acks, retries and dead letters, and redriving dead letters.
//!
//! Every change here comes from the leader term's dispatcher or the admin API
//! through the log, so a restart (or a new leader) finds the same group state:
//! cursors, the in-flight set with attempts and deadlines, and the DLQ.

use chronos_proto::internal::{
    group_item, DeadLetterRecord, DeliveryCommand, FiredRecord, GroupCommand, GroupState,
    InflightRecord, RedriveCommand, RedrivenRange, StartKind, TopicState,
};
use chronos_store::{Batch, Store};
use prost::Message;

use super::StateMachine;
use crate::types::GroupDeleted;
use std::io;

/// A time seek starts this much before the first event fired at the target
/// time: fire times are nearly but not strictly increasing along the fire log,
/// and events due before the target are filtered out anyway.
const SEEK_SLACK_MS: i64 = 1_000;

fn read_err(e: impl std::fmt::Display) -> io::Error {
    std::io::Error::other(e.to_string())
}

impl StateMachine {
    /// The stored state of a group, through the cache; None if it does not exist.
    fn group_state(&mut self, topic: &str, group: &str) -> Result<Option<GroupState>, io::Error> {
        let key = (topic.to_string(), group.to_string());
        if let Some(state) = self.groups.get(&key) {
            return Ok(Some(*state));
        }
        let Some(raw) = self.store.get_group(topic, group).map_err(read_err)? else {
            return Ok(None);
        };
        let state = GroupState::decode(raw.as_slice()).map_err(read_err)?;
        self.groups.insert(key, state);
        Ok(Some(state))
    }

    fn set_group(&mut self, topic: &str, group: &str, state: GroupState) {
        let key = (topic.to_string(), group.to_string());
        self.dirty_groups.insert(key.clone());
        self.groups.insert(key, state);
    }

    /// `topic`'s state as it stands, without creating or changing it.
    fn read_topic(&self, topic: &str) -> Result<TopicState, io::Error> {
        if let Some(state) = self.topics.get(topic) {
            return Ok(state.clone());
        }
        Ok(match self.store.get_topic(topic).map_err(read_err)? {
            Some(raw) => TopicState::decode(raw.as_slice()).map_err(read_err)?,
            None => TopicState::default(),
        })
    }

    /// The fire sequence number `topic`'s next fired event gets, without
    /// creating the topic.
    fn next_fire_seq(&mut self, topic: &str) -> Result<u64, io::Error> {
        Ok(self.read_topic(topic)?.next_fire_seq)
    }

    /// Creates the group (first subscribe) or, for a seek, moves it. Returns
    /// the group's (cursor, from_due_ts) afterwards. Reads the fire log, so
    /// everything before this entry must be committed.
    pub(super) fn apply_group(&mut self, g: &GroupCommand) -> Result<(u64, i64), io::Error> {
        let existing = self.group_state(&g.topic, &g.group)?;
        if let (Some(state), false) = (&existing, g.seek) {
            return Ok((state.cursor, state.from_due_ts));
        }
        let next = self.next_fire_seq(&g.topic)?;
        let (cursor, from_due_ts) = match StartKind::try_from(g.start) {
            _ if g.seek => (
                seek_seq(&self.store, &g.topic, g.start_ts, next)?,
                g.start_ts,
            ),
            Ok(StartKind::StartEarliest) => {
                let first = self.store.first_fired_seq(&g.topic).map_err(read_err)?;
                (first.unwrap_or(next), 0)
            }
            Ok(StartKind::StartTimestamp) => (
                seek_seq(&self.store, &g.topic, g.start_ts, next)?,
                g.start_ts,
            ),
            Ok(StartKind::StartLatest) | Err(_) => (next, 0),
        };
        let mut state = existing.unwrap_or(GroupState {
            created_ts: g.now_ts,
            ..GroupState::default()
        });
        state.cursor = cursor;
        state.start_seq = cursor;
        state.from_due_ts = from_due_ts;
        self.set_group(&g.topic, &g.group, state);
        Ok((cursor, from_due_ts))
    }

    /// Removes the group with its in-flight set and dead letters; None if
    /// it does not exist. Its entries still in the log ahead of this one
    /// applied already; later ones name a group that is gone and are
    /// ignored, unless a subscribe made it again.
    pub(super) fn apply_group_delete(
        &mut self,
        batch: &mut Batch<'_>,
        g: &GroupCommand,
    ) -> Result<Option<GroupDeleted>, io::Error> {
        let Some(state) = self.group_state(&g.topic, &g.group)? else {
            return Ok(None);
        };
        let in_flight = self
            .store
            .count_inflight(&g.topic, &g.group)
            .map_err(read_err)?;
        batch.delete_group(&g.topic, &g.group);
        let key = (g.topic.clone(), g.group.clone());
        self.groups.remove(&key);
        self.dirty_groups.remove(&key);
        Ok(Some(GroupDeleted {
            in_flight,
            dead_letters: state.dead_letters,
        }))
    }

    /// Records what the leader's dispatcher did. Items of a group that
    /// does not exist are ignored (the same on every replica).
    pub(super) fn apply_delivery(
        &mut self,
        batch: &mut Batch<'_>,
        d: &DeliveryCommand,
    ) -> Result<(), io::Error> {
        for delta in &d.groups {
            let Some(mut state) = self.group_state(&delta.topic, &delta.group)? else {
                continue;
            };
            state.cursor = state.cursor.max(delta.cursor);
            for item in &delta.items {
                let (topic, group, seq) = (&delta.topic, &delta.group, item.seq);
                match &item.op {
                    Some(group_item::Op::Delivered(a)) | Some(group_item::Op::Retry(a)) => {
                        let record = InflightRecord {
                            attempt: a.attempt,
                            at_ts: a.at_ts,
                            delivered: matches!(item.op, Some(group_item::Op::Delivered(_))),
                        };
                        batch.put_inflight(topic, group, seq, &record.encode_to_vec());
                    }
                    Some(group_item::Op::Acked(_)) => batch.delete_inflight(topic, group, seq),
                    Some(group_item::Op::Dead(dead)) => {
                        // A second Dead for the same event (a re-proposal) changes nothing.
                        if self
                            .store
                            .get_dlq(topic, group, seq)
                            .map_err(read_err)?
                            .is_some()
                        {
                            continue;
                        }
                        let fired = self.store.get_fired(topic, seq).map_err(read_err)?;
                        let record = DeadLetterRecord {
                            fired: fired.unwrap_or_default().into(),
                            attempts: dead.attempts,
                            reason: dead.reason.clone(),
                            dead_ts: d.now_ts,
                        };
                        batch.delete_inflight(topic, group, seq);
                        batch.put_dlq(topic, group, seq, &record.encode_to_vec());
                        state.dead_letters += 1;
                    }
                    None => {}
                }
            }
            self.set_group(&delta.topic, &delta.group, state);
        }
        Ok(())
    }

    /// Puts dead letters back at the end of their topic's fire log, due now,
    /// for this group only. Returns how many were still dead letters.
    pub(super) fn apply_redrive(
        &mut self,
        batch: &mut Batch<'_>,
        r: &RedriveCommand,
    ) -> Result<u64, io::Error> {
        if let Some(first) = r.first_seq {
            // Numbers of dead letters no longer there stay unused.
            let topic = self.topic_mut(&r.topic)?;
            assert!(
                first >= topic.next_fire_seq,
                "a redrive would overwrite the fire log of {:?}",
                r.topic
            );
        }
        // A group deleted meanwhile has no dead letters: its numbers go unused.
        let mut state = self.group_state(&r.topic, &r.group)?;
        let mut redriven = 0;
        // Who each number went to, in runs: a number whose dead letter is
        // gone meanwhile (a redrive of the same ones at once) holds nothing,
        // and no group's lag may count it.
        let mut runs: Vec<RedrivenRange> = Vec::new();
        for (i, &seq) in r.seqs.iter().enumerate() {
            let numbered = r.first_seq.map(|first| first + i as u64);
            let raw = match &state {
                Some(_) => (self.store.get_dlq(&r.topic, &r.group, seq)).map_err(read_err)?,
                None => None,
            };
            let (Some(raw), Some(state)) = (raw, state.as_mut()) else {
                if let Some(n) = numbered {
                    extend_run(&mut runs, n, NO_GROUP);
                }
                continue;
            };
            let dead = DeadLetterRecord::decode(raw.as_slice()).map_err(read_err)?;
            let old = FiredRecord::decode(dead.fired.as_ref()).map_err(read_err)?;
            let new_seq = self.place_fired(&r.topic, numbered)?;
            extend_run(&mut runs, new_seq, &r.group);
            let record = FiredRecord {
                fire_ts: r.now_ts,
                only_group: r.group.clone(),
                ..old
            };
            batch.put_fired(&r.topic, new_seq, &record.encode_to_vec());
            let expiry = r.now_ts.saturating_add(self.dedup_ttl_ms);
            batch.put_fired_at(record.offset, Some(&r.group), new_seq, expiry);
            batch.delete_dlq(&r.topic, &r.group, seq);
            state.dead_letters = state.dead_letters.saturating_sub(1);
            redriven += 1;
        }
        if let Some(first) = r.first_seq {
            let noted: u64 = runs.iter().map(|run| run.end_seq - run.first_seq).sum();
            assert_eq!(
                noted,
                r.seqs.len() as u64,
                "a redrive of {:?} must note each number it was given once",
                r.topic
            );
            let topic = self.topic_mut(&r.topic)?;
            topic.next_fire_seq = topic.next_fire_seq.max(first + r.seqs.len() as u64);
        }
        if !runs.is_empty() {
            self.topic_mut(&r.topic)?.redriven.extend(runs);
        }
        if let Some(state) = state {
            self.set_group(&r.topic, &r.group, state);
        }
        Ok(redriven)
    }

    /// Forgets the redriven ranges that the fire log's trim took away
    /// (writing the topic's state only when there are some).
    pub(super) fn trim_redriven(&mut self, topic: &str, below_seq: u64) -> Result<(), io::Error> {
        let trimmed = |r: &RedrivenRange| r.end_seq <= below_seq;
        if self.read_topic(topic)?.redriven.iter().any(trimmed) {
            self.topic_mut(topic)?.redriven.retain(|r| !trimmed(r));
        }
        Ok(())
    }

    /// Writes the groups changed since the last commit into `batch`.
    pub(super) fn write_dirty_groups(&mut self, batch: &mut Batch<'_>) {
        for key in std::mem::take(&mut self.dirty_groups) {
            if let Some(state) = self.groups.get(&key) {
                batch.put_group(&key.0, &key.1, &state.encode_to_vec());
            }
        }
    }
}

/// The first fire sequence number (below `next`) that a group starting at
/// `ts` must read from: a binary search of the fire log by fire time.
fn seek_seq(store: &Store, topic: &str, ts: i64, next: u64) -> Result<u64, io::Error> {
    let target = ts.saturating_sub(SEEK_SLACK_MS);
    let Some(mut lo) = store.first_fired_seq(topic).map_err(read_err)? else {
        return Ok(next);
    };
    let mut hi = next;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let fire_ts = match store.get_fired(topic, mid).map_err(read_err)? {
            Some(raw) => {
                FiredRecord::decode(raw.as_slice())
                    .map_err(read_err)?
                    .fire_ts
            }
            // A gap (never expected: the log is trimmed only from the front).
            None => i64::MIN,
        };
        if fire_ts < target {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// The group of a redriven range whose numbers hold nothing: every group's
/// lag leaves it out (a group's name is never empty).
const NO_GROUP: &str = "";

/// Adds `seq` to the last run when it continues it for the same group.
fn extend_run(runs: &mut Vec<RedrivenRange>, seq: u64, group: &str) {
    match runs.last_mut() {
        Some(run) if run.end_seq == seq && run.group == group => run.end_seq += 1,
        _ => runs.push(RedrivenRange {
            first_seq: seq,
            end_seq: seq + 1,
            group: group.to_string(),
        }),
    }
}
