//! The server side: a rustls `ServerConfig` built from PEM files and swapped
//! in place on [`ServerTls::reload`], so certificates can be rotated without
//! a restart. Each handshake picks up whatever configuration is current when
//! it starts; connections already established keep the one they began with.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use rustls::pki_types::CertificateDer;
use rustls::server::ServerConfig;
use rustls::sign::SingleCertAndKey;
use tokio_rustls::TlsAcceptor;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::TlsError;
use crate::{crypto_provider, pem, ALPN_PROTOCOLS};

/// Where a server's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    /// The certificate chain, leaf first, as PEM.
    pub cert: PathBuf,
    /// The leaf's private key as PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
    /// Whether and how clients prove who they are.
    pub client_auth: ClientAuth,
}

/// What the server asks of a client's certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// Clients are not asked for a certificate.
    #[default]
    None,
    /// A client may present a certificate, which must then be signed by a CA
    /// in `ca`; a client presenting none is let through (and authenticates
    /// some other way, e.g. a token).
    Optional { ca: PathBuf },
    /// Mutual TLS: a client must present a certificate signed by a CA in `ca`.
    Required { ca: PathBuf },
}

/// A server TLS configuration loaded from files and reloadable in place.
///
/// Cheap to clone: clones share the configuration, so a reload through any
/// clone is seen by all of them (and by every [`crate::TlsIncoming`] built
/// from one).
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

struct Inner {
    files: ServerFiles,
    current: ArcSwap<ServerConfig>,
    /// Held for a whole reload so two racing reloads cannot finish out of
    /// order and leave the older files' configuration in place.
    reloading: Mutex<()>,
}

impl ServerTls {
    /// Reads and checks every file in `files`.
    pub fn load(files: ServerFiles) -> Result<ServerTls, TlsError> {
        let config = build(&files)?;
        Ok(ServerTls {
            inner: Arc::new(Inner {
                files,
                current: ArcSwap::from_pointee(config),
                reloading: Mutex::new(()),
            }),
        })
    }

    /// Re-reads all files. On success new handshakes use the new
    /// configuration; on any error the old one stays in force and the error
    /// (naming the file) is returned for the caller to log. Established
    /// connections are untouched either way.
    pub fn reload(&self) -> Result<(), TlsError> {
        // The guard protects no data, only ordering, so a poisoned lock
        // (a panic mid-reload) is no reason to stop reloading.
        let _ordering = self
            .inner
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let config = build(&self.inner.files)?;
        self.inner.current.store(Arc::new(config));
        tracing::info!(cert = %self.inner.files.cert.display(), "reloaded TLS configuration");
        Ok(())
    }

    /// An acceptor for the configuration current right now. Take a fresh one
    /// per connection (as [`crate::TlsIncoming`] does) to follow reloads.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config())
    }

    /// The configuration current right now.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.inner.current.load_full()
    }

    /// The files this configuration is (re)loaded from.
    pub fn files(&self) -> &ServerFiles {
        &self.inner.files
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.inner.files)
            .finish_non_exhaustive()
    }
}

fn build(files: &ServerFiles) -> Result<ServerConfig, TlsError> {
    let provider = crypto_provider();
    let certified = pem::certified_key(&files.cert, &files.key, &provider)?;
    if let Some(leaf) = certified.cert.first() {
        warn_if_not_valid_now(&files.cert, leaf);
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let builder = match &files.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional { ca } => {
            builder.with_client_cert_verifier(pem::client_verifier(ca, true, &provider)?)
        }
        ClientAuth::Required { ca } => {
            builder.with_client_cert_verifier(pem::client_verifier(ca, false, &provider)?)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// An expired (or not yet valid) server certificate is still served —
/// refusing to start would turn a renewal hiccup into an outage, and clients
/// will refuse it anyway — but the operator should hear about it.
fn warn_if_not_valid_now(path: &Path, leaf: &CertificateDer<'_>) {
    let Ok((_, cert)) = X509Certificate::from_der(leaf) else {
        return; // already parsed once by `pem::parse_certs`
    };
    let validity = cert.validity();
    if !validity.is_valid() {
        tracing::warn!(
            cert = %path.display(),
            not_before = %validity.not_before,
            not_after = %validity.not_after,
            "TLS certificate is not valid now; clients will refuse it"
        );
    }
}
