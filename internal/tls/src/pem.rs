//! Reading PEM files into the DER values rustls wants, failing with an error
//! that names the file. Everything is checked at load time so a bad file is
//! reported when the operator starts or reloads, not at the first handshake.

use std::path::Path;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};
use std::sync::Arc;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{FileRole, TlsError};

/// The whole file, or an error naming it.
pub(crate) fn read(role: FileRole, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|cause| TlsError::Read {
        role,
        path: path.to_owned(),
        cause,
    })
}

/// Every certificate in `bytes` (read from `path`), in file order; at least
/// one, each a well-formed X.509 certificate.
pub(crate) fn parse_certs(
    role: FileRole,
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            role,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            role,
            path: path.to_owned(),
        });
    }
    // rustls only parses the leaf lazily (and the rest of a chain never);
    // parsing all of them here turns a truncated or pasted-wrong block into a
    // load error instead of a handshake failure on the peer's side.
    for cert in &certs {
        X509Certificate::from_der(cert).map_err(|e| TlsError::BadCertificate {
            role,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(certs)
}

/// The first private key in `bytes` (read from `path`): PKCS#8, PKCS#1 or SEC1.
pub(crate) fn parse_key(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            role: FileRole::Key,
            path: path.to_owned(),
        },
        other => TlsError::Pem {
            role: FileRole::Key,
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })
}

/// A certificate chain and its key, read from their files and checked to
/// belong together.
pub(crate) fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read(FileRole::Certificate, cert_path)?;
    let key_pem = read(FileRole::Key, key_path)?;
    parse_certified_key((cert_path, &cert_pem), (key_path, &key_pem), provider)
}

/// As [`certified_key`], from PEM already read (path, contents).
pub(crate) fn parse_certified_key(
    (cert_path, cert_pem): (&Path, &[u8]),
    (key_path, key_pem): (&Path, &[u8]),
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = parse_certs(FileRole::Certificate, cert_path, cert_pem)?;
    let key = parse_key(key_path, key_pem)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|cause| TlsError::BadKey {
            role: FileRole::Key,
            path: key_path.to_owned(),
            cause,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown` means the key type cannot report its public half; ring's
        // keys always can, and rustls itself accepts such keys, so do we.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                key: key_path.to_owned(),
                cert: cert_path.to_owned(),
            })
        }
        Err(other) => Err(TlsError::BadCertificate {
            role: FileRole::Certificate,
            path: cert_path.to_owned(),
            reason: other.to_string(),
        }),
    }
}

/// Trust anchors from the CA certificates in `bytes` (read from `path`).
pub(crate) fn parse_roots(path: &Path, bytes: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(FileRole::Ca, path, bytes)? {
        roots.add(cert).map_err(|e| TlsError::BadCertificate {
            role: FileRole::Ca,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// A verifier for client certificates signed by the CAs in `ca`; with
/// `optional`, clients that present no certificate are let through too.
pub(crate) fn client_verifier(
    ca: &Path,
    optional: bool,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let roots = parse_roots(ca, &read(FileRole::Ca, ca)?)?;
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if optional {
        builder = builder.allow_unauthenticated();
    }
    builder.build().map_err(|e| TlsError::BadCertificate {
        role: FileRole::Ca,
        path: ca.to_owned(),
        reason: e.to_string(),
    })
}
