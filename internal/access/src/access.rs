//! [`Access`]: the rules in force, built once from a validated config and
//! then only read: who a credential is, and whether they may do an action.
//!
//! The binary keeps one in an `Arc` behind a lock and swaps in a new one on
//! reload; nothing in here changes after [`Access::new`], so readers never
//! wait on each other.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::config::{self, AuthConfig, PrincipalConfig};
use crate::roles::{Action, Permission, Principal};
use crate::token::{self, Digest32};
use crate::AccessError;

/// Who may call, and what they may do.
#[derive(Debug)]
pub struct Access {
    enabled: bool,
    open_metrics: bool,
    open_ready: bool,
    principals: Vec<Arc<Principal>>,
    by_token: HashMap<Digest32, Arc<Principal>>,
    /// Keys lower-cased: DNS names compare without regard to ASCII case.
    by_cert_name: HashMap<String, Arc<Principal>>,
    anonymous: Arc<Principal>,
}

/// Why a request has no principal. Both cases are `UNAUTHENTICATED` to a
/// client; they differ for the operator reading the audit. Neither message
/// contains the presented token or its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    #[error("no credentials: send \"authorization: Bearer <token>\" or a client certificate")]
    NoCredentials,
    #[error("unknown token")]
    UnknownToken,
}

/// A principal asked for something none of its grants covers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Denied {
    pub principal: String,
    pub permission: Permission,
    pub topic: Option<String>,
    pub group: Option<String>,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "principal {:?} may not {}",
            self.principal,
            self.permission.verb()
        )?;
        match (self.permission, &self.topic, &self.group) {
            (Permission::Cluster, _, _) => Ok(()),
            (_, Some(t), Some(g)) => write!(f, " group {g:?} of topic {t:?}"),
            (_, Some(t), None) => write!(f, " topic {t:?}"),
            (_, None, Some(g)) => write!(f, " group {g:?}"),
            (Permission::Describe, None, None) => f.write_str(" the cluster"),
            (_, None, None) => f.write_str(" all topics"),
        }
    }
}

impl Access {
    /// The rules of `cfg` and of `extra` (the principals file's, already
    /// read), after checking both together.
    pub fn new(cfg: &AuthConfig, extra: Vec<PrincipalConfig>) -> Result<Access, AccessError> {
        let compiled = config::check(cfg, Some(&extra))?;
        let mut access = Access {
            enabled: cfg.enabled,
            open_metrics: cfg.open_metrics,
            open_ready: cfg.open_ready,
            ..Access::open()
        };
        for c in compiled {
            let principal = Arc::new(c.principal);
            for digest in c.tokens {
                let before = access.by_token.insert(digest, principal.clone());
                // Validation rejects a hash listed twice.
                debug_assert!(before.is_none(), "token hash listed twice");
            }
            for name in c.cert_names {
                let before = access.by_cert_name.insert(name, principal.clone());
                debug_assert!(before.is_none(), "certificate name listed twice");
            }
            access.principals.push(principal);
        }
        Ok(access)
    }

