//! What a client presents to a secured server: TLS (the CA it trusts and,
//! optionally, a client certificate) and a bearer token sent with every call.

use std::path::Path;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Request, Status};

use crate::Error;

/// TLS for a client: PEM bytes of the CA that signed the server's
/// certificate, and optionally a client certificate and its key.
#[derive(Clone, Default)]
pub struct Tls {
    pub ca_pem: Vec<u8>,
    /// Client certificate chain and key, for servers that map client
    /// certificates to principals.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the server's certificate must carry, when it is not the
    /// host of the address dialled.
    pub domain: Option<String>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("identity", &self.identity.is_some())
            .field("domain", &self.domain)
            .finish()
    }
}

impl Tls {
    /// Reads the CA and (both or neither) the client certificate and key.
    pub fn from_files(ca: &Path, cert: Option<&Path>, key: Option<&Path>) -> Result<Tls, Error> {
        let read = |field: &str, path: &Path| {
            std::fs::read(path).map_err(|e| Error::InvalidOption {
                field: field.into(),
                message: format!("{}: {e}", path.display()),
            })
        };
        let identity = match (cert, key) {
            (None, None) => None,
            (Some(c), Some(k)) => Some((read("tls_cert", c)?, read("tls_key", k)?)),
            _ => {
                return Err(Error::InvalidOption {
                    field: "tls_cert".into(),
                    message: "a client certificate needs its key (give both or neither)".into(),
                })
            }
        };
        Ok(Tls {
            ca_pem: read("tls_ca", ca)?,
            identity,
            domain: None,
        })
    }

    /// The TLS settings of a tonic endpoint.
    pub fn config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        config
    }
}

/// Adds `authorization: Bearer <token>` to every call, when there is a token.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Result<Bearer, Error> {
        let Some(token) = token else {
            return Ok(Bearer(None));
        };
        // The message names the option, never the secret.
        let bad = |message: &str| Error::InvalidOption {
            field: "token".into(),
            message: message.into(),
        };
        if token.is_empty() {
            return Err(bad("is empty"));
        }
        if !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(bad("must be printable ASCII without spaces"));
        }
        let value = format!("Bearer {token}")
            .parse::<MetadataValue<Ascii>>()
            .map_err(|_| bad("must be printable ASCII without spaces"))?;
        Ok(Bearer(Some(value)))
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer(<token>)"
        } else {
            "Bearer(none)"
        })
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel that presents the client's token with every call.
pub type Conn = InterceptedService<Channel, Bearer>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_and_never_shown() {
        assert!(Bearer::new(None).unwrap().0.is_none());
        let b = Bearer::new(Some("chr_abc")).unwrap();
        assert_eq!(format!("{b:?}"), "Bearer(<token>)");
        for bad in ["", "a b", "tab\there", "é"] {
            let err = Bearer::new(Some(bad)).unwrap_err().to_string();
            assert!(err.contains("token"), "{err}");
            assert!(bad.is_empty() || !err.contains(bad), "{err}");
        }
    }
}
