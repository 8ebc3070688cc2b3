//! The node's listeners, in plaintext or TLS: certificates from the config's
//! files, re-read on SIGHUP (new handshakes get the new ones; open
//! connections keep theirs).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use chronos_config::{ClusterTlsConfig, TlsConfig};
use chronos_raftnet::Peers;
use chronos_tls::tokio_rustls::server::TlsStream;
use chronos_tls::{ClientAuth, ServerFiles, ServerTls, TlsIncoming};
use tokio::net::{TcpListener, TcpStream};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// TLS of the public listeners (gRPC and HTTP share it), if configured.
pub fn public_tls(tls: Option<&TlsConfig>) -> anyhow::Result<Option<ServerTls>> {
    let Some(tls) = tls else {
        return Ok(None);
    };
    let client_auth = match &tls.client_ca {
        None => ClientAuth::None,
        Some(ca) => ClientAuth::Optional { ca: ca.clone() },
    };
    let files = ServerFiles {
        cert: tls.cert.clone(),
        key: tls.key.clone(),
        client_auth,
    };
    Ok(Some(ServerTls::load(files).context("tls")?))
}

/// TLS of the node-to-node listener: peers must present a certificate the
/// cluster CA signed.
pub fn cluster_tls(tls: Option<&ClusterTlsConfig>) -> anyhow::Result<Option<ServerTls>> {
    let Some(tls) = tls else {
        return Ok(None);
    };
    let files = ServerFiles {
        cert: tls.cert.clone(),
        key: tls.key.clone(),
        client_auth: ClientAuth::Required { ca: tls.ca.clone() },
    };
    Ok(Some(ServerTls::load(files).context("cluster.tls")?))
}

/// A bound listener, serving plaintext or TLS.
pub enum Listener {
    Plain(TcpListener),
    Tls(TlsIncoming),
}

impl Listener {
    pub fn new(listener: TcpListener, tls: Option<&ServerTls>) -> Listener {
        match tls {
            None => Listener::Plain(listener),
            Some(tls) => Listener::Tls(TlsIncoming::new(listener, tls.clone())),
        }
    }
}

/// The HTTP side of a TLS listener, for axum.
pub struct HttpsListener {
    pub incoming: TlsIncoming,
    pub addr: std::io::Result<SocketAddr>,
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.accept().await {
            Some(conn) => conn,
            // The acceptor is gone (the process stops): accept no more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.addr {
            Ok(a) => Ok(*a),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}

/// Re-reads the certificates of every TLS listener on each SIGHUP.
pub fn reload_on_sighup(
    tls: Vec<(&'static str, ServerTls)>,
    also: Arc<dyn Fn() + Send + Sync>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            for (what, tls) in &tls {
                match tls.reload() {
                    Ok(()) => tracing::info!("SIGHUP: {what} certificates reloaded"),
                    Err(e) => {
                        tracing::warn!("SIGHUP: {what} certificates kept; reload failed: {e}")
                    }
                }
            }
            also();
        }
    }))
}

/// Refuses a node-to-node call whose client certificate names no node of
/// the cluster (`node-<id>.<cluster>`, the id in the roster): the cluster CA
/// alone does not say which cluster, or whether the node was removed.
#[derive(Clone)]
pub struct NodeCheck {
    pub peers: Peers,
    pub cluster: String,
}

/// [`NodeCheck`] when the listener runs TLS; nothing to check otherwise.
#[derive(Clone)]
pub struct OptionalCheck(pub Option<NodeCheck>);

impl Interceptor for OptionalCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(check) = &self.0 else {
            return Ok(request);
        };
        let certs = request.peer_certs();
        let leaf = certs.as_ref().and_then(|c| c.first());
        let Some(leaf) = leaf else {
            return Err(Status::unauthenticated(
                "node-to-node calls need a client certificate",
            ));
        };
        match chronos_tls::node_id_in(leaf, &check.cluster) {
            Some(id) if check.peers.peer(id).is_some() => Ok(request),
            Some(id) => Err(Status::permission_denied(format!(
                "node {id} is not a node of this cluster"
            ))),
            None => Err(Status::permission_denied(format!(
                "the client certificate names no node of cluster {:?} (node-<id>.{})",
                check.cluster, check.cluster
            ))),
        }
    }
}
