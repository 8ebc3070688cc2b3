//! Bad files are reported at load time, by name, for both sides.

mod common;

use std::path::{Path, PathBuf};

use chronos_tls::{
    client_config, ClientAuth, ClientFiles, ClientPem, FileRole, ServerFiles, ServerTls, TlsError,
};
use common::Pki;

fn load_error(files: ServerFiles) -> anyhow::Result<TlsError> {
    match ServerTls::load(files) {
        Ok(_) => anyhow::bail!("ServerTls::load accepted broken files"),
        Err(e) => Ok(e),
    }
}

#[track_caller]
fn assert_names(err: &TlsError, path: &Path) {
    assert_eq!(err.path(), Some(path), "{err}");
    let shown = err.to_string();
    assert!(shown.contains(&path.display().to_string()), "{shown}");
}

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, contents)?;
    Ok(path)
}

#[test]
fn server_load_errors_name_the_file() -> anyhow::Result<()> {
    let pki = Pki::new("load")?;
    let dir = pki.dir.path();
    let good = pki.server_files(ClientAuth::None)?;
    ServerTls::load(good.clone())?;

    let missing = dir.join("missing.crt");
    let err = load_error(ServerFiles {
        cert: missing.clone(),
        ..good.clone()
    })?;
    assert!(
        matches!(
            err,
            TlsError::Read {
                role: FileRole::Certificate,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, &missing);
    assert!(err.to_string().starts_with("certificate file "), "{err}");

    let key_only = write(dir, "key-only.crt", std::fs::read(&good.key)?)?;
    let err = load_error(ServerFiles {
        cert: key_only.clone(),
        ..good.clone()
    })?;
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    assert_names(&err, &key_only);
    assert!(err.to_string().contains("no certificate found"), "{err}");

    let cert_only = write(dir, "cert-only.key", std::fs::read(&good.cert)?)?;
    let err = load_error(ServerFiles {
        key: cert_only.clone(),
        ..good.clone()
    })?;
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
    assert_names(&err, &cert_only);
    assert!(err.to_string().contains("no private key"), "{err}");

    let (_, other_key) = pki.ca.issue(&["localhost"]).write(dir, "other")?;
    let err = load_error(ServerFiles {
        key: other_key.clone(),
        ..good.clone()
    })?;
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    assert_names(&err, &other_key);
    assert!(err.to_string().contains("key does not match"), "{err}");

    let garbled = write(
        dir,
        "garbled.crt",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )?;
    let err = load_error(ServerFiles {
        cert: garbled.clone(),
        ..good.clone()
    })?;
    assert!(matches!(err, TlsError::BadCertificate { .. }), "{err}");
    assert_names(&err, &garbled);

    let empty_ca = write(dir, "empty-ca.crt", "")?;
    for client_auth in [
        ClientAuth::Optional {
            ca: empty_ca.clone(),
        },
        ClientAuth::Required {
            ca: empty_ca.clone(),
        },
    ] {
        let err = load_error(ServerFiles {
            client_auth,
            ..good.clone()
        })?;
        assert!(
            matches!(
                err,
                TlsError::NoCertificate {
                    role: FileRole::Ca,
                    ..
                }
            ),
            "{err}"
        );
        assert_names(&err, &empty_ca);
    }
    Ok(())
}

#[test]
fn client_files_are_checked_when_read() -> anyhow::Result<()> {
    let pki = Pki::new("client-load")?;
    let dir = pki.dir.path();
    let (cert, key) = pki.ca.issue_node("chronos", 1).write(dir, "node1")?;
    let good = ClientFiles {
        ca: pki.ca_path.clone(),
        identity: Some((cert.clone(), key.clone())),
    };

    let pem = ClientPem::read(&good)?;
    assert_eq!(pem.ca, std::fs::read(&pki.ca_path)?);
    assert_eq!(
        pem.identity,
        Some((std::fs::read(&cert)?, std::fs::read(&key)?))
    );
    assert!(
        !format!("{pem:?}").contains("PRIVATE KEY"),
        "key bytes in Debug output"
    );
    client_config(&good)?;

    let missing_ca = dir.join("no-such-ca.crt");
    let err = ClientPem::read(&ClientFiles {
        ca: missing_ca.clone(),
        identity: None,
    })
    .err()
    .ok_or_else(|| anyhow::anyhow!("missing CA accepted"))?;
    assert!(
        matches!(
            err,
            TlsError::Read {
                role: FileRole::Ca,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, &missing_ca);

    let (_, other_key) = pki.ca.issue_node("chronos", 2).write(dir, "node2")?;
    let mismatched = ClientFiles {
        ca: pki.ca_path.clone(),
        identity: Some((cert.clone(), other_key.clone())),
    };
    for err in [
        ClientPem::read(&mismatched).err(),
        client_config(&mismatched).err(),
    ] {
        let err = err.ok_or_else(|| anyhow::anyhow!("mismatched key accepted"))?;
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        assert_names(&err, &other_key);
    }

    let no_key = ClientFiles {
        ca: pki.ca_path.clone(),
        identity: Some((cert.clone(), cert.clone())),
    };
    let err = ClientPem::read(&no_key)
        .err()
        .ok_or_else(|| anyhow::anyhow!("certificate accepted as a key"))?;
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
    assert_names(&err, &cert);
    Ok(())
}
