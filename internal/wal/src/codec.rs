//! Byte layout of a segment file: the 8-byte segment header, then framed records.
//!
//! ```text
//! segment header: b"CHRWAL" u16-LE version (1)
//! record:         [len u32-LE][crc u32-LE][term u64][index u64][seq u64][ts_ms u64][payload; len]
//! ```
//! `crc` is CRC32C over the 32 header bytes followed by the payload. All
//! integers are little-endian. This module knows nothing about segments as
//! files; it encodes into buffers and decodes from any `Read`.

use std::io::{self, Read};

use crate::error::CorruptReason;

/// Magic at the start of every segment file.
pub(crate) const SEGMENT_MAGIC: &[u8; 6] = b"CHRWAL";
/// The only segment format version this crate reads and writes.
pub(crate) const SEGMENT_VERSION: u16 = 1;
/// Size of the segment header; the first record starts here.
pub(crate) const SEGMENT_HEADER_BYTES: u64 = 8;
/// Size of the fixed record header covered by the CRC (term, index, seq, ts).
const RECORD_HEADER_BYTES: usize = 32;
/// Size of the length + CRC prefix.
const FRAME_PREFIX_BYTES: usize = 8;
/// Bytes a record occupies on disk besides its payload.
pub(crate) const RECORD_OVERHEAD_BYTES: u64 = (FRAME_PREFIX_BYTES + RECORD_HEADER_BYTES) as u64;
/// Largest payload accepted on append and on read; a larger length prefix on
/// disk is treated as corruption.
pub const MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;

/// The fixed, CRC-covered metadata of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RecordHeader {
    /// Raft term of the entry.
    pub term: u64,
    /// Raft log index: exactly previous + 1 while the log is non-empty.
    pub index: u64,
    /// Application sequence (offset of the record's first event); non-decreasing.
    pub seq: u64,
    /// Wall-clock append time in milliseconds; not guaranteed monotonic.
    pub ts_ms: u64,
}

impl RecordHeader {
    fn to_bytes(self) -> [u8; RECORD_HEADER_BYTES] {
        let mut out = [0u8; RECORD_HEADER_BYTES];
        out[0..8].copy_from_slice(&self.term.to_le_bytes());
        out[8..16].copy_from_slice(&self.index.to_le_bytes());
        out[16..24].copy_from_slice(&self.seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.ts_ms.to_le_bytes());
        out
    }

    fn from_bytes(bytes: &[u8; RECORD_HEADER_BYTES]) -> Self {
        RecordHeader {
            term: le_u64(&bytes[0..8]),
            index: le_u64(&bytes[8..16]),
            seq: le_u64(&bytes[16..24]),
            ts_ms: le_u64(&bytes[24..32]),
        }
    }
}

/// Reads a little-endian u64 from an 8-byte slice (callers slice exactly 8).
pub(crate) fn le_u64(bytes: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(raw)
}

/// Reads a little-endian u32 from a 4-byte slice.
pub(crate) fn le_u32(bytes: &[u8]) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(raw)
}

/// On-disk size of a record with a payload of `payload_len` bytes.
pub(crate) fn encoded_len_bytes(payload_len: usize) -> u64 {
    RECORD_OVERHEAD_BYTES + payload_len as u64
}

/// Appends the encoding of one record to `out`.
pub(crate) fn encode_record(out: &mut Vec<u8>, header: &RecordHeader, payload: &[u8]) {
    debug_assert!(
        payload.len() as u64 <= MAX_RECORD_BYTES,
        "caller validates payload size"
    );
    let header_bytes = header.to_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header_bytes), payload);
    // Lossless: payload.len() <= MAX_RECORD_BYTES < u32::MAX.
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(payload);
}

/// The 8 bytes every segment file starts with.
pub(crate) fn segment_header() -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut out = [0u8; SEGMENT_HEADER_BYTES as usize];
    out[..6].copy_from_slice(SEGMENT_MAGIC);
    out[6..].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    out
}

/// What the first 8 bytes of a segment file say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    Valid,
    /// Wrong magic: not (or no longer) a segment.
    Garbage,
    /// Our magic, a version we do not know: never silently dropped.
    UnsupportedVersion(u16),
}

pub(crate) fn check_segment_header(bytes: &[u8; SEGMENT_HEADER_BYTES as usize]) -> HeaderCheck {
    if &bytes[..6] != SEGMENT_MAGIC {
        return HeaderCheck::Garbage;
    }
    let version = u16::from_le_bytes([bytes[6], bytes[7]]);
    if version == SEGMENT_VERSION {
        HeaderCheck::Valid
    } else {
        HeaderCheck::UnsupportedVersion(version)
    }
}

/// Outcome of reading one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A valid record; its payload is in the caller's buffer.
    Record(RecordHeader),
    /// No bytes left: a clean end.
    End,
    /// The bytes at this position are not a valid record.
    Torn(CorruptReason),
}

