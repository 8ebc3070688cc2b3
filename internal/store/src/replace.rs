//! Replacing a live store's contents with another copy's (installing a
//! snapshot received from the leader), and raw whole-column-family reads.
//!
//! The live [`Store`] handle is shared by many tasks, so the RocksDB instance
//! is never swapped: its contents are. Every column family is cleared with one
//! range deletion and then refilled from the source in write batches of
//! bounded size. Nothing here is atomic or durable by itself (RocksDB's WAL is
//! off): the caller makes the whole replacement redoable (it is idempotent)
//! and calls [`Store::flush`] when done.

use rocksdb::WriteBatch;

use crate::{Result, Store, ALL_CFS};

/// What a [`Store::replace_with`] copied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplaceStats {
    pub keys: u64,
    pub bytes: u64,
    pub batches: u64,
}

impl Store {
    /// Names of every column family, in a fixed order.
    pub fn column_families() -> &'static [&'static str] {
        &ALL_CFS
    }

    /// Makes every column family hold exactly what `src`'s holds: deletes all
    /// keys, then copies `src`'s in batches of at most about `max_batch_bytes`.
    /// Idempotent; not durable until [`Store::flush`].
    pub fn replace_with(&self, src: &Store, max_batch_bytes: usize) -> Result<ReplaceStats> {
        let mut stats = ReplaceStats::default();
        self.clear_all()?;
        for name in ALL_CFS {
            let dst_cf = self.cf(name);
            // A snapshot written before a column family existed lacks it.
            let Some(src_cf) = src.db.cf_handle(name) else {
                continue;
            };
            let mut it = src.db.raw_iterator_cf(src_cf);
            it.seek_to_first();
            let mut batch = WriteBatch::default();
            let mut batch_bytes = 0usize;
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                batch.put_cf(dst_cf, k, v);
                batch_bytes += k.len() + v.len();
                stats.keys += 1;
                stats.bytes += (k.len() + v.len()) as u64;
                if batch_bytes >= max_batch_bytes {
                    self.write_unlogged(std::mem::take(&mut batch))?;
                    stats.batches += 1;
                    batch_bytes = 0;
                }
                it.next();
            }
            it.status()?;
            if !batch.is_empty() {
                self.write_unlogged(batch)?;
                stats.batches += 1;
            }
        }
        Ok(stats)
    }

    /// Deletes every key of every column family (one range tombstone plus one
    /// point delete per non-empty column family).
    fn clear_all(&self) -> Result<()> {
        let mut batch = WriteBatch::default();
        for name in ALL_CFS {
            let cf = self.cf(name);
            let mut it = self.db.raw_iterator_cf(cf);
            it.seek_to_first();
            let Some(first) = it.key().map(<[u8]>::to_vec) else {
                it.status()?;
                continue;
            };
            it.seek_to_last();
            let Some(last) = it.key().map(<[u8]>::to_vec) else {
                it.status()?;
                continue;
            };
            // The range end is exclusive: the last key goes separately.
            batch.delete_range_cf(cf, &first, &last);
            batch.delete_cf(cf, &last);
        }
        self.write_unlogged(batch)
    }

    pub(crate) fn write_unlogged(&self, batch: WriteBatch) -> Result<()> {
        let mut wo = rocksdb::WriteOptions::default();
        wo.disable_wal(true);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Every (key, value) of column family `cf`, in key order. For tests and
    /// tools: it reads the whole column family into memory.
    pub fn dump_cf(&self, cf: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut it = self.db.raw_iterator_cf(self.cf(cf));
        it.seek_to_first();
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            out.push((k.to_vec(), v.to_vec()));
            it.next();
        }
        it.status()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Store, StoreResources};

    fn fill(store: &Store, tag: &[u8], n: u64) {
        let mut b = store.batch();
        for i in 0..n {
            b.put_pending("t", i as i64, i, tag);
            b.put_fired("t", i, tag);
        }
        b.put_meta("applied", tag);
        b.put_topic("only-in-this-one", tag);
        b.commit().unwrap();
    }

    #[test]
    fn replace_leaves_exactly_the_source_contents() {
        let dir = tempfile::tempdir().unwrap();
        let res = StoreResources::default();
        let src = Store::open(&dir.path().join("src"), &res).unwrap();
        fill(&src, b"new", 1_000);
        let mut b = src.batch();
        b.put_topic("t", b"state");
        b.commit().unwrap();
        let dst = Store::open(&dir.path().join("dst"), &res).unwrap();
        fill(&dst, b"old", 3_000);
        let mut b = dst.batch();
        b.put_id(
            "t",
            "leftover",
            &crate::IdEntry {
                offset: 1,
                due_ts: 2,
                expiry_ms: i64::MAX,
                state: crate::IdState::Pending,
            },
        );
        b.commit().unwrap();

        let stats = dst.replace_with(&src, 4 << 10).unwrap();
        assert!(stats.batches > 1, "small batches: {stats:?}");
        for cf in Store::column_families() {
            assert_eq!(dst.dump_cf(cf).unwrap(), src.dump_cf(cf).unwrap(), "{cf}");
        }
        // Survives a flush and reopen (no WAL: only flushed data is durable).
        dst.flush().unwrap();
        drop(dst);
        let dst = Store::open(&dir.path().join("dst"), &res).unwrap();
        for cf in Store::column_families() {
            assert_eq!(dst.dump_cf(cf).unwrap(), src.dump_cf(cf).unwrap(), "{cf}");
        }
        // Idempotent, and replacing with an empty store empties it.
        dst.replace_with(&src, 1 << 20).unwrap();
        assert_eq!(dst.dump_cf("pending").unwrap().len(), 1_000);
        let empty = Store::open(&dir.path().join("empty"), &res).unwrap();
        dst.replace_with(&empty, 1 << 20).unwrap();
        for cf in Store::column_families() {
            assert!(dst.dump_cf(cf).unwrap().is_empty(), "{cf}");
        }
    }
}
