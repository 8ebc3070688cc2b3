//! `due_counts`: how many of each topic's events are pending per second of
//! due time, so that "what comes due over the next day" is a scan of at most
//! one key per second instead of a read of every pending event.
//!
//! Key: `topic 0x00 second BE`; value: the count, i64 little-endian, kept by
//! an adding merge operator. [`Batch::put_pending`] and
//! [`Batch::delete_pending`] keep it exact: their deltas are summed per key
//! in the batch and written as one merge each when it commits. A count that
//! reaches zero is dropped by the next compaction that reads it (the filter
//! sees merge results only as input to a later compaction).

use rocksdb::compaction_filter::Decision;
use rocksdb::{MergeOperands, Options, WriteBatch};

use crate::{Result, Store, StoreError, CF_DUE_COUNTS, CF_META, CF_PENDING};

/// Meta key present once `due_counts` matches `pending` (written with the
/// last batch of a rebuild; a store from before it existed lacks it).
const META_BUILT: &str = "due_counts.v1";

pub(crate) fn key(topic: &str, due_ts: i64) -> Vec<u8> {
    let second = due_ts.div_euclid(1000).max(0) as u64;
    let mut k = Vec::with_capacity(topic.len() + 9);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&second.to_be_bytes());
    k
}

fn count_of(raw: &[u8]) -> i64 {
    raw.try_into().map(i64::from_le_bytes).unwrap_or(0)
}

fn add(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let sum = operands
        .iter()
        .fold(existing.map_or(0, count_of), |acc, op| acc + count_of(op));
    Some(sum.to_le_bytes().to_vec())
}

pub(crate) fn options(mut o: Options) -> Options {
    o.set_merge_operator_associative("chronos-add-i64", add);
    o.set_compaction_filter("chronos-drop-zero", |_level: u32, _k: &[u8], v: &[u8]| {
        if count_of(v) == 0 {
            Decision::Remove
        } else {
            Decision::Keep
        }
    });
    o
}

pub(crate) fn write(store: &Store, batch: &mut WriteBatch, deltas: Vec<(Vec<u8>, i64)>) {
    let cf = store.cf(CF_DUE_COUNTS);
    for (k, d) in deltas {
        if d != 0 {
            batch.merge_cf(cf, k, d.to_le_bytes());
        }
    }
}

impl Store {
    /// Pending events of `topic` per second of due time, for seconds in
    /// `[from_ts, to_ts)` (ms, taken to whole seconds): `(second's first ms,
    /// count)`, ascending, only non-zero counts.
    pub fn due_counts(&self, topic: &str, from_ts: i64, to_ts: i64) -> Result<Vec<(i64, u64)>> {
        let (start, end) = (key(topic, from_ts), key(topic, to_ts));
        let mut it = self.db.raw_iterator_cf(self.cf(CF_DUE_COUNTS));
        it.seek(&start);
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if k >= end.as_slice() {
                break;
            }
            let second = u64::from_be_bytes(
                k[k.len() - 8..]
                    .try_into()
                    .map_err(|_| corrupt("short key"))?,
            );
            let n = count_of(v);
            if n < 0 {
                return Err(corrupt(&format!("count {n} of topic {topic:?}")));
            }
            if n > 0 {
                out.push((second as i64 * 1000, n as u64));
            }
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Makes this store look like one written before `due_counts` existed
    /// (no counts, no marker), for tests of the rebuild on open.
    #[doc(hidden)]
    pub fn forget_due_counts(&self) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf(CF_DUE_COUNTS),
            [0u8].as_slice(),
            [0xffu8].as_slice(),
        );
        batch.delete_cf(self.cf(CF_META), META_BUILT.as_bytes());
        self.write_unlogged(batch)?;
        self.flush()
    }

    /// Whether `due_counts` was built (see [`Store::rebuild_due_counts`]).
    pub fn due_counts_built(&self) -> Result<bool> {
        Ok(self.get_meta(META_BUILT)?.is_some())
    }

    /// Recounts `due_counts` from `pending` (`topic_of` reads an event's
    /// topic). For a store written before the counts existed; idempotent, and
    /// marked done only by its last write. Returns the events counted.
    pub fn rebuild_due_counts<E: std::fmt::Display>(
        &self,
        topic_of: impl Fn(&[u8]) -> std::result::Result<String, E>,
    ) -> Result<u64> {
        let cf = self.cf(CF_DUE_COUNTS);
        let mut clear = WriteBatch::default();
        clear.delete_range_cf(cf, [0u8].as_slice(), [0xffu8].as_slice());
        self.write_unlogged(clear)?;
        let mut counts = std::collections::BTreeMap::<Vec<u8>, i64>::new();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_PENDING));
        it.seek_to_first();
        let mut events = 0;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (due_ts, _) = crate::keys::decode_pending_key(k)?;
            let topic = topic_of(v).map_err(|e| corrupt(&format!("pending event: {e}")))?;
            *counts.entry(key(&topic, due_ts)).or_default() += 1;
            events += 1;
            it.next();
        }
        it.status()?;
        let mut batch = WriteBatch::default();
        for (k, n) in counts {
            batch.put_cf(cf, k, n.to_le_bytes());
        }
        batch.put_cf(self.cf(CF_META), META_BUILT.as_bytes(), b"1");
        self.write_unlogged(batch)?;
        Ok(events)
    }
}

fn corrupt(detail: &str) -> StoreError {
    StoreError::Corrupt {
        what: "due_counts",
        detail: detail.to_string(),
    }
}
