//! The end of each topic's fire log as a leader term appends to it: records
//! proposed whose entry has not applied yet.
//!
//! The term numbers every fire-log record when it proposes the entry that
//! appends it (a `Fire`, a publish's events due at once, a redrive), so it
//! can hand a fired event to consumers as soon as its `Fire` is proposed,
//! one log round trip earlier than reading it back once applied. A crash
//! before that entry is durable leaves the event pending: it fires again
//! and is delivered again (at least once), never lost and never early.
//! Applying writes each record under the number given here. That is exact
//! because only the term appends to the fire logs while it leads, and it
//! starts once no proposal of an earlier term is unanswered, from the
//! applied state.

use std::collections::BTreeMap;

use bytes::Bytes;
use chronos_proto::internal::{FiredRecord, TopicState};
use chronos_store::Store;
use prost::Message;

use crate::owner::TermError;

/// Topics whose tail is kept while nothing of them is in flight, at most
/// (so a busy topic's next number is not read back after every entry).
const KEPT_TOPICS: usize = 1024;

/// A record of the unapplied tail.
pub(crate) enum Slot {
    /// Known when proposed (a `Fire`): deliverable at once.
    Ready(FiredRecord),
    /// Known only once applied (a publish's event due at once, a redrive):
    /// readers stop here until it is.
    Awaiting,
}

/// What a fire log holds at a sequence number.
pub(crate) enum Found {
    Record(FiredRecord),
    /// Proposed; readable once applied.
    NotYet,
    /// Never written, or trimmed.
    Gone,
}

#[derive(Default)]
pub(crate) struct FireTail {
    /// Looked up for every event fired: foldhash, not SipHash.
    topics: foldhash::HashMap<String, TopicTail>,
}

struct TopicTail {
    /// The number the next record gets.
    next: u64,
    unapplied: BTreeMap<u64, Slot>,
}

impl FireTail {
    /// Numbers a record of `topic` and keeps it until [`applied`](Self::applied).
    pub fn append(&mut self, store: &Store, topic: &str, slot: Slot) -> Result<u64, TermError> {
        let t = self.topic(store, topic)?;
        let seq = t.next;
        t.next += 1;
        t.unapplied.insert(seq, slot);
        Ok(seq)
    }

    /// Numbers `n` records known only once applied; returns the first number.
    pub fn reserve(&mut self, store: &Store, topic: &str, n: u64) -> Result<u64, TermError> {
        let t = self.topic(store, topic)?;
        let first = t.next;
        for seq in first..first + n {
            t.unapplied.insert(seq, Slot::Awaiting);
        }
        t.next += n;
        Ok(first)
    }

    /// The entry holding these records applied: the store has them now
    /// (or, for a dead letter redriven twice, nothing under that number).
    pub fn applied(&mut self, topic: &str, seqs: impl IntoIterator<Item = u64>) {
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        for seq in seqs {
            t.unapplied.remove(&seq);
        }
        if !t.unapplied.is_empty() {
            return;
        }
        // A map emptied by removals keeps its node (about a KiB): a term that
        // fired into a million topics would keep a million of them.
        t.unapplied = BTreeMap::new();
        // Past a few topics, one with nothing in flight is let go altogether:
        // the applied state has its next number again (applying numbers at
        // least every record the term numbered), read back on its next use.
        if self.topics.len() > KEPT_TOPICS {
            self.topics.remove(topic);
            if self.topics.len() < self.topics.capacity() / 4 {
                self.topics.shrink_to_fit();
            }
        }
    }

