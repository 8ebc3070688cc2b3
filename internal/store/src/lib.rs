//! RocksDB storage of a partition's state machine.
//!
//! Owns the on-disk layout of the applied state: the column families, their key
//! encodings, the write options (RocksDB's own WAL is **off** — the Raft log is the
//! WAL — and flushes are atomic across column families, so after a crash every
//! column family reflects the same applied index), checkpoints and flushes, and
//! replacing the live contents with a checkpoint's (`replace.rs`: installing a
//! snapshot from the leader without swapping the shared RocksDB handle).
//!
//! Does not own: what a command means (the partition crate decides what to write)
//! nor Raft. Everything written by applying one batch of log entries goes into one
//! [`Batch`] together with the applied index, so the state never runs ahead of or
//! behind the index it claims.
//!
//! Column families:
//! - `meta`: small keys (applied log id, membership, next offset).
//! - `ids`: `topic 0x00 message_id` → [`IdEntry`] (dedup, later cancel).
//! - `pending`: `due_ts BE ‖ offset BE` → encoded event: the due-ordered cold store.
//! - `fired`: `topic 0x00 fire_seq BE` → fired record: each topic's fire log.
//! - `topics`: `topic` → topic state (next fire sequence).
//! - `groups`: `topic 0x00 group` → a consumer group's state (cursor, start).
//! - `inflight`: `topic 0x00 group 0x00 fire_seq BE` → a delivery awaiting its
//!   ack, or an event waiting to be redelivered.
//! - `dlq`: same key → a dead letter (the fired record, attempts, reason).
//! - `due_counts`: `topic 0x00 second BE` → pending events due in that second
//!   (`due_counts.rs`).
//! - `fired_at`: `offset BE [‖ group]` → the event's place in its fire log
//!   (`fired_at.rs`).

mod due_counts;
mod fired_at;
mod groups;
mod key_scan;
mod keys;
mod replace;
mod schedules;

use std::ffi::CStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use key_scan::KeyScan;
use rocksdb::compaction_filter::CompactionFilter;
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};
use rocksdb::{
    checkpoint::Checkpoint, BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamily,
    ColumnFamilyDescriptor, CompactionDecision, FlushOptions, Options, WriteBatch,
    WriteBufferManager, WriteOptions, DB,
};

pub use fired_at::FiredAt;
pub use groups::GroupItemKey;
pub use keys::{fired_key, group_key, id_key, item_key, pending_key, IdEntry, IdState};
pub use replace::ReplaceStats;
pub use schedules::StoredSchedule;

const CF_META: &str = "meta";
const CF_IDS: &str = "ids";
const CF_PENDING: &str = "pending";
const CF_FIRED: &str = "fired";
const CF_TOPICS: &str = "topics";
const CF_GROUPS: &str = "groups";
const CF_INFLIGHT: &str = "inflight";
const CF_DLQ: &str = "dlq";
const CF_SCHEDULES: &str = "schedules";
const CF_DUE_COUNTS: &str = "due_counts";
const CF_FIRED_AT: &str = "fired_at";
const ALL_CFS: [&str; 11] = [
    CF_META,
    CF_IDS,
    CF_PENDING,
    CF_FIRED,
    CF_TOPICS,
    CF_GROUPS,
    CF_INFLIGHT,
    CF_DLQ,
    CF_SCHEDULES,
    CF_DUE_COUNTS,
    CF_FIRED_AT,
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(rocksdb::Error),
    /// RocksDB could not write: the disk is full.
    #[error("rocksdb: {0}")]
    DiskFull(rocksdb::Error),
    #[error("corrupt {what} record: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A key-only scan stopped on an error (RocksDB's message).
    #[error("rocksdb key scan: {0}")]
    Scan(String),
}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> StoreError {
        // RocksDB's C API reports a status as text only; its "no space"
        // I/O error is told apart here, where the error enters, once.
        let text = e.as_ref();
        if e.kind() == rocksdb::ErrorKind::IOError
            && (text.contains("No space left") || text.contains("NoSpace"))
        {
            StoreError::DiskFull(e)
        } else {
            StoreError::Rocks(e)
        }
    }
}