    /// Authentication off: every caller is the anonymous admin.
    pub fn open() -> Access {
        Access {
            enabled: false,
            open_metrics: true,
            open_ready: true,
            principals: Vec::new(),
            by_token: HashMap::new(),
            by_cert_name: HashMap::new(),
            anonymous: Arc::new(Principal::anonymous_admin()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether `/metrics` needs no credentials.
    pub fn open_metrics(&self) -> bool {
        !self.enabled || self.open_metrics
    }

    /// Whether `/ready` needs no credentials.
    pub fn open_ready(&self) -> bool {
        !self.enabled || self.open_ready
    }

    /// The principal of every caller while authentication is off.
    pub fn anonymous(&self) -> Arc<Principal> {
        self.anonymous.clone()
    }

    /// The configured principals, inline ones first, then the file's.
    pub fn principals(&self) -> &[Arc<Principal>] {
        &self.principals
    }

    pub fn principal(&self, name: &str) -> Option<Arc<Principal>> {
        self.principals.iter().find(|p| p.name == name).cloned()
    }

    /// The principal a bearer token belongs to. With authentication off,
    /// the anonymous admin whatever the token.
    ///
    /// The lookup is by the token's SHA-256, so what a timing difference
    /// could reveal is about digests, from which no token can be recovered.
    pub fn authenticate_token(&self, token: &str) -> Result<Arc<Principal>, Unauthenticated> {
        if !self.enabled {
            return Ok(self.anonymous());
        }
        if token.is_empty() {
            return Err(Unauthenticated::NoCredentials);
        }
        self.by_token
            .get(&token::digest(token))
            .cloned()
            .ok_or(Unauthenticated::UnknownToken)
    }

    /// The principal a client certificate's names (subject CN, DNS SANs)
    /// map to. `None` when none maps, and also when they map to two
    /// different principals: guessing which one was meant could grant more
    /// than either. With authentication off, the anonymous admin.
    pub fn authenticate_cert_names(&self, names: &[String]) -> Option<Arc<Principal>> {
        if !self.enabled {
            return Some(self.anonymous());
        }
        let mut found: Option<&Arc<Principal>> = None;
        for name in names {
            let Some(p) = self.by_cert_name.get(&name.to_ascii_lowercase()) else {
                continue;
            };
            match found {
                Some(f) if !Arc::ptr_eq(f, p) => return None,
                _ => found = Some(p),
            }
        }
        found.cloned()
    }

    /// Whether `principal` may do `action` (rules in [`crate::roles`]).
    pub fn authorize(&self, principal: &Principal, action: &Action<'_>) -> Result<(), Denied> {
        if principal.may(action) {
            return Ok(());
        }
        Err(Denied {
            principal: principal.name.clone(),
            permission: action.permission,
            topic: action.topic.map(str::to_string),
            group: action.group.map(str::to_string),
        })
    }
}

impl Default for Access {
    fn default() -> Access {
        Access::open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GrantConfig;
    use crate::hash_token;
    use crate::Permission::*;

    fn principal(name: &str, token: &str, grants: &[(&str, &str, &str)]) -> PrincipalConfig {
        PrincipalConfig {
            name: name.into(),
            tokens: vec![hash_token(token)],
            cert_names: vec![format!("{name}.clients.example")],
            quota: Default::default(),
            grants: grants
                .iter()
                .map(|(role, topic, group)| GrantConfig {
                    role: role.to_string(),
                    topics: vec![topic.to_string()],
                    groups: vec![group.to_string()],
                })
                .collect(),
        }
    }

    fn access() -> Access {
        let cfg = AuthConfig {
            enabled: true,
            principals: vec![
                principal(
                    "orders-service",
                    "t-orders",
                    &[("producer", "orders.*", "*")],
                ),
                principal("ops", "t-ops", &[("admin", "*", "*")]),
            ],
            ..AuthConfig::default()
        };
        let extra = vec![principal(
            "billing",
            "t-billing",
            &[("consumer", "billing", "billing-*")],
        )];
        Access::new(&cfg, extra).unwrap()
    }

    #[test]
    fn tokens_authenticate_their_principal() {
        let a = access();
        assert_eq!(
            a.authenticate_token("t-orders").unwrap().name,
            "orders-service"
        );
        assert_eq!(a.authenticate_token("t-billing").unwrap().name, "billing");
        assert_eq!(
            a.authenticate_token(""),
            Err(Unauthenticated::NoCredentials)
        );
        let err = a.authenticate_token("t-nobody").unwrap_err();
        assert_eq!(err, Unauthenticated::UnknownToken);
        let msg = err.to_string();
        assert!(!msg.contains("t-nobody") && !msg.contains(&hash_token("t-nobody")[7..]));
    }

    #[test]
    fn certificate_names_authenticate_ignoring_case() {
        let a = access();
        let names = |ns: &[&str]| ns.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p = a.authenticate_cert_names(&names(&["x", "OPS.clients.example"]));
        assert_eq!(p.unwrap().name, "ops");
        assert!(a.authenticate_cert_names(&names(&["x"])).is_none());
        assert!(a.authenticate_cert_names(&[]).is_none());
        // Two principals in one certificate: neither.
        let both = names(&["ops.clients.example", "billing.clients.example"]);
        assert!(a.authenticate_cert_names(&both).is_none());
    }

    #[test]
    fn open_access_lets_everyone_in_as_admin() {
        let a = Access::open();
        assert!(!a.enabled() && a.open_metrics() && a.open_ready());
        let p = a.authenticate_token("anything").unwrap();
        assert_eq!(p.name, Principal::ANONYMOUS);
        assert!(a.authorize(&p, &Action::cluster(Cluster)).is_ok());
        let disabled = Access::new(&AuthConfig::default(), Vec::new()).unwrap();
        assert!(disabled.authenticate_cert_names(&[]).is_some());
    }

    #[test]
    fn metrics_and_ready_follow_the_config_when_enabled() {
        let mut cfg = AuthConfig {
            enabled: true,
            principals: vec![principal("ops", "t", &[("admin", "*", "*")])],
            ..AuthConfig::default()
        };
        cfg.open_metrics = false;
        let a = Access::new(&cfg, Vec::new()).unwrap();
        assert!(!a.open_metrics() && a.open_ready());
    }

    #[test]
    fn denials_say_who_may_not_do_what() {
        let a = access();
        let orders = a.principal("orders-service").unwrap();
        assert!(a
            .authorize(&orders, &Action::on_topic(Publish, "orders.new"))
            .is_ok());
        let denied = |action: Action<'_>| a.authorize(&orders, &action).unwrap_err().to_string();
        assert_eq!(
            denied(Action::on_topic(Publish, "billing")),
            r#"principal "orders-service" may not publish to topic "billing""#
        );
        assert_eq!(
            denied(Action::on_group(Seek, "orders.new", "g2")),
            r#"principal "orders-service" may not seek group "g2" of topic "orders.new""#
        );
        assert_eq!(
            denied(Action::cluster(Cluster)),
            r#"principal "orders-service" may not run cluster operations"#
        );
        assert_eq!(
            denied(Action::cluster(Replay)),
            r#"principal "orders-service" may not replay all topics"#
        );
        let billing = a.principal("billing").unwrap();
        let e = a.authorize(&billing, &Action::on_group(Redrive, "billing", "other"));
        assert_eq!(
            e.unwrap_err().to_string(),
            r#"principal "billing" may not redrive the dead letters of group "other" of topic "billing""#
        );
    }

    #[test]
    fn principals_file_entries_are_checked_with_the_inline_ones() {
        let cfg = AuthConfig {
            enabled: true,
            principals_file: Some("principals.toml".into()),
            principals: vec![principal("ops", "t", &[("admin", "*", "*")])],
            ..AuthConfig::default()
        };
        let err = Access::new(&cfg, vec![principal("ops", "t", &[])]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("principals.toml: principals[0].name: \"ops\" is also the name of auth.principals[0]"),
            "{msg}"
        );
        assert!(
            msg.contains("principals.toml: principals[0].tokens[0]: the same token hash is already listed at auth.principals[0].tokens[0]"),
            "{msg}"
        );
    }
}
