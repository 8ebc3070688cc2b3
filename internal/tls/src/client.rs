//! The client side, for node-to-node channels and SDK connections: which CA
//! to trust and, for mutual TLS, which certificate to present.
//!
//! tonic builds its own rustls client from PEM bytes, so the main product
//! here is [`ClientPem`]: the files read once and checked now, so a bad path
//! or file fails at startup instead of at the first connection attempt.
//! [`client_config`] builds a plain rustls configuration from the same files
//! for callers (and tests) that speak TLS without tonic.

use std::fmt;
use std::path::PathBuf;

use rustls::ClientConfig;

use crate::error::{FileRole, TlsError};
use crate::{crypto_provider, pem};

/// Where a client's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFiles {
    /// CA certificates (PEM) trusted to sign the server's certificate.
    pub ca: PathBuf,
    /// For mutual TLS: the client's certificate chain and private key (PEM).
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// The contents of [`ClientFiles`], already checked to parse (and, for an
/// identity, for the key to match the certificate). Feed these to
/// `tonic::transport::Certificate::from_pem` / `Identity::from_pem`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientPem {
    /// The CA file's PEM text.
    pub ca: Vec<u8>,
    /// The identity's certificate and key PEM text.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientPem {
    /// Reads and checks every file in `files`.
    pub fn read(files: &ClientFiles) -> Result<ClientPem, TlsError> {
        let ca = pem::read(FileRole::Ca, &files.ca)?;
        pem::parse_roots(&files.ca, &ca)?;
        let identity = match &files.identity {
            None => None,
            Some((cert_path, key_path)) => {
                let cert = pem::read(FileRole::Certificate, cert_path)?;
                let key = pem::read(FileRole::Key, key_path)?;
                // Loading through rustls checks more than the PEM: that the
                // key is a kind the provider can sign with, and matches.
                pem::parse_certified_key((cert_path, &cert), (key_path, &key), &crypto_provider())?;
                Some((cert, key))
            }
        };
        Ok(ClientPem { ca, identity })
    }
}

impl fmt::Debug for ClientPem {
    // The key never goes into a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientPem")
            .field("ca_bytes", &self.ca.len())
            .field("has_identity", &self.identity.is_some())
            .finish()
    }
}

/// A rustls client configuration from `files`: server certificates must
/// chain to `files.ca` and name the host connected to; the identity, if
/// any, is presented when the server asks. No ALPN protocols are set (tonic
/// and hyper set their own).
pub fn client_config(files: &ClientFiles) -> Result<ClientConfig, TlsError> {
    let provider = crypto_provider();
    let roots = pem::parse_roots(&files.ca, &pem::read(FileRole::Ca, &files.ca)?)?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots);
    match &files.identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert_path, key_path)) => {
            let certified = pem::certified_key(cert_path, key_path, &provider)?;
            Ok(builder.with_client_cert_resolver(std::sync::Arc::new(
                rustls::sign::SingleCertAndKey::from(certified),
            )))
        }
    }
}
