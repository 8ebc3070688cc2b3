//! The one `Config` struct of a Chronos node and how it is layered.
//!
//! Owns: option names, defaults, units, parsing of sizes and durations, and the
//! layering order defaults < TOML file < `CHRONOS_*` environment < command-line
//! flags (the binary passes its flags in as an [`Overrides`] layer).
//! Does not own: acting on the options — each crate reads its own section.
//! Every option is documented, with its default, in `config/chronos.toml`.

mod size;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use size::ByteSize;

/// Longest accepted `message_id`, in bytes (part of the API contract, not tunable).
pub const MAX_MESSAGE_ID_BYTES: usize = 128;
/// Longest accepted topic name, in characters.
pub const MAX_TOPIC_CHARS: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Everything a node needs to start. `Config::default()` is the zero-config node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's id; unique in a cluster.
    pub node_id: u64,
    /// Where WAL segments, RocksDB state and Raft votes live.
    pub data_dir: PathBuf,
    /// Public gRPC listener.
    pub grpc_addr: SocketAddr,
    /// HTTP listener for /health, /ready and /metrics.
    pub http_addr: SocketAddr,
    /// Number of partitions; fixed when the data directory is created.
    pub partitions: u32,
    /// A second publish of the same (topic, message_id) within this window is a duplicate.
    #[serde(with = "humantime_serde")]
    pub dedup_ttl: Duration,
    pub log: LogConfig,
    pub wal: WalConfig,
    pub limits: LimitsConfig,
    pub raft: RaftConfig,
    pub scheduler: SchedulerConfig,
    pub delivery: DeliveryConfig,
    pub cluster: ClusterConfig,
    /// TLS on the public gRPC and HTTP listeners; absent = plaintext.
    pub tls: Option<TlsConfig>,
    /// Who may call: principals, their tokens and grants (off by default).
    pub auth: chronos_access::AuthConfig,
    /// Where state-changing actions and denials are written; absent = nowhere.
    pub audit: Option<chronos_access::AuditConfig>,
}

/// Certificate and key (PEM files) a listener presents; re-read on SIGHUP.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key of the leaf (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA whose client certificates authenticate clients (mapped to
    /// principals by `auth.principals[].cert_names`); absent = none asked.
    pub client_ca: Option<PathBuf>,
}

/// Mutual TLS between nodes: each node presents `cert` (naming it
/// `node-<id>.<cluster.name>`) and accepts only peers whose certificate
/// `ca` signed and that name a node of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterTlsConfig {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Static cluster membership. Empty `nodes` = a single node that needs no peers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Voters per partition; 0 picks the default: 3 when more than one node
    /// is listed (or all of them when fewer), 1 otherwise.
    pub replication_factor: u32,
    /// Every node of the cluster, this one included (`node_id` names it).
    pub nodes: Vec<NodeConfig>,
    /// A node whose wall clock is further than this from a majority of the
    /// nodes leads nothing and fires nothing until it is back within it.
    #[serde(with = "humantime_serde")]
    pub max_clock_offset: Duration,
    /// How often each node probes every other node's clock.
    #[serde(with = "humantime_serde")]
    pub clock_probe_interval: Duration,
    /// A leader hands a partition back to its preferred leader (the one the
    /// placement spreads evenly) once it has led it this long and that node
    /// has caught up; `chronos cluster rebalance` does it at once.
    #[serde(with = "humantime_serde")]
    pub rebalance_after: Duration,
    /// This node joins a running cluster: it forms no group and waits until
    /// `chronos cluster add-node` adds it. `nodes` then lists the cluster's
    /// nodes as configured on them, plus this one. Ignored once the node
    /// holds the roster (every restart after it was added).
    pub join: bool,
    /// The cluster's name: node certificates name `node-<id>.<name>`, so a
    /// node of another cluster (even under the same CA) is refused.
    pub name: String,
    /// Mutual TLS between nodes; required unless `allow_plaintext`.
    pub tls: Option<ClusterTlsConfig>,
    /// Let a cluster run without TLS on its node-to-node and public
    /// listeners (a lab, or a network that is private by other means).
    pub allow_plaintext: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            replication_factor: 0,
            nodes: Vec::new(),
            max_clock_offset: Duration::from_millis(250),
            clock_probe_interval: Duration::from_millis(500),
            rebalance_after: Duration::from_secs(10),
            join: false,
            name: "chronos".into(),
            tls: None,
            allow_plaintext: false,
        }
    }
}

/// One node as every node knows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: u64,
    /// Node-to-node gRPC (Raft and forwarded requests), `host:port`.
    pub raft_addr: String,
    /// Public gRPC, `host:port`. In a cluster the node listens here (not on `grpc_addr`).
    pub api_addr: String,
}

