//! Reading what is pending, for inspection: a topic's events in due order,
//! a page at a time, and counts by due time. Reads the applied state only;
//! nothing here changes it.

use chronos_proto::internal::EventRecord;
use prost::Message;

use crate::{Partition, PartitionError};

/// A pending event's place in its partition: `(due_ts, offset)`.
pub type PendingKey = (i64, u64);

/// Events read per store call while paging.
const CHUNK: usize = 512;

/// One page of [`Partition::pending_page`].
#[derive(Debug, Default)]
pub struct PendingPage {
    pub events: Vec<(PendingKey, EventRecord)>,
    /// Where the next page starts (inclusive); `None` when the range is done.
    pub next: Option<PendingKey>,
}

impl Partition {
    /// Pending events of `topic` from `start` (inclusive) due before
    /// `to_due`, in due order: at most `limit`, after reading at most
    /// `budget` pending events of any topic (a page may end early).
    pub fn pending_page(
        &self,
        topic: &str,
        start: PendingKey,
        to_due: i64,
        limit: usize,
        budget: usize,
    ) -> Result<PendingPage, PartitionError> {
        let storage = |e: &(dyn std::error::Error + 'static)| PartitionError::storage(self.id, e);
        let mut page = PendingPage::default();
        let (mut at, mut read) = (start, 0);
        while page.events.len() < limit && read < budget {
            let want = CHUNK.min(budget - read);
            let chunk = self
                .store
                .pending_entries(at, to_due, want)
                .map_err(|e| storage(&e))?;
            let done = chunk.len() < want;
            for (key, raw) in chunk {
                read += 1;
                at = successor(key);
                let record = EventRecord::decode(raw.as_slice()).map_err(|e| storage(&e))?;
                if record.topic == topic {
                    page.events.push((key, record));
                    if page.events.len() == limit {
                        break;
                    }
                }
            }
            if done && page.events.len() < limit {
                return Ok(page);
            }
        }
        page.next = Some(at);
        Ok(page)
    }

    /// Pending events of `topic` per second of due time in `[from_ts,
    /// to_ts)` (whole seconds): `(second's first ms, count)`, non-zero only.
    pub fn due_counts(
        &self,
        topic: &str,
        from_ts: i64,
        to_ts: i64,
    ) -> Result<Vec<(i64, u64)>, PartitionError> {
        self.store
            .due_counts(topic, from_ts, to_ts)
            .map_err(|e| PartitionError::storage(self.id, &e))
    }
}

fn successor((due, offset): PendingKey) -> PendingKey {
    match offset.checked_add(1) {
        Some(o) => (due, o),
        None => (due.saturating_add(1), 0),
    }
}