impl StoreError {
    /// True when the failure is the disk being full (maps to RESOURCE_EXHAUSTED).
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::DiskFull(_) => true,
            StoreError::Io(e) => e.kind() == std::io::ErrorKind::StorageFull,
            StoreError::Rocks(_) | StoreError::Corrupt { .. } | StoreError::Scan(_) => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Memory shared by every partition's RocksDB on a node, so RAM is bounded per
/// node rather than multiplied by the partition count.
#[derive(Clone)]
pub struct StoreResources {
    cache: Cache,
    write_buffers: WriteBufferManager,
}

impl StoreResources {
    /// `block_cache_bytes` of read cache and at most `write_buffer_bytes` of
    /// memtables across all partitions (a flush is forced beyond that).
    pub fn new(block_cache_bytes: usize, write_buffer_bytes: usize) -> StoreResources {
        StoreResources {
            cache: Cache::new_lru_cache(block_cache_bytes),
            write_buffers: WriteBufferManager::new_write_buffer_manager(write_buffer_bytes, false),
        }
    }
}

impl Default for StoreResources {
    fn default() -> Self {
        StoreResources::new(128 << 20, 256 << 20)
    }
}

/// Up to this many keys, `get_pending_run` looks each up instead of scanning.
const POINT_READS_UP_TO: usize = 8;
/// Per column family memtable size: big enough for batching, small enough that
/// eight partitions fit the shared write-buffer budget.
const MEMTABLE_BYTES: usize = 32 << 20;
const ARENA_BLOCK_BYTES: usize = 256 << 10;

/// The RocksDB instance of one partition. Cheap to clone; reads may run on any thread.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
}

/// Writes that become visible together when committed.
pub struct Batch<'a> {
    pub(crate) store: &'a Store,
    pub(crate) batch: WriteBatch,
    /// Changes of `due_counts`, summed per key until the commit.
    due_deltas: foldhash::HashMap<Vec<u8>, i64>,
}

