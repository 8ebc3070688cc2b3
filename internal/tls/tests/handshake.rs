//! Handshakes over loopback: server certificates checked by the client,
//! client certificates checked by the server (required and optional), node
//! identities read from the presented certificate, and a stalled client that
//! must not hold up anyone else.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chronos_tls::tokio_rustls::rustls::pki_types::ServerName;
use chronos_tls::tokio_rustls::TlsConnector;
use chronos_tls::{client_config, node_id_in, ClientAuth, ClientFiles, ServerTls, TlsIncoming};
use common::{assert_refused, connect, connector, session, EchoServer, Pki, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn server_certificate_is_checked_against_ca_and_name() -> anyhow::Result<()> {
    let pki = Pki::new("server-check")?;
    let tls = ServerTls::load(pki.server_files(ClientAuth::None)?)?;
    let server = EchoServer::start(tls).await?;
    let trusting = connector(&pki.client_files())?;

    session(&trusting, server.addr, "localhost").await?;
    session(&trusting, server.addr, "127.0.0.1").await?;

    let wrong_name = session(&trusting, server.addr, "elsewhere.example").await;
    assert_refused(wrong_name, "NotValidForName");

    let other = Pki::new("other")?;
    let distrusting = connector(&other.client_files())?;
    let wrong_ca = session(&distrusting, server.addr, "localhost").await;
    assert_refused(wrong_ca, "UnknownIssuer");

    // The server is still fine after refusing those.
    session(&trusting, server.addr, "localhost").await?;
    Ok(())
}

#[tokio::test]
async fn required_client_auth_admits_only_valid_client_certs() -> anyhow::Result<()> {
    let pki = Pki::new("mtls")?;
    let tls = ServerTls::load(pki.server_files(pki.required())?)?;
    let mut server = EchoServer::start(tls).await?;
    let dir = pki.dir.path();
    let with_identity = |stem: &str, issued: &chronos_tls::testing::Issued| {
        let identity = issued.write(dir, stem)?;
        connector(&ClientFiles {
            ca: pki.ca_path.clone(),
            identity: Some(identity),
        })
    };

    let anonymous = connector(&pki.client_files())?;
    assert_refused(
        session(&anonymous, server.addr, "localhost").await,
        "CertificateRequired",
    );

    let stranger_ca = chronos_tls::testing::TestCa::new("stranger");
    let stranger = with_identity("stranger", &stranger_ca.issue_node("chronos", 9))?;
    assert_refused(
        session(&stranger, server.addr, "localhost").await,
        "UnknownCA",
    );

    let expired = with_identity("expired", &pki.ca.issue_expired(&["node-4.chronos"]))?;
    assert_refused(
        session(&expired, server.addr, "localhost").await,
        "CertificateExpired",
    );

    let node3 = pki.ca.issue_node("chronos", 3);
    let node = with_identity("node3", &node3)?;
    session(&node, server.addr, "localhost").await?;
    let chain = server.next_peer_chain().await?;
    let leaf = chain
        .first()
        .ok_or_else(|| anyhow::anyhow!("no client certificate"))?;
    assert_eq!(leaf, &node3.cert_der);
    assert_eq!(node_id_in(leaf, "chronos"), Some(3));

    let foreign = with_identity("foreign", &pki.ca.issue(&["node-2.othercluster"]))?;
    session(&foreign, server.addr, "localhost").await?;
    let chain = server.next_peer_chain().await?;
    let leaf = chain
        .first()
        .ok_or_else(|| anyhow::anyhow!("no client certificate"))?;
    assert_eq!(node_id_in(leaf, "chronos"), None);
    assert_eq!(node_id_in(leaf, "othercluster"), Some(2));
    Ok(())
}

#[tokio::test]
async fn optional_client_auth_admits_clients_with_or_without_cert() -> anyhow::Result<()> {
    let pki = Pki::new("optional")?;
    let tls = ServerTls::load(pki.server_files(ClientAuth::Optional {
        ca: pki.ca_path.clone(),
    })?)?;
    let mut server = EchoServer::start(tls).await?;

    let anonymous = connector(&pki.client_files())?;
    session(&anonymous, server.addr, "localhost").await?;
    assert!(server.next_peer_chain().await?.is_empty());

    let alice = pki.ca.issue_client("alice", &["alice.clients.chronos"]);
    let identity = alice.write(pki.dir.path(), "alice")?;
    let with_cert = connector(&ClientFiles {
        ca: pki.ca_path.clone(),
        identity: Some(identity),
    })?;
    session(&with_cert, server.addr, "localhost").await?;
    let chain = server.next_peer_chain().await?;
    let leaf = chain
        .first()
        .ok_or_else(|| anyhow::anyhow!("no client certificate"))?;
    assert_eq!(
        chronos_tls::cert_names(leaf),
        vec!["alice".to_owned(), "alice.clients.chronos".to_owned()]
    );

    // Optional still means "checked if presented".
    let stranger_ca = chronos_tls::testing::TestCa::new("stranger");
    let stranger = stranger_ca.issue_client("mallory", &[]);
    let identity = stranger.write(pki.dir.path(), "mallory")?;
    let forged = connector(&ClientFiles {
        ca: pki.ca_path.clone(),
        identity: Some(identity),
    })?;
    assert_refused(
        session(&forged, server.addr, "localhost").await,
        "UnknownCA",
    );
    Ok(())
}

#[tokio::test]
async fn stalled_handshake_does_not_block_others() -> anyhow::Result<()> {
    let pki = Pki::new("stall")?;
    let tls = ServerTls::load(pki.server_files(ClientAuth::None)?)?;
    // A handshake timeout far past the test's deadline: the session below can
    // only finish in time if the silent client's handshake runs aside.
    let server = EchoServer::start_with_timeout(tls, Duration::from_secs(600)).await?;

    // Connect and never say a word.
    let _stalled = TcpStream::connect(server.addr).await?;
    let _half_hello = {
        let mut tcp = TcpStream::connect(server.addr).await?;
        tcp.write_all(&[0x16, 0x03, 0x01, 0x00, 0x80]).await?; // a record header, no body
        tcp
    };

    let client = connector(&pki.client_files())?;
    session(&client, server.addr, "localhost").await?;
    Ok(())
}

#[tokio::test]
async fn stalled_handshake_is_dropped_after_the_timeout() -> anyhow::Result<()> {
    let pki = Pki::new("timeout")?;
    let tls = ServerTls::load(pki.server_files(ClientAuth::None)?)?;
    let server = EchoServer::start_with_timeout(tls, Duration::from_millis(300)).await?;

    let mut stalled = TcpStream::connect(server.addr).await?;

    // The server gives up on the silent client: its socket reaches EOF (or
    // is reset) well before the test's deadline.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(DEADLINE, stalled.read(&mut buf)).await?;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "stalled socket still open: {read:?}"
    );

    // And serves the next client as usual.
    let client = connector(&pki.client_files())?;
    session(&client, server.addr, "localhost").await?;
    Ok(())
}

