//! The pieces plugged into tonic the way the binary and the node-to-node
//! channels use them: `TlsIncoming` under `serve_with_incoming_shutdown`,
//! `ClientPem` into `ClientTlsConfig`, and the client's node id read from
//! `request.peer_certs()` in a handler.

mod common;

use std::time::Duration;

use chronos_tls::{node_id_in, ClientFiles, ClientPem, ServerTls, TlsIncoming};
use common::{Pki, DEADLINE};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test]
async fn tonic_serves_over_tls_incoming_and_sees_the_client_node() -> anyhow::Result<()> {
    let pki = Pki::new("tonic")?;
    let tls = ServerTls::load(pki.server_files(pki.required())?)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let incoming = TlsIncoming::new(listener, tls);

    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let health = InterceptedService::new(health, move |req: tonic::Request<()>| {
        let node = req
            .peer_certs()
            .and_then(|chain| chain.first().and_then(|leaf| node_id_in(leaf, "chronos")));
        let _ = seen_tx.send(node);
        Ok(req)
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );

    let identity = pki
        .ca
        .issue_node("chronos", 4)
        .write(pki.dir.path(), "node4")?;
    let pem = ClientPem::read(&ClientFiles {
        ca: pki.ca_path.clone(),
        identity: Some(identity),
    })?;
    let (cert, key) = pem
        .identity
        .clone()
        .ok_or_else(|| anyhow::anyhow!("identity not read"))?;
    let client_tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pem.ca))
        .identity(Identity::from_pem(cert, key))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(client_tls)?
        .connect_timeout(DEADLINE)
        .timeout(DEADLINE)
        .connect()
        .await?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    let node = tokio::time::timeout(DEADLINE, seen.recv()).await?;
    assert_eq!(node, Some(Some(4)));

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server).await???;
    Ok(())
}
