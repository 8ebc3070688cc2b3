//! The `[auth]` section the binary embeds in its TOML config, the principals
//! file, and their validation.
//!
//! Validation reports every problem at once, each with the path of the field
//! (`auth.principals[1].tokens[0]: ...`), and on success yields the compiled
//! principals [`crate::Access`] is built from, so the rules are parsed in
//! exactly one place.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::roles::{Grant, Principal, Role};
use crate::token::{self, Digest32};
use crate::AccessError;

/// `[auth]`: who may call. Off by default, so a zero-config node stays open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Authenticate and authorize every request.
    pub enabled: bool,
    /// A TOML file of more `[[principals]]` (same shape), re-read on reload
    /// so tokens rotate without touching the main config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principals_file: Option<PathBuf>,
    /// `/metrics` without a token.
    pub open_metrics: bool,
    /// `/ready` without a token (`/health` is always open).
    pub open_ready: bool,
    pub principals: Vec<PrincipalConfig>,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            enabled: false,
            principals_file: None,
            open_metrics: true,
            open_ready: true,
            principals: Vec::new(),
        }
    }
}

impl AuthConfig {
    /// Checks the section as written (the principals file is not read: the
    /// binary does that when it builds [`crate::Access`], which checks again
    /// with the file's principals included).
    pub fn validate(&self) -> Result<(), AccessError> {
        check(self, None).map(drop)
    }
}

/// `[[auth.principals]]`: one caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    pub name: String,
    /// `sha256:<64 hex>` of each accepted token; several so that a token can
    /// be rotated (add the new, deploy, remove the old).
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Client certificate names (subject CN or a DNS SAN) that authenticate
    /// as this principal; compared ignoring ASCII case, as DNS names are.
    #[serde(default)]
    pub cert_names: Vec<String>,
    #[serde(default)]
    pub quota: QuotaConfig,
    #[serde(default)]
    pub grants: Vec<GrantConfig>,
}

/// Per-principal limits; an absent field is no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_events_per_sec: Option<u64>,
    /// Payload bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_bytes_per_sec: Option<u64>,
    /// Concurrent Subscribe streams.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_streams: Option<u32>,
}

/// `[[auth.principals.grants]]`: a role over topic and group patterns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    /// admin | producer | consumer | viewer (checked by validation, so the
    /// error can name the field).
    pub role: String,
    #[serde(default = "everything")]
    pub topics: Vec<String>,
    #[serde(default = "everything")]
    pub groups: Vec<String>,
}

fn everything() -> Vec<String> {
    vec!["*".to_string()]
}

/// The shape of `auth.principals_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalsFile {
    #[serde(default)]
    principals: Vec<PrincipalConfig>,
}

