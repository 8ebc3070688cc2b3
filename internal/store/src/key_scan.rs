//! An iterator over a column family's keys that never loads values.
//!
//! `pending` keeps its event records in blob files, and RocksDB's iterator
//! reads a key's blob as soon as it stops on the key unless the read asks it
//! not to (`allow_unprepared_value`). Loading the wheel and checking which of
//! a `Fire`'s events are still pending need only the keys; with values, every
//! key cost a `pread` of its blob. The Rust binding does not expose that read
//! option, so this module drives RocksDB's C API directly: the only `unsafe`
//! in the workspace, kept to these few calls.

use std::ffi::{c_char, CStr};
use std::marker::PhantomData;

use librocksdb_sys as ffi;
use rocksdb::{AsColumnFamilyRef, AsRawPtr, ColumnFamily, DB};

use crate::{Result, StoreError};

/// Keys of one column family in order, below an upper bound.
pub(crate) struct KeyScan<'a> {
    iter: *mut ffi::rocksdb_iterator_t,
    opts: *mut ffi::rocksdb_readoptions_t,
    /// The read options point into it: it lives as long as they do.
    _upper: Box<[u8]>,
    _db: PhantomData<&'a DB>,
}

impl<'a> KeyScan<'a> {
    /// Keys of `cf` below `upper` (exclusive), from a consistent view taken now.
    pub fn new(db: &'a DB, cf: &'a ColumnFamily, upper: &[u8]) -> KeyScan<'a> {
        let upper: Box<[u8]> = upper.into();
        // SAFETY: `db` and `cf` outlive the iterator (the lifetime 'a); the
        // read options and the bound they point to live until `drop`, which
        // destroys the iterator first.
        unsafe {
            let opts = ffi::rocksdb_readoptions_create();
            ffi::rocksdb_readoptions_set_allow_unprepared_value(opts, 1);
            ffi::rocksdb_readoptions_set_iterate_upper_bound(
                opts,
                upper.as_ptr().cast::<c_char>(),
                upper.len(),
            );
            let iter = ffi::rocksdb_create_iterator_cf(db.as_raw_ptr(), opts, cf.inner());
            KeyScan {
                iter,
                opts,
                _upper: upper,
                _db: PhantomData,
            }
        }
    }

    /// Moves to the first key at or after `key`.
    pub fn seek(&mut self, key: &[u8]) {
        // SAFETY: the iterator is live; RocksDB copies what it needs of `key`.
        unsafe { ffi::rocksdb_iter_seek(self.iter, key.as_ptr().cast::<c_char>(), key.len()) }
    }

    /// Moves to the next key, if on one.
    pub fn next(&mut self) {
        if self.key().is_some() {
            // SAFETY: the iterator is live and positioned on a key.
            unsafe { ffi::rocksdb_iter_next(self.iter) }
        }
    }

    /// The key the scan is on; None at the end (or after an error: see `status`).
    pub fn key(&self) -> Option<&[u8]> {
        // SAFETY: the iterator is live; the key stays valid until the
        // iterator moves, which needs `&mut self` (so no borrow survives it).
        unsafe {
            if ffi::rocksdb_iter_valid(self.iter) == 0 {
                return None;
            }
            let mut len = 0;
            let ptr = ffi::rocksdb_iter_key(self.iter, &mut len);
            Some(std::slice::from_raw_parts(ptr.cast::<u8>(), len))
        }
    }

    /// Whether the scan stopped for an error rather than at its end.
    pub fn status(&self) -> Result<()> {
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: the iterator is live; an error string RocksDB allocates is
        // copied, then freed with RocksDB's own `free`.
        unsafe {
            ffi::rocksdb_iter_get_error(self.iter, &mut err);
            if err.is_null() {
                return Ok(());
            }
            let message = CStr::from_ptr(err).to_string_lossy().into_owned();
            ffi::rocksdb_free(err.cast());
            Err(StoreError::Scan(message))
        }
    }
}

impl Drop for KeyScan<'_> {
    fn drop(&mut self) {
        // SAFETY: both were created in `new` and are destroyed once, the
        // iterator before the options it was made with.
        unsafe {
            ffi::rocksdb_iter_destroy(self.iter);
            ffi::rocksdb_readoptions_destroy(self.opts);
        }
    }
}