impl Store {
    /// Opens (creating if missing) the state machine database at `path`.
    pub fn open(path: &Path, resources: &StoreResources) -> Result<Store> {
        let mut opts = Options::default();
        opts.set_write_buffer_manager(&resources.write_buffers);
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // RocksDB's WAL is off for every write, so memtables of different column
        // families must flush together or a crash could leave them disagreeing.
        opts.set_atomic_flush(true);
        opts.set_max_background_jobs(2);
        opts.set_bytes_per_sync(1 << 20);
        // Flushes and compactions go through the page cache on purpose: with
        // direct I/O their output is cached only in the block cache, and a
        // `Fire`'s reads of the events coming due (and dedup lookups) then
        // wait on the disk in the apply path (docs/benchmarks.md, "Direct I/O
        // taken out again").

        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&resources.cache);
        table.set_bloom_filter(10.0, false);
        // Index and filter blocks live in the block cache, cut into ~4 KiB
        // partitions under a pinned top level. Whole, the filter of a large
        // file outgrows a cache shard and is read again for every dedup
        // lookup (at a few million ids per partition that took batched
        // publish from 300 K to 90 K events/s).
        table.set_cache_index_and_filter_blocks(true);
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_pin_top_level_index_and_filter(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        let cf_options = || {
            let mut o = Options::default();
            o.set_write_buffer_size(MEMTABLE_BYTES);
            // The shared budget counts every memtable's arena blocks, and the
            // default block is an eighth of the memtable: 4 MiB for each of
            // eight column families per partition filled the budget at 8
            // partitions before any data, and at 32 turned every write into
            // a flush.
            o.set_arena_block_size(ARENA_BLOCK_BYTES);
            o.set_block_based_table_factory(&table);
            o
        };

        let mut ids = cf_options();
        ids.set_compaction_filter_factory(ExpiredIds);
        // Nearly every dedup lookup misses: a whole-key bloom filter on the
        // memtable answers those without walking the skiplist.
        ids.set_memtable_prefix_bloom_ratio(0.1);
        ids.set_memtable_whole_key_filtering(true);

        // Fresh data is rewritten soon by compaction (and pending events leave
        // when fired): compress only the levels where data settles.
        let mut pending = cf_options();
        use rocksdb::DBCompressionType::{Lz4, None as Plain};
        pending.set_compression_per_level(&[Plain, Plain, Lz4, Lz4, Lz4, Lz4, Lz4]);
        // Events wait in key (due) order while compaction merges each flush
        // into the last level: with the values in blob files it moves only
        // keys and blob references. Blobs of fired events are garbage: a blob
        // file goes when none of its events is pending any more. Compaction
        // moves the live blobs out of the oldest quarter of the files as it
        // passes over their keys, and is forced there once that quarter is
        // half garbage. (GC of the older half copied still-pending blobs one
        // read at a time and cost more than it saved.)
        pending.set_enable_blob_files(true);
        pending.set_min_blob_size(PENDING_MIN_BLOB_BYTES);
        pending.set_blob_file_size(64 << 20);
        pending.set_enable_blob_gc(true);
        pending.set_blob_gc_age_cutoff(0.25);
        pending.set_blob_gc_force_threshold(0.5);

        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_META, cf_options()),
            ColumnFamilyDescriptor::new(CF_IDS, ids),
            ColumnFamilyDescriptor::new(CF_PENDING, pending),
            ColumnFamilyDescriptor::new(CF_FIRED, cf_options()),
            ColumnFamilyDescriptor::new(CF_TOPICS, cf_options()),
            ColumnFamilyDescriptor::new(CF_GROUPS, cf_options()),
            ColumnFamilyDescriptor::new(CF_INFLIGHT, cf_options()),
            ColumnFamilyDescriptor::new(CF_DLQ, cf_options()),
            ColumnFamilyDescriptor::new(CF_SCHEDULES, cf_options()),
            ColumnFamilyDescriptor::new(CF_DUE_COUNTS, due_counts::options(cf_options())),
            ColumnFamilyDescriptor::new(CF_FIRED_AT, fired_at::options(cf_options())),
        ];
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Store { db: Arc::new(db) })
    }

    /// Opens a checkpoint (or any copy) for reading only, e.g. to read its meta.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        let opts = Options::default();
        // A checkpoint written before a column family existed lacks it.
        let present = DB::list_cf(&opts, path)?;
        // `due_counts` holds merge operands: reading it needs its operator.
        let cfs = ALL_CFS
            .iter()
            .filter(|name| present.iter().any(|p| p == *name))
            .map(|&name| match name {
                CF_DUE_COUNTS => {
                    ColumnFamilyDescriptor::new(name, due_counts::options(Options::default()))
                }
                _ => ColumnFamilyDescriptor::new(name, Options::default()),
            });
        let db = DB::open_cf_descriptors_read_only(&opts, path, cfs, false)?;
        Ok(Store { db: Arc::new(db) })
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        // The column families are created by `open`; a missing one is a bug.
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| panic!("column family {name} missing"))
    }

    pub fn batch(&self) -> Batch<'_> {
        self.batch_with_capacity(0)
    }

    /// A batch with room for `bytes` reserved up front: a batch that grows
    /// by doubling copies everything written so far at each step.
    pub fn batch_with_capacity(&self, bytes: usize) -> Batch<'_> {
        Batch {
            store: self,
            batch: WriteBatch::with_capacity_bytes(bytes),
            due_deltas: Default::default(),
        }
    }

    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_META), key.as_bytes())?)
    }

    /// Dedup lookup for (topic, message_id), ignoring entries past their expiry.
    pub fn get_id(&self, topic: &str, message_id: &str, now_ms: i64) -> Result<Option<IdEntry>> {
        let Some(raw) = self
            .db
            .get_pinned_cf(self.cf(CF_IDS), id_key(topic, message_id))?
        else {
            return Ok(None);
        };
        let entry = IdEntry::decode(&raw)?;
        Ok((entry.expiry_ms > now_ms).then_some(entry))
    }

    /// Dedup lookups for many keys (from [`id_key`]) in one batched read.
    pub fn get_ids(&self, keys: &[Vec<u8>], now_ms: i64) -> Result<Vec<Option<IdEntry>>> {
        let cf = self.cf(CF_IDS);
        let mut out = Vec::with_capacity(keys.len());
        for raw in self.db.batched_multi_get_cf(cf, keys.iter(), false) {
            let entry = match raw? {
                Some(raw) => Some(IdEntry::decode(&raw)?),
                None => None,
            };
            out.push(entry.filter(|e| e.expiry_ms > now_ms));
        }
        Ok(out)
    }

    /// Due time of the earliest pending event.
    pub fn first_pending_due(&self) -> Result<Option<i64>> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_PENDING));
        it.seek_to_first();
        match it.key() {
            Some(k) => Ok(Some(keys::decode_pending_key(k)?.0)),
            None => {
                it.status()?;
                Ok(None)
            }
        }
    }

    /// Keys `(due_ts, offset)` of pending events after `after` (exclusive; from
    /// the start when None) with due time at most `to_due`, in due order, at
    /// most `limit` of them.
    pub fn scan_pending(
        &self,
        after: Option<(i64, u64)>,
        to_due: i64,
        limit: usize,
    ) -> Result<Vec<(i64, u64)>> {
        // Bounded: with nothing pending past the window, an unbounded
        // iterator steps over every tombstone to the end of the column family.
        let upper = pending_key(to_due.saturating_add(1).max(0), 0);
        let mut it = KeyScan::new(&self.db, self.cf(CF_PENDING), &upper);
        match after {
            Some((due, offset)) => {
                it.seek(&pending_key(due, offset));
                if it.key() == Some(&pending_key(due, offset)[..]) {
                    it.next();
                }
            }
            None => it.seek(&[]),
        }
        let mut out = Vec::new();
        while let Some(k) = it.key() {
            let (due, offset) = keys::decode_pending_key(k)?;
            if due > to_due || out.len() >= limit {
                break;
            }
            out.push((due, offset));
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Which of `keys` (sorted, distinct) are pending, read from the keys
    /// alone: one scan from the first to the last, no value loaded.
    pub fn pending_present(&self, keys: &[(i64, u64)]) -> Result<Vec<bool>> {
        let (Some(&first), Some(&last)) = (keys.first(), keys.last()) else {
            return Ok(Vec::new());
        };
        let mut present = vec![false; keys.len()];
        let upper = match last.1.checked_add(1) {
            Some(offset) => pending_key(last.0, offset),
            None => pending_key(last.0.saturating_add(1), 0),
        };
        let mut it = KeyScan::new(&self.db, self.cf(CF_PENDING), &upper);
        it.seek(&pending_key(first.0, first.1));
        let mut wanted = Wanted { keys, next: 0 };
        while let Some(k) = it.key() {
            match wanted.find(keys::decode_pending_key(k)?) {
                Found::Past => break,
                Found::At(i) => present[i] = true,
                Found::No => {}
            }
            it.next();
        }
        it.status()?;
        Ok(present)
    }

    /// Pending events from key `start` (inclusive) in due order with their
    /// values, none due at or after `to_due`, at most `limit`.
    pub fn pending_entries(
        &self,
        start: (i64, u64),
        to_due: i64,
        limit: usize,
    ) -> Result<Vec<PendingEntry>> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_PENDING));
        it.seek(pending_key(start.0, start.1));
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (due, offset) = keys::decode_pending_key(k)?;
            if due >= to_due || out.len() >= limit {
                break;
            }
            out.push(((due, offset), v.to_vec()));
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    pub fn get_pending(&self, due_ts: i64, offset: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .get_cf(self.cf(CF_PENDING), pending_key(due_ts, offset))?)
    }

    /// The events under `keys` (sorted, distinct), read with one range scan
    /// from the first key to the last: cheap when they are (nearly) a run of
    /// consecutive pending events, as the wheel releases them.
    pub fn get_pending_run(&self, keys: &[(i64, u64)]) -> Result<Vec<Option<Vec<u8>>>> {
        let Some(&first) = keys.first() else {
            return Ok(Vec::new());
        };
        // A few keys: point lookups (bloom filters) cost less than building
        // and seeking an iterator over every level.
        if keys.len() <= POINT_READS_UP_TO {
            return self.get_pendings(keys);
        }
        let mut out = vec![None; keys.len()];
        let mut it = self.db.raw_iterator_cf(self.cf(CF_PENDING));
        it.seek(pending_key(first.0, first.1));
        let mut wanted = Wanted { keys, next: 0 };
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            match wanted.find(keys::decode_pending_key(k)?) {
                Found::Past => break,
                Found::At(i) => out[i] = Some(v.to_vec()),
                Found::No => {}
            }
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Many `get_pending` in one batched read; `keys` in (due, offset) order.
    pub fn get_pendings(&self, keys: &[(i64, u64)]) -> Result<Vec<Option<Vec<u8>>>> {
        let raw_keys: Vec<[u8; 16]> = keys
            .iter()
            .map(|&(due, off)| pending_key(due, off))
            .collect();
        let sorted = raw_keys.windows(2).all(|w| w[0] <= w[1]);
        self.db
            .batched_multi_get_cf(self.cf(CF_PENDING), raw_keys.iter(), sorted)
            .into_iter()
            .map(|r| Ok(r?.map(|v| v.to_vec())))
            .collect()
    }

    /// Every topic of this partition with its encoded state, in name order.
    pub fn list_topics(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_TOPICS));
        it.seek_to_first();
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            out.push((String::from_utf8_lossy(k).into_owned(), v.to_vec()));
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    pub fn get_topic(&self, topic: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_TOPICS), topic.as_bytes())?)
    }

    /// A topic's fire log from `from_seq`, at most `limit` records.
    pub fn scan_fired(
        &self,
        topic: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_FIRED));
        let prefix = fired_key(topic, 0);
        let prefix = &prefix[..prefix.len() - 8];
        it.seek(fired_key(topic, from_seq));
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(prefix) || k.len() != prefix.len() + 8 || out.len() >= limit {
                break;
            }
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&k[prefix.len()..]);
            out.push((u64::from_be_bytes(seq), v.to_vec()));
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Flushes every memtable (atomically across column families) and waits.
    /// After this returns, everything committed so far survives a crash.
    pub fn flush(&self) -> Result<()> {
        let mut fo = FlushOptions::default();
        fo.set_wait(true);
        let cfs: Vec<&ColumnFamily> = ALL_CFS.iter().map(|name| self.cf(name)).collect();
        self.db.flush_cfs_opt(&cfs, &fo)?;
        Ok(())
    }

    /// Flushes and writes a consistent, openable copy of the database to `dir`
    /// (hard links where possible). `dir` must not exist.
    pub fn checkpoint(&self, dir: &Path) -> Result<()> {
        self.flush()?;
        Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }
}

