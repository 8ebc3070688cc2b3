//! Who calls, and whether they may: the edge of the public API.
//!
//! Owns: authenticating a request where it enters the cluster (a bearer
//! token, or a client certificate whose names map to a principal),
//! authorizing each action against the principal's grants, charging its
//! quotas, and writing the audit log (state changes and every denial).
//! A request another node forwarded was checked at its edge: it carries the
//! caller's name (`chronos-principal`, trusted only on the node-to-node
//! listener, which admits nothing but the cluster's nodes) for the audit, and
//! is not checked again.
//! Does not own: the rules themselves (`chronos-access`), TLS (the binary's
//! listeners).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chronos_access::{
    Access, Action, Audit, AuditRecord, OverQuota, Principal, Quotas, StreamGuard,
};
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Code, Request, Status};

/// The caller's principal, as a forwarded request names it.
pub const PRINCIPAL: &str = "chronos-principal";

/// Who sent a request, set on it by the listener it arrived on.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A client of this node, authenticated here.
    Edge(Arc<Principal>),
    /// Another node, passing on a request its edge admitted for this principal.
    Node { principal: String },
}

impl Caller {
    pub fn name(&self) -> &str {
        match self {
            Caller::Edge(p) => &p.name,
            Caller::Node { principal } => principal,
        }
    }

    pub fn of<T>(request: &Request<T>) -> Result<Caller, Status> {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Status::internal("request reached a service without a listener's guard"))
    }
}

/// The rules in force (swapped whole on SIGHUP), quotas and the audit log.
pub struct Guard {
    access: parking_lot::RwLock<Arc<Access>>,
    quotas: Quotas,
    audit: Audit,
    node_id: u64,
}

impl Guard {
    pub fn new(access: Access, audit: Audit, node_id: u64) -> Guard {
        Guard {
            access: parking_lot::RwLock::new(Arc::new(access)),
            quotas: Quotas::default(),
            audit,
            node_id,
        }
    }

    pub fn access(&self) -> Arc<Access> {
        self.access.read().clone()
    }

    /// Puts new rules in force (principals and tokens re-read).
    pub fn replace(&self, access: Access) {
        *self.access.write() = Arc::new(access);
        self.record("system", "reload_principals", "auth", "ok", None);
    }

