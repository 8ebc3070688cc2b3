//! `fired_at`: where a fired event sits in its topic's fire log, by offset,
//! so that one event's delivery state per consumer group can be told without
//! scanning the fire log.
//!
//! Key: `offset BE` (offsets are unique in a partition) for the event as it
//! fired, and `offset BE ‖ group` for a copy redriven from that group's
//! dead-letter queue. Value: `fire_seq BE ‖ expiry_ms BE`; compaction drops
//! an entry after its expiry (the dedup window: without its dedup entry an
//! event cannot be looked up by id any more).

use rocksdb::compaction_filter::Decision;
use rocksdb::{Direction, IteratorMode, Options};

use crate::{now_ms, Batch, Result, Store, StoreError, CF_FIRED_AT};

const VALUE_LEN: usize = 16;

/// Where one fire of an event went: `group` is set for a redriven copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredAt {
    pub group: Option<String>,
    pub fire_seq: u64,
}

fn expiry_of(value: &[u8]) -> Option<i64> {
    let raw: [u8; 8] = value.get(8..VALUE_LEN)?.try_into().ok()?;
    Some(i64::from_be_bytes(raw))
}

pub(crate) fn options(mut o: Options) -> Options {
    o.set_compaction_filter(
        "chronos-fired-at-expiry",
        |_level: u32, _k: &[u8], v: &[u8]| match expiry_of(v) {
            Some(expiry) if expiry <= now_ms() => Decision::Remove,
            _ => Decision::Keep,
        },
    );
    o
}

fn key(offset: u64, group: Option<&str>) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + group.map_or(0, str::len));
    k.extend_from_slice(&offset.to_be_bytes());
    if let Some(group) = group {
        k.extend_from_slice(group.as_bytes());
    }
    k
}

impl Store {
    /// Every fire of the event at `offset`: the original first, then any
    /// redriven copies by group name.
    pub fn fired_at(&self, offset: u64) -> Result<Vec<FiredAt>> {
        let prefix = offset.to_be_bytes();
        let corrupt = |detail: String| StoreError::Corrupt {
            what: "fired_at",
            detail,
        };
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_FIRED_AT),
            IteratorMode::From(&prefix, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let seq: [u8; 8] = v
                .get(..8)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| corrupt(format!("value of {} bytes", v.len())))?;
            let group = match &k[8..] {
                [] => None,
                name => Some(
                    String::from_utf8(name.to_vec())
                        .map_err(|_| corrupt("group name is not UTF-8".into()))?,
                ),
            };
            out.push(FiredAt {
                group,
                fire_seq: u64::from_be_bytes(seq),
            });
        }
        Ok(out)
    }
}

impl Batch<'_> {
    /// Records that the event at `offset` went into its fire log at
    /// `fire_seq` (for `group` only: a redrive).
    pub fn put_fired_at(
        &mut self,
        offset: u64,
        group: Option<&str>,
        fire_seq: u64,
        expiry_ms: i64,
    ) {
        let mut value = [0u8; VALUE_LEN];
        value[..8].copy_from_slice(&fire_seq.to_be_bytes());
        value[8..].copy_from_slice(&expiry_ms.to_be_bytes());
        self.batch
            .put_cf(self.store.cf(CF_FIRED_AT), key(offset, group), value);
    }
}
