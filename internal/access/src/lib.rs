//! Who may do what, and how much.
//!
//! Owns:
//! - the `[auth]` and `[audit]` config sections and their validation
//!   ([`config`], [`AuditConfig`]);
//! - credentials: bearer tokens (stored only as `sha256:<hex>`, see
//!   [`hash_token`], [`new_token`]) and client certificate names, each
//!   leading to one [`Principal`];
//! - the rules: [`Permission`]s bundled into [`Role`]s, granted over topic
//!   and group glob patterns, and the decision [`Access::authorize`];
//! - per-principal quotas ([`Quotas`]): publish rates and concurrent streams;
//! - the audit log file ([`Audit`]): JSON lines, rotated by size.
//!
//! Does not own: reading credentials off a request (the API layer and the
//! binary's TLS listeners do that and hand over a token or certificate
//! names), mapping errors to gRPC statuses (the API layer, in one place),
//! when to reload (the binary swaps in a new [`Access`] on SIGHUP), or
//! which API call needs which [`Action`] (each service method says).
//!
//! **Authentication is off by default**: a zero-config single node is open,
//! and every caller is [`Principal::anonymous_admin`].
//!
//! # Example
//!
//! The section as it appears in the binary's config file:
//!
//! ```
//! # #[derive(serde::Deserialize)]
//! # struct Config { auth: chronos_access::AuthConfig }
//! # let text = r#"
//! [auth]
//! ## Off by default (a zero-config single node stays open). On when true.
//! enabled = true
//! ## Optional extra file with more [[principals]] (same shape), re-read on
//! ## reload, so tokens rotate without touching the main config.
//! principals_file = "principals.toml"
//! ## /metrics and /ready without a token (default true); /health is always open.
//! open_metrics = true
//! open_ready = true
//!
//! [[auth.principals]]
//! name = "orders-service"
//! ## sha256 of each token ("chronos token hash"). Several, so a token can be
//! ## rotated: add the new, deploy, remove the old.
//! tokens = ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
//! ## Client certificate names (subject CN or a DNS SAN) that authenticate as
//! ## this principal.
//! cert_names = ["orders.clients.example"]
//! ## Optional quotas (absent = unlimited).
//! quota = { publish_events_per_sec = 5000, publish_bytes_per_sec = 5000000, max_streams = 16 }
//!
//! [[auth.principals.grants]]
//! role = "producer"          # admin | producer | consumer | viewer
//! topics = ["orders.*"]      # glob patterns; default ["*"]
//!
//! [[auth.principals.grants]]
//! role = "consumer"
//! topics = ["orders.*"]
//! groups = ["orders-*"]      # consumer group patterns; default ["*"]
//! # "#;
//! # let config: Config = toml::from_str(text).unwrap();
//! # config.auth.validate().unwrap();
//! ```

pub mod access;
pub mod audit;
pub mod config;
pub mod glob;
pub mod quota;
pub mod roles;
pub mod token;

use std::fmt;
use std::path::PathBuf;

pub use access::{Access, Denied, Unauthenticated};
pub use audit::{Audit, AuditConfig, AuditError, AuditRecord};
pub use config::{
    read_principals_file, AuthConfig, FieldError, GrantConfig, PrincipalConfig, QuotaConfig,
};
pub use quota::{OverQuota, Quotas, StreamGuard};
pub use roles::{Action, Grant, Permission, Principal, Role};
pub use token::{hash_token, new_token};

/// Why the rules could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Every problem found, each naming its field.
    #[error("{}", Problems(.0))]
    Invalid(Vec<FieldError>),
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
}

struct Problems<'a>(&'a [FieldError]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
