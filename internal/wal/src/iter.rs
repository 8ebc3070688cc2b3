//! [`WalIter`]: a streaming reader over a snapshot of the log's extent.
//!
//! A reader opens segment files read-only by path, lazily, one at a time, and
//! reads through a `BufReader` up to the end each segment had when the
//! iterator was created; it never loads a segment into memory and never
//! takes the writer lock. Every record's CRC is checked. Concurrent appends
//! are invisible to it; a concurrent `truncate_from` or `remove_segments`
//! over the range it reads may make it return an error (the Raft caller
//! serialises those with its own reads).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::PathBuf;

use crate::codec::{encoded_len_bytes, read_record, Frame, RecordHeader};
use crate::error::WalError;

const READ_BUFFER_BYTES: usize = 64 * 1024;

/// A byte range of one segment to read.
#[derive(Debug, Clone)]
pub(crate) struct Span {
    pub path: PathBuf,
    pub start_bytes: u64,
    pub end_bytes: u64,
}

struct Cursor {
    reader: BufReader<File>,
    path: PathBuf,
    pos_bytes: u64,
    end_bytes: u64,
}

/// Iterator over `(header, payload)` records, oldest first. Ends at the log's
/// end as of creation; yields at most one `Err`, then ends.
pub struct WalIter {
    spans: VecDeque<Span>,
    current: Option<Cursor>,
    /// Records below this index are read but not yielded.
    skip_below_index: u64,
    done: bool,
}

impl WalIter {
    pub(crate) fn new(spans: Vec<Span>, skip_below_index: u64) -> Self {
        WalIter {
            spans: spans.into(),
            current: None,
            skip_below_index,
            done: false,
        }
    }

    pub(crate) fn empty() -> Self {
        WalIter::new(Vec::new(), 0)
    }

    fn fail(&mut self, err: WalError) -> Option<Result<(RecordHeader, Vec<u8>), WalError>> {
        self.done = true;
        self.current = None;
        Some(Err(err))
    }
}

fn open_span(span: Span) -> Result<Cursor, WalError> {
    let mut file =
        File::open(&span.path).map_err(|e| WalError::io("open segment for read", &span.path, e))?;
    file.seek(SeekFrom::Start(span.start_bytes))
        .map_err(|e| WalError::io("seek segment", &span.path, e))?;
    Ok(Cursor {
        reader: BufReader::with_capacity(READ_BUFFER_BYTES, file),
        path: span.path,
        pos_bytes: span.start_bytes,
        end_bytes: span.end_bytes,
    })
}

impl Iterator for WalIter {
    type Item = Result<(RecordHeader, Vec<u8>), WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let cursor = match &mut self.current {
                Some(cursor) if cursor.pos_bytes < cursor.end_bytes => cursor,
                _ => {
                    let span = match self.spans.pop_front() {
                        Some(span) if span.start_bytes >= span.end_bytes => continue,
                        Some(span) => span,
                        None => {
                            self.done = true;
                            self.current = None;
                            return None;
                        }
                    };
                    match open_span(span) {
                        Ok(cursor) => self.current.insert(cursor),
                        Err(e) => return self.fail(e),
                    }
                }
            };
            let mut payload = Vec::new();
            let available = cursor.end_bytes - cursor.pos_bytes;
            let frame = match read_record(&mut cursor.reader, available, &mut payload) {
                Ok(frame) => frame,
                Err(e) => {
                    let err = WalError::io("read segment", cursor.path.clone(), e);
                    return self.fail(err);
                }
            };
            match frame {
                Frame::Record(header) => {
                    cursor.pos_bytes += encoded_len_bytes(payload.len());
                    if header.index >= self.skip_below_index {
                        return Some(Ok((header, payload)));
                    }
                }
                Frame::End => cursor.pos_bytes = cursor.end_bytes,
                Frame::Torn(reason) => {
                    let err = WalError::Corrupt {
                        path: cursor.path.clone(),
                        pos_bytes: cursor.pos_bytes,
                        reason,
                    };
                    return self.fail(err);
                }
            }
        }
    }
}

impl std::iter::FusedIterator for WalIter {}

impl std::fmt::Debug for WalIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalIter")
            .field("remaining_segments", &self.spans.len())
            .field("skip_below_index", &self.skip_below_index)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
