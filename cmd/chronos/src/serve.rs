//! `chronos serve`: open the partitions, serve gRPC and HTTP, stop cleanly.
//!
//! Shutdown order on SIGTERM/SIGINT: stop accepting connections and let
//! in-flight RPCs finish (bounded), then stop each partition (its actor answers
//! every accepted write, Raft stops, state is flushed, the WAL fsynced), exit 0.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use chronos_api::gateway::Cluster;
use chronos_api::guard::{Gate, Guard};
use chronos_api::{Hosted, Limits, Node, Router};
use chronos_clock::{Clock, ClockOptions};
use chronos_config::{Config, FsyncMode};
use chronos_partition::{
    DeliveryOptions, FiringOptions, FreeSpace, Handoffs, Partition, PartitionOptions, Placed,
    ReplayReaders,
};
use chronos_placement::{Placement, ROSTER_RAFT};
use chronos_proto::internal::RosterNode;
use chronos_raftlog::{RaftLog, RaftLogOptions};
use chronos_raftnet::{Peer, PeerTls, Peers, RaftRoutes};
use chronos_store::StoreResources;
use chronos_wal::Retention;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::disk;
use crate::listen::{self, Listener};
use crate::replicas::{self, Opener, Replicas};
use crate::{http, telemetry};

/// How long in-flight RPCs get to finish after a stop signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What a data directory was created with; a restart must agree.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct DataDirMeta {
    partitions: u32,
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    telemetry::init_logs(&config.log)?;
    let prometheus = telemetry::init_metrics()?;
    // Histogram samples queue inside the recorder until drained; without a
    // scraper they would pile up, so drain them on a timer.
    let upkeep = {
        let handle = prometheus.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        })
    };
    check_data_dir(&config.data_dir, config.partitions)?;

    let me = config.cluster.node(config.node_id).cloned();
    let grpc = match &me {
        None => TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("binding grpc_addr {}", config.grpc_addr))?,
        Some(me) => TcpListener::bind(me.api_addr.as_str())
            .await
            .with_context(|| format!("binding this node's api_addr {}", me.api_addr))?,
    };
    // Other nodes reach this one here: Raft traffic and forwarded requests.
    let internal = match &me {
        None => None,
        Some(me) => Some(
            TcpListener::bind(me.raft_addr.as_str())
                .await
                .with_context(|| format!("binding this node's raft_addr {}", me.raft_addr))?,
        ),
    };
    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding http_addr {}", config.http_addr))?;
    let grpc_addr = grpc.local_addr()?;
    let http_addr = http_listener.local_addr()?;

    let public_tls = listen::public_tls(config.tls.as_ref())?;
    let cluster_tls = listen::cluster_tls(config.cluster.tls.as_ref())?;
    let peers = peers(&config)?;
    let clock = match &peers {
        None => Clock::single(),
        Some(peers) => Clock::spawn(
            {
                let (peers, me) = (peers.clone(), config.node_id);
                move || {
                    peers
                        .all()
                        .into_iter()
                        .filter(|p| p.id != me)
                        .filter_map(|p| Some((p.id, peers.channel(p.id)?)))
                        .collect()
                }
            },
            ClockOptions {
                max_offset: config.cluster.max_clock_offset,
                probe_every: config.cluster.clock_probe_interval,
            },
        ),
    };
    let raft_log = open_raft_log(&config)?;
    let gc_task = tokio::spawn(raft_log_gc(
        raft_log.clone(),
        config.wal.retention_check_interval,
    ));
    let (stopping_tx, stopping) = watch::channel(false);
    let may_lead = may_lead(&clock, stopping.clone());
    let handoffs = Handoffs::new();
    let routes = RaftRoutes::new();
    let opener = Opener {
        config: config.clone(),
        raft_log: raft_log.clone(),
        resources: StoreResources::default(),
        may_lead: may_lead.clone(),
        free_space: disk::watch_free_space(config.data_dir.clone(), config.limits.min_free_disk.0),
        handoffs: handoffs.clone(),
        routes: routes.clone(),
        peers: peers.clone(),
    };
    opener.finish_releases()?;
    let seeds = seeds(&config);
    let (roster_raft, roster) = match &peers {
        None => (None, None),
        Some(_) => {
            let formed_with = Placed {
                replicas: seeds.iter().map(|n| n.id).collect(),
                preferred: None,
            };
            let raft = opener
                .open(ROSTER_RAFT, formed_with, config.cluster.join)
                .await?;
            let roster = raft.roster()?;
            (Some(raft), roster)
        }
    };
    let cluster = match (&peers, &roster) {
        (None, _) => None,
        (Some(peers), roster) => {
            let placement = match roster {
                Some(r) => {
                    for n in &r.nodes {
                        peers.upsert(&Peer {
                            id: n.id,
                            raft_addr: n.raft_addr.clone(),
                            api_addr: n.api_addr.clone(),
                        })?;
                    }
                    replicas::placement_of(r, &config)
                }
                None => Placement::new(
                    &seeds.iter().map(|n| n.id).collect::<Vec<_>>(),
                    config.partitions,
                    config.cluster.effective_replication_factor(),
                ),
            };
            Some(Cluster::new(peers.clone(), placement))
        }
    };
    if let (Some(raft), Some(r)) = (&roster_raft, &roster) {
        raft.set_placement(Placed {
            replicas: r.nodes.iter().map(|n| n.id).collect(),
            preferred: None,
        });
    }
    let mut hosted: Vec<u32> = match &cluster {
        None => (0..config.partitions).collect(),
        Some(c) => c.placement().hosted_on(config.node_id),
    };
    if cluster.is_some() {
        // Replicas being moved away (or not yet released) stay open until
        // their Raft group lets them go.
        hosted.extend(opener.on_disk());
        hosted.sort_unstable();
        hosted.dedup();
    }
    // Once a cluster formed, a replica new here joins its Raft group.
    let join = config.cluster.join || roster.is_some();
    let opened = futures::future::join_all(hosted.iter().map(|&id| {
        let placed = match &cluster {
            None => Placed::default(),
            Some(c) => replicas::placed(&c.placement(), id),
        };
        opener.open(id, placed, join)
    }))
    .await;
    let mut partitions = Vec::with_capacity(opened.len());
    for p in opened {
        partitions.push(p?);
    }
    let node = Arc::new(Node {
        node_id: config.node_id,
        partitions: Hosted::new(partitions),
        roster: roster_raft.clone(),
        router: Router::new(config.partitions),
        limits: Limits {
            max_payload_bytes: config.limits.max_payload_bytes.0 as usize,
            max_batch_events: config.limits.max_batch_events as usize,
            max_batch_bytes: config.limits.max_batch_bytes.0 as usize,
            max_headers_bytes: config.limits.max_headers_bytes.0 as usize,
        },
        publish_timeout: Duration::from_secs(10),
        grpc_addr: grpc_addr.to_string(),
        default_max_inflight: config.delivery.default_max_inflight,
        cluster,
        clock,
        stopping,
        handoffs,
        guard: guard(&config)?,
        replays: ReplayReaders::new(config.limits.max_replays),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    // The node-to-node listener serves on through the drain: the new leaders
    // tell this node which of its last entries committed, and that answers
    // the publishes still waiting on them (cut off, they waited out their
    // whole deadline and held the drain with them).
    let (internal_stop_tx, internal_stop_rx) = watch::channel(false);
    let http_task = tokio::spawn(http::serve(
        Listener::new(http_listener, public_tls.as_ref()),
        node.clone(),
        raft_log.clone(),
        prometheus,
        stop_rx.clone(),
    ));
    let internal_task = internal.map(|listener| {
        // Over TLS, the peer's certificate must name a node of the roster.
        let check = match (&cluster_tls, &node.cluster) {
            (Some(_), Some(cluster)) => Some(listen::NodeCheck {
                peers: cluster.peers.clone(),
                cluster: config.cluster.name.clone(),
            }),
            _ => None,
        };
        tokio::spawn(serve_internal(
            (Listener::new(listener, cluster_tls.as_ref()), check),
            node.clone(),
            (routes.clone(), may_lead.clone()),
            Pings::of(&config),
            internal_stop_rx,
        ))
    });
    let grpc_task = tokio::spawn(serve_grpc(
        Listener::new(grpc, public_tls.as_ref()),
        node.clone(),
        Pings::of(&config),
        stop_rx.clone(),
    ));
    let reloads: Vec<(&'static str, chronos_tls::ServerTls)> = [
        ("tls", public_tls.clone()),
        ("cluster.tls", cluster_tls.clone()),
    ]
    .into_iter()
    .filter_map(|(what, tls)| Some((what, tls?)))
    .collect();
    let reload_rest = {
        let (node, config) = (node.clone(), config.clone());
        Arc::new(move || {
            match access(&config) {
                Ok(access) => {
                    node.guard.replace(access);
                    tracing::info!("SIGHUP: principals and tokens reloaded");
                }
                Err(e) => tracing::warn!("SIGHUP: principals kept; reload failed: {e:#}"),
            }
            // The certificate this node presents to the others, and the CA
            // it checks them with.
            let Some(cluster) = node.cluster.as_ref() else {
                return;
            };
            let reloaded = peer_tls(&config).and_then(|tls| match tls {
                Some(tls) => Ok(cluster.peers.reload_tls(tls)?),
                None => Ok(()),
            });
            match reloaded {
                Ok(()) if config.cluster.tls.is_some() => {
                    tracing::info!("SIGHUP: cluster.tls client certificates reloaded")
                }
                Ok(()) => {}
                Err(e) => tracing::warn!(
                    "SIGHUP: cluster.tls client certificates kept; reload failed: {e:#}"
                ),
            }
        })
    };
    let hup_task = listen::reload_on_sighup(reloads, reload_rest)?;
    let replicas_task = node.cluster.is_some().then(|| {
        let replicas = Replicas {
            node: node.clone(),
            opener,
            seeds: if config.cluster.join {
                Vec::new()
            } else {
                seeds
            },
            seen: 0,
            busy: Arc::default(),
            retired: false,
            asks: Default::default(),
        };
        tokio::spawn(replicas.run(stop_rx.clone()))
    });
    tracing::info!(%grpc_addr, %http_addr, partitions = config.partitions, data_dir = %config.data_dir.display(), "chronos listening");

    let signal = wait_for_signal().await?;
    // Leadership goes first, while this node still answers the others (so
    // its forwarded requests are redirected and Raft reaches it); then the
    // subscriptions end, so the drain below does not wait on them.
    tracing::info!(signal, "stopping: leaving leadership to the other nodes");
    let _ = stopping_tx.send(true);
    if node.cluster.is_some() {
        let mut led: Vec<Arc<Partition>> = node.partitions.all().as_ref().clone();
        led.extend(roster_raft.clone());
        hand_over(&led, config.node_id, 8 * config.raft.election_timeout_max).await;
    }
    tracing::info!("stopping: draining in-flight requests");
    let _ = stop_tx.send(true);
    match tokio::time::timeout(DRAIN_TIMEOUT, grpc_task).await {
        Ok(Ok(Err(e))) => tracing::warn!("grpc server: {e}"),
        Ok(Err(e)) => tracing::warn!("grpc server task: {e}"),
        Err(_) => tracing::warn!("in-flight RPCs did not finish within {DRAIN_TIMEOUT:?}"),
        Ok(Ok(Ok(()))) => {}
    }
    if let Some(task) = replicas_task {
        task.abort();
    }
    let mut open: Vec<Arc<Partition>> = node.partitions.all().as_ref().clone();
    open.extend(roster_raft);
    futures::future::join_all(open.iter().map(|p| {
        routes.remove(p.id());
        p.shutdown()
    }))
    .await;
    gc_task.abort();
    if let Err(e) = raft_log.sync() {
        tracing::warn!("raft log fsync at shutdown: {e}");
    }
    let _ = internal_stop_tx.send(true);
    if let Some(task) = internal_task {
        task.abort();
    }
    http_task.abort();
    hup_task.abort();
    upkeep.abort();
    tracing::info!("stopped");
    Ok(())
}

fn check_data_dir(dir: &Path, partitions: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating data_dir {}", dir.display()))?;
    let path = dir.join("chronos.json");
    let want = DataDirMeta { partitions };
    match std::fs::read(&path) {
        Ok(raw) => {
            let have: DataDirMeta = serde_json::from_slice(&raw)
                .with_context(|| format!("reading {}", path.display()))?;
            if have != want {
                bail!(
                    "data_dir {} was created with {} partitions; this node is configured with {partitions}. \
                     The partition count cannot change on an existing data directory.",
                    dir.display(),
                    have.partitions
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, serde_json::to_vec_pretty(&want)?)
                .with_context(|| format!("writing {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Whether this node may lead: its clock is within bounds and it is not
/// stopping (what every partition's owner follows).
fn may_lead(clock: &Clock, mut stopping: watch::Receiver<bool>) -> watch::Receiver<bool> {
    let mut verdict = clock.subscribe();
    let now = |v: &watch::Receiver<bool>, s: &watch::Receiver<bool>| *v.borrow() && !*s.borrow();
    let (tx, rx) = watch::channel(now(&verdict, &stopping));
    tokio::spawn(async move {
        loop {
            let changed = tokio::select! {
                r = verdict.changed() => r,
                r = stopping.changed() => r,
            };
            if changed.is_err() {
                return; // the node is going away; the last value stays
            }
            let v = now(&verdict, &stopping);
            tx.send_if_modified(|cur| std::mem::replace(cur, v) != v);
        }
    });
    rx
}

/// Waits (at most `limit`) until every partition here is led by another
/// node: with leading switched off, the followers elect one after an
/// election timeout.
async fn hand_over(partitions: &[Arc<Partition>], me: u64, limit: Duration) {
    let until = tokio::time::Instant::now() + limit;
    loop {
        // A leader known elsewhere, not just none: until this node hears
        // from it, its own requests have nowhere to go.
        let leading: Vec<u32> = partitions
            .iter()
            .filter(|p| p.status().leader.is_none_or(|l| l == me))
            .map(|p| p.id())
            .collect();
        if leading.is_empty() {
            tracing::info!("stopping: every partition is led elsewhere");
            return;
        }
        if tokio::time::Instant::now() >= until {
            tracing::warn!(
                ?leading,
                "stopping: no other leader after {limit:?}; stopping anyway"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens the node's Raft log, shared by every partition it holds.
fn open_raft_log(config: &Config) -> anyhow::Result<Arc<RaftLog>> {
    let fsync = match config.wal.fsync {
        FsyncMode::Always => chronos_wal::FsyncMode::Always,
        FsyncMode::Batch => chronos_wal::FsyncMode::Batch {
            max_delay: config.wal.batch_delay,
        },
        FsyncMode::Periodic => chronos_wal::FsyncMode::Periodic {
            interval: config.wal.periodic_interval,
        },
    };
    let dir = config.data_dir.join("raftlog");
    let opts = RaftLogOptions {
        fsync,
        file_bytes: config.wal.raft_log_file_bytes.0,
        ..RaftLogOptions::default()
    };
    let log = RaftLog::open(&dir, opts)
        .with_context(|| format!("opening the node's raft log in {}", dir.display()))?;
    Ok(Arc::new(log))
}

/// Deletes the Raft log's files that no partition needs any more, rewriting
/// the few live entries of lagging partitions when old files pile up.
async fn raft_log_gc(log: Arc<RaftLog>, every: Duration) {
    let mut every = tokio::time::interval(every);
    loop {
        every.tick().await;
        let log = log.clone();
        match tokio::task::spawn_blocking(move || log.gc()).await {
            Ok(Ok(report)) => tracing::debug!(?report, "raft log gc"),
            Ok(Err(e)) => tracing::warn!("raft log gc: {e}"),
            Err(e) => tracing::warn!("raft log gc task: {e}"),
        }
    }
}

pub(crate) fn partition_options(
    config: &Config,
    id: u32,
    resources: &StoreResources,
    raft_log: &Arc<RaftLog>,
    may_lead: watch::Receiver<bool>,
    free_space: watch::Receiver<FreeSpace>,
) -> PartitionOptions {
    PartitionOptions {
        may_lead,
        free_space,
        preferred_leader: None,
        handoffs: Handoffs::new(),
        rebalance_after: config.cluster.rebalance_after,
        id,
        node_id: config.node_id,
        voters: vec![],
        join: false,
        dir: config.data_dir.join(format!("partition-{id:04}")),
        raft_log: raft_log.clone(),
        history_segment_bytes: config.wal.segment_bytes.0,
        retention: Retention {
            max_age: Some(config.wal.retention_age),
            max_bytes: (config.wal.retention_bytes.0 > 0).then_some(config.wal.retention_bytes.0),
        },
        retention_check_interval: config.wal.retention_check_interval,
        group_commit_linger: config.wal.group_commit_linger,
        dedup_ttl: config.dedup_ttl,
        heartbeat_interval: config.raft.heartbeat_interval,
        election_timeout_min: config.raft.election_timeout_min,
        election_timeout_max: config.raft.election_timeout_max,
        snapshot_every_entries: config.raft.snapshot_every_entries,
        resources: resources.clone(),
        firing: FiringOptions {
            tick_ms: config.scheduler.tick.as_millis().max(1) as i64,
            horizon_ms: config.scheduler.horizon.as_millis() as i64,
            kept_bytes: FiringOptions::kept_bytes_per_partition(config.partitions),
        },
        delivery: DeliveryOptions {
            ack_timeout: config.delivery.ack_timeout,
            backoff_base: config.delivery.backoff_base,
            backoff_max: config.delivery.backoff_max,
            max_attempts: config.delivery.max_attempts,
            fired_retention: config.wal.retention_age,
            trim_every: config.wal.retention_check_interval,
            record_linger: config.delivery.record_linger,
        },
    }
}

/// The configured nodes' channels, when a cluster is configured.
fn peers(config: &Config) -> anyhow::Result<Option<Peers>> {
    if config.cluster.nodes.is_empty() {
        return Ok(None);
    }
    let nodes: Vec<Peer> = config
        .cluster
        .nodes
        .iter()
        .map(|n| Peer {
            id: n.id,
            raft_addr: n.raft_addr.clone(),
            api_addr: n.api_addr.clone(),
        })
        .collect();
    let tls = peer_tls(config)?;
    Ok(Some(
        Peers::new(config.node_id, &nodes, tls).context("cluster.nodes")?,
    ))
}

/// What this node presents to and trusts from the other nodes
/// (`cluster.tls`), read and checked now (the key must match the
/// certificate), so a bad or half-written file fails here, not at the
/// next connection.
fn peer_tls(config: &Config) -> anyhow::Result<Option<PeerTls>> {
    let Some(tls) = &config.cluster.tls else {
        return Ok(None);
    };
    let pem = chronos_tls::ClientPem::read(&chronos_tls::ClientFiles {
        ca: tls.ca.clone(),
        identity: Some((tls.cert.clone(), tls.key.clone())),
    })
    .context("cluster.tls")?;
    let mut client = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem.ca));
    if let Some((cert, key)) = pem.identity {
        client = client.identity(Identity::from_pem(cert, key));
    }
    Ok(Some(PeerTls {
        config: client,
        cluster: config.cluster.name.clone(),
    }))
}

/// The roster a new cluster forms with: `cluster.nodes` (a joining node
/// leaves itself out; it is added later).
fn seeds(config: &Config) -> Vec<RosterNode> {
    config
        .cluster
        .nodes
        .iter()
        .filter(|n| !(config.cluster.join && n.id == config.node_id))
        .map(|n| RosterNode {
            id: n.id,
            raft_addr: n.raft_addr.clone(),
            api_addr: n.api_addr.clone(),
            leaving: false,
        })
        .collect()
}

async fn serve_grpc(
    listener: Listener,
    node: Arc<Node>,
    pings: Pings,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(chronos_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(chronos_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let (events, admin) = chronos_api::services(node.clone(), Gate::Edge(node));
    for name in ["", "chronos.v1.EventService", "chronos.v1.AdminService"] {
        health
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let router = grpc_server(pings)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(events)
        .add_service(admin);
    serve_until_stopped(router, listener, stop).await
}

/// Streams a client may open and cancel before the server takes them up,
/// at once, without losing its connection. hyper's 20 (a guard against
/// HTTP/2 rapid-reset floods) sent GOAWAY to a client that subscribed and
/// closed members in quick succession, failing every call on its connection.
const PENDING_ACCEPT_RESETS: usize = 1024;

/// How long a silent connection goes before a ping, and how long the ping
/// may go unanswered (`delivery.client_ping_*`).
#[derive(Clone, Copy)]
struct Pings {
    interval: Duration,
    timeout: Duration,
}

impl Pings {
    fn of(config: &Config) -> Pings {
        Pings {
            interval: config.delivery.client_ping_interval,
            timeout: config.delivery.client_ping_timeout,
        }
    }
}

/// A gRPC server as both listeners run it. The pings end connections whose
/// peer is gone without a word (a host down or cut off, a frozen process):
/// TCP keeps those open, and with them the members streaming over them,
/// which take deliveries nobody acks until their attempts run out.
fn grpc_server(pings: Pings) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_max_pending_accept_reset_streams(Some(PENDING_ACCEPT_RESETS))
        .http2_keepalive_interval(Some(pings.interval))
        .http2_keepalive_timeout(Some(pings.timeout))
}

/// Serves `router` on `listener` until `stop` turns true.
async fn serve_until_stopped(
    router: tonic::transport::server::Router,
    listener: Listener,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    match listener {
        Listener::Plain(listener) => {
            // Small replies must not wait for Nagle's algorithm (a 40 ms stall
            // against delayed ACKs was the whole of batched publish latency
            // before this).
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(incoming, stopped)
                .await?
        }
        Listener::Tls(incoming) => {
            router
                .serve_with_incoming_shutdown(incoming, stopped)
                .await?
        }
    }
    Ok(())
}

/// The node-to-node listener: the Raft service of this node's Raft
/// groups, and forwarded public requests (the same services, without health
/// and reflection).
async fn serve_internal(
    (listener, check): (Listener, Option<listen::NodeCheck>),
    node: Arc<Node>,
    (routes, may_lead): (RaftRoutes, watch::Receiver<bool>),
    pings: Pings,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let now = chronos_clock::service(node.node_id);
    let (events, admin) = chronos_api::services(node, Gate::Internal);
    let check = listen::OptionalCheck(check);
    let router = grpc_server(pings)
        .add_service(InterceptedService::new(
            chronos_raftnet::service(routes, may_lead),
            check.clone(),
        ))
        .add_service(InterceptedService::new(now, check.clone()))
        .add_service(InterceptedService::new(events, check.clone()))
        .add_service(InterceptedService::new(admin, check));
    serve_until_stopped(router, listener, stop).await
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// The rules of the config's `[auth]` (and its principals file).
fn access(config: &Config) -> anyhow::Result<chronos_access::Access> {
    let extra = match &config.auth.principals_file {
        None => Vec::new(),
        Some(path) => chronos_access::read_principals_file(path)
            .with_context(|| format!("auth.principals_file {}", path.display()))?,
    };
    chronos_access::Access::new(&config.auth, extra).context("auth")
}

fn guard(config: &Config) -> anyhow::Result<Guard> {
    let audit = match &config.audit {
        None => chronos_access::Audit::disabled(),
        Some(audit) => chronos_access::Audit::open(audit.clone()).context("audit")?,
    };
    Ok(Guard::new(access(config)?, audit, config.node_id))
}
