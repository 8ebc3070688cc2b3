//! The `schedules` column family: recurring schedules and two indexes.
//!
//! - `s schedule_id` → the schedule's state record (opaque here);
//! - `p schedule_id` → its spec, apart from the state: every occurrence
//!   rewrites the state, and the spec (with its payload) would multiply
//!   those writes and their compactions. A state written before specs were
//!   kept apart holds the spec itself and has no `p` key;
//! - `n next_ts BE schedule_id` → nothing: the active schedules by their next
//!   occurrence, which the leader scans for what comes due;
//! - `t topic 0x00 schedule_id` → nothing: the schedules of a topic, for listing.

use crate::{Batch, Result, Store, StoreError, CF_SCHEDULES};

const RECORD: u8 = b's';
const SPEC: u8 = b'p';
const NEXT: u8 = b'n';
const TOPIC: u8 = b't';

/// A schedule as stored: its state record and its spec (`None`: a state
/// written before specs were kept apart, which holds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchedule {
    pub state: Vec<u8>,
    pub spec: Option<Vec<u8>>,
}

fn prefixed(prefix: u8, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(prefix);
    k.extend_from_slice(id.as_bytes());
    k
}

fn record_key(id: &str) -> Vec<u8> {
    prefixed(RECORD, id)
}

fn spec_key(id: &str) -> Vec<u8> {
    prefixed(SPEC, id)
}

fn next_key(next_ts: i64, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + id.len());
    k.push(NEXT);
    // Occurrence times are positive: big-endian bytes sort numerically.
    k.extend_from_slice(&next_ts.max(0).to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

fn topic_key(topic: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + topic.len() + id.len());
    k.push(TOPIC);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

fn text(raw: &[u8]) -> Result<String> {
    String::from_utf8(raw.to_vec()).map_err(|_| StoreError::Corrupt {
        what: "schedules",
        detail: "schedule id is not UTF-8".into(),
    })
}

impl Store {
    pub fn get_schedule(&self, id: &str) -> Result<Option<StoredSchedule>> {
        let Some(state) = self.get_schedule_state(id)? else {
            return Ok(None);
        };
        Ok(Some(self.with_spec(id, state)?))
    }

    fn with_spec(&self, id: &str, state: Vec<u8>) -> Result<StoredSchedule> {
        let spec = self.db.get_cf(self.cf(CF_SCHEDULES), spec_key(id))?;
        Ok(StoredSchedule { state, spec })
    }

    /// The state record alone (what moving a schedule on needs).
    pub fn get_schedule_state(&self, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_SCHEDULES), record_key(id))?)
    }

    /// `get_schedule` of many, in one batched read per kind of key (point
    /// lookups one at a time each search every level on their own).
    pub fn get_schedules(&self, ids: &[&str]) -> Result<Vec<Option<StoredSchedule>>> {
        let states = self.get_schedule_states(ids)?;
        let specs = self.multi_get(ids.iter().map(|id| spec_key(id)))?;
        Ok(states
            .into_iter()
            .zip(specs)
            .map(|(state, spec)| state.map(|state| StoredSchedule { state, spec }))
            .collect())
    }

    /// `get_schedule_state` of many, in one batched read.
    pub fn get_schedule_states(&self, ids: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        self.multi_get(ids.iter().map(|id| record_key(id)))
    }

    fn multi_get(&self, keys: impl Iterator<Item = Vec<u8>>) -> Result<Vec<Option<Vec<u8>>>> {
        let keys: Vec<Vec<u8>> = keys.collect();
        self.db
            .batched_multi_get_cf(self.cf(CF_SCHEDULES), keys.iter(), false)
            .into_iter()
            .map(|r| Ok(r?.map(|v| v.to_vec())))
            .collect()
    }

    /// Active schedules whose next occurrence is in `from_ts..=until_ts`,
    /// earliest first, at most `limit`: (next_ts, schedule_id). The caller
    /// knows nothing is below `from_ts`: a scan from there does not walk the
    /// deleted keys of occurrences already taken (a queue's tombstones).
    pub fn scan_schedules_due(
        &self,
        from_ts: i64,
        until_ts: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_SCHEDULES));
        it.seek(next_key(from_ts, ""));
        let mut out = Vec::new();
        while let Some(k) = it.key() {
            if out.len() >= limit || k.first() != Some(&NEXT) || k.len() < 9 {
                break;
            }
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&k[1..9]);
            let next_ts = i64::from_be_bytes(ts);
            if next_ts > until_ts {
                break;
            }
            out.push((next_ts, text(&k[9..])?));
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// The earliest next occurrence at or after `from_ts` of any active schedule.
    pub fn first_schedule_due(&self, from_ts: i64) -> Result<Option<i64>> {
        Ok(self
            .scan_schedules_due(from_ts, i64::MAX, 1)?
            .first()
            .map(|(ts, _)| *ts))
    }

    /// Schedule records in id order after `after` (exclusive; empty: from the
    /// start), only `topic`'s when it is not empty, at most `limit`.
    pub fn list_schedules(
        &self,
        topic: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, StoredSchedule)>> {
        let mut out = Vec::new();
        if topic.is_empty() {
            let mut states = Vec::new();
            let mut it = self.db.raw_iterator_cf(self.cf(CF_SCHEDULES));
            let mut from = record_key(after);
            if !after.is_empty() {
                from.push(0);
            }
            it.seek(&from);
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                if states.len() >= limit || k.first() != Some(&RECORD) {
                    break;
                }
                states.push((text(&k[1..])?, v.to_vec()));
                it.next();
            }
            it.status()?;
            return states
                .into_iter()
                .map(|(id, state)| {
                    let stored = self.with_spec(&id, state)?;
                    Ok((id, stored))
                })
                .collect();
        }
        let prefix = topic_key(topic, "");
        let mut from = topic_key(topic, after);
        if !after.is_empty() {
            from.push(0);
        }
        let mut it = self.db.raw_iterator_cf(self.cf(CF_SCHEDULES));
        it.seek(&from);
        let mut ids = Vec::new();
        while let Some(k) = it.key() {
            if ids.len() >= limit || !k.starts_with(&prefix) {
                break;
            }
            ids.push(text(&k[prefix.len()..])?);
            it.next();
        }
        it.status()?;
        for id in ids {
            if let Some(raw) = self.get_schedule(&id)? {
                out.push((id, raw));
            }
        }
        Ok(out)
    }
}

