//! Applying the commands that move events: publishes (into `pending`, or
//! straight into the fire log when already due), fires (from `pending` into
//! the fire log, recording where in `fired_at`) and cancels.

use std::collections::HashMap;
use std::io;

use bytes::Bytes;
use chronos_proto::internal::{
    CancelCommand, EventKeys, FireCommand, FiredRecord, PublishCommand, TopicState,
};
use chronos_store::{id_key, Batch, IdEntry, IdState};
use prost::Message;

use super::{sm_err, StateMachine};
use crate::types::CancelOutcome;

impl StateMachine {
    /// True when the event stored under (due_ts, offset) is still pending. An
    /// id whose entry says `Pending` but whose event left `pending` has fired:
    /// firing does not rewrite the id entry (that would cost a read and a write
    /// per fired event).
    pub(super) fn still_pending(&self, id: &IdEntry) -> Result<bool, io::Error> {
        Ok(id.state == IdState::Pending
            && self
                .store
                .get_pending(id.due_ts, id.offset)
                .map_err(sm_err)?
                .is_some())
    }

    /// Removes the still-pending event with this id, if any (a reschedule
    /// moves it); returns its offset.
    pub(super) fn unschedule(
        &mut self,
        batch: &mut Batch<'_>,
        topic: &str,
        message_id: &str,
    ) -> Result<Option<u64>, io::Error> {
        let old = self
            .store
            .get_id(topic, message_id, i64::MIN)
            .map_err(sm_err)?;
        if let Some(old) = old {
            if self.still_pending(&old)? {
                batch.delete_pending(topic, old.due_ts, old.offset);
                self.count_pending(topic, false)?;
                return Ok(Some(old.offset));
            }
        }
        Ok(None)
    }

