//! Throwaway certificate authorities and certificates for tests (feature
//! `test-certs`): a [`TestCa`] issues server, node and client certificates
//! (valid or expired) and writes them as PEM files where a server's or
//! client's configuration can point.
//!
//! Everything here panics instead of returning errors, except writing files:
//! a failure to generate a key or encode a certificate is a bug in the test,
//! and the message says which call failed.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

/// A self-signed certificate authority that issues certificates for tests.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate issued by a [`TestCa`], with its private key.
#[derive(Clone)]
pub struct Issued {
    /// The certificate as PEM (the leaf alone; the CA is the trust anchor).
    pub cert_pem: String,
    /// The certificate as DER, e.g. for [`crate::node_id_in`].
    pub cert_der: Vec<u8>,
    /// The private key as PKCS#8 PEM.
    pub key_pem: String,
}

impl TestCa {
    /// A new CA whose certificate's common name is `name`.
    ///
    /// # Panics
    /// If the key cannot be generated or the certificate encoded.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("TestCa::new: generating the CA key");
        let issuer = CertifiedIssuer::self_signed(params, key)
            .expect("TestCa::new: self-signing the CA certificate");
        TestCa { issuer }
    }

    /// The CA certificate as PEM: what a peer should trust.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate as DER.
    pub fn cert_der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    /// Writes the CA certificate to `dir/<stem>.crt` and returns that path.
    pub fn write(&self, dir: &Path, stem: &str) -> io::Result<PathBuf> {
        let path = dir.join(format!("{stem}.crt"));
        write_atomically(&path, self.cert_pem().as_bytes())?;
        Ok(path)
    }

    /// A certificate for `names` — DNS names, or IP addresses such as
    /// `127.0.0.1` — usable both to serve and as a client (node-to-node
    /// channels need both). Its common name is the first name.
    ///
    /// # Panics
    /// If a name is not a valid DNS name or IP, or signing fails.
    pub fn issue(&self, names: &[&str]) -> Issued {
        let cn = names.first().copied().unwrap_or("chronos test leaf");
        self.sign(leaf_params(cn, names, &BOTH_WAYS))
    }

    /// As [`TestCa::issue`], but valid only during the year 2000.
    pub fn issue_expired(&self, names: &[&str]) -> Issued {
        let cn = names.first().copied().unwrap_or("chronos expired leaf");
        let mut params = leaf_params(cn, names, &BOTH_WAYS);
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = date_time_ymd(2001, 1, 1);
        self.sign(params)
    }

    /// The certificate node `id` of `cluster` uses: names
    /// [`crate::node_name`], `localhost` and `127.0.0.1`.
    pub fn issue_node(&self, cluster: &str, id: u64) -> Issued {
        let name = crate::node_name(cluster, id);
        self.issue(&[&name, "localhost", "127.0.0.1"])
    }

    /// A client-only certificate with common name `cn` and subject
    /// alternative names `sans` (DNS names or IPs).
    ///
    /// # Panics
    /// As [`TestCa::issue`].
    pub fn issue_client(&self, cn: &str, sans: &[&str]) -> Issued {
        self.sign(leaf_params(
            cn,
            sans,
            &[ExtendedKeyUsagePurpose::ClientAuth],
        ))
    }

    fn sign(&self, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().expect("TestCa: generating a leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("TestCa: signing a leaf certificate");
        Issued {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Issued {
    /// Writes `dir/<stem>.crt` and `dir/<stem>.key` and returns their paths.
    /// Each file is replaced atomically, so a server reloading concurrently
    /// sees the old or the new file, never half of one.
    pub fn write(&self, dir: &Path, stem: &str) -> io::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        write_atomically(&cert, self.cert_pem.as_bytes())?;
        write_atomically(&key, self.key_pem.as_bytes())?;
        Ok((cert, key))
    }
}

const BOTH_WAYS: [ExtendedKeyUsagePurpose; 2] = [
    ExtendedKeyUsagePurpose::ServerAuth,
    ExtendedKeyUsagePurpose::ClientAuth,
];

fn leaf_params(cn: &str, names: &[&str], usages: &[ExtendedKeyUsagePurpose]) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = names.iter().map(|name| san(name)).collect();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages.to_vec();
    params.use_authority_key_identifier_extension = true;
    params
}

fn san(name: &str) -> SanType {
    match name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(
            name.try_into()
                .unwrap_or_else(|e| panic!("TestCa: {name:?} is not a DNS name: {e}")),
        ),
    }
}

fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}
