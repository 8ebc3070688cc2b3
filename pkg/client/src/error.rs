//! The client's one error type: gRPC statuses mapped to what a caller can act
//! on, plus the client's own failures (bad endpoint, closed handle).

use std::error::Error as _;

use tonic::{Code, Status};

/// Metadata key in which the server names the node that leads a partition,
/// on an `UNAVAILABLE` answer from a node that does not.
pub const LEADER_HINT: &str = "chronos-leader";

/// Metadata key in which the server names the field an `INVALID_ARGUMENT`
/// is about.
pub const FIELD: &str = "chronos-field";

/// What went wrong with a call.
///
/// Server refusals keep the server's message, which names the offending field
/// (`event.topic: "__x" starts with "__", which is reserved`).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request broke a rule; `field` is the request field it is about
    /// (`event.topic`, `events[3].payload`) when the server named one, and
    /// `message` starts with it.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        message: String,
        field: Option<String>,
    },
    /// No such event, group or partition.
    #[error("not found: {message}")]
    NotFound { message: String },
    /// Something with that identity exists with other content (a schedule id).
    #[error("already exists: {message}")]
    AlreadyExists { message: String },
    /// The request does not fit the current state (e.g. cancelling a fired event).
    #[error("failed precondition: {message}")]
    FailedPrecondition { message: String },
    /// The node could not serve the call now; `leader_hint` is the node id that
    /// leads, when the server knew it. Retried by the client for idempotent calls.
    #[error("unavailable: {message}")]
    Unavailable {
        message: String,
        leader_hint: Option<u64>,
    },
    /// A server limit was hit (e.g. its disk is full).
    #[error("resource exhausted: {message}")]
    ResourceExhausted { message: String },
    /// The call did not finish within its deadline
    /// ([`ClientOptions::request_timeout`](crate::ClientOptions)). Retried by
    /// the client for idempotent calls.
    #[error("deadline exceeded: {message}")]
    DeadlineExceeded { message: String },
    /// The connection failed or broke (refused, reset, HTTP/2 error).
    /// Retried by the client for idempotent calls.
    #[error("transport: {message}")]
    Transport { message: String },
    /// No credentials, or credentials the server does not accept.
    #[error("unauthenticated: {message}")]
    Unauthenticated { message: String },
    /// The caller is known but may not do this; `message` names what it lacks.
    #[error("permission denied: {message}")]
    PermissionDenied { message: String },
    /// A client option is unusable (a TLS file that cannot be read, a token
    /// with spaces); `field` names it.
    #[error("{field}: {message}")]
    InvalidOption { field: String, message: String },
    /// An address passed to [`Client::connect`](crate::Client::connect) is not a URI.
    #[error("invalid endpoint {addr:?}: {message}")]
    InvalidEndpoint { addr: String, message: String },
    /// The producer or consumer was closed, or its background task ended.
    #[error("closed: {0}")]
    Closed(&'static str),
    /// The server answered something this client cannot make sense of.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Any other gRPC status (INTERNAL, UNKNOWN, ...).
    #[error("{code:?}: {message}")]
    Other { code: Code, message: String },
}

impl Error {
    /// True for failures that may pass on another attempt or another node:
    /// `Unavailable`, `Transport` and `DeadlineExceeded`.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. } | Error::Transport { .. } | Error::DeadlineExceeded { .. }
        )
    }

    /// The node id the server named as leader, if this is such a refusal.
    pub fn leader_hint(&self) -> Option<u64> {
        match self {
            Error::Unavailable { leader_hint, .. } => *leader_hint,
            _ => None,
        }
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        let message = status.message().to_string();
        // A status the server sent has no source; one tonic made from a
        // connection or HTTP/2 failure carries that failure as its source.
        if let Some(source) = status.source() {
            if matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
            ) {
                return Error::Transport {
                    message: format!("{message}: {}", chain(source)),
                };
            }
        }
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => Error::InvalidArgument {
                field: status
                    .metadata()
                    .get(FIELD)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                message,
            },
            Code::NotFound => Error::NotFound { message },
            Code::AlreadyExists => Error::AlreadyExists { message },
            Code::Unauthenticated => Error::Unauthenticated { message },
            Code::PermissionDenied => Error::PermissionDenied { message },
            Code::FailedPrecondition => Error::FailedPrecondition { message },
            Code::Unavailable => Error::Unavailable {
                leader_hint: status
                    .metadata()
                    .get(LEADER_HINT)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok()),
                message,
            },
            Code::ResourceExhausted => Error::ResourceExhausted { message },
            Code::DeadlineExceeded => Error::DeadlineExceeded { message },
            code => Error::Other { code, message },
        }
    }
}

impl From<tonic::transport::Error> for Error {
    fn from(e: tonic::transport::Error) -> Self {
        Error::Transport { message: chain(&e) }
    }
}

/// An error and its sources, `a: b: c`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_statuses_map_to_variants() {
        let mut s = Status::invalid_argument("event.topic: is empty");
        s.metadata_mut()
            .insert(FIELD, "event.topic".parse().unwrap());
        let e = Error::from(s);
        assert!(
            matches!(&e, Error::InvalidArgument { message, field: Some(f) }
                if message.starts_with("event.topic") && f == "event.topic"),
            "{e:?}"
        );
        assert!(!e.is_retryable());
        let mut s = Status::unavailable("not leader");
        s.metadata_mut().insert(LEADER_HINT, "3".parse().unwrap());
        let e = Error::from(s);
        assert_eq!(e.leader_hint(), Some(3));
        assert!(e.is_retryable());
        assert!(matches!(
            Error::from(Status::not_found("x")),
            Error::NotFound { .. }
        ));
        assert!(matches!(
            Error::from(Status::internal("x")),
            Error::Other {
                code: Code::Internal,
                ..
            }
        ));
    }

    #[test]
    fn statuses_with_a_source_are_transport_errors() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let status = Status::from_error(Box::new(io));
        let e = Error::from(status);
        assert!(matches!(e, Error::Transport { .. }), "{e:?}");
        assert!(e.is_retryable());
    }
}
