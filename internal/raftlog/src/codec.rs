//! On-disk format: a file header, then records
//! `[len u32][crc32c u32][kind u8][partition u32][index u64][body]`,
//! little-endian. `len` counts the bytes after the crc field; the CRC covers
//! exactly those bytes, so a torn tail fails the check. A zero length field
//! ends a file's records: no record has one, and files are zero-filled ahead
//! of the writer.

/// File header: magic then format version.
pub(crate) const MAGIC: [u8; 4] = *b"CRLG";
pub(crate) const VERSION: u32 = 1;
pub(crate) const FILE_HEADER_BYTES: u64 = 8;

/// `len` + `crc` fields.
const FRAME_BYTES: usize = 8;
/// kind + partition + index: the part of the header under the CRC.
const META_BYTES: usize = 13;
/// Bytes a record takes besides its body.
#[cfg(test)]
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

pub(crate) fn file_header() -> [u8; FILE_HEADER_BYTES as usize] {
    let mut h = [0u8; FILE_HEADER_BYTES as usize];
    h[..4].copy_from_slice(&MAGIC);
    h[4..].copy_from_slice(&VERSION.to_le_bytes());
    h
}

pub(crate) fn header_ok(data: &[u8]) -> bool {
    data.len() >= FILE_HEADER_BYTES as usize && data[..FILE_HEADER_BYTES as usize] == file_header()
}

/// Appends one record to `buf`; returns its offset in `buf` and total size.
/// The caller checked `body.len() <= MAX_BODY_BYTES`.
pub(crate) fn encode(
    buf: &mut Vec<u8>,
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

/// Decodes the record at the start of `data`.
pub(crate) fn decode(data: &[u8]) -> Decoded<'_> {
    // No record starts with a zero length: zeros are space filled ahead of
    // the writer (`prealloc.rs`), however few bytes of it are left.
    if data.iter().take(4).all(|&b| b == 0) {
        return Decoded::End;
    }
    if data.len() < FRAME_BYTES {
        return Decoded::Bad("short frame");
    }
    let len = le_u32(data) as usize;
    if !(META_BYTES..=META_BYTES + MAX_BODY_BYTES).contains(&len) {
        return Decoded::Bad("bad length");
    }
    if data.len() < FRAME_BYTES + len {
        return Decoded::Bad("short record");
    }
    let covered = &data[FRAME_BYTES..FRAME_BYTES + len];
    if crc32c::crc32c(covered) != le_u32(&data[4..]) {
        return Decoded::Bad("crc mismatch");
    }
    let Some(kind) = Kind::from_u8(covered[0]) else {
        return Decoded::Bad("unknown record kind");
    };
    let record = Record {
        kind,
        partition: le_u32(&covered[1..]),
        index: le_u64(&covered[5..]),
        body: &covered[META_BYTES..],
    };
    Decoded::Record(record, FRAME_BYTES + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_cut_is_bad() {
        let mut buf = Vec::new();
        let (off, len) = encode(&mut buf, Kind::Purge, 7, 42, b"meta");
        assert_eq!((off, len as usize), (0, buf.len()));
        match decode(&buf) {
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
            assert!(matches!(decode(&buf[..cut]), Decoded::Bad(_)), "cut {cut}");
        }
        let mut flipped = buf.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(decode(&flipped), Decoded::Bad("crc mismatch")));
        for zeros in 1..32 {
            assert!(matches!(decode(&vec![0u8; zeros]), Decoded::End), "{zeros}");
        }
        let mut zero_len = buf.clone();
        zero_len[..4].fill(0);
        assert!(matches!(decode(&zero_len), Decoded::End));
    }
}
