//! HTTP endpoints: `/health` (the process is up and no partition was stopped
//! by a storage failure), `/ready` (every partition has a
//! leader and a healthy log, and this node's clock is within bounds of the
//! cluster's), `/metrics` (Prometheus text format). With `[auth]` on,
//! `/ready` and `/metrics` want a bearer token of a principal that may
//! describe the cluster, unless `auth.open_ready` / `auth.open_metrics`;
//! `/health` is always open. `/v1/...` is the HTTP/JSON API
//! (`chronos-http`), which authenticates each request as gRPC does; `/` the
//! web console (`chronos-console`), which uses that API.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use chronos_access::{Action, Permission};
use chronos_api::guard::Caller;
use chronos_api::Node;
use chronos_partition::PartitionError;
use chronos_raftlog::RaftLog;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::listen::{HttpsListener, Listener};

#[derive(Clone)]
struct AppState {
    node: Arc<Node>,
    raft_log: Arc<RaftLog>,
    prometheus: PrometheusHandle,
}

pub async fn serve(
    listener: Listener,
    node: Arc<Node>,
    raft_log: Arc<RaftLog>,
    prometheus: PrometheusHandle,
    mut stop: watch::Receiver<bool>,
) {
    let api_node = node.clone();
    let state = AppState {
        node,
        raft_log,
        prometheus,
    };
    let app = axum::Router::new()
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorized))
        .route("/health", get(health))
        .with_state(state)
        .merge(chronos_http::router(api_node))
        .merge(chronos_console::router());
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let result = match listener {
        Listener::Plain(l) => {
            // Small writes go out at once (TLS connections get it at accept):
            // a subscribe stream's lines and an answer's last bytes would
            // otherwise wait for the peer's ACK of the previous ones.
            let l = l.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!("TCP_NODELAY on an HTTP connection: {e}");
                }
            });
            axum::serve(l, app).with_graceful_shutdown(stopped).await
        }
        Listener::Tls(incoming) => {
            let addr = incoming.local_addr();
            let l = HttpsListener { incoming, addr };
            axum::serve(l, app).with_graceful_shutdown(stopped).await
        }
    };
    if let Err(e) = result {
        tracing::warn!("http server: {e}");
    }
}

/// `/ready` and `/metrics` for a principal that may describe the cluster
/// (or for anyone, where the config leaves them open).
async fn authorized(State(s): State<AppState>, request: Request, next: Next) -> Response {
    let access = s.node.guard.access();
    let open = match request.uri().path() {
        "/ready" => access.open_ready(),
        "/metrics" => access.open_metrics(),
        _ => false,
    };
    if !open {
        let md = tonic::metadata::MetadataMap::from_headers(request.headers().clone());
        let checked = s.node.guard.authenticate(&md, Vec::new).and_then(|p| {
            let caller = Caller::Edge(p);
            s.node
                .guard
                .authorize(&caller, &Action::cluster(Permission::Describe))
        });
        if let Err(status) = checked {
            let code = match status.code() {
                tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
                _ => StatusCode::FORBIDDEN,
            };
            return (code, format!("{}\n", status.message())).into_response();
        }
    }
    next.run(request).await
}

/// Up, unless a failure stopped a partition's Raft group (a storage error:
/// a full disk, a failed fsync), which only a restart undoes: a liveness
/// probe should then restart the node.
async fn health(State(s): State<AppState>) -> (StatusCode, String) {
    let failures: Vec<String> = s
        .node
        .partitions
        .all()
        .iter()
        .filter_map(|p| {
            // `/health` is open to anyone: the cause's kind, not its text
            // (which names files), is said here; the log has the rest.
            let cause = match p.failure()? {
                PartitionError::StorageFull(_) => "the disk is full",
                _ => "a storage failure",
            };
            Some(format!("partition {} stopped: {cause}", p.id()))
        })
        .collect();
    if failures.is_empty() {
        return (StatusCode::OK, "OK".into());
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "UNHEALTHY: {}; restart the node once the cause is fixed (its log says more)\n",
            failures.join("; ")
        ),
    )
}