impl ClusterConfig {
    /// The replication factor in effect.
    pub fn effective_replication_factor(&self) -> u32 {
        // A joining node counts the nodes it joins, as they counted themselves.
        let listed = self.nodes.len() - usize::from(self.join && !self.nodes.is_empty());
        match (self.replication_factor, listed) {
            (0, 0 | 1) => 1,
            (0, n) => (n as u32).min(3),
            (rf, _) => rf,
        }
    }

    /// This node's entry, when a cluster is configured.
    pub fn node(&self, id: u64) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.id == id)
    }

    fn validate(&self, node_id: u64) -> Result<(), String> {
        if self.max_clock_offset.is_zero() {
            return Err("cluster.max_clock_offset: must be above 0 (e.g. \"250ms\")".into());
        }
        if self.clock_probe_interval.is_zero() || self.clock_probe_interval > Duration::from_secs(2)
        {
            return Err(
                "cluster.clock_probe_interval: must be above 0 and at most 2s (an estimate counts for 5s)"
                    .into(),
            );
        }
        if self.rebalance_after < Duration::from_secs(1) {
            return Err(
                "cluster.rebalance_after: must be at least 1s (a restarted node catches up first)"
                    .into(),
            );
        }
        if self.nodes.is_empty() {
            if self.join {
                return Err("cluster.join: a joining node needs cluster.nodes (the nodes it joins and itself)".into());
            }
            if self.replication_factor > 1 {
                return Err(format!(
                    "cluster.replication_factor is {} but cluster.nodes is empty; list the nodes",
                    self.replication_factor
                ));
            }
            return Ok(());
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut addrs = std::collections::BTreeSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if !ids.insert(n.id) {
                return Err(format!("cluster.nodes[{i}].id: {} is listed twice", n.id));
            }
            for (field, addr) in [("raft_addr", &n.raft_addr), ("api_addr", &n.api_addr)] {
                let port = addr.rsplit_once(':').and_then(|(h, p)| {
                    (!h.is_empty()).then_some(())?;
                    p.parse::<u16>().ok()
                });
                if port.is_none() {
                    return Err(format!(
                        "cluster.nodes[{i}].{field}: {addr:?} is not host:port"
                    ));
                }
                if !addrs.insert(addr.as_str()) {
                    return Err(format!(
                        "cluster.nodes[{i}].{field}: {addr:?} is used twice"
                    ));
                }
            }
        }
        if !ids.contains(&node_id) {
            return Err(format!(
                "node_id {node_id} is not one of cluster.nodes (ids {ids:?})"
            ));
        }
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(format!(
                "cluster.name: {:?} must be letters, digits, '-' and '.' (it is part of a DNS name)",
                self.name
            ));
        }
        if self.tls.is_none() && !self.allow_plaintext {
            return Err(
                "cluster.tls: a cluster needs mutual TLS between its nodes (cluster.tls.ca, .cert, .key); \
                 set cluster.allow_plaintext = true to run one without"
                    .into(),
            );
        }
        let rf = self.effective_replication_factor();
        if rf == 0 || rf as usize > self.nodes.len() {
            return Err(format!(
                "cluster.replication_factor must be 1..={} (the number of nodes), got {rf}",
                self.nodes.len()
            ));
        }
        Ok(())
    }
}

/// The most unacked deliveries one member may hold.
pub const MAX_INFLIGHT_LIMIT: u32 = 100_000;

/// Consumer groups: acks, redelivery and credits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// A delivery not acked within this is redelivered.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Wait before the second attempt; doubles per attempt (with jitter).
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Longest wait between attempts.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Attempts before an event moves to the group's dead-letter queue.
    pub max_attempts: u32,
    /// Unacked deliveries a member may hold when it asks for 0 (the default).
    pub default_max_inflight: u32,
    /// A client connection that sent nothing for this long gets an HTTP/2 ping.
    #[serde(with = "humantime_serde")]
    pub client_ping_interval: Duration,
    /// A ping not answered within this closes the connection: its members
    /// leave and what they held goes to other members.
    #[serde(with = "humantime_serde")]
    pub client_ping_timeout: Duration,
    /// Acks, nacks and deliveries of a partition wait up to this long to be
    /// recorded in one log entry; an ack whose caller waits (a unary `Ack`,
    /// a stream's `wait`) is recorded at once.
    #[serde(with = "humantime_serde")]
    pub record_linger: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            max_attempts: 5,
            default_max_inflight: 100,
            client_ping_interval: Duration::from_secs(10),
            client_ping_timeout: Duration::from_secs(10),
            record_linger: Duration::from_millis(50),
        }
    }
}

