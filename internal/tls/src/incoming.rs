//! Accepting TLS connections: TCP accepts happen in one loop, and each TLS
//! handshake runs in its own task under a timeout, so a client that stalls
//! mid-handshake (or never starts one) holds up nobody but itself.
//!
//! Finished handshakes queue in a bounded channel that [`TlsIncoming`] reads,
//! either as a `Stream` (for tonic's `serve_with_incoming*`) or through
//! [`TlsIncoming::accept`] (for an axum `Listener`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;

use crate::server::ServerTls;

/// How long a client gets to finish its TLS handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in flight (or finished and waiting for the server to take
/// them) at most. Past this the accept loop stops accepting, and new
/// connections wait in the kernel's backlog instead of in our memory.
const MAX_PENDING_CONNECTIONS: usize = 512;

/// Finished handshakes queued for the server at most.
const READY_QUEUE_LEN: usize = 64;

/// After an accept error that is not about one connection (e.g. out of file
/// descriptors), wait this long before retrying rather than spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(500);

type Ready = (TlsStream<TcpStream>, SocketAddr);

/// TLS connections accepted from a `TcpListener`, handshake complete.
///
/// Dropping it stops the accept loop and closes the listener.
pub struct TlsIncoming {
    ready: mpsc::Receiver<Ready>,
    local_addr: Option<SocketAddr>,
    accept_loop: JoinHandle<()>,
}

impl TlsIncoming {
    /// Starts accepting on `listener` with [`HANDSHAKE_TIMEOUT`]. Must be
    /// called inside a tokio runtime (it spawns the accept loop).
    pub fn new(listener: TcpListener, tls: ServerTls) -> TlsIncoming {
        TlsIncoming::with_handshake_timeout(listener, tls, HANDSHAKE_TIMEOUT)
    }

    /// As [`TlsIncoming::new`], with a chosen handshake timeout.
    pub fn with_handshake_timeout(
        listener: TcpListener,
        tls: ServerTls,
        handshake_timeout: Duration,
    ) -> TlsIncoming {
        let local_addr = listener.local_addr().ok();
        let (tx, ready) = mpsc::channel(READY_QUEUE_LEN);
        let accept_loop = tokio::spawn(accept_loop(listener, tls, handshake_timeout, tx));
        TlsIncoming {
            ready,
            local_addr,
            accept_loop,
        }
    }

    /// The next connection whose handshake succeeded, with the peer's
    /// address; `None` only once the accept loop has stopped.
    pub async fn accept(&mut self) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
        self.ready.recv().await
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.local_addr.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                "the listener had no local address when TlsIncoming was built",
            )
        })
    }
}

impl Stream for TlsIncoming {
    type Item = io::Result<TlsStream<TcpStream>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.ready
            .poll_recv(cx)
            .map(|next| next.map(|(stream, _)| Ok(stream)))
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: ServerTls,
    handshake_timeout: Duration,
    ready: mpsc::Sender<Ready>,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = pending.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => return, // never closed; nothing left to do if it were
            },
            () = ready.closed() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = ready.closed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) if is_per_connection(&e) => {
                tracing::debug!(error = %e, "TCP accept failed for one connection");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed; backing off");
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                    () = ready.closed() => return,
                }
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        // The acceptor is taken per connection so a reload applies to every
        // handshake that starts after it.
        let acceptor = tls.acceptor();
        let ready = ready.clone();
        tokio::spawn(async move {
            // Held until the connection is queued (or dropped), bounding
            // everything this task holds.
            let _permit = permit;
            let handshake = tokio::select! {
                done = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)) => done,
                () = ready.closed() => return, // nobody left to hand it to
            };
            match handshake {
                Ok(Ok(stream)) => {
                    // Err only when TlsIncoming is gone; the connection goes with it.
                    let _ = ready.send((stream, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_elapsed) => tracing::debug!(
                    %peer,
                    timeout_ms = handshake_timeout.as_millis() as u64,
                    "TLS handshake timed out"
                ),
            }
        });
    }
}

/// Errors that concern only the connection being accepted; the listener is
/// fine and the next accept can follow at once.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