    /// Moves each still-pending event of `f` into its topic's fire log, under
    /// the sequence number the leader gave it (entries from before leaders
    /// numbered fires get the next free one).
    pub(super) fn apply_fire(
        &mut self,
        batch: &mut Batch<'_>,
        f: &FireCommand,
        released: Option<&[Bytes]>,
    ) -> Result<u64, io::Error> {
        let read = |e: &dyn std::fmt::Display| io::Error::other(e.to_string());
        let numbered = !f.seqs.is_empty();
        assert!(
            !numbered || f.seqs.len() == f.events.len(),
            "a Fire numbers all of its events or none"
        );
        assert!(
            f.released_ts.is_empty() || f.released_ts.len() == f.events.len(),
            "a Fire times all of its releases or none"
        );
        assert!(
            released.is_none_or(|values| values.len() == f.events.len()),
            "a Fire carries a value per event or none"
        );
        // The wheel releases in due order, so the refs are (nearly) a run of
        // `pending`: one range scan reads them, where point lookups would each
        // search every level.
        type Ref = ((i64, u64), Option<u64>, i64, usize);
        let mut refs: Vec<Ref> = f
            .events
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let fire_ts = f.released_ts.get(i).copied().unwrap_or(f.fire_ts);
                ((r.due_ts, r.offset), f.seqs.get(i).copied(), fire_ts, i)
            })
            .collect();
        refs.sort_unstable();
        refs.dedup_by_key(|(key, ..)| *key);
        let keys: Vec<(i64, u64)> = refs.iter().map(|(key, ..)| *key).collect();
        let events: Vec<Option<Bytes>> = match released {
            // The proposing leader read the values on release: which are still
            // pending is all there is to read (keys only, no blob loaded).
            Some(values) => {
                let present = self.store.pending_present(&keys).map_err(|e| read(&e))?;
                let events: Vec<Option<Bytes>> = refs
                    .iter()
                    .zip(present)
                    .map(|((.., i), here)| here.then(|| values[*i].clone()))
                    .collect();
                if cfg!(debug_assertions) {
                    let stored = self.store.get_pending_run(&keys).map_err(|e| read(&e))?;
                    let stored: Vec<Option<Bytes>> =
                        stored.into_iter().map(|v| v.map(Bytes::from)).collect();
                    assert_eq!(
                        events, stored,
                        "a Fire's carried values differ from pending"
                    );
                }
                events
            }
            None => self
                .store
                .get_pending_run(&keys)
                .map_err(|e| read(&e))?
                .into_iter()
                .map(|v| v.map(Bytes::from))
                .collect(),
        };
        // Placed in the leader's numbering order, which is not the pending
        // order: one Fire gathers several releases, and a later release may
        // hold an event due earlier (it reached the wheel late).
        let mut found: Vec<(&Ref, Option<Bytes>)> = refs.iter().zip(events).collect();
        if numbered {
            found.sort_by_key(|((_, seq, ..), _)| *seq);
        }
        let mut fired = 0;
        for (&((due_ts, offset), seq, fire_ts, _), raw) in found {
            // Gone already: fired by an earlier command (a re-proposal after a
            // leader change) or cancelled. Skipping is the same on every replica.
            let Some(raw) = raw else {
                if numbered {
                    // The leader holds back what a cancel or reschedule in
                    // flight may remove, so this is not expected.
                    tracing::error!(
                        offset,
                        due_ts,
                        "a numbered fire of an event no longer pending"
                    );
                    metrics::counter!("chronos_fire_refs_skipped_total").increment(1);
                }
                continue;
            };
            assert!(fire_ts >= due_ts, "fired {} ms early", due_ts - fire_ts);
            let keys = EventKeys::decode(raw.as_ref()).map_err(|e| read(&e))?;
            let seq = self.place_fired(&keys.topic, seq)?;
            let record = FiredRecord {
                offset,
                due_ts,
                fire_ts,
                event: raw,
                only_group: String::new(),
            };
            batch.put_fired(&keys.topic, seq, &record.encode_to_vec());
            batch.put_fired_at(offset, None, seq, fire_ts.saturating_add(self.dedup_ttl_ms));
            batch.delete_pending(&keys.topic, due_ts, offset);
            self.count_pending(&keys.topic, false)?;
            fired += 1;
        }
        Ok(fired)
    }

    /// Applies cancels in order, their ids and pending events read in two
    /// batched lookups first. Distinct ids touch distinct keys, so the
    /// batch need not be committed between them; a repeated id is answered
    /// from its earlier cancel here (the store does not have it yet).
    pub(super) fn apply_cancels(
        &mut self,
        batch: &mut Batch<'_>,
        cancels: &[CancelCommand],
    ) -> Result<Vec<CancelOutcome>, io::Error> {
        let keys: Vec<Vec<u8>> = (cancels.iter())
            .map(|c| id_key(&c.topic, &c.message_id))
            .collect();
        // Expiry is not checked here: the TTL only bounds deduplication.
        let ids = self.store.get_ids(&keys, i64::MIN).map_err(sm_err)?;
        let pending_keys: Vec<(i64, u64)> = (ids.iter().flatten())
            .filter(|id| id.state == IdState::Pending)
            .map(|id| (id.due_ts, id.offset))
            .collect();
        // Point lookups (the keys are far apart; a scan would cross them all).
        let mut present = (self.store.get_pendings(&pending_keys))
            .map_err(sm_err)?
            .into_iter()
            .map(|value| value.is_some());
        let mut decided: HashMap<(&str, &str), CancelOutcome> = HashMap::new();
        let mut out = Vec::with_capacity(cancels.len());
        for (c, id) in cancels.iter().zip(ids) {
            // Taken in the same order as `pending_keys` was made.
            let pending = match &id {
                Some(id) if id.state == IdState::Pending => {
                    present.next().expect("one presence per pending id")
                }
                _ => false,
            };
            let key = (c.topic.as_str(), c.message_id.as_str());
            let outcome = match decided.get(&key) {
                Some(&CancelOutcome::Cancelled { offset, .. }) => {
                    CancelOutcome::AlreadyCancelled { offset }
                }
                Some(&earlier) => earlier,
                None => self.decide_cancel(batch, c, id, pending)?,
            };
            decided.insert(key, outcome);
            out.push(outcome);
        }
        assert!(present.next().is_none(), "every presence read was used");
        Ok(out)
    }

    /// Removes a still-pending event; reports what it found.
    pub(super) fn apply_cancel(
        &mut self,
        batch: &mut Batch<'_>,
        c: &CancelCommand,
    ) -> Result<CancelOutcome, io::Error> {
        // Expiry is not checked here: the TTL only bounds deduplication.
        let id = (self.store)
            .get_id(&c.topic, &c.message_id, i64::MIN)
            .map_err(sm_err)?;
        let pending = match &id {
            Some(id) => self.still_pending(id)?,
            None => false,
        };
        self.decide_cancel(batch, c, id, pending)
    }

    /// Decides one cancel from its id entry and whether its event is still
    /// in `pending` (an id that says pending, whose event left, fired).
    fn decide_cancel(
        &mut self,
        batch: &mut Batch<'_>,
        c: &CancelCommand,
        id: Option<IdEntry>,
        pending: bool,
    ) -> Result<CancelOutcome, io::Error> {
        let Some(mut id) = id else {
            return Ok(CancelOutcome::NotFound);
        };
        Ok(match id.state {
            IdState::Cancelled => CancelOutcome::AlreadyCancelled { offset: id.offset },
            IdState::Pending if pending => {
                batch.delete_pending(&c.topic, id.due_ts, id.offset);
                self.count_pending(&c.topic, false)?;
                id.state = IdState::Cancelled;
                batch.put_id(&c.topic, &c.message_id, &id);
                CancelOutcome::Cancelled {
                    offset: id.offset,
                    due_ts: id.due_ts,
                }
            }
            IdState::Pending | IdState::Fired => CancelOutcome::AlreadyFired { offset: id.offset },
        })
    }

    /// The state of `topic`, loaded on first use and marked for the next commit.
    pub(super) fn topic_mut(&mut self, topic: &str) -> Result<&mut TopicState, io::Error> {
        if !self.topics.contains_key(topic) {
            let stored = match self.store.get_topic(topic).map_err(sm_err)? {
                Some(raw) => TopicState::decode(raw.as_slice()).map_err(sm_err)?,
                None => TopicState::default(),
            };
            self.topics.insert(topic.to_string(), stored);
        }
        if !self.dirty_topics.contains(topic) {
            self.dirty_topics.insert(topic.to_string());
        }
        self.topics
            .get_mut(topic)
            .ok_or_else(|| io::Error::other("topic state vanished"))
    }

    /// Where the next record of `topic`'s fire log goes: at `numbered` (the
    /// leader's number, never below what is written: a fire log is only
    /// appended to), or else at the next free number.
    pub(super) fn place_fired(
        &mut self,
        topic: &str,
        numbered: Option<u64>,
    ) -> Result<u64, io::Error> {
        let state = self.topic_mut(topic)?;
        let seq = numbered.unwrap_or(state.next_fire_seq);
        assert!(
            seq >= state.next_fire_seq,
            "fire log of {topic:?}: record {seq} would overwrite (next is {})",
            state.next_fire_seq
        );
        state.next_fire_seq = seq + 1;
        Ok(seq)
    }

    /// One event of `topic` entered (+1) or left (-1) the pending store.
    pub(super) fn count_pending(&mut self, topic: &str, entered: bool) -> Result<(), io::Error> {
        let state = self.topic_mut(topic)?;
        state.pending = if entered {
            state.pending + 1
        } else {
            state.pending.saturating_sub(1)
        };
        self.pending = if entered {
            self.pending + 1
        } else {
            self.pending.saturating_sub(1)
        };
        Ok(())
    }

    /// Stores a publish: events due later go to `pending`; events already due
    /// when the leader accepted them (due_ts <= publish_ts) go straight into
    /// their topic's fire log, fired at publish_ts — no wheel round trip.
    /// Returns how many fired that way.
    pub(super) fn apply_publish(
        &mut self,
        batch: &mut Batch<'_>,
        p: &PublishCommand,
        unscheduled: &mut Vec<u64>,
    ) -> Result<u64, io::Error> {
        let mut fired = 0;
        // The leader numbers events contiguously and the stored state always
        // matches the applied index, so a command starts exactly where we are.
        debug_assert_eq!(
            p.first_offset, self.next_offset,
            "offset gap or overlap in the log"
        );
        let expiry_ms = p.dedup_expiry_ts;
        let mut fire_seqs = p.fire_seqs.iter().copied();
        // Events of this command stored as pending, by id: a later reschedule
        // of the same id in it moves that one (the store does not see it yet).
        let mut pending_here: HashMap<(String, String), (i64, u64)> = HashMap::new();
        for (i, raw) in p.events.iter().enumerate() {
            let offset = p.first_offset + i as u64;
            let event = EventKeys::decode(raw.as_ref()).map_err(sm_err)?;
            let id = p
                .has_reschedule
                .then(|| (event.topic.clone(), event.message_id.clone()));
            if event.reschedule {
                let here = id.as_ref().and_then(|id| pending_here.remove(id));
                if let Some((due_ts, old)) = here {
                    batch.delete_pending(&event.topic, due_ts, old);
                    self.count_pending(&event.topic, false)?;
                    unscheduled.push(old);
                } else if let Some(old) = self.unschedule(batch, &event.topic, &event.message_id)? {
                    unscheduled.push(old);
                }
            }
            let state = if event.due_ts <= p.publish_ts {
                let numbered = fire_seqs.next();
                assert!(
                    numbered.is_some() || p.fire_seqs.is_empty(),
                    "a publish numbers all of its events due at once or none"
                );
                let seq = self.place_fired(&event.topic, numbered)?;
                let record = FiredRecord {
                    offset,
                    due_ts: event.due_ts,
                    fire_ts: p.publish_ts,
                    event: raw.clone(),
                    only_group: String::new(),
                };
                batch.put_fired(&event.topic, seq, &record.encode_to_vec());
                let expiry = p.publish_ts.saturating_add(self.dedup_ttl_ms);
                batch.put_fired_at(offset, None, seq, expiry);
                fired += 1;
                IdState::Fired
            } else {
                batch.put_pending(&event.topic, event.due_ts, offset, raw);
                self.count_pending(&event.topic, true)?;
                if let Some(id) = id {
                    pending_here.insert(id, (event.due_ts, offset));
                }
                IdState::Pending
            };
            let entry = IdEntry {
                offset,
                due_ts: event.due_ts,
                expiry_ms,
                state,
            };
            batch.put_id(&event.topic, &event.message_id, &entry);
        }
        assert!(
            fire_seqs.next().is_none(),
            "a publish numbers only its events due at once"
        );
        self.next_offset = self.next_offset.max(p.first_offset + p.events.len() as u64);
        Ok(fired)
    }
}