impl Batch<'_> {
    /// Stores a schedule's state and, when given, its spec. `was` is the
    /// (topic, next_ts) it had (None: new), `now` what it has (next_ts 0:
    /// not active, out of the due index).
    pub fn put_schedule(
        &mut self,
        id: &str,
        was: Option<(&str, i64)>,
        now: (&str, i64),
        state: &[u8],
        spec: Option<&[u8]>,
    ) {
        let cf = self.store.cf(CF_SCHEDULES);
        if let Some((topic, next_ts)) = was {
            if next_ts > 0 && next_ts != now.1 {
                self.batch.delete_cf(cf, next_key(next_ts, id));
            }
            if topic != now.0 {
                self.batch.delete_cf(cf, topic_key(topic, id));
            }
        }
        if now.1 > 0 {
            self.batch.put_cf(cf, next_key(now.1, id), []);
        }
        self.batch.put_cf(cf, topic_key(now.0, id), []);
        self.put_state(id, state, spec);
    }

    fn put_state(&mut self, id: &str, state: &[u8], spec: Option<&[u8]>) {
        let cf = self.store.cf(CF_SCHEDULES);
        self.batch.put_cf(cf, record_key(id), state);
        if let Some(spec) = spec {
            self.batch.put_cf(cf, spec_key(id), spec);
        }
    }

    /// Moves a schedule on from `from_ts` to `next_ts` (0: it ended) with
    /// its new state; its topic and spec stay (`spec`: one to move out of a
    /// state written before specs were kept apart).
    pub fn advance_schedule(
        &mut self,
        id: &str,
        from_ts: i64,
        next_ts: i64,
        state: &[u8],
        spec: Option<&[u8]>,
    ) {
        let cf = self.store.cf(CF_SCHEDULES);
        if from_ts > 0 && from_ts != next_ts {
            self.batch.delete_cf(cf, next_key(from_ts, id));
        }
        if next_ts > 0 {
            self.batch.put_cf(cf, next_key(next_ts, id), []);
        }
        self.put_state(id, state, spec);
    }

    /// Removes a schedule that had `topic` and `next_ts`.
    pub fn delete_schedule(&mut self, id: &str, topic: &str, next_ts: i64) {
        let cf = self.store.cf(CF_SCHEDULES);
        if next_ts > 0 {
            self.batch.delete_cf(cf, next_key(next_ts, id));
        }
        self.batch.delete_cf(cf, topic_key(topic, id));
        self.batch.delete_cf(cf, record_key(id));
        self.batch.delete_cf(cf, spec_key(id));
    }
}
