//! TLS for Chronos' listeners and node-to-node channels.
//!
//! **Owns:** turning PEM files into rustls configurations (server and
//! client), reloading the server configuration in place when the files
//! change, accepting TLS connections off a `TcpListener` without letting one
//! slow handshake hold up the others ([`TlsIncoming`]), and reading node
//! identities out of certificates (a DNS SAN `node-<id>.<cluster>`, see
//! [`node_id_in`]). With the `test-certs` feature, [`testing`] makes
//! throwaway certificate authorities and certificates for tests.
//!
//! **Does not own:** deciding what a certificate's names are allowed to do
//! (the access crate maps [`cert_names`] to principals), serving gRPC or HTTP
//! (the binary hands [`TlsIncoming`] to tonic and axum), watching files or
//! signals (the caller decides when to call [`ServerTls::reload`]), or
//! building tonic channels (the caller feeds [`ClientPem`] to
//! `tonic::transport::ClientTlsConfig`).
//!
//! **One crypto provider:** every configuration here is built with rustls'
//! *ring* provider passed explicitly ([`crypto_provider`]), so nothing
//! depends on a process-wide default being installed, and aws-lc never
//! enters the build.

mod client;
mod error;
mod identity;
mod incoming;
mod pem;
mod server;
#[cfg(feature = "test-certs")]
pub mod testing;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub use client::{client_config, ClientFiles, ClientPem};
pub use error::{FileRole, TlsError};
pub use identity::{cert_names, node_id_in, node_name};
pub use incoming::{TlsIncoming, HANDSHAKE_TIMEOUT};
pub use server::{ClientAuth, ServerFiles, ServerTls};

/// Re-exported so callers name the exact versions this crate speaks (tonic
/// 0.14 implements `Connected` for `tokio_rustls::server::TlsStream`).
pub use rustls;
pub use tokio_rustls;

/// ALPN protocols the server offers: gRPC needs `h2`; the HTTP listener also
/// serves HTTP/1.1 clients.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The ring crypto provider every configuration in this crate is built with.
///
/// Shared rather than rebuilt per configuration: it is immutable, and one
/// instance keeps a reload from allocating a fresh cipher-suite table.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