/// The leader's timing wheel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Width of one wheel slot.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// How far ahead the wheel holds pending events in memory; later ones stay on disk.
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(1),
            horizon: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `chronos_partition=debug,info`.
    pub level: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// fsync before every ack, with group commit (default).
    Always,
    /// fsync before ack, but wait up to `batch_delay` to gather more writes.
    Batch,
    /// Ack after the write reaches the page cache; fsync every `periodic_interval`.
    /// An explicit opt-out of durability: a machine crash loses the last interval.
    Periodic,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WalConfig {
    /// Size at which a partition's history starts a new segment.
    pub segment_bytes: ByteSize,
    /// Size at which the node's Raft log starts a new file.
    pub raft_log_file_bytes: ByteSize,
    pub fsync: FsyncMode,
    #[serde(with = "humantime_serde")]
    pub batch_delay: Duration,
    /// With concurrent publishers, how long a partition gathers requests into
    /// one log entry (one fsync) before proposing it. 0 disables.
    #[serde(with = "humantime_serde")]
    pub group_commit_linger: Duration,
    #[serde(with = "humantime_serde")]
    pub periodic_interval: Duration,
    /// Whole segments older than this are deleted once applied and snapshotted.
    #[serde(with = "humantime_serde")]
    pub retention_age: Duration,
    /// Oldest segments are deleted while a partition's WAL is larger than this (0 = no limit).
    pub retention_bytes: ByteSize,
    /// How often retention looks for segments to delete, and the node's
    /// Raft log for files no partition needs.
    #[serde(with = "humantime_serde")]
    pub retention_check_interval: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_payload_bytes: ByteSize,
    pub max_batch_events: u32,
    /// Most bytes (ids, topics, keys, headers, payloads) in one PublishBatch.
    /// Kept well under the WAL's 64 MiB record limit: a partition's share of
    /// a batch is one log record.
    pub max_batch_bytes: ByteSize,
    pub max_headers_bytes: ByteSize,
    /// New events are refused while the data directory's disk has less than
    /// this free, so publishers cannot fill it (0: never refused).
    pub min_free_disk: ByteSize,
    /// Most replays this node reads for at once (each holds a thread while
    /// it reads); more get RESOURCE_EXHAUSTED.
    pub max_replays: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub election_timeout_min: Duration,
    #[serde(with = "humantime_serde")]
    pub election_timeout_max: Duration,
    /// Take a state-machine snapshot (and allow log purge) after this many entries.
    pub snapshot_every_entries: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: 1,
            data_dir: PathBuf::from("./data"),
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 9000)),
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            partitions: 8,
            dedup_ttl: Duration::from_secs(7 * 24 * 3600),
            log: LogConfig::default(),
            wal: WalConfig::default(),
            limits: LimitsConfig::default(),
            raft: RaftConfig::default(),
            scheduler: SchedulerConfig::default(),
            delivery: DeliveryConfig::default(),
            cluster: ClusterConfig::default(),
            tls: None,
            auth: chronos_access::AuthConfig::default(),
            audit: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info,openraft=warn".into(),
        }
    }
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            segment_bytes: ByteSize(256 << 20),
            raft_log_file_bytes: ByteSize(64 << 20),
            fsync: FsyncMode::Always,
            batch_delay: Duration::from_millis(2),
            group_commit_linger: Duration::from_micros(100),
            periodic_interval: Duration::from_millis(100),
            retention_age: Duration::from_secs(7 * 24 * 3600),
            retention_bytes: ByteSize(0),
            retention_check_interval: Duration::from_secs(30),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: ByteSize(1 << 20),
            max_batch_events: 10_000,
            max_batch_bytes: ByteSize(32 << 20),
            max_headers_bytes: ByteSize(64 << 10),
            min_free_disk: ByteSize(1 << 30),
            max_replays: 64,
        }
    }
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            snapshot_every_entries: 100_000,
        }
    }
}

/// Values given on the command line; `None` leaves the lower layers in charge.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_addr: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub dedup_ttl: Option<Duration>,
    #[serde(skip_serializing_if = "WalOverrides::is_empty")]
    pub wal: WalOverrides,
    #[serde(skip_serializing_if = "LogOverrides::is_empty")]
    pub log: LogOverrides,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct WalOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_bytes: Option<ByteSize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsync: Option<FsyncMode>,
}

