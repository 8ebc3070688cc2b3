//! `chronos-wal`: the segmented write-ahead log behind each partition's Raft
//! log storage.
//!
//! **What it owns.**
//! - *Segmented files*: `{first_index:020}.wal`, rolled at `segment_bytes`;
//!   only the last (active) segment is written.
//! - *Record codec*: `[len][crc32c][term][index][seq][ts_ms][payload]`,
//!   little-endian, CRC over header and payload (`codec.rs`).
//! - *Sparse index*: a checkpoint every `index_interval_bytes` with index,
//!   seq, a monotone "max ts before" bound and file position, so reads can
//!   start by index, seq or time without scanning the log; persisted as
//!   `.idx` when a segment is sealed (`index.rs`).
//! - *Group-commit fsync*: one background flusher thread fsyncs and then runs
//!   `on_durable` callbacks, per [`FsyncMode`] (`flusher.rs`).
//! - *Tail recovery*: open cuts the log to its longest valid prefix — a torn
//!   write is truncated, damaged or orphaned later segments are dropped
//!   (`recovery.rs`).
//! - *Truncation and retention*: [`Wal::truncate_from`] for Raft conflicts,
//!   [`Wal::remove_segments`] for deleting whole old segments, and
//!   [`Wal::restart_at`], which drops the whole log so it continues at a
//!   later index (the caller installed a snapshot past its end).
//!
//! **What it does not do.** It knows nothing of Raft types, membership or
//! votes, nor what a payload means: `term`, `index`, `seq` and `ts_ms` are
//! opaque numbers with the ordering rules below. Raft's purge is logical and
//! lives in the caller, which later asks for physical removal through
//! `remove_segments(.., upto_index)`. Old segments are renamed out of the
//! log and then freed a step at a time (`retire.rs`), so the disk's discard
//! of their blocks never holds up an fsync for long.
//!
//! **Invariants.** `index` is exactly previous + 1 while the log is
//! non-empty; `seq` never decreases; `ts_ms` may go backwards. A callback
//! with `Ok` in `Always`/`Batch` mode means its records (and all before
//! them) were fsynced. After any fsync failure the WAL refuses writes until
//! reopened.
//!
//! Unix only (positioned writes).

mod append;
mod codec;
mod error;
#[cfg(test)]
mod faults;
mod flusher;
mod index;
mod iter;
mod maintenance;
mod options;
mod read;
mod recovery;
pub mod retire;
mod segment;
mod stats;
mod wal;

pub use codec::{RecordHeader, MAX_RECORD_BYTES};
pub use error::{CorruptReason, WalError};
pub use iter::WalIter;
pub use options::{
    DurableCallback, FsyncMode, RecoveryReport, RemovedSegments, Retention, WalOptions,
    BATCH_FLUSH_BYTES,
};
pub use stats::WalStats;
pub use wal::Wal;