/// Reads the record at the reader's position. `available_bytes` is how many
/// bytes may be read before the end of valid data (file length, or the end
/// a reader observed). On `Frame::Record` the payload is in `payload`.
/// Only genuine I/O failures are `Err`; anything malformed is `Frame::Torn`.
pub(crate) fn read_record<R: Read>(
    reader: &mut R,
    available_bytes: u64,
    payload: &mut Vec<u8>,
) -> io::Result<Frame> {
    if available_bytes == 0 {
        return Ok(Frame::End);
    }
    if available_bytes < RECORD_OVERHEAD_BYTES {
        return Ok(Frame::Torn(CorruptReason::ShortFrame));
    }
    let mut prefix = [0u8; RECORD_OVERHEAD_BYTES as usize];
    if !read_fully(reader, &mut prefix)? {
        return Ok(Frame::Torn(CorruptReason::ShortFrame));
    }
    let len_bytes = u64::from(le_u32(&prefix[0..4]));
    let stored_crc = le_u32(&prefix[4..8]);
    if len_bytes > MAX_RECORD_BYTES {
        return Ok(Frame::Torn(CorruptReason::LengthTooLarge { len_bytes }));
    }
    if RECORD_OVERHEAD_BYTES + len_bytes > available_bytes {
        return Ok(Frame::Torn(CorruptReason::ShortPayload));
    }
    payload.clear();
    // Lossless: len_bytes <= MAX_RECORD_BYTES.
    payload.resize(len_bytes as usize, 0);
    if !read_fully(reader, payload)? {
        return Ok(Frame::Torn(CorruptReason::ShortPayload));
    }
    let header_bytes: &[u8; RECORD_HEADER_BYTES] = prefix[FRAME_PREFIX_BYTES..]
        .try_into()
        .map_err(|_| io::Error::other("record header slice has the wrong size"))?;
    let crc = crc32c::crc32c_append(crc32c::crc32c(header_bytes), payload);
    if crc != stored_crc {
        return Ok(Frame::Torn(CorruptReason::CrcMismatch));
    }
    Ok(Frame::Record(RecordHeader::from_bytes(header_bytes)))
}

/// `read_exact` that reports a short read as `false` instead of an error
/// (a file can shrink under a reader if the log is truncated concurrently).
fn read_fully<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<bool> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(index: u64) -> RecordHeader {
        RecordHeader {
            term: 3,
            index,
            seq: index * 10,
            ts_ms: 1_700_000_000_000 + index,
        }
    }

    fn decode_all(bytes: &[u8]) -> Vec<Result<(RecordHeader, Vec<u8>), CorruptReason>> {
        let mut out = Vec::new();
        let mut cursor = io::Cursor::new(bytes);
        let mut payload = Vec::new();
        loop {
            let available = bytes.len() as u64 - cursor.position();
            match read_record(&mut cursor, available, &mut payload).unwrap() {
                Frame::Record(h) => out.push(Ok((h, payload.clone()))),
                Frame::End => return out,
                Frame::Torn(reason) => {
                    out.push(Err(reason));
                    return out;
                }
            }
        }
    }

    #[test]
    fn round_trips_records_including_empty_payload() {
        let mut buf = Vec::new();
        encode_record(&mut buf, &header(1), b"hello");
        encode_record(&mut buf, &header(2), b"");
        assert_eq!(
            buf.len() as u64,
            encoded_len_bytes(5) + encoded_len_bytes(0)
        );
        let decoded = decode_all(&buf);
        assert_eq!(
            decoded,
            vec![
                Ok((header(1), b"hello".to_vec())),
                Ok((header(2), Vec::new()))
            ]
        );
    }

    #[test]
    fn layout_is_little_endian_with_crc_over_header_and_payload() {
        let mut buf = Vec::new();
        encode_record(&mut buf, &header(7), b"xy");
        assert_eq!(&buf[0..4], &2u32.to_le_bytes());
        let crc = crc32c::crc32c(&buf[8..]);
        assert_eq!(&buf[4..8], &crc.to_le_bytes());
        assert_eq!(&buf[16..24], &7u64.to_le_bytes());
        assert_eq!(&buf[40..], b"xy");
    }

    #[test]
    fn every_truncation_is_detected_as_torn() {
        let mut buf = Vec::new();
        encode_record(&mut buf, &header(1), &[9u8; 100]);
        for cut in 1..buf.len() {
            let decoded = decode_all(&buf[..cut]);
            assert_eq!(decoded.len(), 1, "cut at {cut}");
            assert!(decoded[0].is_err(), "cut at {cut} decoded as valid");
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode_record(&mut buf, &header(1), &[0xA5u8; 64]);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut damaged = buf.clone();
                damaged[byte] ^= 1 << bit;
                let decoded = decode_all(&damaged);
                assert!(
                    decoded.first().is_some_and(|r| r.is_err()),
                    "flip at byte {byte} bit {bit} not detected"
                );
            }
        }
    }

    #[test]
    fn oversized_length_is_rejected_before_reading_payload() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&((MAX_RECORD_BYTES + 1) as u32).to_le_bytes());
        buf.extend_from_slice(&[0u8; 36]);
        assert_eq!(
            decode_all(&buf),
            vec![Err(CorruptReason::LengthTooLarge {
                len_bytes: MAX_RECORD_BYTES + 1
            })]
        );
    }

    #[test]
    fn segment_header_checks() {
        let good = segment_header();
        assert_eq!(check_segment_header(&good), HeaderCheck::Valid);
        let mut other_version = good;
        other_version[6] = 2;
        assert_eq!(
            check_segment_header(&other_version),
            HeaderCheck::UnsupportedVersion(2)
        );
        let mut garbage = good;
        garbage[0] = b'x';
        assert_eq!(check_segment_header(&garbage), HeaderCheck::Garbage);
    }
}