    /// The principal a client request authenticates as.
    pub fn authenticate(
        &self,
        md: &MetadataMap,
        cert_names: impl FnOnce() -> Vec<String>,
    ) -> Result<Arc<Principal>, Status> {
        let access = self.access();
        if !access.enabled() {
            return Ok(access.anonymous());
        }
        if let Some(value) = md.get("authorization") {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| {
                    Status::unauthenticated("authorization: expected \"Bearer <token>\"")
                })?;
            return access.authenticate_token(token.trim()).map_err(|e| {
                self.record("?", "authenticate", "token", "denied", Some(e.to_string()));
                Status::unauthenticated(e.to_string())
            });
        }
        let names = cert_names();
        if let Some(p) = access.authenticate_cert_names(&names) {
            return Ok(p);
        }
        let why = if names.is_empty() {
            "no credentials: send \"authorization: Bearer <token>\" or a client certificate"
                .to_string()
        } else {
            format!("client certificate {names:?} maps to no principal")
        };
        self.record(
            "?",
            "authenticate",
            "certificate",
            "denied",
            Some(why.clone()),
        );
        Err(Status::unauthenticated(why))
    }

    /// Whether the caller may do `action`: always for a forwarded request
    /// (its edge decided); denials are audited.
    pub fn authorize(&self, caller: &Caller, action: &Action) -> Result<(), Status> {
        let Caller::Edge(principal) = caller else {
            return Ok(());
        };
        self.access()
            .authorize(principal, action)
            .map_err(|denied| {
                let msg = denied.to_string();
                self.record(
                    &principal.name,
                    action.permission.name(),
                    &target(action),
                    "denied",
                    Some(msg.clone()),
                );
                Status::permission_denied(msg)
            })
    }

    /// Charges a publish of `events` events and `bytes` payload bytes to the
    /// caller's quota (at the edge only).
    pub fn charge_publish(&self, caller: &Caller, events: u64, bytes: u64) -> Result<(), Status> {
        let Caller::Edge(principal) = caller else {
            return Ok(());
        };
        self.quotas
            .charge_publish(principal, events, bytes, Instant::now())
            .map_err(|over| self.over_quota(principal, "publish", over))
    }

    /// Counts an open stream against the caller's quota until the guard drops.
    pub fn open_stream(&self, caller: &Caller) -> Result<Option<StreamGuard>, Status> {
        let Caller::Edge(principal) = caller else {
            return Ok(None);
        };
        self.quotas
            .open_stream(principal)
            .map(Some)
            .map_err(|over| self.over_quota(principal, "subscribe", over))
    }

    fn over_quota(&self, principal: &Principal, action: &str, over: OverQuota) -> Status {
        let msg = format!(
            "principal {:?} is over its quota {}: retry after {} ms",
            principal.name,
            over.what,
            over.retry_after.as_millis()
        );
        self.record(
            &principal.name,
            action,
            over.what,
            "denied",
            Some(msg.clone()),
        );
        over_quota_status(msg, over.retry_after)
    }

    /// Audits a state-changing action once, where it entered the cluster.
    pub fn audit<T>(
        &self,
        caller: &Caller,
        action: &str,
        target: &str,
        result: &Result<T, Status>,
    ) {
        if !matches!(caller, Caller::Edge(_)) {
            return;
        }
        let (outcome, detail) = match result {
            Ok(_) => ("ok", None),
            Err(s) if s.code() == Code::PermissionDenied => {
                ("denied", Some(s.message().to_string()))
            }
            Err(s) => ("error", Some(format!("{:?}: {}", s.code(), s.message()))),
        };
        self.record(caller.name(), action, target, outcome, detail);
    }

    fn record(
        &self,
        principal: &str,
        action: &str,
        target: &str,
        result: &str,
        detail: Option<String>,
    ) {
        self.audit.record(&AuditRecord {
            principal: principal.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            result: result.to_string(),
            detail,
            node: self.node_id,
        });
    }
}

/// `RESOURCE_EXHAUSTED` with the wait in the status details (google.rpc.RetryInfo)
/// and in `retry-after-ms` metadata for clients that read no details.
fn over_quota_status(msg: String, retry_after: Duration) -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    let mut status = Status::with_error_details(
        Code::ResourceExhausted,
        msg,
        ErrorDetails::with_retry_info(Some(retry_after)),
    );
    if let Ok(v) = retry_after.as_millis().to_string().parse() {
        status.metadata_mut().insert("retry-after-ms", v);
    }
    status
}

fn target(action: &Action) -> String {
    match (action.topic, action.group) {
        (Some(t), Some(g)) => format!("topic={t} group={g}"),
        (Some(t), None) => format!("topic={t}"),
        (None, Some(g)) => format!("group={g}"),
        (None, None) => "cluster".into(),
    }
}

/// The listener's half of the guard: sets [`Caller`] on each request.
#[derive(Clone)]
pub enum Gate {
    /// The public listener: authenticate the client.
    Edge(Arc<crate::Node>),
    /// The node-to-node listener: trust the forwarding node's word.
    Internal,
}

impl Interceptor for Gate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = match self {
            Gate::Edge(node) => {
                let certs = request.peer_certs();
                let principal = node.guard.authenticate(request.metadata(), || {
                    certs
                        .and_then(|c| c.first().map(|leaf| chronos_tls::cert_names(leaf)))
                        .unwrap_or_default()
                })?;
                Caller::Edge(principal)
            }
            Gate::Internal => Caller::Node {
                principal: request
                    .metadata()
                    .get(PRINCIPAL)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?")
                    .to_string(),
            },
        };
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}
