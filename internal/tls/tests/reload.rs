//! Reloading in place: new handshakes get the new certificate, connections
//! made before keep working, and a broken file changes nothing.

mod common;

use std::path::Path;

use chronos_tls::{ClientAuth, FileRole, ServerTls, TlsError};
use common::{connector, round_trip, server_leaf, session, EchoServer, Pki};

#[tokio::test]
async fn reload_serves_the_new_certificate_to_new_connections_only() -> anyhow::Result<()> {
    let pki = Pki::new("reload")?;
    let files = pki.server_files(ClientAuth::None)?;
    let old_leaf = std::fs::read(&files.cert)?;
    let tls = ServerTls::load(files.clone())?;
    let server = EchoServer::start(tls.clone()).await?;
    let client = connector(&pki.client_files())?;

    let mut before = session(&client, server.addr, "localhost").await?;
    let old_der = server_leaf(&before).ok_or_else(|| anyhow::anyhow!("no server cert"))?;

    let renewed = pki.ca.issue(&["localhost", "127.0.0.1"]);
    renewed.write(pki.dir.path(), "server")?; // the same paths `files` names
    assert_ne!(std::fs::read(&files.cert)?, old_leaf);
    tls.reload()?;

    let after = session(&client, server.addr, "localhost").await?;
    assert_eq!(server_leaf(&after), Some(renewed.cert_der.clone()));
    assert_ne!(server_leaf(&after), Some(old_der.clone()));

    // The connection from before the reload still carries bytes, on the
    // certificate it started with.
    round_trip(&mut before, b"still here").await?;
    assert_eq!(server_leaf(&before), Some(old_der));
    Ok(())
}

#[tokio::test]
async fn reload_with_a_broken_file_keeps_the_old_certificate() -> anyhow::Result<()> {
    let pki = Pki::new("broken")?;
    let files = pki.server_files(ClientAuth::None)?;
    let tls = ServerTls::load(files.clone())?;
    let server = EchoServer::start(tls.clone()).await?;
    let client = connector(&pki.client_files())?;
    let served = server_leaf(&session(&client, server.addr, "localhost").await?);

    let good_cert = std::fs::read(&files.cert)?;
    let good_key = std::fs::read(&files.key)?;

    // A certificate file with no certificate in it.
    std::fs::write(
        &files.cert,
        "-----BEGIN NONSENSE-----\n-----END NONSENSE-----\n",
    )?;
    let err = reload_error(&tls)?;
    assert!(
        matches!(
            err,
            TlsError::NoCertificate {
                role: FileRole::Certificate,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, &files.cert);
    assert_eq!(
        server_leaf(&session(&client, server.addr, "localhost").await?),
        served
    );
    std::fs::write(&files.cert, &good_cert)?;

    // A key that belongs to some other certificate.
    std::fs::write(&files.key, pki.ca.issue(&["localhost"]).key_pem)?;
    let err = reload_error(&tls)?;
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    assert_names(&err, &files.key);
    assert_eq!(
        server_leaf(&session(&client, server.addr, "localhost").await?),
        served
    );

    // A key file that is gone.
    std::fs::remove_file(&files.key)?;
    let err = reload_error(&tls)?;
    assert!(
        matches!(
            err,
            TlsError::Read {
                role: FileRole::Key,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, &files.key);
    assert_eq!(
        server_leaf(&session(&client, server.addr, "localhost").await?),
        served
    );

    // Once the files are right again, reload works.
    std::fs::write(&files.key, &good_key)?;
    tls.reload()?;
    assert_eq!(
        server_leaf(&session(&client, server.addr, "localhost").await?),
        served
    );
    Ok(())
}

#[tokio::test]
async fn reload_picks_up_a_new_client_ca() -> anyhow::Result<()> {
    let pki = Pki::new("ca-rotation")?;
    let files = pki.server_files(pki.required())?;
    let tls = ServerTls::load(files)?;
    let server = EchoServer::start(tls.clone()).await?;

    // A client whose certificate comes from a CA the server does not trust yet.
    let next_ca = chronos_tls::testing::TestCa::new("next");
    let identity = next_ca
        .issue_node("chronos", 5)
        .write(pki.dir.path(), "node5")?;
    let client = connector(&chronos_tls::ClientFiles {
        ca: pki.ca_path.clone(),
        identity: Some(identity),
    })?;
    common::assert_refused(
        session(&client, server.addr, "localhost").await,
        "UnknownCA",
    );

    // Trust both CAs (a rotation's overlap), reload, and it gets in.
    let both = format!("{}{}", pki.ca.cert_pem(), next_ca.cert_pem());
    std::fs::write(&pki.ca_path, both)?;
    tls.reload()?;
    session(&client, server.addr, "localhost").await?;
    Ok(())
}

fn reload_error(tls: &ServerTls) -> anyhow::Result<TlsError> {
    match tls.reload() {
        Ok(()) => anyhow::bail!("reload accepted a broken file"),
        Err(e) => Ok(e),
    }
}

#[track_caller]
fn assert_names(err: &TlsError, path: &Path) {
    assert_eq!(err.path(), Some(path));
    let shown = err.to_string();
    assert!(shown.contains(&path.display().to_string()), "{shown}");
}
