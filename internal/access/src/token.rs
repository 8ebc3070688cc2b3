//! Bearer tokens: making new ones, and the `sha256:<hex>` form the config
//! stores instead of the token itself (a leaked config file then lets nobody
//! in, and a token can be rotated by listing two hashes for a while).

use rand::RngCore;
use sha2::{Digest, Sha256};

/// The prefix of every stored token hash.
pub const HASH_PREFIX: &str = "sha256:";
/// The prefix of every token [`new_token`] makes, so a leaked one is easy to
/// recognise (in a log, by a secret scanner).
pub const TOKEN_PREFIX: &str = "chr_";

/// A SHA-256 digest of a token.
pub(crate) type Digest32 = [u8; 32];

/// The form of `token` to put in `auth.principals[].tokens`: `sha256:<64 hex>`.
pub fn hash_token(token: &str) -> String {
    format!("{HASH_PREFIX}{}", hex(&digest(token)))
}

/// A new random token: `chr_` and 64 hex digits (32 bytes from the thread's
/// CSPRNG, which the OS seeds).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex(&bytes))
}

pub(crate) fn digest(token: &str) -> Digest32 {
    Sha256::digest(token.as_bytes()).into()
}

/// Reads a stored `sha256:<64 hex>` (either case of hex digits).
pub(crate) fn parse_hash(stored: &str) -> Option<Digest32> {
    let hex = stored.strip_prefix(HASH_PREFIX)?.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_hex() {
        // sha256("test"), a well-known vector.
        assert_eq!(
            hash_token("test"),
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn hashes_round_trip_in_either_case() {
        let stored = hash_token("chr_abc");
        assert_eq!(parse_hash(&stored), Some(digest("chr_abc")));
        assert_eq!(
            parse_hash(&stored.to_uppercase().replace("SHA256:", "sha256:")),
            Some(digest("chr_abc"))
        );
        assert_eq!(parse_hash("sha256:abc"), None);
        assert_eq!(parse_hash(&stored.replace("sha256:", "sha1:")), None);
        assert_eq!(
            parse_hash(&format!("{}g", &stored[..stored.len() - 1])),
            None
        );
        assert_eq!(parse_hash("chr_abc"), None);
    }

    #[test]
    fn new_tokens_are_prefixed_and_distinct() {
        let (a, b) = (new_token(), new_token());
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        assert_ne!(a, b);
        assert!(parse_hash(&hash_token(&a)).is_some());
    }
}