#[tokio::test]
async fn accept_reports_peer_and_negotiates_alpn() -> anyhow::Result<()> {
    let pki = Pki::new("alpn")?;
    let tls = ServerTls::load(pki.server_files(ClientAuth::None)?)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut incoming = TlsIncoming::new(listener, tls);

    let mut config = client_config(&pki.client_files())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let h2_client = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost")?;
    let client = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await?;
        let local = tcp.local_addr()?;
        let stream = h2_client.connect(name, tcp).await?;
        anyhow::Ok((stream, local))
    });

    let (server_side, peer) = tokio::time::timeout(DEADLINE, incoming.accept())
        .await?
        .ok_or_else(|| anyhow::anyhow!("accept loop stopped"))?;
    let (client_side, client_addr) = tokio::time::timeout(DEADLINE, client).await???;
    assert_eq!(peer, client_addr);
    assert_eq!(server_side.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(client_side.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert!(server_side.get_ref().0.nodelay()?, "TCP_NODELAY not set");

    // An HTTP/1.1-only client is served too.
    let mut config = client_config(&pki.client_files())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let h1_client = TlsConnector::from(Arc::new(config));
    let h1 = connect(&h1_client, addr, "localhost").await?;
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    Ok(())
}

#[tokio::test]
async fn dropping_incoming_closes_the_listener() -> anyhow::Result<()> {
    let pki = Pki::new("drop")?;
    let tls = ServerTls::load(pki.server_files(ClientAuth::None)?)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    drop(TlsIncoming::new(listener, tls));

    let refused = tokio::time::timeout(DEADLINE, async {
        loop {
            match TcpStream::connect(addr).await {
                Err(_) => return,
                // The abort lands at the loop's next poll; try again shortly.
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    assert!(refused.is_ok(), "listener still accepting after drop");
    Ok(())
}
