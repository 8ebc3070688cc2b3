//! A loopback harness: a CA and certificate files in a temporary directory,
//! an echo server over `TlsIncoming`, and a client that proves a session
//! works by echoing bytes through it. Every wait has a deadline.

#![allow(dead_code)] // each test binary uses a different part

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chronos_tls::testing::TestCa;
use chronos_tls::tokio_rustls::rustls::pki_types::ServerName;
use chronos_tls::tokio_rustls::{client, TlsConnector};
use chronos_tls::{client_config, ClientAuth, ClientFiles, ServerFiles, ServerTls, TlsIncoming};
use futures::StreamExt;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Longest any single step of a test may take.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// A CA, its certificate written to `ca_path`, and a directory for more files.
pub struct Pki {
    pub dir: TempDir,
    pub ca: TestCa,
    pub ca_path: PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> anyhow::Result<Pki> {
        let dir = tempfile::tempdir()?;
        let ca = TestCa::new(name);
        let ca_path = ca.write(dir.path(), &format!("{name}-ca"))?;
        Ok(Pki { dir, ca, ca_path })
    }

    /// Server files for a certificate naming `localhost` and `127.0.0.1`.
    pub fn server_files(&self, client_auth: ClientAuth) -> anyhow::Result<ServerFiles> {
        let (cert, key) = self
            .ca
            .issue(&["localhost", "127.0.0.1"])
            .write(self.dir.path(), "server")?;
        Ok(ServerFiles {
            cert,
            key,
            client_auth,
        })
    }

    /// Client files trusting this CA, without a client certificate.
    pub fn client_files(&self) -> ClientFiles {
        ClientFiles {
            ca: self.ca_path.clone(),
            identity: None,
        }
    }

    pub fn required(&self) -> ClientAuth {
        ClientAuth::Required {
            ca: self.ca_path.clone(),
        }
    }
}

/// An echo server over `TlsIncoming` that reports each accepted
/// connection's client certificate chain (DER; empty if none).
pub struct EchoServer {
    pub addr: SocketAddr,
    peers: mpsc::UnboundedReceiver<Vec<Vec<u8>>>,
    task: JoinHandle<()>,
}

impl EchoServer {
    pub async fn start(tls: ServerTls) -> anyhow::Result<EchoServer> {
        EchoServer::start_with_timeout(tls, chronos_tls::HANDSHAKE_TIMEOUT).await
    }

    pub async fn start_with_timeout(
        tls: ServerTls,
        handshake_timeout: Duration,
    ) -> anyhow::Result<EchoServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut incoming = TlsIncoming::with_handshake_timeout(listener, tls, handshake_timeout);
        let addr = incoming.local_addr()?;
        let (report, peers) = mpsc::unbounded_channel();
        // Served through the Stream interface, the way tonic consumes it.
        let task = tokio::spawn(async move {
            while let Some(Ok(stream)) = incoming.next().await {
                let chain = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|certs| certs.iter().map(|c| c.to_vec()).collect())
                    .unwrap_or_default();
                let _ = report.send(chain);
                tokio::spawn(echo(stream));
            }
        });
        Ok(EchoServer { addr, peers, task })
    }

    /// The client chain of the next connection the server accepted.
    pub async fn next_peer_chain(&mut self) -> anyhow::Result<Vec<Vec<u8>>> {
        tokio::time::timeout(DEADLINE, self.peers.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("echo server stopped"))
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S) {
    let mut buf = [0u8; 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() || stream.flush().await.is_err() {
            return;
        }
    }
}

pub fn connector(files: &ClientFiles) -> anyhow::Result<TlsConnector> {
    Ok(TlsConnector::from(Arc::new(client_config(files)?)))
}

/// Connects and completes the client's side of the handshake.
pub async fn connect(
    connector: &TlsConnector,
    addr: SocketAddr,
    server_name: &str,
) -> io::Result<client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    within_deadline(async {
        let tcp = TcpStream::connect(addr).await?;
        connector.connect(name, tcp).await
    })
    .await
}

/// Sends `msg` and expects it echoed back. In TLS 1.3 the server judges the
/// client's certificate after the client thinks the handshake is done, so a
/// refusal shows up here, as an alert or a closed connection.
pub async fn round_trip(stream: &mut client::TlsStream<TcpStream>, msg: &[u8]) -> io::Result<()> {
    within_deadline(async {
        stream.write_all(msg).await?;
        stream.flush().await?;
        let mut back = vec![0u8; msg.len()];
        stream.read_exact(&mut back).await?;
        if back != msg {
            return Err(io::Error::other("echo returned different bytes"));
        }
        Ok(())
    })
    .await
}

/// A session that has carried bytes both ways.
pub async fn session(
    connector: &TlsConnector,
    addr: SocketAddr,
    server_name: &str,
) -> io::Result<client::TlsStream<TcpStream>> {
    let mut stream = connect(connector, addr, server_name).await?;
    round_trip(&mut stream, b"ping").await?;
    Ok(stream)
}

/// Asserts the session was refused, and for the expected reason: `why` is
/// a rustls error or alert name (e.g. `UnknownIssuer`, `CertificateRequired`)
/// looked for in the error, so a refusal for some unrelated cause (a
/// timeout, a bug in the harness) does not pass for the one being tested.
#[track_caller]
pub fn assert_refused<T>(result: io::Result<T>, why: &str) {
    match result {
        Ok(_) => panic!("expected a refusal ({why}), but the session worked"),
        Err(e) => {
            let seen = format!("{e:?}");
            assert!(seen.contains(why), "expected a refusal ({why}), got {seen}");
        }
    }
}

/// The leaf certificate the server presented on `stream`.
pub fn server_leaf(stream: &client::TlsStream<TcpStream>) -> Option<Vec<u8>> {
    let certs = stream.get_ref().1.peer_certificates()?;
    certs.first().map(|c| c.to_vec())
}

async fn within_deadline<T>(
    work: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(DEADLINE, work)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "test step passed its deadline"))?
}
