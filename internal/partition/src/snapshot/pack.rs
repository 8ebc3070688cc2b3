//! The packed form of a snapshot: one self-contained file holding every file
//! of a RocksDB checkpoint directory, which openraft streams to a follower in
//! chunks and the follower unpacks before installing.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! header   "CHRSNAP\0"  version:u32 (=1)  file_count:u32
//! file*    name_len:u16  name  data_len:u64  data  crc32c:u32
//!          (the CRC covers name_len, name, data_len and data)
//! trailer  "CHRSEND\0"  crc32c:u32 over file_count and every file's CRC
//! ```
//!
//! Names are flat (a checkpoint has no subdirectories) and limited to
//! `[A-Za-z0-9._-]`, not starting with a dot, so unpacking cannot escape the
//! target directory. Unpacking checks every CRC, the file count, the trailer
//! and that nothing follows it: a truncated, corrupt or padded pack is an
//! error, never a partial directory that looks complete.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

const MAGIC: &[u8; 8] = b"CHRSNAP\0";
const TRAILER: &[u8; 8] = b"CHRSEND\0";
const VERSION: u32 = 1;
const MAX_NAME_BYTES: usize = 255;
/// A checkpoint has a few files per level and column family; far fewer than this.
const MAX_FILES: u32 = 1 << 20;
const COPY_BUFFER_BYTES: usize = 256 << 10;

/// Why a pack could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("not a snapshot pack (bad magic)")]
    BadMagic,
    #[error("unsupported snapshot pack version {0}")]
    UnsupportedVersion(u32),
    #[error("snapshot pack is truncated")]
    Truncated,
    #[error("snapshot pack names {count} files, more than allowed")]
    TooManyFiles { count: u32 },
    #[error("snapshot pack holds an invalid file name {0:?}")]
    BadName(String),
    #[error("snapshot pack holds {0} twice")]
    DuplicateName(String),
    #[error("snapshot pack: CRC mismatch in {0}")]
    Crc(String),
    #[error("snapshot pack: bad trailer")]
    BadTrailer,
    #[error("snapshot pack: bytes after the trailer")]
    TrailingBytes,
    #[error("snapshot pack: {0}")]
    Io(#[from] io::Error),
}

/// What was packed or unpacked.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PackStats {
    pub files: u64,
    /// Bytes of file data (without framing).
    pub data_bytes: u64,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Writes every file of the directory `dir` (flat, regular files only) to
/// `out` in pack form, in name order, and fsyncs it.
pub fn pack(dir: &Path, out: &Path) -> io::Result<PackStats> {
    let mut names = Vec::new();
    for item in fs::read_dir(dir)? {
        let item = item?;
        let name = item.file_name().to_string_lossy().into_owned();
        if !item.file_type()?.is_file() || !valid_name(&name) {
            return Err(io::Error::other(format!(
                "cannot pack {}: {name:?} is not a plain file with a simple name",
                dir.display()
            )));
        }
        names.push(name);
    }
    names.sort_unstable();
    let count = u32::try_from(names.len())
        .ok()
        .filter(|&n| n <= MAX_FILES)
        .ok_or_else(|| io::Error::other("too many files to pack"))?;
    let file = File::create(out)?;
    let mut w = BufWriter::with_capacity(COPY_BUFFER_BYTES, file);
    w.write_all(MAGIC)?;
    w.write_all(&VERSION.to_le_bytes())?;
    w.write_all(&count.to_le_bytes())?;
    let mut trailer_crc = crc32c::crc32c(&count.to_le_bytes());
    let mut stats = PackStats::default();
    let mut buf = vec![0u8; COPY_BUFFER_BYTES];
    for name in &names {
        let mut src = File::open(dir.join(name))?;
        let len = src.metadata()?.len();
        let mut head = Vec::with_capacity(2 + name.len() + 8);
        head.extend_from_slice(&(name.len() as u16).to_le_bytes());
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(&len.to_le_bytes());
        w.write_all(&head)?;
        let mut crc = crc32c::crc32c(&head);
        let mut left = len;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = src.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::other(format!("{name} shrank while packing")));
            }
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            w.write_all(&buf[..n])?;
            left -= n as u64;
        }
        w.write_all(&crc.to_le_bytes())?;
        trailer_crc = crc32c::crc32c_append(trailer_crc, &crc.to_le_bytes());
        stats.files += 1;
        stats.data_bytes += len;
    }
    w.write_all(TRAILER)?;
    w.write_all(&trailer_crc.to_le_bytes())?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(stats)
}

/// Reads exactly `buf.len()` bytes; a short read is [`PackError::Truncated`].
fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<(), PackError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => PackError::Truncated,
        _ => PackError::Io(e),
    })
}

