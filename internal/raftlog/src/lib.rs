//! `chronos-raftlog`: one node-wide log shared by many Raft groups
//! ("partitions"), in the shape of TiKV's raft-engine.
//!
//! **What it owns.**
//! - *Files* `{seq:016}.rlog` in one directory, rolled at `file_bytes`; only
//!   the newest (active) file is written. Records are
//!   `[len][crc32c][kind][partition][index][stamp][body]`, little-endian
//!   (`codec.rs`); the stamp tells this use of a file from earlier ones.
//! - *The in-memory index* (`memtable.rs`): per partition, the location of
//!   every held entry (payloads are read back with pread), its vote and its
//!   purge point with the caller's meta blob.
//! - *Group commit* (`flusher.rs`): appends of all partitions are written at
//!   once and ONE flusher thread fsyncs for all of them before running their
//!   `on_durable` callbacks, per [`FsyncMode`]. Votes are always fsynced.
//! - *The preparer* (`prealloc.rs`): a thread keeps the active file
//!   written with zeros and fsynced past its end, so an append's fdatasync
//!   flushes data only (a reused file needs none), and reclaims dead files
//!   after each roll.
//! - *Recovery* (`recovery.rs`): replay in file order; a torn or corrupt
//!   record cuts the log there.
//! - *GC* (`gc.rs`): takes the oldest files out once no partition has a live
//!   entry in them, after copying the live entries that pin them; a few are
//!   kept as spares and written again by later rolls (`spare.rs`), the rest
//!   deleted.
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
//!   purge point**, so taking an older file out never loses metadata; files
//!   leave the log (as spares, or deleted) only as a prefix, never the active
//!   one, and only after an fsync that followed every record making them
//!   dead and the checkpoint of the file after them.
//! - **A reused file's old records never read as current ones**: each record
//!   carries its file's stamp, and a finished file ends in a seal.
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
mod spare;
mod write;

#[cfg(test)]
mod reuse_tests;
#[cfg(test)]
mod tests;

pub use chronos_wal::FsyncMode;
pub use error::{Poison, RaftLogError};
pub use log::RaftLog;
pub use options::{
    DurableCallback, DurablePosition, GcReport, RaftLogOptions, RaftLogStats, BATCH_FLUSH_BYTES,
};
