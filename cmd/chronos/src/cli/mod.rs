//! The client subcommands: `publish`, `subscribe`, `replay`, `cancel`, `describe`,
//! `status`, `groups`, `dlq`, `cluster`, `schedules`. Each talks to a node over the public gRPC API,
//! prints people-friendly text (or one JSON object per line with `--json`),
//! and exits 0 on success, 1 on a usage error, 2 when the server refused or
//! could not be reached — printing the server's message.

mod admin;
mod events;
mod output;
mod schedules;

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chronos_proto::v1::admin_service_client::AdminServiceClient;
use chronos_proto::v1::event_service_client::EventServiceClient;
use clap::Subcommand;
use tonic::transport::Endpoint;

pub use admin::{ClusterCommand, DlqCommand, GroupsCommand};
pub use events::{CancelArgs, DescribeArgs, PublishArgs, ReplayArgs, SubscribeArgs};
pub use schedules::SchedulesCommand;

/// How to reach the node; shared by every client subcommand.
#[derive(clap::Args, Clone, Debug)]
pub struct Conn {
    /// The node's gRPC address; several, comma-separated, are tried in
    /// turn until one answers (any node serves every partition).
    #[arg(
        long,
        env = "CHRONOS_ADDR",
        default_value = "http://127.0.0.1:9000",
        global = true
    )]
    pub addr: String,
    /// CA certificate (PEM) to trust for a server with TLS; `host:port`
    /// addresses then mean https.
    #[arg(long, env = "CHRONOS_TLS_CA", global = true)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM), for servers that map certificates to principals.
    #[arg(long, env = "CHRONOS_TLS_CERT", global = true, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "CHRONOS_TLS_KEY", global = true, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Bearer token (better from the environment than the command line,
    /// where other users of the machine can see it).
    #[arg(long, env = "CHRONOS_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON (one object per line) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Publish one event (payload from the argument, --file, or stdin).
    Publish(PublishArgs),
    /// Receive a topic's events as a member of a consumer group, acking each.
    Subscribe(SubscribeArgs),
    /// Stream stored events by offset, publish-time or due-time range.
    Replay(ReplayArgs),
    /// Stop a pending event from firing.
    Cancel(CancelArgs),
    /// Where one event stands: pending, fired or cancelled, and per consumer group.
    Describe(DescribeArgs),
    /// The node, its partitions, their leaders and log positions.
    Status,
    /// List, describe or seek consumer groups.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// List or redrive a group's dead letters.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Cluster operations: `rebalance` leaders.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Recurring schedules: create, update, list, get, pause, resume, delete, trigger.
    #[command(subcommand)]
    Schedules(SchedulesCommand),
}

/// Why a client command failed, and so its exit code.
pub enum Failure {
    /// Bad arguments: exit 1.
    Usage(String),
    /// The server refused or was unreachable: exit 2.
    Server(String),
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Failure {
        Failure::Server(format!("{:?}: {}", s.code(), s.message()))
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

pub fn run(conn: Conn, cmd: ClientCommand) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    let runtime = match crate::runtime(&mut builder) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let result = runtime.block_on(async move {
        match cmd {
            ClientCommand::Publish(a) => events::publish(&conn, a).await,
            ClientCommand::Subscribe(a) => events::subscribe(&conn, a).await,
            ClientCommand::Replay(a) => events::replay(&conn, a).await,
            ClientCommand::Cancel(a) => events::cancel(&conn, a).await,
            ClientCommand::Describe(a) => events::describe(&conn, a).await,
            ClientCommand::Status => admin::status(&conn).await,
            ClientCommand::Groups(c) => admin::groups(&conn, c).await,
            ClientCommand::Dlq(c) => admin::dlq(&conn, c).await,
            ClientCommand::Cluster(c) => admin::cluster(&conn, c).await,
            ClientCommand::Schedules(c) => schedules::schedules(&conn, c).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("chronos: {msg}");
            ExitCode::from(1)
        }
        Err(Failure::Server(msg)) => {
            eprintln!("chronos: {msg}");
            ExitCode::from(2)
        }
    }
}

async fn channel(conn: &Conn) -> Result<chronos_client::Conn> {
    let usage = |e: chronos_client::Error| match e {
        chronos_client::Error::InvalidOption { field, message } => {
            Failure::Usage(format!("--{}: {message}", field.replace('_', "-")))
        }
        other => Failure::Usage(other.to_string()),
    };
    let tls = match &conn.tls_ca {
        None => None,
        Some(ca) => Some(
            chronos_client::Tls::from_files(ca, conn.tls_cert.as_deref(), conn.tls_key.as_deref())
                .map_err(usage)?,
        ),
    };
    let bearer = chronos_client::Bearer::new(conn.token.as_deref()).map_err(usage)?;
    let nodes: Vec<&str> = conn.addr.split(',').map(str::trim).collect();
    if nodes.iter().any(|n| n.is_empty()) {
        return Err(Failure::Usage(format!(
            "--addr {:?}: an empty address",
            conn.addr
        )));
    }
    let mut unreachable = Vec::new();
    for node in nodes {
        let addr = match (&tls, node.contains("://")) {
            (Some(_), false) => format!("https://{node}"),
            (None, false) => format!("http://{node}"),
            (_, true) => node.to_string(),
        };
        let mut endpoint = Endpoint::from_shared(addr.clone())
            .map_err(|e| Failure::Usage(format!("--addr {node:?}: {e}")))?
            .connect_timeout(Duration::from_secs(5));
        if let Some(tls) = &tls {
            endpoint = endpoint
                .tls_config(tls.config())
                .map_err(|e| Failure::Usage(format!("--tls-ca: {e}")))?;
        }
        match endpoint.connect().await {
            Ok(channel) => return Ok(chronos_client::Conn::new(channel, bearer)),
            Err(e) => unreachable.push(format!("{addr}: {e:?}")),
        }
    }
    Err(Failure::Server(format!(
        "cannot reach {}",
        unreachable.join("; ")
    )))
}

pub async fn events_client(conn: &Conn) -> Result<EventServiceClient<chronos_client::Conn>> {
    Ok(EventServiceClient::new(channel(conn).await?))
}

pub async fn admin_client(conn: &Conn) -> Result<AdminServiceClient<chronos_client::Conn>> {
    Ok(AdminServiceClient::new(channel(conn).await?))
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A point in time from RFC 3339 (`2030-01-01T00:00:00Z`), milliseconds since
/// the epoch, or `now`.
pub fn parse_time(flag: &str, s: &str) -> Result<i64> {
    if s == "now" {
        return Ok(now_ms());
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        Failure::Usage(format!(
            "{flag} {s:?}: {e}; give RFC 3339 (2030-01-01T00:00:00Z), milliseconds since the epoch, or now"
        ))
    })?;
    Ok(t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0))
}

/// A duration like `10m`, `1h30m`, `500ms`.
pub fn parse_duration(flag: &str, s: &str) -> Result<Duration> {
    humantime::parse_duration(s).map_err(|e| {
        Failure::Usage(format!(
            "{flag} {s:?}: {e}; give a duration like 10s, 5m, 1h30m"
        ))
    })
}

/// Milliseconds since the epoch as RFC 3339 (0 as "-").
pub fn fmt_time(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
    humantime::format_rfc3339_millis(t).to_string()
}
