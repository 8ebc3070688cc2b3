//! Consumer-group column families: `groups`, `inflight`, `dlq`, and the reads of
//! a topic's fire log that delivery needs. Values are opaque bytes here; the
//! partition crate decides what they mean.

use crate::keys::{fired_key, group_key, item_key};
use crate::{Batch, Result, Store, StoreError, CF_DLQ, CF_FIRED, CF_GROUPS, CF_INFLIGHT};

/// Where one event of one group is: its topic, group and fire sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupItemKey {
    pub topic: String,
    pub group: String,
    pub seq: u64,
}

fn corrupt(what: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: detail.into(),
    }
}

/// Splits `topic 0x00 group [0x00 seq]` keys.
fn split_names<'k>(key: &'k [u8], what: &'static str) -> Result<(String, String, &'k [u8])> {
    let text =
        |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| corrupt(what, "name is not UTF-8"));
    let first = key
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| corrupt(what, "no topic separator"))?;
    let rest = &key[first + 1..];
    let (group, tail) = match rest.iter().position(|&b| b == 0) {
        Some(second) => (&rest[..second], &rest[second + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    Ok((text(&key[..first])?, text(group)?, tail))
}

/// The key range of every event of one group: `topic 0x00 group 0x00 …`
/// up to `topic 0x00 group 0x01`.
fn group_items(topic: &str, group: &str) -> (Vec<u8>, Vec<u8>) {
    let mut from = group_key(topic, group);
    let mut to = from.clone();
    from.push(0);
    to.push(1);
    (from, to)
}

fn seq_of(tail: &[u8], what: &'static str) -> Result<u64> {
    let bytes: [u8; 8] = tail
        .try_into()
        .map_err(|_| corrupt(what, format!("sequence of {} bytes", tail.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

impl Store {
    pub fn get_group(&self, topic: &str, group: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .get_cf(self.cf(CF_GROUPS), group_key(topic, group))?)
    }

    /// Every group of this partition as (topic, group, state), in key order.
    pub fn list_groups(&self) -> Result<Vec<(String, String, Vec<u8>)>> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_GROUPS));
        it.seek_to_first();
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (topic, group, _) = split_names(k, "group key")?;
            out.push((topic, group, v.to_vec()));
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Every in-flight (or waiting) event of every group, in key order.
    pub fn scan_inflight(&self) -> Result<Vec<(GroupItemKey, Vec<u8>)>> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_INFLIGHT));
        it.seek_to_first();
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (topic, group, tail) = split_names(k, "inflight key")?;
            let seq = seq_of(tail, "inflight key")?;
            out.push((GroupItemKey { topic, group, seq }, v.to_vec()));
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// A group's dead letters from `from_seq`, at most `limit`, in fire order.
    pub fn scan_dlq(
        &self,
        topic: &str,
        group: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_DLQ));
        let start = item_key(topic, group, from_seq);
        let prefix = &start[..start.len() - 8];
        it.seek(&start);
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if out.len() >= limit || !k.starts_with(prefix) || k.len() != prefix.len() + 8 {
                break;
            }
            out.push((seq_of(&k[prefix.len()..], "dlq key")?, v.to_vec()));
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// How many events of `group` are in flight (or waiting to be redelivered).
    pub fn count_inflight(&self, topic: &str, group: &str) -> Result<u64> {
        let (from, to) = group_items(topic, group);
        let mut it = crate::key_scan::KeyScan::new(&self.db, self.cf(CF_INFLIGHT), &to);
        it.seek(&from);
        let mut n = 0;
        while it.key().is_some() {
            n += 1;
            it.next();
        }
        it.status()?;
        Ok(n)
    }

    pub fn get_inflight(&self, topic: &str, group: &str, seq: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .get_cf(self.cf(CF_INFLIGHT), item_key(topic, group, seq))?)
    }

    pub fn get_dlq(&self, topic: &str, group: &str, seq: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .get_cf(self.cf(CF_DLQ), item_key(topic, group, seq))?)
    }

    pub fn get_fired(&self, topic: &str, seq: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_FIRED), fired_key(topic, seq))?)
    }

    /// Many `get_fired` of one topic in one batched read; `seqs` ascending.
    pub fn get_fireds(&self, topic: &str, seqs: &[u64]) -> Result<Vec<Option<Vec<u8>>>> {
        let keys: Vec<Vec<u8>> = seqs.iter().map(|&s| fired_key(topic, s)).collect();
        self.db
            .batched_multi_get_cf(self.cf(CF_FIRED), keys.iter(), true)
            .into_iter()
            .map(|r| Ok(r?.map(|v| v.to_vec())))
            .collect()
    }

    /// The lowest fire sequence number still stored for `topic`.
    pub fn first_fired_seq(&self, topic: &str) -> Result<Option<u64>> {
        Ok(self.scan_fired(topic, 0, 1)?.first().map(|(seq, _)| *seq))
    }
}

impl Batch<'_> {
    pub fn put_group(&mut self, topic: &str, group: &str, state: &[u8]) {
        self.batch
            .put_cf(self.store.cf(CF_GROUPS), group_key(topic, group), state);
    }

    pub fn put_inflight(&mut self, topic: &str, group: &str, seq: u64, record: &[u8]) {
        self.batch.put_cf(
            self.store.cf(CF_INFLIGHT),
            item_key(topic, group, seq),
            record,
        );
    }

    pub fn delete_inflight(&mut self, topic: &str, group: &str, seq: u64) {
        self.batch
            .delete_cf(self.store.cf(CF_INFLIGHT), item_key(topic, group, seq));
    }

    pub fn put_dlq(&mut self, topic: &str, group: &str, seq: u64, record: &[u8]) {
        self.batch
            .put_cf(self.store.cf(CF_DLQ), item_key(topic, group, seq), record);
    }

    /// Deletes `topic`'s fire log below `below_seq`.
    pub fn trim_fired(&mut self, topic: &str, below_seq: u64) {
        self.batch.delete_range_cf(
            self.store.cf(CF_FIRED),
            fired_key(topic, 0),
            fired_key(topic, below_seq),
        );
    }

    /// Removes `group` of `topic`: its state, in-flight set and dead letters.
    pub fn delete_group(&mut self, topic: &str, group: &str) {
        let (from, to) = group_items(topic, group);
        self.batch
            .delete_cf(self.store.cf(CF_GROUPS), group_key(topic, group));
        for cf in [CF_INFLIGHT, CF_DLQ] {
            self.batch.delete_range_cf(self.store.cf(cf), &from, &to);
        }
    }

    pub fn delete_dlq(&mut self, topic: &str, group: &str, seq: u64) {
        self.batch
            .delete_cf(self.store.cf(CF_DLQ), item_key(topic, group, seq));
    }
}
