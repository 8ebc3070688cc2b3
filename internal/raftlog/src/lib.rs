//! `chronos-raftlog`: one node-wide log shared by many Raft groups
//! ("partitions"), in the shape of TiKV's raft-engine.
//!
//! **What it owns.**
//! - *Files* `{seq:016}.rlog` in one directory, rolled at `file_bytes`; only
//!   the newest (active) file is written. Records are
//!   `[len][crc32c][kind][partition][index][body]`, little-endian (`codec.rs`).
//! - *The in-memory index* (`memtable.rs`): per partition, the location of
//!   every held entry (payloads are read back with pread), its vote and its
//!   purge point with the caller's meta blob.
//! - *Group commit* (`flusher.rs`): appends of all partitions are written at
//!   once and ONE flusher thread fsyncs for all of them before running their
//!   `on_durable` callbacks, per [`FsyncMode`]. Votes are always fsynced.
//! - *Zero-filling ahead* (`prealloc.rs`): a thread keeps the active file
//!   written with zeros and fsynced past its end, so an append's fdatasync
//!   flushes data only.
//! - *Recovery* (`recovery.rs`): replay in file order; a torn or corrupt
//!   record cuts the log there.
//! - *GC* (`gc.rs`): deletes the oldest files once no partition has a live
//!   entry in them, after copying the live entries that pin them.
//!
//! **What it does not do.** It knows nothing of Raft terms, membership or
//! snapshots: payloads, votes and purge metadata are opaque bytes. Deciding
//! what to truncate or purge is the caller's job (the partition's Raft
//! storage); this crate only records and replays it.
//!
//! **Invariants.**
//! - **A partition's entries are contiguous**, in memory and after replay
//!   (asserted).
//! - **Every file begins with a checkpoint of every partition's vote and
//!   purge point**, so deleting an older file never loses metadata; files are
//!   deleted only as a prefix, never the active one, and only after the file
//!   following them is fsynced.
//! - **`on_durable(Ok)` in `Always`/`Batch` mode means the append and
//!   everything written before it are fsynced.** After a failed write or
//!   fsync the log refuses writes until reopened.
//!
//! Unix only (positioned reads and writes).

mod codec;
mod error;
mod files;
mod flusher;
mod gc;
mod log;
mod memtable;
mod options;
mod prealloc;
mod recovery;
mod write;

#[cfg(test)]
mod tests;

pub use chronos_wal::FsyncMode;
pub use error::{Poison, RaftLogError};
pub use log::RaftLog;
pub use options::{
    DurableCallback, DurablePosition, GcReport, RaftLogOptions, RaftLogStats, BATCH_FLUSH_BYTES,
};