/// Reads `auth.principals_file`: a TOML file of `[[principals]]` tables.
pub fn read_principals_file(path: &Path) -> Result<Vec<PrincipalConfig>, AccessError> {
    let text = std::fs::read_to_string(path).map_err(|source| AccessError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file: PrincipalsFile = toml::from_str(&text).map_err(|source| AccessError::Parse {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    Ok(file.principals)
}

/// One problem in the config, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// e.g. `auth.principals[1].tokens[0]`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A principal as [`crate::Access`] needs it: the rules, and the credentials
/// that lead to them.
pub(crate) struct Compiled {
    pub principal: Principal,
    pub tokens: Vec<Digest32>,
    /// Lower-cased.
    pub cert_names: Vec<String>,
}

/// Validates the inline principals and, when given (`extra`, read from the
/// principals file), those too, across both: names, token hashes and
/// certificate names must each lead to one principal.
pub(crate) fn check(
    cfg: &AuthConfig,
    extra: Option<&[PrincipalConfig]>,
) -> Result<Vec<Compiled>, AccessError> {
    let extra_prefix = match &cfg.principals_file {
        Some(file) => format!("{}: principals", file.display()),
        None => "extra principals".to_string(),
    };
    let mut listed: Vec<(String, &PrincipalConfig)> = Vec::new();
    for (i, p) in cfg.principals.iter().enumerate() {
        listed.push((format!("auth.principals[{i}]"), p));
    }
    for (i, p) in extra.unwrap_or_default().iter().enumerate() {
        listed.push((format!("{extra_prefix}[{i}]"), p));
    }

    let mut errors = Vec::new();
    let compiled: Vec<Compiled> = listed
        .iter()
        .map(|(path, p)| compile(path, p, &mut errors))
        .collect();
    duplicates(&listed, &mut errors);

    let file_unread = extra.is_none() && cfg.principals_file.is_some();
    if cfg.enabled && listed.is_empty() && !file_unread {
        errors.push(FieldError {
            path: "auth.principals".into(),
            message: "auth is enabled but no principal is configured (here or in \
                      auth.principals_file): no request could authenticate"
                .into(),
        });
    }
    if errors.is_empty() {
        Ok(compiled)
    } else {
        Err(AccessError::Invalid(errors))
    }
}

/// Checks one principal's own fields; what is wrong is left out of the
/// result (which is then discarded, as `errors` is not empty).
fn compile(path: &str, p: &PrincipalConfig, errors: &mut Vec<FieldError>) -> Compiled {
    let mut bad = |field: String, message: &str| {
        errors.push(FieldError {
            path: format!("{path}.{field}"),
            message: message.to_string(),
        })
    };
    if p.name.trim().is_empty() {
        bad("name".into(), "must not be empty");
    } else if p.name.chars().any(char::is_control) {
        bad("name".into(), "must not contain control characters");
    }

    let mut tokens = Vec::new();
    for (j, t) in p.tokens.iter().enumerate() {
        match token::parse_hash(t) {
            Some(d) => tokens.push(d),
            None if t.starts_with(token::TOKEN_PREFIX) => bad(
                format!("tokens[{j}]"),
                "expected \"sha256:\" and 64 hex digits: list the hash of a token \
                 (`chronos token hash`), never the token itself",
            ),
            None => bad(
                format!("tokens[{j}]"),
                "expected \"sha256:\" and 64 hex digits",
            ),
        }
    }

    let mut cert_names = Vec::new();
    for (j, n) in p.cert_names.iter().enumerate() {
        if n.trim().is_empty() {
            bad(format!("cert_names[{j}]"), "must not be empty");
        } else {
            cert_names.push(n.to_ascii_lowercase());
        }
    }

    let q = &p.quota;
    let at_least_one = "must be at least 1 (leave it out for no limit)";
    if q.publish_events_per_sec == Some(0) {
        bad("quota.publish_events_per_sec".into(), at_least_one);
    }
    if q.publish_bytes_per_sec == Some(0) {
        bad("quota.publish_bytes_per_sec".into(), at_least_one);
    }
    if q.max_streams == Some(0) {
        bad("quota.max_streams".into(), at_least_one);
    }

    let mut grants = Vec::new();
    for (k, g) in p.grants.iter().enumerate() {
        let role = g.role.parse::<Role>();
        if let Err(e) = &role {
            bad(format!("grants[{k}].role"), &e.to_string());
        }
        for (field, patterns) in [("topics", &g.topics), ("groups", &g.groups)] {
            if patterns.is_empty() {
                bad(
                    format!("grants[{k}].{field}"),
                    "lists no pattern, so the grant allows nothing (leave it out for [\"*\"])",
                );
            }
            for (m, pat) in patterns.iter().enumerate() {
                if pat.is_empty() {
                    bad(
                        format!("grants[{k}].{field}[{m}]"),
                        "empty pattern (use \"*\" for any name)",
                    );
                }
            }
        }
        if let Ok(role) = role {
            grants.push(Grant {
                role,
                topics: g.topics.clone(),
                groups: g.groups.clone(),
            });
        }
    }

    Compiled {
        principal: Principal {
            name: p.name.clone(),
            grants,
            quota: p.quota.clone(),
        },
        tokens,
        cert_names,
    }
}

/// Names, token hashes and certificate names that appear twice.
fn duplicates(listed: &[(String, &PrincipalConfig)], errors: &mut Vec<FieldError>) {
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut tokens: HashMap<Digest32, String> = HashMap::new();
    let mut certs: HashMap<String, String> = HashMap::new();
    for (path, p) in listed {
        if let Some(first) = names.insert(&p.name, path) {
            errors.push(FieldError {
                path: format!("{path}.name"),
                message: format!("{:?} is also the name of {first}", p.name),
            });
        }
        // Indices into `tokens`/`cert_names` as written, for the message.
        let written_tokens = p
            .tokens
            .iter()
            .enumerate()
            .filter_map(|(j, t)| token::parse_hash(t).map(|d| (j, d)));
        for (j, digest) in written_tokens {
            let here = format!("{path}.tokens[{j}]");
            if let Some(first) = tokens.get(&digest) {
                errors.push(FieldError {
                    message: format!("the same token hash is already listed at {first}"),
                    path: here,
                });
            } else {
                tokens.insert(digest, here);
            }
        }
        let written_certs = p
            .cert_names
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.trim().is_empty());
        for (j, name) in written_certs {
            let here = format!("{path}.cert_names[{j}]");
            let key = name.to_ascii_lowercase();
            if let Some(first) = certs.get(&key) {
                errors.push(FieldError {
                    message: format!("{name:?} is already listed at {first}"),
                    path: here,
                });
            } else {
                certs.insert(key, here);
            }
        }
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