impl Batch<'_> {
    pub fn put_meta(&mut self, key: &str, value: &[u8]) {
        self.batch
            .put_cf(self.store.cf(CF_META), key.as_bytes(), value);
    }

    pub fn put_id(&mut self, topic: &str, message_id: &str, entry: &IdEntry) {
        self.batch.put_cf(
            self.store.cf(CF_IDS),
            id_key(topic, message_id),
            entry.encode(),
        );
    }

    /// Stores a pending event of `topic` (and counts it in `due_counts`).
    pub fn put_pending(&mut self, topic: &str, due_ts: i64, offset: u64, event: &[u8]) {
        self.batch.put_cf(
            self.store.cf(CF_PENDING),
            pending_key(due_ts, offset),
            event,
        );
        *self
            .due_deltas
            .entry(due_counts::key(topic, due_ts))
            .or_default() += 1;
    }

    /// Removes a pending event of `topic`; it must be there (the count
    /// drops).
    pub fn delete_pending(&mut self, topic: &str, due_ts: i64, offset: u64) {
        self.batch
            .delete_cf(self.store.cf(CF_PENDING), pending_key(due_ts, offset));
        *self
            .due_deltas
            .entry(due_counts::key(topic, due_ts))
            .or_default() -= 1;
    }

    pub fn put_fired(&mut self, topic: &str, fire_seq: u64, record: &[u8]) {
        self.batch
            .put_cf(self.store.cf(CF_FIRED), fired_key(topic, fire_seq), record);
    }

    pub fn put_topic(&mut self, topic: &str, state: &[u8]) {
        self.batch
            .put_cf(self.store.cf(CF_TOPICS), topic.as_bytes(), state);
    }

    /// Bytes written into the batch so far.
    pub fn size_in_bytes(&self) -> usize {
        self.batch.size_in_bytes()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty() && self.due_deltas.is_empty()
    }

    /// Applies the batch atomically. Not durable by itself (RocksDB's WAL is off):
    /// durability comes from the Raft log, which is replayed from the last flushed
    /// applied index after a crash.
    pub fn commit(mut self) -> Result<()> {
        let deltas = self.due_deltas.drain().collect();
        due_counts::write(self.store, &mut self.batch, deltas);
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.store.db.write_opt(self.batch, &wo)?;
        Ok(())
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A pending event's key `(due_ts, offset)` and its stored value.
pub type PendingEntry = ((i64, u64), Vec<u8>);

/// Sorted, distinct keys looked for in a scan that walks a column family in
/// key order from the first of them.
struct Wanted<'k> {
    keys: &'k [(i64, u64)],
    /// Every wanted key before this index is behind the scan.
    next: usize,
}