fn read_u32(r: &mut impl Read) -> Result<u32, PackError> {
    let mut b = [0u8; 4];
    read_exact(r, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Unpacks the pack read from `r` into `dir`, which must not exist; every
/// file and the directory are fsynced before this returns. On error `dir`
/// may hold a partial copy: the caller removes it.
pub fn unpack(mut r: impl Read, dir: &Path) -> Result<PackStats, PackError> {
    let mut magic = [0u8; 8];
    read_exact(&mut r, &mut magic)?;
    if &magic != MAGIC {
        return Err(PackError::BadMagic);
    }
    let version = read_u32(&mut r)?;
    if version != VERSION {
        return Err(PackError::UnsupportedVersion(version));
    }
    let count = read_u32(&mut r)?;
    if count > MAX_FILES {
        return Err(PackError::TooManyFiles { count });
    }
    fs::create_dir(dir)?;
    let mut trailer_crc = crc32c::crc32c(&count.to_le_bytes());
    let mut stats = PackStats::default();
    let mut buf = vec![0u8; COPY_BUFFER_BYTES];
    for _ in 0..count {
        let crc = unpack_file(&mut r, dir, &mut buf, &mut stats)?;
        trailer_crc = crc32c::crc32c_append(trailer_crc, &crc.to_le_bytes());
    }
    let mut trailer = [0u8; 8];
    read_exact(&mut r, &mut trailer)?;
    if &trailer != TRAILER || read_u32(&mut r)? != trailer_crc {
        return Err(PackError::BadTrailer);
    }
    if r.read(&mut [0u8; 1])? != 0 {
        return Err(PackError::TrailingBytes);
    }
    File::open(dir)?.sync_all()?;
    Ok(stats)
}

/// Unpacks one file record; returns its CRC.
fn unpack_file(
    r: &mut impl Read,
    dir: &Path,
    buf: &mut [u8],
    stats: &mut PackStats,
) -> Result<u32, PackError> {
    let mut name_len = [0u8; 2];
    read_exact(r, &mut name_len)?;
    let mut name = vec![0u8; usize::from(u16::from_le_bytes(name_len))];
    read_exact(r, &mut name)?;
    let mut len = [0u8; 8];
    read_exact(r, &mut len)?;
    let mut crc = crc32c::crc32c(&name_len);
    crc = crc32c::crc32c_append(crc, &name);
    crc = crc32c::crc32c_append(crc, &len);
    let name = String::from_utf8(name)
        .map_err(|e| PackError::BadName(String::from_utf8_lossy(e.as_bytes()).into_owned()))?;
    if !valid_name(&name) {
        return Err(PackError::BadName(name));
    }
    let path = dir.join(&name);
    let mut out = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(f) => BufWriter::with_capacity(buf.len(), f),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(PackError::DuplicateName(name))
        }
        Err(e) => return Err(e.into()),
    };
    let mut left = u64::from_le_bytes(len);
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(PackError::Truncated);
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    if read_u32(r)? != crc {
        return Err(PackError::Crc(name));
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    stats.files += 1;
    stats.data_bytes += u64::from_le_bytes(len);
    Ok(crc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) {
        fs::create_dir(dir).unwrap();
        fs::write(dir.join("CURRENT"), b"MANIFEST-000005\n").unwrap();
        fs::write(dir.join("000009.sst"), vec![7u8; 700_000]).unwrap();
        fs::write(dir.join("empty.log"), b"").unwrap();
    }

    fn same_dirs(a: &Path, b: &Path) {
        let list = |d: &Path| {
            let mut v: Vec<_> = fs::read_dir(d)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (e.file_name(), fs::read(e.path()).unwrap())
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(list(a), list(b));
    }

    #[test]
    fn round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        sample(&src);
        let packed = tmp.path().join("p.pack");
        let stats = pack(&src, &packed).unwrap();
        assert_eq!(stats.files, 3);
        let dst = tmp.path().join("dst");
        let got = unpack(File::open(&packed).unwrap(), &dst).unwrap();
        assert_eq!(got, stats);
        same_dirs(&src, &dst);
    }

    #[test]
    fn damage_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        sample(&src);
        let packed = tmp.path().join("p.pack");
        pack(&src, &packed).unwrap();
        let good = fs::read(&packed).unwrap();
        let try_unpack = |bytes: &[u8], n: usize| {
            unpack(bytes, &tmp.path().join(format!("out-{n}"))).unwrap_err()
        };
        // Truncated anywhere (header, inside a file, before the trailer).
        for (n, cut) in [5, 20, 400_000, good.len() - 3].into_iter().enumerate() {
            let err = try_unpack(&good[..cut], n);
            assert!(matches!(err, PackError::Truncated), "cut at {cut}: {err}");
        }
        // A flipped bit inside a file's data.
        let mut bad = good.clone();
        bad[300_000] ^= 1;
        assert!(matches!(try_unpack(&bad, 10), PackError::Crc(_)));
        // Bytes after the trailer; a foreign file.
        let mut padded = good.clone();
        padded.push(0);
        assert!(matches!(try_unpack(&padded, 11), PackError::TrailingBytes));
        assert!(matches!(
            try_unpack(b"{\"meta\":1}xxxxxxxx", 12),
            PackError::BadMagic
        ));
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        for bad in ["", "..", ".hidden", "a/b", "../x", "x\0"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(valid_name("OPTIONS-000007"));
        assert!(valid_name("000123.sst"));
    }
}
