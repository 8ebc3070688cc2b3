//! On-disk format: a file header, then records, little-endian.
//!
//! Version 2 (written now): header `[magic][version u32][nonce u64]`, records
//! `[len u32][crc32c u32][kind u8][partition u32][index u64][stamp u64][body]`.
//! A file's **stamp** is its nonce XOR its sequence number, and every record
//! carries it: files are reused (`spare.rs`), so past the last record of the
//! current use lie whole records of an earlier one, whose stamp differs. A
//! record whose CRC holds but whose stamp does not is where the file's
//! records end, as a zero length field is. A file that is rolled ends in a
//! `Seal` record, so recovery can tell a file that was finished from one whose
//! tail a crash lost.
//!
//! Version 1 (read only, from older builds): header `[magic][version u32]`,
//! records without the stamp; files were never reused, and zeros ended them.
//!
//! `len` counts the bytes after the crc field; the CRC covers exactly those
//! bytes, so a torn tail fails the check.

/// File header: magic then format version (then, from version 2, the nonce).
pub(crate) const MAGIC: [u8; 4] = *b"CRLG";
pub(crate) const VERSION: u32 = 2;
const VERSION_1: u32 = 1;
/// Header size of the version written now.
pub(crate) const FILE_HEADER_BYTES: u64 = 16;
const FILE_HEADER_BYTES_V1: usize = 8;

/// How a file's records are laid out, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// No stamp; never reused.
    V1,
    /// Every record carries `stamp`.
    V2 { stamp: u64 },
}

/// `len` + `crc` fields.
const FRAME_BYTES: usize = 8;
/// kind + partition + index (+ stamp): the part of the header under the CRC.
const META_BYTES_V1: usize = 13;
const META_BYTES: usize = 21;
/// Bytes a record takes besides its body.
pub(crate) const RECORD_OVERHEAD_BYTES: usize = FRAME_BYTES + META_BYTES;
/// Largest body a record may carry (keeps `len` far from u32 overflow and
/// bounds what recovery believes when a length field is garbage).
pub(crate) const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A Raft entry appended at `index`; body = payload.
    Entry = 1,
    /// A gc copy of a live entry; replay inserts or replaces at `index`.
    Rewrite = 2,
    /// Drop entries >= `index`; empty body.
    Truncate = 3,
    /// Drop entries <= `index`; body = caller's meta blob.
    Purge = 4,
    /// The partition's vote; body = opaque vote bytes.
    Vote = 5,
    /// Drop every entry and the purge point (the vote stays); empty body.
    Forget = 6,
    /// The file's last record, written when it is rolled; empty body.
    Seal = 7,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Entry,
            2 => Kind::Rewrite,
            3 => Kind::Truncate,
            4 => Kind::Purge,
            5 => Kind::Vote,
            6 => Kind::Forget,
            7 => Kind::Seal,
            _ => return None,
        })
    }
}

/// A decoded record borrowing its body from the read buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    pub(crate) kind: Kind,
    pub(crate) partition: u32,
    pub(crate) index: u64,
    pub(crate) body: &'a [u8],
}