/// Where the scan's current key stands among the wanted ones.
enum Found {
    /// Wanted, at this index.
    At(usize),
    /// Not wanted.
    No,
    /// Beyond the last wanted key: the scan can stop.
    Past,
}

impl Wanted<'_> {
    fn find(&mut self, key: (i64, u64)) -> Found {
        // Wanted keys before `key` are gone from the column family.
        while self.next < self.keys.len() && self.keys[self.next] < key {
            self.next += 1;
        }
        match self.keys.get(self.next) {
            None => Found::Past,
            Some(&k) if k == key => {
                self.next += 1;
                Found::At(self.next - 1)
            }
            Some(_) => Found::No,
        }
    }
}

/// Values at least this long are kept in `pending`'s blob files (an event
/// record with a small payload stays inline).
const PENDING_MIN_BLOB_BYTES: u64 = 128;

/// Drops dedup entries whose TTL has passed when compaction rewrites them.
/// One filter per compaction, which reads the clock once.
struct ExpiredIds;

struct ExpiredIdsFilter {
    now_ms: i64,
}

impl CompactionFilterFactory for ExpiredIds {
    type Filter = ExpiredIdsFilter;

    fn create(&mut self, _context: CompactionFilterContext) -> ExpiredIdsFilter {
        ExpiredIdsFilter { now_ms: now_ms() }
    }

    fn name(&self) -> &CStr {
        c"dedup-expiry"
    }
}

impl CompactionFilter for ExpiredIdsFilter {
    fn filter(&mut self, _level: u32, _key: &[u8], value: &[u8]) -> CompactionDecision {
        match IdEntry::decode(value) {
            Ok(entry) if entry.expiry_ms <= self.now_ms => CompactionDecision::Remove,
            _ => CompactionDecision::Keep,
        }
    }

    fn name(&self) -> &CStr {
        c"dedup-expiry"
    }
}

#[cfg(test)]
mod tests;
