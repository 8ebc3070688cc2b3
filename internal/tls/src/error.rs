//! Errors, each naming the file it is about and the role that file plays, so
//! an operator reading a startup or reload failure knows which setting to fix.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What a file is for; shown in front of its path in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// A certificate chain (leaf first) for this side of the connection.
    Certificate,
    /// The private key for that certificate.
    Key,
    /// Certificate authorities trusted to sign the other side's certificate.
    Ca,
}

impl fmt::Display for FileRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileRole::Certificate => "certificate file",
            FileRole::Key => "key file",
            FileRole::Ca => "CA file",
        })
    }
}

/// Why TLS material could not be loaded.
///
/// The underlying cause is part of the message rather than a `source()`, so
/// that logging the error once (`%err` or `{:#}`) says everything once.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{role} {}: cannot read: {cause}", path.display())]
    Read {
        role: FileRole,
        path: PathBuf,
        cause: io::Error,
    },
    #[error("{role} {}: malformed PEM: {reason}", path.display())]
    Pem {
        role: FileRole,
        path: PathBuf,
        reason: String,
    },
    #[error("{role} {}: no certificate found (expected a PEM \"BEGIN CERTIFICATE\" block)", path.display())]
    NoCertificate { role: FileRole, path: PathBuf },
    #[error("{role} {}: unusable certificate: {reason}", path.display())]
    BadCertificate {
        role: FileRole,
        path: PathBuf,
        reason: String,
    },
    #[error("{role} {}: no private key found (expected a PKCS#8, PKCS#1 or SEC1 PEM block)", path.display())]
    NoPrivateKey { role: FileRole, path: PathBuf },
    #[error("{role} {}: unusable private key: {cause}", path.display())]
    BadKey {
        role: FileRole,
        path: PathBuf,
        cause: rustls::Error,
    },
    #[error("{role} {}: key does not match the certificate in {}", key.display(), cert.display(), role = FileRole::Key)]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    /// Building the configuration failed for a reason no single file explains
    /// (for example, no protocol version in common with the provider).
    #[error("building the TLS configuration: {0}")]
    Config(rustls::Error),
}

impl TlsError {
    /// The file the error is about, for callers that map paths back to their
    /// own setting names. For a key mismatch this is the key file.
    pub fn path(&self) -> Option<&Path> {
        match self {
            TlsError::Read { path, .. }
            | TlsError::Pem { path, .. }
            | TlsError::NoCertificate { path, .. }
            | TlsError::BadCertificate { path, .. }
            | TlsError::NoPrivateKey { path, .. }
            | TlsError::BadKey { path, .. } => Some(path),
            TlsError::KeyMismatch { key, .. } => Some(key),
            TlsError::Config(_) => None,
        }
    }
}