/// Result of decoding at one position.
#[derive(Debug)]
pub(crate) enum Decoded<'a> {
    /// A good record and its total size in bytes.
    Record(Record<'a>, usize),
    /// No bytes left: a clean end.
    End,
    /// A torn or corrupt record.
    Bad(&'static str),
}

/// The header of a file whose records carry `nonce ^ seq`.
pub(crate) fn file_header(nonce: u64) -> [u8; FILE_HEADER_BYTES as usize] {
    let mut h = [0u8; FILE_HEADER_BYTES as usize];
    h[..4].copy_from_slice(&MAGIC);
    h[4..8].copy_from_slice(&VERSION.to_le_bytes());
    h[8..].copy_from_slice(&nonce.to_le_bytes());
    h
}

pub(crate) fn stamp(nonce: u64, seq: u64) -> u64 {
    nonce ^ seq
}

/// The format of file `seq` and where its records start; `None` when the
/// header is missing or unknown. The stamp comes from the file's name, not
/// only its header: a reused file whose new header a crash lost still holds
/// its earlier use's header and records, and none of them then match.
pub(crate) fn read_header(seq: u64, data: &[u8]) -> Option<(Format, usize)> {
    if data.len() < FILE_HEADER_BYTES_V1 || data[..4] != MAGIC {
        return None;
    }
    match le_u32(&data[4..]) {
        VERSION_1 => Some((Format::V1, FILE_HEADER_BYTES_V1)),
        VERSION if data.len() >= FILE_HEADER_BYTES as usize => {
            let nonce = le_u64(&data[8..]);
            Some((
                Format::V2 {
                    stamp: stamp(nonce, seq),
                },
                FILE_HEADER_BYTES as usize,
            ))
        }
        _ => None,
    }
}

/// Total size of a record with a body of `body_len` bytes.
pub(crate) fn record_bytes(body_len: usize) -> u64 {
    (RECORD_OVERHEAD_BYTES + body_len) as u64
}

/// Appends one record to `buf`; returns its offset in `buf` and total size.
/// The caller checked `body.len() <= MAX_BODY_BYTES`.
pub(crate) fn encode(
    buf: &mut Vec<u8>,
    stamp: u64,
    kind: Kind,
    partition: u32,
    index: u64,
    body: &[u8],
) -> (u64, u32) {
    assert!(body.len() <= MAX_BODY_BYTES, "record body over the limit");
    let start = buf.len();
    let len = (META_BYTES + body.len()) as u32;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&[0u8; 4]);
    buf.push(kind as u8);
    buf.extend_from_slice(&partition.to_le_bytes());
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(&stamp.to_le_bytes());
    buf.extend_from_slice(body);
    let crc = crc32c::crc32c(&buf[start + FRAME_BYTES..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    (start as u64, (FRAME_BYTES + len as usize) as u32)
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Decodes the record at the start of `data` in a file of `format`.
pub(crate) fn decode(data: &[u8], format: Format) -> Decoded<'_> {
    // No record starts with a zero length: zeros are space filled ahead of
    // the writer (`prealloc.rs`), however few bytes of it are left.
    if data.iter().take(4).all(|&b| b == 0) {
        return Decoded::End;
    }
    if data.len() < FRAME_BYTES {
        return Decoded::Bad("short frame");
    }
    let meta = match format {
        Format::V1 => META_BYTES_V1,
        Format::V2 { .. } => META_BYTES,
    };
    let len = le_u32(data) as usize;
    if !(meta..=meta + MAX_BODY_BYTES).contains(&len) {
        return Decoded::Bad("bad length");
    }
    if data.len() < FRAME_BYTES + len {
        return Decoded::Bad("short record");
    }
    let covered = &data[FRAME_BYTES..FRAME_BYTES + len];
    if crc32c::crc32c(covered) != le_u32(&data[4..]) {
        return Decoded::Bad("crc mismatch");
    }
    if let Format::V2 { stamp } = format {
        if le_u64(&covered[13..]) != stamp {
            // A whole record of the file's earlier use.
            return Decoded::End;
        }
    }
    let Some(kind) = Kind::from_u8(covered[0]) else {
        return Decoded::Bad("unknown record kind");
    };
    let record = Record {
        kind,
        partition: le_u32(&covered[1..]),
        index: le_u64(&covered[5..]),
        body: &covered[meta..],
    };
    Decoded::Record(record, FRAME_BYTES + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: Format = Format::V2 { stamp: 0xfeed };

    #[test]
    fn round_trip_and_every_cut_is_bad() {
        let mut buf = Vec::new();
        let (off, len) = encode(&mut buf, 0xfeed, Kind::Purge, 7, 42, b"meta");
        assert_eq!((off, len as usize), (0, buf.len()));
        assert_eq!(record_bytes(4), buf.len() as u64);
        match decode(&buf, V2) {
            Decoded::Record(r, n) => {
                assert_eq!(
                    (r.kind, r.partition, r.index, r.body),
                    (Kind::Purge, 7, 42, &b"meta"[..])
                );
                assert_eq!(n, buf.len());
            }
            other => panic!("expected a record, got {other:?}"),
        }
        for cut in 1..buf.len() {
            assert!(
                matches!(decode(&buf[..cut], V2), Decoded::Bad(_)),
                "cut {cut}"
            );
        }
        let mut flipped = buf.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(decode(&flipped, V2), Decoded::Bad("crc mismatch")));
        for zeros in 1..32 {
            assert!(
                matches!(decode(&vec![0u8; zeros], V2), Decoded::End),
                "{zeros}"
            );
        }
        let mut zero_len = buf.clone();
        zero_len[..4].fill(0);
        assert!(matches!(decode(&zero_len, V2), Decoded::End));
    }

    #[test]
    fn a_record_of_an_earlier_use_ends_the_file() {
        let mut buf = Vec::new();
        encode(&mut buf, stamp(5, 3), Kind::Entry, 1, 9, b"old use");
        assert!(matches!(
            decode(&buf, Format::V2 { stamp: stamp(5, 3) }),
            Decoded::Record(..)
        ));
        // The same file reused as file 8: the header's nonce changed, or a
        // crash lost the new header and only the name changed.
        for now in [stamp(6, 8), stamp(5, 8)] {
            assert!(matches!(
                decode(&buf, Format::V2 { stamp: now }),
                Decoded::End
            ));
        }
    }

    #[test]
    fn headers_name_their_format() {
        let h = file_header(0xabc);
        assert_eq!(
            read_header(4, &h),
            Some((Format::V2 { stamp: 0xabc ^ 4 }, 16))
        );
        let mut v1 = MAGIC.to_vec();
        v1.extend_from_slice(&1u32.to_le_bytes());
        assert_eq!(read_header(4, &v1), Some((Format::V1, 8)));
        assert_eq!(read_header(4, &h[..12]), None, "a torn version 2 header");
        let mut v9 = h;
        v9[4] = 9;
        assert_eq!(read_header(4, &v9), None);
        assert_eq!(read_header(4, &[0u8; 16]), None);
    }

    #[test]
    fn version_1_records_read_without_a_stamp() {
        // [len][crc][kind][partition][index][body], as older builds wrote.
        let mut covered = vec![Kind::Entry as u8];
        covered.extend_from_slice(&3u32.to_le_bytes());
        covered.extend_from_slice(&11u64.to_le_bytes());
        covered.extend_from_slice(b"v1 body");
        let mut buf = (covered.len() as u32).to_le_bytes().to_vec();
        buf.extend_from_slice(&crc32c::crc32c(&covered).to_le_bytes());
        buf.extend_from_slice(&covered);
        match decode(&buf, Format::V1) {
            Decoded::Record(r, n) => {
                assert_eq!((r.partition, r.index, r.body), (3, 11, &b"v1 body"[..]));
                assert_eq!(n, buf.len());
            }
            other => panic!("expected a record, got {other:?}"),
        }
    }
}