async fn ready(State(s): State<AppState>) -> (StatusCode, String) {
    if *s.node.stopping.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "NOT READY: stopping".into(),
        );
    }
    let clock = s.node.clock.report();
    if !clock.within_bounds {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("NOT READY: {}", clock.describe()),
        );
    }
    let not_ready: Vec<String> = s
        .node
        .partitions
        .all()
        .iter()
        .filter(|p| !p.is_ready())
        .map(|p| p.id().to_string())
        .collect();
    if not_ready.is_empty() {
        (StatusCode::OK, "READY".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "NOT READY: partitions without a leader or applied log: {}",
                not_ready.join(",")
            ),
        )
    }
}

async fn metrics(State(s): State<AppState>) -> String {
    let log = s.raft_log.stats();
    metrics::counter!("chronos_raftlog_appends_total").absolute(log.appends);
    metrics::counter!("chronos_raftlog_fsyncs_total").absolute(log.fsyncs);
    metrics::counter!("chronos_raftlog_written_bytes_total").absolute(log.bytes_written);
    metrics::counter!("chronos_raftlog_rewritten_entries_total").absolute(log.entries_rewritten);
    metrics::gauge!("chronos_raftlog_files").set(log.files as f64);
    metrics::gauge!("chronos_raftlog_disk_bytes").set(log.bytes as f64);
    metrics::gauge!("chronos_raftlog_entries").set(log.entries as f64);
    metrics::counter!("chronos_raftlog_reused_files_total").absolute(log.files_reused);
    metrics::gauge!("chronos_raftlog_spare_files").set(log.spare_files as f64);
    for p in s.node.partitions.all().iter() {
        let st = p.wal_stats();
        let id = p.id().to_string();
        let label = [("partition", id.clone())];
        metrics::counter!("chronos_wal_written_bytes_total", &label)
            .absolute(st.bytes_written_total);
        metrics::counter!("chronos_wal_appends_total", &label).absolute(st.appends_total);
        metrics::counter!("chronos_wal_fsyncs_total", &label).absolute(st.fsyncs_total);
        metrics::gauge!("chronos_wal_fsync_time_seconds", &label)
            .set(st.fsync_time_ns_total as f64 / 1e9);
        metrics::gauge!("chronos_wal_segments", &label).set(st.segment_count as f64);
        // The leader's count only, as the group gauges: a sum over a
        // cluster counts each pending event once, not once per replica.
        let status = p.status();
        let pending = if status.is_leader { status.pending } else { 0 };
        metrics::gauge!("chronos_pending_events", &label).set(pending as f64);
        metrics::gauge!("chronos_wal_disk_bytes", &label).set(st.disk_bytes as f64);
        metrics::gauge!("chronos_partition_ready", "partition" => id).set(if p.is_ready() {
            1.0
        } else {
            0.0
        });
    }
    let mut text = s.prometheus.render();
    group_gauges(&s.node.partitions.all(), &mut text);
    text
}

/// `chronos_group_lag` and `chronos_group_inflight` of each consumer group on
/// each partition this node leads, in Prometheus' text format. Only the
/// leader lists a group, so a sum over a cluster counts it once; a group
/// deleted, or a partition led elsewhere now, is no longer listed.
fn group_gauges(partitions: &[Arc<chronos_partition::Partition>], out: &mut String) {
    use std::fmt::Write;
    type Figure = fn(&chronos_partition::GroupGauge) -> u64;
    let rows: Vec<_> = partitions
        .iter()
        .flat_map(|p| {
            let id = p.id();
            p.group_gauges().into_iter().map(move |row| (id, row))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let figures: [(&str, &str, Figure); 2] = [
        (
            "chronos_group_lag",
            "Fired events not yet handed out to the group",
            |g| g.lag,
        ),
        (
            "chronos_group_inflight",
            "Deliveries to the group waiting for an ack",
            |g| g.inflight,
        ),
    ];
    for (name, help, figure) in figures {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (partition, (topic, group, gauge)) in &rows {
            let _ = writeln!(
                out,
                "{name}{{partition=\"{partition}\",topic=\"{}\",group=\"{}\"}} {}",
                label(topic),
                label(group),
                figure(gauge)
            );
        }
    }
}

/// A label value as Prometheus' text format writes it.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