    /// Up to `limit` records of `topic` from `from` on, in order: applied
    /// ones from the store, then the tail up to the first record still
    /// awaiting its entry. Numbers never written are skipped.
    pub fn read(
        &self,
        store: &Store,
        topic: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, FiredRecord)>, TermError> {
        let tail = self.topics.get(topic);
        // Nothing is numbered from there on (a reader caught up): no scan.
        if tail.is_some_and(|t| from >= t.next) {
            return Ok(Vec::new());
        }
        let first_unapplied = tail.and_then(|t| t.unapplied.keys().next().copied());
        let mut out = Vec::new();
        if first_unapplied.is_none_or(|f| from < f) {
            for (seq, raw) in store.scan_fired(topic, from, limit)? {
                // Applied, but its answer is not in yet: read from the tail.
                if first_unapplied.is_some_and(|f| seq >= f) {
                    break;
                }
                out.push((seq, decode(raw)?));
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
        let Some(t) = tail else {
            return Ok(out);
        };
        for (&seq, slot) in t.unapplied.range(from..).take(limit) {
            match slot {
                Slot::Ready(record) => out.push((seq, record.clone())),
                Slot::Awaiting => break,
            }
        }
        Ok(out)
    }

    /// How many records of `topic` are numbered from `from` on, if its tail
    /// is known (records not yet applied included).
    pub fn unread(&self, topic: &str, from: u64) -> Option<u64> {
        self.topics.get(topic).map(|t| t.next.saturating_sub(from))
    }

    /// The record of `topic` at `seq`.
    pub fn get(&self, store: &Store, topic: &str, seq: u64) -> Result<Found, TermError> {
        match self.topics.get(topic).and_then(|t| t.unapplied.get(&seq)) {
            Some(Slot::Ready(record)) => Ok(Found::Record(record.clone())),
            Some(Slot::Awaiting) => Ok(Found::NotYet),
            None => match store.get_fired(topic, seq)? {
                Some(raw) => Ok(Found::Record(decode(raw)?)),
                None => Ok(Found::Gone),
            },
        }
    }

    /// The tail of `topic`, its next number read from the applied state on
    /// first use: nothing else appends to it while this term leads.
    fn topic(&mut self, store: &Store, topic: &str) -> Result<&mut TopicTail, TermError> {
        if !self.topics.contains_key(topic) {
            let next = match store.get_topic(topic)? {
                Some(raw) => {
                    TopicState::decode(raw.as_slice())
                        .map_err(|source| TermError::Decode {
                            what: "a topic's state",
                            source,
                        })?
                        .next_fire_seq
                }
                None => 0,
            };
            self.topics.insert(
                topic.to_string(),
                TopicTail {
                    next,
                    unapplied: BTreeMap::new(),
                },
            );
        }
        Ok(self
            .topics
            .get_mut(topic)
            .expect("inserted above when missing"))
    }
}

fn decode(raw: Vec<u8>) -> Result<FiredRecord, TermError> {
    // From an owned buffer, so the event (and its payload) are slices of it
    // rather than copies.
    FiredRecord::decode(Bytes::from(raw)).map_err(|source| TermError::Decode {
        what: "a fired record",
        source,
    })
}

#[cfg(test)]
mod tests {
    use chronos_proto::internal::{FiredRecord, TopicState};
    use chronos_store::{Store, StoreResources};
    use prost::Message;

    use super::{FireTail, Found, Slot};

    fn record(offset: u64) -> Slot {
        Slot::Ready(FiredRecord {
            offset,
            ..Default::default()
        })
    }

    /// What applying does to the topic's state: the next number past the records.
    fn apply(store: &Store, topic: &str, next: u64) {
        let mut batch = store.batch();
        let state = TopicState {
            next_fire_seq: next,
            ..TopicState::default()
        };
        batch.put_topic(topic, &state.encode_to_vec());
        batch.commit().unwrap();
    }

    #[test]
    fn a_drained_topic_is_let_go_and_numbering_goes_on_from_the_applied_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreResources::new(8 << 20, 64 << 20)).unwrap();
        let mut tail = FireTail::default();
        for t in 0..3000 {
            let topic = format!("t{t}");
            assert_eq!(tail.append(&store, &topic, record(t)).unwrap(), 0);
            assert_eq!(tail.append(&store, &topic, record(t)).unwrap(), 1);
            assert!(matches!(
                tail.get(&store, &topic, 1).unwrap(),
                Found::Record(_)
            ));
            apply(&store, &topic, 2);
            tail.applied(&topic, [0]);
            assert_eq!(
                tail.topics[&topic].unapplied.len(),
                1,
                "record 1 is in flight"
            );
            tail.applied(&topic, [1]);
        }
        // Nothing in flight: a few topics kept, without their records' nodes.
        assert!(tail.topics.len() <= super::KEPT_TOPICS);
        assert!(tail.topics.capacity() <= 4 * super::KEPT_TOPICS);
        assert!(tail.topics.values().all(|t| t.unapplied.is_empty()));
        // The next record of a topic kept, or let go and read back, follows
        // the applied ones.
        assert!(tail.topics.contains_key("t7") && !tail.topics.contains_key("t2000"));
        assert_eq!(tail.append(&store, "t7", record(7)).unwrap(), 2);
        assert_eq!(tail.append(&store, "t2000", record(2000)).unwrap(), 2);
    }

    #[test]
    fn reads_come_from_the_store_then_the_tail_and_stop_at_the_next_number() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreResources::new(8 << 20, 64 << 20)).unwrap();
        let mut tail = FireTail::default();
        for offset in 0..3 {
            tail.append(&store, "t", record(100 + offset)).unwrap();
        }
        // What applying writes of record `seq` (offset 100 + seq).
        let write_fired = |seq: u64| {
            let mut batch = store.batch();
            let r = FiredRecord {
                offset: 100 + seq,
                ..Default::default()
            };
            batch.put_fired("t", seq, &r.encode_to_vec());
            batch.commit().unwrap();
        };
        // Records 0 and 1 applied (in the store), 2 still in flight.
        write_fired(0);
        write_fired(1);
        apply(&store, "t", 2);
        tail.applied("t", [0, 1]);
        let offsets = |tail: &FireTail, from| -> Vec<(u64, u64)> {
            let read = tail.read(&store, "t", from, 10).unwrap();
            read.into_iter().map(|(seq, r)| (seq, r.offset)).collect()
        };
        assert_eq!(offsets(&tail, 0), [(0, 100), (1, 101)], "the store first");
        assert_eq!(offsets(&tail, 2), [(2, 102)], "then the tail");
        assert!(
            offsets(&tail, 3).is_empty(),
            "nothing numbered past the tail"
        );
        tail.applied("t", [2]);
        write_fired(2);
        assert_eq!(offsets(&tail, 2), [(2, 102)], "applied: from the store");
        assert!(offsets(&tail, 3).is_empty());
    }
}