impl WalOverrides {
    fn is_empty(&self) -> bool {
        self.segment_bytes.is_none() && self.fsync.is_none()
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct LogOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

impl LogOverrides {
    fn is_empty(&self) -> bool {
        self.format.is_none() && self.level.is_none()
    }
}

mod opt_duration {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => {
                s.serialize_str(&humantime_serde::re::humantime::format_duration(*d).to_string())
            }
            None => s.serialize_none(),
        }
    }
}

impl Config {
    /// Layers defaults < `file` (if given; it must exist) < `CHRONOS_*` env < `flags`.
    /// Nested options use `__` in env names: `CHRONOS_WAL__FSYNC=batch`.
    pub fn load(file: Option<&Path>, flags: &Overrides) -> Result<Config, ConfigError> {
        Self::load_with_env(file, flags, Env::prefixed("CHRONOS_").split("__"))
    }

    fn load_with_env(
        file: Option<&Path>,
        flags: &Overrides,
        env: Env,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file(path));
        }
        // CHRONOS_CONFIG names the file; it is not an option of its own.
        let env = env.ignore(&["config"]);
        let config: Config = figment
            .merge(env)
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Rejects combinations that cannot work, naming the option.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError::Invalid(msg));
        if !(1..=4096).contains(&self.partitions) {
            return bad(format!(
                "partitions must be 1..=4096, got {}",
                self.partitions
            ));
        }
        if self.wal.segment_bytes.0 < 64 << 10 {
            return bad(format!(
                "wal.segment_bytes must be at least 64KiB, got {}",
                self.wal.segment_bytes
            ));
        }
        if self.wal.raft_log_file_bytes.0 < 64 << 10 {
            return bad(format!(
                "wal.raft_log_file_bytes must be at least 64KiB, got {}",
                self.wal.raft_log_file_bytes
            ));
        }
        if self.limits.max_payload_bytes.0 == 0 || self.limits.max_payload_bytes.0 > 32 << 20 {
            return bad(format!(
                "limits.max_payload_bytes must be 1B..=32MiB, got {}",
                self.limits.max_payload_bytes
            ));
        }
        if self.limits.max_batch_events == 0 || self.limits.max_batch_events > 100_000 {
            return bad(format!(
                "limits.max_batch_events must be 1..=100000, got {}",
                self.limits.max_batch_events
            ));
        }
        let batch_bytes = self.limits.max_batch_bytes.0;
        if batch_bytes < self.limits.max_payload_bytes.0 || batch_bytes > 48 << 20 {
            return bad(format!(
                "limits.max_batch_bytes must be between limits.max_payload_bytes and 48MiB, got {}",
                self.limits.max_batch_bytes
            ));
        }
        if self.limits.max_replays == 0 || self.limits.max_replays > 4096 {
            return bad(format!(
                "limits.max_replays must be 1..=4096, got {}",
                self.limits.max_replays
            ));
        }
        if self.raft.election_timeout_min <= self.raft.heartbeat_interval
            || self.raft.election_timeout_max <= self.raft.election_timeout_min
        {
            return bad(
                "raft: need heartbeat_interval < election_timeout_min < election_timeout_max"
                    .into(),
            );
        }
        if self.scheduler.tick.is_zero() || self.scheduler.horizon < self.scheduler.tick * 2 {
            return bad("scheduler: need 0 < tick and horizon >= 2 * tick".into());
        }
        let d = &self.delivery;
        if d.ack_timeout.is_zero() || d.max_attempts == 0 || d.backoff_max < d.backoff_base {
            return bad(
                "delivery: need ack_timeout > 0, max_attempts >= 1 and backoff_base <= backoff_max"
                    .into(),
            );
        }
        if d.record_linger >= d.ack_timeout {
            return bad("delivery.record_linger: must be shorter than delivery.ack_timeout".into());
        }
        if d.default_max_inflight == 0 || d.default_max_inflight > MAX_INFLIGHT_LIMIT {
            return bad(format!(
                "delivery.default_max_inflight must be between 1 and {MAX_INFLIGHT_LIMIT}"
            ));
        }
        for (name, wait) in [
            ("client_ping_interval", d.client_ping_interval),
            ("client_ping_timeout", d.client_ping_timeout),
        ] {
            if wait < Duration::from_millis(100) {
                return bad(format!("delivery.{name}: must be at least 100ms"));
            }
        }
        if self.dedup_ttl.is_zero() {
            return bad("dedup_ttl must be positive".into());
        }
        self.cluster.validate(self.node_id).or_else(bad)?;
        self.auth
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if !self.cluster.nodes.is_empty() && self.tls.is_none() && !self.cluster.allow_plaintext {
            return bad(
                "tls: a cluster serves clients over TLS (tls.cert, tls.key); \
                 set cluster.allow_plaintext = true to run one without"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
